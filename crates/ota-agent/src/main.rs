fn main() -> std::process::ExitCode {
    verdant_common::daemon::main(
        verdant_ota_agent::SERVICE,
        verdant_common::daemon::Threads::One,
        verdant_ota_agent::run,
    )
}
