fn main() -> std::process::ExitCode {
    verdant_common::daemon::main(
        verdant_secrets::SERVICE,
        verdant_common::daemon::Threads::One,
        verdant_secrets::run,
    )
}
