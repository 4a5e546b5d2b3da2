//! The `celeriac` command: run `celeriac --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    celeriac_cli::run_stock().await
}
