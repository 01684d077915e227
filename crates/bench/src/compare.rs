//! Runs every MQTT scenario against each target, interleaved run by run so
//! that machine noise hits all of them alike, and prints a markdown table
//! with medians and the ratio of each target to the first.

use rumqttc::QoS;

use crate::mqtt::{self, Load, Outcome, Target, percentile};

enum Scenario {
    Throughput(&'static str, Load),
    Latency(&'static str, QoS, usize, u32, u64),
    /// Publishers, QoS, size, offered messages/s per publisher, seconds.
    Overload(&'static str, usize, QoS, usize, u32, u64),
}

/// A latency run's length. Without `--quick` each of `--runs` is five
/// such runs, the brokers taking turns: on a shared machine a noisy
/// spell of a few seconds then falls on every broker alike, not on one
/// broker's five-second run.
const LATENCY_SECS: u64 = 1;
const LATENCY_SLICES: usize = 5;

fn scenarios(quick: bool) -> Vec<Scenario> {
    let n = |full: usize| if quick { full / 10 } else { full };
    let load = |publishers, subscribers, qos, size, messages| Load {
        publishers,
        subscribers,
        qos,
        size,
        messages: n(messages),
    };
    vec![
        Scenario::Throughput(
            "fan-in 4→1, QoS 0, 64 B",
            load(4, 1, QoS::AtMostOnce, 64, 25_000),
        ),
        Scenario::Throughput(
            "fan-in 4→1, QoS 1, 64 B",
            load(4, 1, QoS::AtLeastOnce, 64, 10_000),
        ),
        Scenario::Throughput(
            "fan-in 4→1, QoS 1, 1 KiB",
            load(4, 1, QoS::AtLeastOnce, 1024, 10_000),
        ),
        Scenario::Throughput(
            "fan-out 1→8, QoS 0, 64 B",
            load(1, 8, QoS::AtMostOnce, 64, 10_000),
        ),
        Scenario::Throughput(
            "fan-out 1→8, QoS 1, 64 B",
            load(1, 8, QoS::AtLeastOnce, 64, 5_000),
        ),
        Scenario::Latency(
            "latency at 1000 msg/s, QoS 0, 64 B",
            QoS::AtMostOnce,
            64,
            1000,
            LATENCY_SECS,
        ),
        Scenario::Latency(
            "latency at 1000 msg/s, QoS 1, 64 B",
            QoS::AtLeastOnce,
            64,
            1000,
            LATENCY_SECS,
        ),
        // Offered faster than either broker delivers QoS 1 fan-in (about
        // 60,000 and 140,000 msg/s here): what arrives, and that all does.
        Scenario::Overload(
            "open-loop overload 4→1 at 4 × 50,000 msg/s offered, QoS 1, 64 B",
            4,
            QoS::AtLeastOnce,
            64,
            if quick { 5_000 } else { 50_000 },
            2,
        ),
        // QoS 0 offered flat out by eight publishers to one subscriber:
        // what arrives and what is lost, by the broker's QoS 0 policy.
        Scenario::Overload(
            "open-loop overload 8→1 at 8 × 50,000 msg/s offered, QoS 0, 64 B",
            8,
            QoS::AtMostOnce,
            64,
            if quick { 5_000 } else { 50_000 },
            2,
        ),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// The connection storm: `clients` connect and subscribe at once, per
/// target, `runs` times; medians of time and of memory per connection.
async fn storm(targets: &[Target], pids: &[(String, u32)], runs: usize, clients: usize) {
    println!(
        "\n| {clients}-client connection storm | connect + subscribe, median s | connections/s | ratio | connected | broker RSS idle KiB | RSS with {clients} idle clients KiB | KiB per idle connection |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut first_rate = 0.0;
    for (t, target) in targets.iter().enumerate() {
        let pid = pids
            .iter()
            .find(|(n, _)| *n == target.name)
            .map(|(_, p)| *p);
        let mut secs = Vec::new();
        let mut per_conn = Vec::new();
        let (mut connected, mut before, mut after) = (0, None, None);
        for r in 0..runs {
            match mqtt::storm(target, clients, pid, &format!("storm{r}{}", target.name)).await {
                Ok(s) => {
                    secs.push(s.seconds);
                    connected = s.connected;
                    // Memory from the first storm only: later ones start
                    // with what the allocator kept from the one before.
                    if r == 0 {
                        before = s.rss_before;
                        after = s.rss_connected;
                        if let (Some(b), Some(a)) = (s.rss_before, s.rss_connected) {
                            per_conn.push(a.saturating_sub(b) as f64 / clients as f64);
                        }
                    }
                }
                Err(e) => eprintln!("{}: {e}", target.name),
            }
        }
        let s = median(secs);
        let rate = if s > 0.0 { clients as f64 / s } else { 0.0 };
        if t == 0 {
            first_rate = rate;
        }
        let ratio = if first_rate > 0.0 {
            format!("{:.2}×", rate / first_rate)
        } else {
            "-".into()
        };
        let kib = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        println!(
            "| | {} {s:.3} | {rate:.0} | {ratio} | {connected} of {clients} | {} | {} | {:.1} |",
            target.name,
            kib(before),
            kib(after),
            median(per_conn)
        );
    }
}

/// Persistent sessions reconnecting at once under a QoS 1 load, per
/// target, `runs` times: the CONNACK times of every run pooled.
async fn reconnect_storm(targets: &[Target], runs: usize, clients: usize) {
    println!(
        "\n| {clients} persistent sessions reconnecting under QoS 1 load | CONNACK p50 ms | p99 ms | max ms | not connected |"
    );
    println!("|---|---|---|---|---|");
    for target in targets {
        let mut all = Vec::new();
        let mut failed = 0;
        for r in 0..runs {
            match crate::reconnect::storm(target, clients, &format!("re{r}{}", target.name)).await {
                Ok((times, f)) => {
                    all.extend(times);
                    failed += f;
                }
                Err(e) => eprintln!("{}: {e}", target.name),
            }
        }
        all.sort_unstable();
        let ms = |p| percentile(&all, p) as f64 / 1000.0;
        println!(
            "| | {} | {:.1} | {:.1} | {:.1} | {failed} |",
            target.name,
            ms(50.0),
            ms(99.0),
            ms(100.0)
        );
    }
}

/// What to run: see `verdant-bench mqtt --help`.
pub struct Plan {
    pub runs: usize,
    pub quick: bool,
    pub storm_only: bool,
    pub routed: bool,
    pub only: Option<String>,
    /// Where to write each latency run's latencies, one per line in the
    /// order they arrived (`<dir>/<scenario><run><target>.txt`), to see
    /// when the slow messages came.
    pub latencies_to: Option<std::path::PathBuf>,
}

/// One run of `scenario` against `target`.
async fn one_run(scenario: &Scenario, target: &Target, tag: &str) -> Result<Outcome, String> {
    match scenario {
        Scenario::Throughput(_, load) => mqtt::throughput(target, *load, tag).await,
        Scenario::Latency(_, qos, size, rate, secs) => {
            mqtt::latency(target, *qos, *size, *rate, *secs, tag).await
        }
        Scenario::Overload(_, publishers, qos, size, rate, secs) => {
            mqtt::paced(target, *publishers, *qos, *size, *rate, *secs, tag).await
        }
    }
}

pub async fn run(targets: &[Target], pids: &[(String, u32)], plan: &Plan) {
    let (runs, quick, routed) = (plan.runs, plan.quick, plan.routed);
    if plan.storm_only {
        storm(targets, pids, runs, if quick { 100 } else { 1000 }).await;
        reconnect_storm(targets, runs, if quick { 100 } else { 1000 }).await;
        return;
    }
    println!(
        "| scenario | broker | msg/s (median of {runs}) | ratio | lost | duplicated | p50 µs | p99 µs | p99.9 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, scenario) in scenarios(quick).into_iter().enumerate() {
        let name = match &scenario {
            Scenario::Throughput(n, _) | Scenario::Latency(n, ..) | Scenario::Overload(n, ..) => *n,
        };
        if plan
            .only
            .as_ref()
            .is_some_and(|only| !name.contains(only.as_str()))
        {
            continue;
        }
        let mut results: Vec<Vec<Outcome>> = vec![Vec::new(); targets.len()];
        let rounds = match scenario {
            Scenario::Latency(..) if !quick => runs * LATENCY_SLICES,
            _ => runs,
        };
        for r in 0..rounds {
            // Each run starts with the next target: no broker always runs
            // right after the same other one.
            for k in 0..targets.len() {
                let t = (k + r) % targets.len();
                let target = &targets[t];
                let tag = if routed {
                    ROUTED_TAG.to_string()
                } else {
                    format!("bench{i}r{r}{}", target.name)
                };
                match one_run(&scenario, target, &tag).await {
                    Ok(o) => results[t].push(kept(o, plan, &scenario, &tag)),
                    Err(e) => eprintln!("{}: {e}", target.name),
                }
            }
        }
        let first = median(results[0].iter().map(|o| o.rate).collect());
        let first_p99 = median(
            results[0]
                .iter()
                .map(|o| percentile(&o.latencies, 99.0) as f64)
                .collect(),
        );
        for (t, target) in targets.iter().enumerate() {
            let rs = &results[t];
            let rate = median(rs.iter().map(|o| o.rate).collect());
            let lost: u64 = rs.iter().map(|o| o.lost).sum();
            let expected: u64 = rs.iter().map(|o| o.expected).sum();
            let dup: u64 = rs.iter().map(|o| o.duplicated).sum();
            let p = |q| {
                median(
                    rs.iter()
                        .map(|o| percentile(&o.latencies, q) as f64)
                        .collect(),
                )
            };
            let ratio = match &scenario {
                Scenario::Throughput(..) | Scenario::Overload(..) if first > 0.0 => {
                    format!("{:.2}× throughput", rate / first)
                }
                Scenario::Latency(..) if first_p99 > 0.0 => {
                    format!("{:.2}× p99", p(99.0) / first_p99)
                }
                _ => "-".into(),
            };
            println!(
                "| {name} | {} | {rate:.0} | {ratio} | {lost} of {expected} | {dup} | {:.0} | {:.0} | {:.0} |",
                target.name,
                p(50.0),
                p(99.0),
                p(99.9)
            );
        }
        if matches!(scenario, Scenario::Latency(..)) {
            pooled(name, targets, &results);
        }
    }
    println!();
    for (name, pid) in pids {
        if let Some(peak) = mqtt::peak_rss_kib(*pid) {
            println!("peak RSS of {name} so far (VmHWM): {peak} KiB");
        }
    }
    if !routed && plan.only.is_none() {
        storm(targets, pids, runs, if quick { 100 } else { 1000 }).await;
    }
}

/// A run's outcome with its latencies sorted, written first in the order
/// they came when the plan asks (`<dir>/<tag>.txt`, one per line; a file
/// that cannot be written is reported and the run goes on).
fn kept(mut o: Outcome, plan: &Plan, scenario: &Scenario, tag: &str) -> Outcome {
    if let (Some(dir), Scenario::Latency(..)) = (&plan.latencies_to, scenario) {
        let path = dir.join(format!("{tag}.txt"));
        let text = o.latencies.iter().fold(String::new(), |mut text, l| {
            text.push_str(&l.to_string());
            text.push('\n');
            text
        });
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("{}: {e}", path.display());
        }
    }
    o.latencies.sort_unstable();
    o
}

/// A latency scenario's rows over all runs together: a run's p99 rests
/// on its few worst messages, the pooled one on many more.
fn pooled(name: &str, targets: &[Target], results: &[Vec<Outcome>]) {
    let pooled: Vec<Vec<u64>> = results
        .iter()
        .map(|rs| {
            let mut all: Vec<u64> = rs.iter().flat_map(|o| o.latencies.clone()).collect();
            all.sort_unstable();
            all
        })
        .collect();
    let first = pooled.first().map_or(0, |all| percentile(all, 99.0)) as f64;
    for (target, all) in targets.iter().zip(&pooled) {
        let q = |q| percentile(all, q);
        let ratio = if first > 0.0 {
            format!("{:.2}× p99", q(99.0) as f64 / first)
        } else {
            "-".into()
        };
        println!(
            "| {name}, all runs pooled | {} | | {ratio} | | | {} | {} | {} |",
            target.name,
            q(50.0),
            q(99.0),
            q(99.9)
        );
    }
}

/// The tag of every scenario in routed mode, so client ids are fixed.
const ROUTED_TAG: &str = "bench";

/// The group for routed mode: the scenarios' clients as things (at most
/// 8 publishers and 8 subscribers), and a route from every publisher to
/// every subscriber on the scenarios' topics.
pub fn group() -> String {
    let name = |role: &str, i: Option<usize>| match i {
        Some(i) => format!("{ROUTED_TAG}-{role}{i}"),
        None => format!("{ROUTED_TAG}-{role}"),
    };
    let indexes = || std::iter::once(None).chain((0..8).map(Some));
    let arn = |n: &str| format!("arn:aws:iot:us-east-1:123456789012:thing/{n}");
    let mut things = vec![];
    let mut n = 0u8;
    let mut thing = |name: &str| {
        n += 1;
        serde_json::json!({
            "Id": name,
            "ThingArn": arn(name),
            "CertificateArn": format!(
                "arn:aws:iot:us-east-1:123456789012:cert/{}",
                format!("{n:02x}").repeat(32)
            ),
        })
    };
    let core = thing("bench-core");
    let publishers: Vec<String> = indexes().map(|i| name("p", i)).collect();
    let subscribers: Vec<String> = indexes().map(|i| name("s", i)).collect();
    for t in publishers.iter().chain(&subscribers) {
        things.push(thing(t));
    }
    let mut routes = vec![];
    for p in &publishers {
        for s in &subscribers {
            routes.push(serde_json::json!({
                "Id": format!("{p}-to-{s}"),
                "Source": arn(p),
                "Subject": format!("{ROUTED_TAG}/#"),
                "Target": arn(s),
            }));
        }
    }
    serde_json::json!({
        "Id": "bench",
        "CoreDefinitionVersion": { "Cores": [core] },
        "DeviceDefinitionVersion": { "Devices": things },
        "SubscriptionDefinitionVersion": { "Subscriptions": routes },
    })
    .to_string()
}
