-- fleetTime-1: the server's clock, which every process of the fleet reads its time from.
--
-- Self-contained (no includes/common.lua). Reads nothing and writes nothing.
-- KEYS[1] `<prefix>:{celeriac:clock}`: never touched; it picks the node that answers, so on
--         a Cluster every process reads the same node's clock.
-- Returns: { seconds, microseconds } since the Unix epoch, as `TIME` gives them.

return redis.call('TIME')
