//! verdant-init's command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use verdant_common::exit::Exit;
use verdant_common::paths::{DEFAULT_ROOT, ROOT_ENV, RUNTIME_DIR_ENV};

use crate::process::Programs;
use crate::zygote;

/// The supervisor of a Verdant core: prepares the root directory (a
/// default config, development certificates and a sample group on first
/// start), starts every service in dependency order, restarts what fails,
/// and stops everything on SIGTERM.
#[derive(Debug, Parser)]
#[command(version = verdant_common::version::version())]
struct Args {
    /// Root directory of the core.
    #[arg(long, env = ROOT_ENV, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Directory for the gRPC sockets (default: `core.runtime_dir`, else `<root>/run`).
    #[arg(long, env = RUNTIME_DIR_ENV)]
    runtime_dir: Option<PathBuf>,
    /// Print the configuration a first start writes, and exit.
    #[arg(long)]
    print_default_config: bool,
}

/// Runs verdant-init with its command line `args` (program name first).
/// `programs` says how services named `verdant-<name>` are found.
pub fn main(args: Vec<OsString>, mut programs: Programs) -> ExitCode {
    let args = Args::parse_from(args);
    if args.print_default_config {
        print!("{}", crate::config::default_config());
        return ExitCode::SUCCESS;
    }
    // The listening sockets init holds, kept open across each `exec`:
    // those the previous executable held first.
    let held_arc = programs.held().cloned();
    let held = held_arc.as_deref();
    if let Some(held) = held {
        held.adopt();
        // SAFETY: one thread (nothing started yet). Not for the children.
        unsafe { std::env::remove_var(verdant_common::listen::HELD_ENV) };
    }
    // One init per root, from before it reads anything there (the lock
    // goes with an `exec`, and the next executable takes it again).
    let lock = match crate::setup::claim(&args.root) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("verdant-init: {e}");
            return e.exit().into();
        }
    };
    // The version `versions/current` names, if init is not running it.
    if let Some(exe) = crate::versions::at_start(&args.root) {
        let e = crate::versions::reexec(&exe, held);
        eprintln!(
            "verdant-init: cannot execute {}: {e}; going on with this one",
            exe.display()
        );
        crate::versions::exec_failed(&args.root, &exe, &e);
    }
    // Before anything else (one thread, nothing set up): the zygote and
    // the daemons it forks continue from here.
    let mut no_zygote = None;
    if let Some(entry) = programs.entry() {
        match zygote::start(entry) {
            Ok(zygote::Started::Daemon(code)) => {
                // The zygote closed what init held (its sockets, the
                // root's lock); this copy of their owners must not close
                // those numbers again.
                std::mem::forget(held_arc);
                std::mem::forget(programs);
                std::mem::forget(lock);
                return code;
            }
            Ok(zygote::Started::Init(z)) => programs = programs.with_zygote(z),
            Err(e) => no_zygote = Some(e),
        }
    }
    verdant_common::telemetry::init();
    if let Some(e) = no_zygote {
        tracing::warn!("cannot fork the zygote ({e}); services are executed");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("verdant-init: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(crate::run(
        &args.root,
        args.runtime_dir.as_deref(),
        programs,
        lock,
    )) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(exe)) => {
            drop(runtime);
            let e = crate::versions::reexec(&exe, held);
            eprintln!("verdant-init: cannot execute {}: {e}", exe.display());
            Exit::Failure.into()
        }
        Err(e) => {
            eprintln!("verdant-init: {e}");
            // A new version that cannot start goes back to the previous.
            if let Some(exe) = crate::versions::start_failed(&args.root, &e.to_string()) {
                drop(runtime);
                let err = crate::versions::reexec(&exe, held);
                eprintln!("verdant-init: cannot execute {}: {err}", exe.display());
            }
            e.exit().into()
        }
    }
}
