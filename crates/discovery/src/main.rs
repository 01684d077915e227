fn main() -> std::process::ExitCode {
    verdant_common::daemon::main(
        verdant_discovery::SERVICE,
        verdant_common::daemon::Threads::One,
        verdant_discovery::run,
    )
}
