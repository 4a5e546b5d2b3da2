//! The `celeriac` command: run `celeriac --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    celeriac::cli::run().await
}
