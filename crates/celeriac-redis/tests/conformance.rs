//! The conformance suite against real Redis servers the testkit starts: standalone, and a
//! 3-master Cluster.

use celeriac_conformance::{suite, Guarded};
use celeriac_redis::RedisBackend;
use celeriac_testkit::{RedisCluster, RedisServer};

type Fixture<G> = Result<Guarded<RedisBackend, G>, Box<dyn std::error::Error>>;

async fn standalone() -> Fixture<RedisServer> {
    let server = RedisServer::start().await?;
    let backend = RedisBackend::connect(&server.url()).await?;
    Ok(Guarded {
        backend,
        guard: server,
    })
}

async fn cluster() -> Fixture<RedisCluster> {
    let cluster = RedisCluster::start().await?;
    let backend = RedisBackend::connect(&cluster.url()).await?;
    Ok(Guarded {
        backend,
        guard: cluster,
    })
}

suite!(redis_standalone, standalone());
suite!(redis_cluster, cluster());
