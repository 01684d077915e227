//! `DeviceMetrics`: the core's CPU, memory, disk, network and per-daemon
//! process figures, read from procfs and `statvfs`, published as JSON on
//! `PublishTopic` every `PublishInterval` seconds. Rates (CPU shares) are
//! over the interval just ended; counters (bytes, packets) are totals, as
//! the kernel counts them.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procfs::{Current, CurrentSI, WithCurrentSystemInfo};
use serde_json::{Value, json};
use verdant_function_sdk::Function;

use crate::{Failure, number, parameter};

/// CPU ticks of one process, to tell its share over an interval.
type Ticks = HashMap<i32, u64>;

pub fn main() -> Result<(), Failure> {
    let interval = Duration::from_secs(number::<u64>("PublishInterval")?.max(1));
    let topic = parameter("PublishTopic")?;
    let disks: Vec<String> = parameter("DiskPaths")?
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    let core: i32 = number("VERDANT_CORE_PID")?;
    let thing = std::env::var("AWS_IOT_THING_NAME").unwrap_or_default();
    let f = Function::from_env()?;
    f.initialized(true, "")?;
    let mut last = Sample::take(core);
    loop {
        std::thread::sleep(interval);
        let now = Sample::take(core);
        let body = report(&thing, &last, &now, &disks);
        // A publish the core refuses (its queue full) is not fatal: the
        // next interval tries again.
        if let Err(e) = f.publish(&topic, body.to_string().as_bytes()) {
            eprintln!("cannot publish the metrics: {e}");
        }
        last = now;
    }
}

/// What one reading of procfs holds.
struct Sample {
    at: Instant,
    /// All CPUs' ticks: (busy, total).
    cpu: (u64, u64),
    /// The core's processes: pid to ticks, with their names.
    ticks: Ticks,
    processes: Vec<Process>,
}

struct Process {
    pid: i32,
    name: String,
    rss_bytes: u64,
    threads: i64,
}

impl Sample {
    fn take(core: i32) -> Sample {
        let cpu = procfs::KernelStats::current().map_or((0, 0), |k| {
            let t = &k.total;
            let idle = t.idle + t.iowait.unwrap_or(0);
            let busy = t.user
                + t.nice
                + t.system
                + t.irq.unwrap_or(0)
                + t.softirq.unwrap_or(0)
                + t.steal.unwrap_or(0);
            (busy, busy + idle)
        });
        let mut ticks = Ticks::new();
        let mut processes = Vec::new();
        for p in procfs::process::all_processes()
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(stat) = p.stat() else { continue };
            if stat.pid != core && stat.ppid != core {
                continue;
            }
            let name = daemon_name(&p.cmdline().unwrap_or_default(), &stat.comm);
            ticks.insert(stat.pid, stat.utime + stat.stime);
            processes.push(Process {
                pid: stat.pid,
                name,
                rss_bytes: stat.rss_bytes().get(),
                threads: stat.num_threads,
            });
        }
        processes.sort_by(|a, b| a.name.cmp(&b.name));
        Sample {
            at: Instant::now(),
            cpu,
            ticks,
            processes,
        }
    }
}

/// A daemon's name as its command line gives it (`verdant-broker`);
/// the supervisor's command line is `verdant init ...`.
fn daemon_name(cmdline: &[String], comm: &str) -> String {
    let first = cmdline.first().map_or("", |s| s.trim());
    let base = first.rsplit('/').next().unwrap_or(first);
    match (base, cmdline.get(1).map(String::as_str)) {
        ("verdant", Some(program)) => format!("verdant-{program}"),
        ("", _) => comm.to_string(),
        _ => base.to_string(),
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole * 1000.0).round() / 10.0
    } else {
        0.0
    }
}

/// The JSON published for the interval from `last` to `now`.
fn report(thing: &str, last: &Sample, now: &Sample, disks: &[String]) -> Value {
    let seconds = now.at.duration_since(last.at).as_secs_f64();
    let busy = now.cpu.0.saturating_sub(last.cpu.0) as f64;
    let total = now.cpu.1.saturating_sub(last.cpu.1) as f64;
    let load = procfs::LoadAverage::current().ok();
    let memory = procfs::Meminfo::current().ok();
    let tps = procfs::ticks_per_second() as f64;
    let processes: Vec<Value> = now
        .processes
        .iter()
        .map(|p| {
            let used = now.ticks[&p.pid].saturating_sub(*last.ticks.get(&p.pid).unwrap_or(&0));
            json!({
                "name": p.name,
                "pid": p.pid,
                "cpu_percent": percent(used as f64 / tps, seconds),
                "rss_bytes": p.rss_bytes,
                "threads": p.threads,
            })
        })
        .collect();
    json!({
        "thing_name": thing,
        "timestamp_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "interval_seconds": (seconds * 1000.0).round() / 1000.0,
        "cpu": {
            "usage_percent": percent(busy, total),
            "cores": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            "load_average": load.map_or(json!(null), |l| {
                json!([l.one, l.five, l.fifteen].map(|x| (f64::from(x) * 100.0).round() / 100.0))
            }),
        },
        "memory": memory.map_or(json!(null), |m| {
            let available = m.mem_available.unwrap_or(m.mem_free);
            json!({
                "total_bytes": m.mem_total,
                "available_bytes": available,
                "used_percent": percent(m.mem_total.saturating_sub(available) as f64, m.mem_total as f64),
            })
        }),
        "disks": disks.iter().map(|d| disk(d)).collect::<Vec<_>>(),
        "network": network(),
        "processes": processes,
    })
}

fn disk(path: &str) -> Value {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let unit = s.fragment_size();
            let total = s.blocks() * unit;
            let available = s.blocks_available() * unit;
            let free = s.blocks_free() * unit;
            json!({
                "path": path,
                "total_bytes": total,
                "available_bytes": available,
                "used_percent": percent(total.saturating_sub(free) as f64, total as f64),
            })
        }
        Err(e) => json!({ "path": path, "error": e.desc() }),
    }
}

fn network() -> Vec<Value> {
    let mut devices: Vec<_> = procfs::net::dev_status()
        .map(|d| d.into_values().collect())
        .unwrap_or_default();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
        .into_iter()
        .map(|d| {
            json!({
                "interface": d.name,
                "rx_bytes": d.recv_bytes,
                "tx_bytes": d.sent_bytes,
                "rx_packets": d.recv_packets,
                "tx_packets": d.sent_packets,
                "rx_errors": d.recv_errs,
                "tx_errors": d.sent_errs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemons_are_named_by_their_command_line() {
        let line = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            daemon_name(&line("verdant-broker"), "verdant-broker"),
            "verdant-broker"
        );
        assert_eq!(
            daemon_name(
                &line("/usr/bin/verdant init --root /var/lib/verdant"),
                "verdant"
            ),
            "verdant-init"
        );
        assert_eq!(daemon_name(&[], "verdant-lambda-"), "verdant-lambda-");
    }

    #[test]
    fn a_report_of_this_process_has_every_section() {
        let me = std::process::id() as i32;
        let first = Sample::take(me);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let second = Sample::take(me);
        let r = report(
            "core",
            &first,
            &second,
            &["/".into(), "/nonexistent".into()],
        );
        assert_eq!(r["thing_name"], "core");
        assert!(r["cpu"]["cores"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["memory"]["total_bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(r["disks"][0]["total_bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(r["disks"][1]["error"].is_string(), "{r}");
        assert!(
            r["network"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["interface"] == "lo"),
            "{r}"
        );
        let own = &r["processes"][0];
        assert_eq!(own["pid"], me, "{r}");
        assert!(own["rss_bytes"].as_u64().unwrap() > 0, "{r}");
    }
}
