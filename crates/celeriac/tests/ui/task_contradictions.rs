// A soft limit not below the hard one, and a priority outside 0..=9.
#[celeriac::task(soft_time_limit = "1m", time_limit = "30s")]
async fn report() {}

#[celeriac::task(priority = 10)]
async fn urgent() {}

fn main() {}
