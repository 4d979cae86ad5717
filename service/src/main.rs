//! `cxr`: chest X-ray classification — train, evaluate, predict, interpret, serve.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
