//! verdant-bench: timings and memory of a whole core, measured from outside
//! as an operator would see them. `verdant-bench core --bin-dir target/release`.

mod answers;
mod compare;
mod core;
mod deploy;
mod discovery;
mod drain;
mod function;
mod inference;
mod lean;
mod modbus;
mod mqtt;
mod probe;
mod reconnect;
mod secrets;
mod shadow;
mod spawn;
mod update;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of a running Verdant core")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

/// A benchmark of Python functions on a core.
#[derive(Debug, clap::Args)]
struct PythonBench {
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// A Python with greengrasssdk (bundled with the function), and for
    /// `inference` onnx and onnxruntime, for `modbus` pymodbus.
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    #[arg(long, default_value_t = 3)]
    runs: usize,
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
        /// Execute each daemon (`[init] zygote = false`) instead of forking
        /// them from init's zygote.
        #[arg(long)]
        exec: bool,
    },
    /// MQTT load against brokers side by side: `--target name=host:port`,
    /// at least once; ratios are against the first target.
    Mqtt {
        #[arg(long = "target", required = true)]
        targets: Vec<mqtt::Target>,
        /// Runs of each scenario per target (medians are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A tenth of the messages: for a smoke test.
        #[arg(long)]
        quick: bool,
        /// Only the connection storm, on brokers nothing else has used yet:
        /// their idle memory and memory per idle connection.
        #[arg(long)]
        storm_only: bool,
        /// `name=pid` of a target's broker process, to read its memory.
        #[arg(long = "pid")]
        pids: Vec<String>,
        /// Use the fixed client ids of `verdant-bench group` (for a core in
        /// routed mode, whose devices must be things of its group); no storm.
        #[arg(long)]
        routed: bool,
        /// `name=ca,cert,key`: the target `name` speaks mutual TLS with
        /// these PEM files (a broker with `require_client_id_match =
        /// false`, since every client presents the same device).
        #[arg(long = "tls")]
        tls: Vec<String>,
        /// Only the scenarios whose name contains this text (e.g. "QoS 1, 1 KiB").
        #[arg(long)]
        only: Option<String>,
        /// The load client: `lean` (rumqttc's codec on the socket, many
        /// packets per write), `rumqttc` (its event loop, as before), or
        /// `probe` (lean, but the latency scenarios on blocking threads).
        #[arg(long, default_value = "lean", value_parser = ["lean", "rumqttc", "probe"])]
        client: String,
        /// Write each latency run's latencies (µs, in the order they
        /// arrived) to a file per run in this directory.
        #[arg(long)]
        latencies_to: Option<std::path::PathBuf>,
    },
    /// The cloud queue's drain to a local Mosquitto over mutual TLS: a
    /// core queues `messages` while its cloud is down, then the time from
    /// connection to an empty queue, per window size.
    Drain {
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Window sizes to compare (1 is Greengrass v1's one at a time).
        #[arg(long = "window", default_values_t = [1u16, 64])]
        windows: Vec<u16>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The shadow service: durable updates/s and get latency (gRPC, MQTT)
    /// on a whole core.
    Shadow {
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Functions: a pinned Python function (greengrasssdk) relaying a
    /// device's messages back to it; messages/s and round trip.
    Function(PythonBench),
    /// Inference: the ml-inference example's pinned function with
    /// onnxruntime, inferences/s through the core against the model run
    /// directly (run from the repository's root: it reads `examples/` and
    /// `.ml-packages`).
    Inference(PythonBench),
    /// Modbus: the protocol adapter connector against a pymodbus TCP
    /// server, requests/s through the core against pymodbus's client
    /// reading the server directly (run from the repository's root).
    Modbus(PythonBench),
    /// `get_secret_value` from a pinned Python function with greengrasssdk.
    Secrets(PythonBench),
    /// Version switches with devices connected: `ApplyUpdate` and
    /// `RollbackVersion` → settled, the listener's refusals, devices away.
    Update {
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// A Python with python-tuf (scripts/update-repo.py).
        #[arg(long, default_value = ".venv/bin/python")]
        python: PathBuf,
        #[arg(long, default_value_t = 20)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Deployments with devices connected: Deploy → new table in effect
    /// and → SUCCEEDED, for one subscription and one function changed;
    /// disconnects and QoS 1 messages lost meanwhile.
    Deploy {
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// How many deployments (alternately a subscription and a function changed).
        #[arg(long, default_value_t = 10)]
        deployments: usize,
    },
    /// The discovery API: concurrent devices each asking again and again
    /// over mutual TLS (one request per connection, as the SDKs do).
    Discovery {
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Concurrent devices.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Seconds each run lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Prints the group a routed-mode benchmark deploys: things named as
    /// the benchmark's clients and routes from every publisher to every
    /// subscriber on `bench/#`.
    Group,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.command {
        Cmd::Core {
            bin_dir,
            runs,
            kills,
            label,
            exec,
        } => runtime.block_on(core::run(&bin_dir, runs, kills, &label, exec)),
        Cmd::Mqtt {
            mut targets,
            runs,
            quick,
            storm_only,
            pids,
            routed,
            tls,
            only,
            client,
            latencies_to,
        } => {
            for t in &mut targets {
                t.rumqttc = client == "rumqttc";
                t.probe = client == "probe";
            }
            for spec in &tls {
                let parsed = spec.split_once('=').and_then(|(name, files)| {
                    let mut f = files.split(',');
                    Some((name, f.next()?, f.next()?, f.next()?))
                });
                let Some((name, ca, cert, key)) = parsed else {
                    eprintln!("--tls {spec}: expected name=ca,cert,key");
                    std::process::exit(2);
                };
                let Some(target) = targets.iter_mut().find(|t| t.name == name) else {
                    eprintln!("--tls {spec}: no target named {name}");
                    std::process::exit(2);
                };
                if let Err(e) = target.use_tls(ca, cert, key) {
                    eprintln!("--tls {spec}: {e}");
                    std::process::exit(2);
                }
            }
            let pids: Vec<(String, u32)> = pids
                .iter()
                .filter_map(|p| {
                    let (name, pid) = p.split_once('=')?;
                    Some((name.to_string(), pid.parse().ok()?))
                })
                .collect();
            let plan = compare::Plan {
                runs,
                quick,
                storm_only,
                routed,
                only,
                latencies_to,
            };
            runtime.block_on(compare::run(&targets, &pids, &plan));
        }
        Cmd::Group => println!("{}", compare::group()),
        Cmd::Deploy {
            bin_dir,
            devices,
            deployments,
        } => runtime.block_on(deploy::run(&bin_dir, devices, deployments)),
        Cmd::Shadow { bin_dir, runs } => runtime.block_on(shadow::run(&bin_dir, runs)),
        Cmd::Discovery {
            bin_dir,
            clients,
            seconds,
            runs,
        } => runtime.block_on(discovery::run(&bin_dir, clients, seconds, runs)),
        Cmd::Function(b) => runtime.block_on(function::run(&b.bin_dir, &b.python, b.runs)),
        Cmd::Secrets(b) => runtime.block_on(secrets::run(&b.bin_dir, &b.python, b.runs)),
        Cmd::Inference(b) => runtime.block_on(inference::run(&b.bin_dir, &b.python, b.runs)),
        Cmd::Modbus(b) => runtime.block_on(modbus::run(&b.bin_dir, &b.python, b.runs)),
        Cmd::Update {
            bin_dir,
            python,
            devices,
            runs,
        } => runtime.block_on(update::run(&bin_dir, &python, devices, runs)),
        Cmd::Drain {
            bin_dir,
            messages,
            windows,
            runs,
        } => runtime.block_on(drain::run(&bin_dir, messages, &windows, runs)),
    }
}
