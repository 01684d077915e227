fn main() -> std::process::ExitCode {
    verdant_common::daemon::main(
        verdant_broker::SERVICE,
        verdant_common::daemon::Threads::PerCore,
        verdant_broker::run,
    )
}
