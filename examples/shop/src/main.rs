//! `shop`: the example service's binary (`shop serve`, `shop worker`, `shop smtp-sink`, or all
//! of them in one process with no subcommand).

fn main() -> std::process::ExitCode {
    shop::cli::main()
}
