// A misspelt option names itself, suggests the right one and lists the valid ones.
#[celeriac::task(max_retries = 3)]
async fn send_email(to: String) {
    let _ = to;
}

fn main() {}
