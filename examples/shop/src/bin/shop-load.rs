//! `shop-load`: the load run and the fault run against shop instances, with verdicts.

fn main() -> std::process::ExitCode {
    shop::load::main()
}
