fn main() -> std::process::ExitCode {
    verdant_common::daemon::main(
        verdant_shadow::SERVICE,
        verdant_common::daemon::Threads::One,
        verdant_shadow::run,
    )
}
