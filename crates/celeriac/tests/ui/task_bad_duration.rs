// Durations follow celeriac::duration's grammar; the message says what is wrong with one.
#[celeriac::task(time_limit = "30x")]
async fn slow() {}

#[celeriac::task(backoff = "1m30")]
async fn flaky() {}

#[celeriac::task(expires = 300)]
async fn stale() {}

fn main() {}
