fn main() -> std::process::ExitCode {
    verdant_common::daemon::main(
        verdant_lambda_runner::SERVICE,
        verdant_common::daemon::Threads::PerCore,
        verdant_lambda_runner::run,
    )
}
