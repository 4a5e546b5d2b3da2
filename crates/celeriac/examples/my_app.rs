//! An application binary with its own tasks and the whole `celeriac` command line for them,
//! the way `celery -A proj worker` works:
//!
//! ```sh
//! cargo run -p celeriac --example my_app -- enqueue add --args '[2, 3]'
//! cargo run -p celeriac --example my_app -- worker
//! ```

use celeriac::Registry;

#[celeriac::task]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `--url` / `CELERIAC_URL` choose the backend, as with the stock binary.
    let mut tasks = Registry::new();
    tasks.register::<add::Task>();
    celeriac::cli::run_with_registry(Some(tasks)).await
}
