//! verdant-bench: timings and memory of a whole core, measured from outside
//! as an operator would see them. `verdant-bench core --bin-dir target/release`.

mod core;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of a running Verdant core")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Cold start to all SERVING, kill -9 to SERVING again, idle PSS.
    Core {
        /// Where verdant-init and the daemons are (a release build).
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// How many cold starts.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// How many kills per run. Only the first restart of a run is
        /// immediate; later ones include the restart backoff (100 ms, 200 ms...).
        #[arg(long, default_value_t = 1)]
        kills: usize,
        /// A label for the report (e.g. "separate binaries").
        #[arg(long, default_value = "")]
        label: String,
    },
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.command {
        Cmd::Core {
            bin_dir,
            runs,
            kills,
            label,
        } => runtime.block_on(core::run(&bin_dir, runs, kills, &label)),
    }
}
