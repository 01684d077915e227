fn main() -> std::process::ExitCode {
    verdant_common::daemon::main(
        verdant_router::SERVICE,
        verdant_common::daemon::Threads::PerCore,
        verdant_router::run,
    )
}
