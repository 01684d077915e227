//! Route matching: how many (source, topic) lookups a 1,000-entry table
//! answers per second on one core. The table has the shape of a real group:
//! 100 devices with telemetry to the cloud, device-to-device and shadow
//! routes, and commands and shadow replies coming back.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use verdant_group::routes::{Route, RouteIndex, Table};

fn arn(i: usize) -> String {
    format!("arn:aws:iot:eu-west-1:123456789012:thing/device-{i}")
}

fn table() -> Table {
    let mut routes = Vec::new();
    let mut add = |source: String, subject: String, target: String| {
        routes.push(Route {
            id: format!("r{}", routes.len()),
            source,
            subject,
            target,
        });
    };
    for i in 0..100 {
        let me = arn(i);
        let next = arn((i + 1) % 100);
        add(
            me.clone(),
            format!("device-{i}/telemetry/#"),
            "cloud".into(),
        );
        add(me.clone(), format!("device-{i}/events/+"), "cloud".into());
        add(
            me.clone(),
            format!("device-{i}/local/+/state"),
            next.clone(),
        );
        add(me.clone(), format!("line/{}/+/status", i % 10), next);
        add(
            me.clone(),
            format!("$aws/things/device-{i}/shadow/#"),
            "GGShadowService".into(),
        );
        add(
            "GGShadowService".into(),
            format!("$aws/things/device-{i}/shadow/#"),
            me.clone(),
        );
        add("cloud".into(), format!("cmd/device-{i}/#"), me.clone());
        add("cloud".into(), format!("fleet/+/device-{i}"), me.clone());
        add("cloud".into(), "broadcast/#".into(), me.clone());
        add(
            "arn:aws:lambda:eu-west-1:123456789012:function:f:1".into(),
            format!("device-{i}/config"),
            me,
        );
    }
    assert_eq!(routes.len(), 1000);
    Table::new(1, routes)
}

fn lookups() -> Vec<(String, String)> {
    (0..1000)
        .map(|k| {
            let i = k % 100;
            match k % 6 {
                0 => (arn(i), format!("device-{i}/telemetry/temp/1")),
                1 => (arn(i), format!("device-{i}/local/door/state")),
                2 => (arn(i), format!("$aws/things/device-{i}/shadow/update")),
                3 => ("cloud".to_string(), format!("cmd/device-{i}/reboot")),
                4 => (
                    "GGShadowService".to_string(),
                    format!("$aws/things/device-{i}/shadow/update/accepted"),
                ),
                _ => (arn(i), format!("device-{i}/unrouted/topic")),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let table = table();
    let lookups = lookups();
    let mut out: Vec<RouteIndex> = Vec::new();
    let mut g = c.benchmark_group("route_matching");
    g.throughput(Throughput::Elements(lookups.len() as u64));
    g.bench_function("1000_routes_1000_lookups", |b| {
        b.iter(|| {
            let mut n = 0;
            for (source, topic) in &lookups {
                table.matching(black_box(source), black_box(topic), &mut out);
                n += out.len();
            }
            n
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
