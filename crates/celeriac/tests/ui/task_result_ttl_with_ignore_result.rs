// Keeping no result and keeping it for an hour contradict each other.
#[celeriac::task(ignore_result, result_ttl = "1h")]
async fn ping() {}

fn main() {}
