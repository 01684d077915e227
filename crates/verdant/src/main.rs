//! `verdant`: one executable for verdant-init and all seven daemons
//! (chosen by measurement, see docs/benchmarks.md: the processes of a core
//! share one copy of the code pages instead of eight).
//!
//! The program is chosen by `argv[0]` (`verdant-init`, `verdant-broker`, ...,
//! as verdant-init starts the daemons, or through symlinks) or by the first
//! argument (`verdant init --root ./var`, `verdant broker`).

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use verdant_common::daemon;

mod math;

/// Every name this binary answers to, as `verdant-<name>`.
const PROGRAMS: &[&str] = &[
    "verdant-init",
    "verdant-broker",
    "verdant-router",
    "verdant-shadow",
    "verdant-lambda-runner",
    "verdant-secrets",
    "verdant-discovery",
    "verdant-ota-agent",
    // Not daemons: how the lambda-runner starts a GreengrassContainer
    // function instance, and the connectors it runs as functions.
    "verdant-lambda-sandbox",
    "verdant-connector",
];

/// Programs of this binary that only the lambda-runner starts.
const INTERNAL: &[&str] = &["verdant-lambda-sandbox", "verdant-connector"];

/// Runs the daemon whose library is `$krate`.
macro_rules! daemon {
    ($args:expr, $krate:ident) => {
        daemon::main(
            $args,
            $krate::SERVICE,
            $krate::THREADS,
            $krate::CAPABILITIES,
            $krate::run,
        )
    };
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let program = if PROGRAMS.contains(&invoked.as_str()) {
        invoked
    } else {
        match args.get(1).map(|a| a.to_string_lossy().into_owned()) {
            Some(name) if PROGRAMS.contains(&format!("verdant-{name}").as_str()) => {
                args.remove(0);
                args[0] = OsString::from(format!("verdant-{name}"));
                format!("verdant-{name}")
            }
            Some(flag) if flag == "--version" || flag == "-V" => {
                println!("verdant {}", verdant_common::version::version());
                return ExitCode::SUCCESS;
            }
            Some(flag) if flag == "--help" || flag == "-h" || flag == "help" => {
                print!("{}", usage());
                return ExitCode::SUCCESS;
            }
            other => {
                if let Some(name) = other {
                    eprintln!("verdant: unknown program `{name}`");
                }
                eprint!("{}", usage());
                return ExitCode::from(2);
            }
        }
    };
    run(&program, args)
}

/// What `verdant --help` prints.
fn usage() -> String {
    let programs = PROGRAMS
        .iter()
        .filter(|p| !INTERNAL.contains(p))
        .map(|p| p.trim_start_matches("verdant-"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "verdant: one executable for a whole Verdant core\n\n\
         Usage: verdant <PROGRAM> [ARGS...]   (or run it as verdant-<PROGRAM>)\n\n\
         Arguments:\n\
         \x20 <PROGRAM>  what to run: {programs}\n\
         \x20 [ARGS...]  the program's own arguments (`verdant <PROGRAM> --help` lists them)\n\n\
         Options:\n\
         \x20 -h, --help     Print help\n\
         \x20 -V, --version  Print version\n\n\
         `verdant init --root DIR` starts a core: the supervisor, which starts every daemon.\n"
    )
}

/// Runs a program of this binary in this process; also how the zygote of
/// verdant-init starts a daemon (`args[0]` names it).
fn forked(args: Vec<OsString>) -> ExitCode {
    let program = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    if PROGRAMS.contains(&program.as_str()) && program != "verdant-init" {
        run(&program, args)
    } else {
        eprintln!("verdant: the zygote cannot run `{program}`");
        ExitCode::from(2)
    }
}

fn run(program: &str, args: Vec<OsString>) -> ExitCode {
    match program {
        "verdant-init" => {
            // Without its own path init cannot name the daemons' program:
            // no multicall, so no zygote either.
            let programs = match std::env::current_exe() {
                Ok(exe) => verdant_init::Programs::multicall(exe, PROGRAMS)
                    .with_entry(forked)
                    .with_held_listeners(verdant_broker::SERVICE, verdant_broker::held_listeners),
                Err(_) => verdant_init::Programs::default(),
            };
            verdant_init::main(args, programs)
        }
        "verdant-broker" => daemon!(args, verdant_broker),
        "verdant-router" => daemon!(args, verdant_router),
        "verdant-shadow" => daemon!(args, verdant_shadow),
        "verdant-lambda-runner" => daemon!(args, verdant_lambda_runner),
        "verdant-secrets" => daemon!(args, verdant_secrets),
        "verdant-discovery" => daemon!(args, verdant_discovery),
        "verdant-ota-agent" => daemon!(args, verdant_ota_agent),
        "verdant-lambda-sandbox" => verdant_lambda_runner::sandbox::main(&args),
        "verdant-connector" => verdant_connectors::main(&args),
        _ => unreachable!("PROGRAMS lists every arm"),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use tokio::net::UnixListener;
    use verdant_common::config::ConfigSource;
    use verdant_common::daemon::{Context, DaemonError};
    use verdant_common::exit::Exit;
    use verdant_common::paths::Layout;
    use verdant_common::shutdown::CancellationToken;

    /// `run` of `service` with `config` as the core file, on a socket in a
    /// temp root.
    async fn run_with<F, Fut, E>(
        service: &str,
        run: F,
        config: &str,
        shutdown: CancellationToken,
    ) -> Result<(), E>
    where
        F: FnOnce(Context, UnixListener, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            layout: Layout::new(dir.path(), None).unwrap(),
            config: ConfigSource::from_str("verdant.toml", config).unwrap(),
        };
        let listener = UnixListener::bind(dir.path().join(format!("{service}.sock"))).unwrap();
        run(ctx, listener, shutdown).await
    }

    /// A daemon serves until shutdown (when `serves`), and an unknown key
    /// of its section is a configuration error (exit 78).
    async fn checks_its_section<F, Fut, E>(service: &str, run: F, serves: bool)
    where
        F: Fn(Context, UnixListener, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: DaemonError,
    {
        if serves {
            let stopped = CancellationToken::new();
            stopped.cancel();
            if let Err(e) = run_with(service, &run, "", stopped).await {
                panic!("{service}: {e}");
            }
        }
        let config = format!("[{service}]\nbogus = 1\n");
        let err = run_with(service, &run, &config, CancellationToken::new())
            .await
            .expect_err("an unknown key is refused");
        assert_eq!(err.exit(), Exit::Config, "{service}: {err}");
        let expect = format!("{service}.bogus: unknown field `bogus`");
        assert!(err.to_string().contains(&expect), "{service}: {err}");
    }

    #[tokio::test]
    async fn secrets_discovery_and_ota_agent_check_their_sections() {
        checks_its_section(verdant_secrets::SERVICE, verdant_secrets::run, true).await;
        checks_its_section(verdant_ota_agent::SERVICE, verdant_ota_agent::run, true).await;
        // Discovery needs the core's certificate: in an empty root it says
        // which file is missing and exits 1 (init restarts it).
        checks_its_section(verdant_discovery::SERVICE, verdant_discovery::run, false).await;
        let stopped = CancellationToken::new();
        let err = run_with("discovery", verdant_discovery::run, "", stopped)
            .await
            .expect_err("no certificate");
        assert_eq!(err.exit(), Exit::Failure, "{err}");
        assert!(err.to_string().contains("certs/server.pem"), "{err}");
    }
}
