// A task is an `async fn`.
#[celeriac::task]
fn compute(n: u64) -> u64 {
    n * 2
}

fn main() {}
