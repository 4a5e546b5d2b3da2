-- includes/flow.lua: prepended to the workflow scripts instead of common.lua (they belong to
-- no queue and take none of a queue's twelve keys).
--
-- Every key of one join or one workflow carries the hash tag `{wf:<id>}` (ids are UUIDs, so
-- they never clash with a queue's tag), and each script touches one such key, passed in KEYS:
--   `<prefix>:{wf:<id>}:join`  HASH  a join: `<index>` -> the member's output (JSON text),
--                                    `n` distinct indexes with an output, `t` total members,
--                                    `e` the first failure's message, `x` keep-until (ms)
--   `<prefix>:{wf:<id>}:rec`   HASH  a workflow record: `n` name, `s` state code (0 running,
--                                    1 succeeded, 2 failed), `r` result, `e` error, `c` created
--                                    at, `f` finished at, `t` ttl (ms)
-- Finished workflows are published on `<prefix>:{wf:<id>}:done`, which the pattern every
-- process listens on for job completions (`<prefix>:{*}:done`) also matches.
--
-- Numbers are passed to Redis through `num`, never as raw Lua numbers, which Redis would
-- format with 14 significant digits. Numbers read back go through `int_of`: a record another
-- process spoiled is repaired or reported, never a Lua error.

local function num(x)
  return string.format('%.0f', x)
end

-- A field holding a decimal integer (at most 16 digits) as a number; nil for anything else
-- (`nan`, `inf`, `1e400`, text), which must not reach arithmetic, PEXPIRE or a comparison.
local function int_of(x)
  if type(x) == 'string' and #x <= 17 and string.find(x, '^%-?%d+$') then
    return tonumber(x)
  end
  return nil
end
