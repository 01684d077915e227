//! Whole-core figures: cold start to all SERVING, kill -9 to SERVING again,
//! idle PSS of init and of every daemon. Times come from init's
//! `WatchServices` stream, so they include what an operator would wait for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::Streaming;
use verdant_proto::supervisor::v1 as pb;
use verdant_proto::supervisor::v1::supervisor_client::SupervisorClient;

const LIMIT: Duration = Duration::from_secs(30);

pub async fn run(bin_dir: &Path, runs: usize, kills: usize, label: &str, exec: bool) {
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let init = bin_dir.join("verdant");
    assert!(
        init.is_file(),
        "{} missing: cargo build --release --workspace",
        init.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");

    // The first start also writes config, certificates and the sample group.
    let (first, mut core) = start_and_measure(&init, &root).await;
    core.stop().await;
    if exec {
        std::fs::write(
            root.join("config/config.d/50-bench.toml"),
            "[init]\nzygote = false\n",
        )
        .expect("write a drop-in");
    }
    let mut colds = Vec::new();
    let mut restarts = Vec::new();
    let mut memory = None;
    for i in 0..runs {
        let (cold, mut core) = start_and_measure(&init, &root).await;
        colds.push(cold);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            memory = Some(measure_memory(&core.services().await, core.child.id()));
        }
        for _ in 0..kills {
            restarts.push(core.kill_and_wait("broker").await);
        }
        core.stop().await;
    }
    let name = if label.is_empty() { "core" } else { label };
    println!("## {name}\n");
    println!("| figure | median | min | max | n |\n|---|---|---|---|---|");
    println!(
        "| first start (writes certs), spawn → all SERVING | {} | | | 1 |",
        ms(first)
    );
    row("cold start, spawn → all SERVING", &mut colds);
    row("kill -9 broker → SERVING again", &mut restarts);
    if let Some((init_pss, rows)) = memory {
        let total: u64 = rows.iter().map(|r| r.1).sum::<u64>() + init_pss;
        println!("\n| process | PSS KiB | RSS KiB |\n|---|---|---|");
        println!("| verdant-init | {init_pss} | |");
        // Init's other children (the zygote) first, then the services.
        for (n, pss, rss) in &rows {
            println!("| {n} | {pss} | {rss} |");
        }
        println!(
            "| **all** | **{total}** ({:.1} MiB) | |",
            total as f64 / 1024.0
        );
    }
    let mut disk = 0u64;
    for entry in std::fs::read_dir(&bin_dir).expect("bin dir").flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        // `metadata` follows symlinks: a multicall install counts its one
        // binary once, under its own name.
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let meta = entry.metadata().expect("metadata");
        let program = n.starts_with("verdant") && entry.path().extension().is_none();
        // Only what a core runs: the multicall binary, or the separate ones.
        if program && !is_link && meta.is_file() && n != "verdant-bench" && n != "verdantctl" {
            disk += meta.len();
        }
    }
    println!(
        "\ncore binaries on disk (init and daemons): {:.1} MiB",
        disk as f64 / 1_048_576.0
    );
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, v: &mut [Duration]) {
    v.sort();
    if v.is_empty() {
        return;
    }
    println!(
        "| {what} | {} | {} | {} | {} |",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    );
}

struct Core {
    child: Child,
    client: SupervisorClient<tonic::transport::Channel>,
    watch: Streaming<pb::Service>,
}

async fn start_and_measure(init: &Path, root: &Path) -> (Duration, Core) {
    let begun = Instant::now();
    let child = Command::new(init)
        .arg("init")
        .arg("--root")
        .arg(root)
        .env("VERDANT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn verdant-init");
    let socket = root.join("run/init.sock");
    let mut client = loop {
        if let Ok(ch) = verdant_common::uds::connect(&socket).await {
            break SupervisorClient::new(ch);
        }
        assert!(begun.elapsed() < LIMIT, "init socket never appeared");
        tokio::time::sleep(Duration::from_micros(500)).await;
    };
    let mut watch = client
        .watch_services(pb::WatchServicesRequest {})
        .await
        .expect("watch")
        .into_inner();
    let mut running = std::collections::BTreeSet::new();
    let mut total = None;
    while total != Some(running.len()) {
        assert!(begun.elapsed() < LIMIT, "not all SERVING within {LIMIT:?}");
        let s = watch
            .message()
            .await
            .expect("watch stream")
            .expect("watch open");
        if total.is_none() {
            total = Some(client_count(&mut client).await);
        }
        if s.state() == pb::ServiceState::Running {
            running.insert(s.name.clone());
        } else {
            running.remove(&s.name);
        }
    }
    (
        begun.elapsed(),
        Core {
            child,
            client,
            watch,
        },
    )
}

async fn client_count(client: &mut SupervisorClient<tonic::transport::Channel>) -> usize {
    client
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner()
        .services
        .len()
}

impl Core {
    async fn services(&mut self) -> Vec<pb::Service> {
        self.client
            .list_services(pb::ListServicesRequest {})
            .await
            .expect("list")
            .into_inner()
            .services
    }

    async fn kill_and_wait(&mut self, name: &str) -> Duration {
        let pid = self
            .services()
            .await
            .into_iter()
            .find(|s| s.name == name)
            .expect("service")
            .pid;
        let begun = Instant::now();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
        let wait = async {
            loop {
                let s = self.watch.message().await.expect("watch").expect("open");
                if s.name == name && s.state() == pb::ServiceState::Running && s.pid != pid {
                    return begun.elapsed();
                }
            }
        };
        tokio::time::timeout(LIMIT, wait)
            .await
            .expect("the killed service came back")
    }

    async fn stop(&mut self) {
        let _ = self.client.shutdown(pb::ShutdownRequest {}).await;
        let deadline = Instant::now() + LIMIT;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "init did not stop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// (init PSS, [(process, PSS, RSS)]) in KiB, from `/proc/<pid>/smaps_rollup`:
/// every service, and every other child of init (the zygote) under its
/// `comm` name (`verdant-...`).
fn measure_memory(services: &[pb::Service], init_pid: u32) -> (u64, Vec<(String, u64, u64)>) {
    let rollup = |pid: u32, key: &str| -> u64 {
        let text = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/smaps_rollup")))
            .unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let children = std::fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children"))
        .unwrap_or_default();
    let others = children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|pid| services.iter().all(|s| s.pid != *pid))
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let name = comm.trim();
            let name = if name.starts_with("verdant-") {
                name.to_string()
            } else {
                format!("verdant-({name})")
            };
            (name, pid)
        });
    let rows = others
        .chain(services.iter().map(|s| (s.name.clone(), s.pid)))
        .map(|(name, pid)| (name, rollup(pid, "Pss:"), rollup(pid, "Rss:")))
        .collect();
    (rollup(init_pid, "Pss:"), rows)
}
