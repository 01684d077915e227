//! The hub without sockets: what handing one publish to its subscribers'
//! queues costs (matching, the per-subscriber copies, the queue), with a
//! thousand sessions connected, each subscribed to topics of its own the
//! way devices are. Each iteration publishes once and empties the queues
//! it filled.

use std::hint::black_box;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rumqttc::QoS;
use verdant_broker::hub::{Hub, QueueLimits};
use verdant_broker::message::{ClientInfo, Message, Notification};
use verdant_broker::outbox::{self, Inbox};

const DEVICES: usize = 1000;

fn info(id: &str) -> ClientInfo {
    ClientInfo {
        client_id: id.into(),
        thing_name: None,
        thing_arn: None,
        certificate_subject: None,
        certificate_id: None,
        peer_address: "bench".into(),
        listener: "bench",
        protocol_version: 4,
        clean_start: true,
        clean_session: true,
        session_expiry: 0,
        will_delay: 0,
        connected_at: SystemTime::now(),
    }
}

fn message(topic: &str, qos: QoS) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from_static(&[7; 64]),
        qos,
        retain: false,
        stored: None,
        props: None,
        from: None,
        dup: false,
    }
}

/// A hub with `DEVICES` clean sessions: device i subscribes to
/// `device-i/in`, `cmd/device-i/#` and `fleet/+/device-i`; the first
/// `fan` of them also to `fleet/all`. Returns each device's queue.
fn hub(fan: usize) -> (Hub, Vec<Inbox>) {
    let mut hub = Hub::new(QueueLimits {
        messages: 1000,
        bytes: 1 << 20,
        stuck_after: None,
        hold_qos0: false,
    });
    let mut inboxes = Vec::new();
    for i in 0..DEVICES {
        let id = format!("device-{i}");
        let (tx, rx) = outbox::channel(1000);
        hub.connect(info(&id), None, tx);
        let mut filters = vec![
            (format!("device-{i}/in"), QoS::AtLeastOnce),
            (format!("cmd/device-{i}/#"), QoS::AtLeastOnce),
            (format!("fleet/+/device-{i}"), QoS::AtMostOnce),
        ];
        if i < fan {
            filters.push(("fleet/all".into(), QoS::AtMostOnce));
        }
        hub.subscribe(&id, &filters);
        inboxes.push(rx);
    }
    (hub, inboxes)
}

fn empty(inbox: &Inbox) -> usize {
    let mut n = 0;
    while let Some(out) = inbox.try_recv() {
        if let Notification::Deliver(m) = out {
            black_box(m);
            n += 1;
        }
    }
    n
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub publish");
    group.throughput(Throughput::Elements(1));
    let (mut hub, inboxes) = hub(100);
    for (name, topic, qos) in [
        ("QoS 0 to one subscriber", "device-7/in", QoS::AtMostOnce),
        ("QoS 1 to one subscriber", "device-7/in", QoS::AtLeastOnce),
        // Matched by `cmd/device-7/#` and, at the next level, nothing more:
        // a wildcard filter.
        (
            "QoS 0 through a # filter",
            "cmd/device-7/reboot",
            QoS::AtMostOnce,
        ),
        (
            "QoS 0 through a + filter",
            "fleet/north/device-7",
            QoS::AtMostOnce,
        ),
    ] {
        let m = message(topic, qos);
        group.bench_function(name, |b| {
            b.iter(|| {
                hub.publish(black_box(&m));
                assert_eq!(empty(&inboxes[7]), 1);
            });
        });
    }
    // One session subscribed three ways to the same topic: delivered once.
    let (tx, rx) = outbox::channel(1000);
    hub.connect(info("watcher"), None, tx);
    hub.subscribe(
        "watcher",
        &[
            ("device-7/#".into(), QoS::AtMostOnce),
            ("+/in".into(), QoS::AtLeastOnce),
            ("device-7/in".into(), QoS::AtMostOnce),
        ],
    );
    let m = message("device-7/in", QoS::AtLeastOnce);
    group.bench_function("QoS 1 to two subscribers, one matching thrice", |b| {
        b.iter(|| {
            hub.publish(black_box(&m));
            assert_eq!(empty(&inboxes[7]) + empty(&rx), 2);
        });
    });
    group.finish();

    let mut group = c.benchmark_group("hub fan-out");
    group.throughput(Throughput::Elements(100));
    let m = message("fleet/all", QoS::AtMostOnce);
    group.bench_function("QoS 0 to 100 subscribers", |b| {
        b.iter(|| {
            hub.publish(black_box(&m));
            assert_eq!(inboxes[..100].iter().map(empty).sum::<usize>(), 100);
        });
    });
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
