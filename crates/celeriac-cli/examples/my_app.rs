//! An application binary with its own tasks and the whole `celeriac` command line for them,
//! the way `celery -A proj worker` works:
//!
//! ```sh
//! cargo run -p celeriac-cli --example my_app -- enqueue add --args '[2, 3]'
//! cargo run -p celeriac-cli --example my_app -- worker
//! ```

use celeriac::App;
use celeriac_cli::RunCli;

#[celeriac::task]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The app's URL is the default; `--url` / `CELERIAC_URL` choose another backend.
    let app = App::builder().task::<add::Task>().build().await;
    match app {
        Ok(app) => app.run_cli().await,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
