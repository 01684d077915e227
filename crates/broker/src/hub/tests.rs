//! The hub without sockets: outboxes are channels.
use super::*;
use crate::outbox::{self, Inbox};
use bytes::Bytes;

fn limits(messages: usize) -> QueueLimits {
    QueueLimits {
        messages,
        bytes: 1 << 20,
        stuck_after: None,
        hold_qos0: false,
    }
}

fn info(id: &str, clean: bool) -> ClientInfo {
    ClientInfo {
        client_id: id.into(),
        thing_name: None,
        thing_arn: None,
        certificate_subject: None,
        certificate_id: None,
        peer_address: "test".into(),
        listener: "test",
        protocol_version: 4,
        clean_start: clean,
        clean_session: clean,
        session_expiry: if clean { 0 } else { NEVER },
        will_delay: 0,
        connected_at: SystemTime::now(),
    }
}

/// A 5.0 client keeping its session `expiry` seconds, will delay `delay`.
fn info5(id: &str, expiry: u32, delay: u32) -> ClientInfo {
    ClientInfo {
        protocol_version: 5,
        clean_start: false,
        clean_session: expiry == 0,
        session_expiry: expiry,
        will_delay: delay,
        ..info(id, false)
    }
}

#[test]
fn mqtt5_will_delay_session_expiry_and_coming_back_in_time() {
    use std::time::{Duration, Instant};
    let mut hub = Hub::new(limits(10));
    let (tx, mut watcher) = outbox::channel(10);
    hub.connect(info("watcher", true), None, tx);
    hub.subscribe("watcher", &[("will/#".into(), QoS::AtMostOnce)]);
    let will = |t: &str| msg(t, QoS::AtMostOnce, false, "gone");

    // Vanishes: the will waits for its 5 s delay, then goes.
    let (tx, _rx) = outbox::channel(10);
    let c = hub.connect(info5("late", 60, 5), Some(will("will/late")), tx);
    hub.disconnect("late", c.connection_id, false, Vec::new());
    let t0 = Instant::now();
    hub.sweep(t0 + Duration::from_secs(4));
    assert!(drain(&mut watcher).is_empty(), "not before the delay");
    hub.sweep(t0 + Duration::from_secs(6));
    assert_eq!(drain(&mut watcher)[0].topic, "will/late");

    // Comes back within the delay: no will.
    let (tx, _rx) = outbox::channel(10);
    let c = hub.connect(info5("back", 60, 5), Some(will("will/back")), tx);
    hub.disconnect("back", c.connection_id, false, Vec::new());
    let (tx, _rx) = outbox::channel(10);
    let again = hub.connect(info5("back", 60, 5), None, tx);
    assert!(again.session_present);
    hub.sweep(t0 + Duration::from_secs(10));
    assert!(
        drain(&mut watcher).is_empty(),
        "the will of a client that came back"
    );

    // The session ends before the delay: the will goes with it.
    let (tx, _rx) = outbox::channel(10);
    let c = hub.connect(info5("short", 2, 30), Some(will("will/short")), tx);
    hub.subscribe("short", &[("x".into(), QoS::AtLeastOnce)]);
    hub.disconnect("short", c.connection_id, false, Vec::new());
    assert!(hub.has_timers());
    hub.sweep(Instant::now() + Duration::from_secs(3));
    assert_eq!(drain(&mut watcher)[0].topic, "will/short");
    let (tx, _rx) = outbox::channel(10);
    let c = hub.connect(info5("short", 2, 0), None, tx);
    assert!(!c.session_present, "the expired session is gone");
    assert!(!hub.expiring.contains_key("short") && !hub.wills.contains_key("short"));
}

fn msg(topic: &str, qos: QoS, retain: bool, payload: &str) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain,
        stored: None,
        props: None,
        from: None,
        dup: false,
    }
}

fn drain(rx: &mut Inbox) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(o) = rx.try_recv() {
        if let Notification::Deliver(m) = o {
            out.push(m);
        }
    }
    out
}

#[test]
fn fan_out_once_per_client_at_granted_qos() {
    let mut hub = Hub::new(limits(10));
    let (tx, mut rx) = outbox::channel(10);
    hub.connect(info("a", true), None, tx);
    hub.subscribe(
        "a",
        &[
            ("x/#".into(), QoS::AtMostOnce),
            ("x/+".into(), QoS::AtLeastOnce),
        ],
    );
    hub.publish(&msg("x/y", QoS::ExactlyOnce, false, "1"));
    hub.publish(&msg("z", QoS::AtLeastOnce, false, "2"));
    let got = drain(&mut rx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert!(!got[0].retain);
}

#[test]
fn mqtt5_no_local_and_retain_as_published_with_overlapping_filters() {
    use crate::wire::SubOptions;
    let mut hub = Hub::new(limits(10));
    let (tx, mut rx) = outbox::channel(10);
    hub.connect(info("a", true), None, tx);
    let no_local = SubOptions {
        no_local: true,
        ..SubOptions::default()
    };
    hub.subscribe_with("a", &[("n/#".into(), QoS::AtLeastOnce, no_local)]);
    let own = |topic: &str, retain: bool| Message {
        from: Some("a".into()),
        ..msg(topic, QoS::AtLeastOnce, retain, "x")
    };
    hub.publish(&own("n/1", false));
    assert!(
        drain(&mut rx).is_empty(),
        "own message on a no-local filter"
    );
    hub.publish(&msg("n/1", QoS::AtLeastOnce, false, "other"));
    assert_eq!(drain(&mut rx).len(), 1, "another client's message");
    // An overlapping filter without "no local", retaining as published.
    let rap = SubOptions {
        retain_as_published: true,
        ..SubOptions::default()
    };
    hub.subscribe_with("a", &[("n/+".into(), QoS::AtMostOnce, rap)]);
    hub.publish(&own("n/2", true));
    let got = drain(&mut rx);
    assert_eq!(got.len(), 1, "delivered once, by the filter that allows it");
    assert!(got[0].retain, "retain as published");
    // Retain handling 1: retained messages only for a new subscription.
    let on_new = SubOptions {
        retain_handling: 1,
        ..SubOptions::default()
    };
    assert_eq!(
        hub.subscribe_with("a", &[("n/2".into(), QoS::AtMostOnce, on_new)])
            .len(),
        1
    );
    assert!(
        hub.subscribe_with("a", &[("n/2".into(), QoS::AtMostOnce, on_new)])
            .is_empty()
    );
}

#[test]
fn shared_subscriptions_take_turns_and_prefer_connected_members() {
    let mut hub = Hub::new(limits(100));
    let (tx_a, mut a) = outbox::channel(100);
    let (tx_b, mut b) = outbox::channel(100);
    hub.connect(info("a", true), None, tx_a);
    hub.connect(info("b", true), None, tx_b);
    hub.publish(&msg("jobs/0", QoS::AtLeastOnce, true, "retained"));
    for c in ["a", "b"] {
        let retained = hub.subscribe(c, &[("$share/workers/jobs/+".into(), QoS::AtLeastOnce)]);
        assert!(
            retained.is_empty(),
            "no retained messages for shared subscriptions"
        );
    }
    for i in 0..10 {
        hub.publish(&msg(&format!("jobs/{i}"), QoS::AtLeastOnce, false, "j"));
    }
    assert_eq!(
        (drain(&mut a).len(), drain(&mut b).len()),
        (5, 5),
        "in turn"
    );
    // A persistent member that left gets nothing while another is there.
    let (tx_p, _p) = outbox::channel(100);
    let p = hub.connect(info("p", false), None, tx_p);
    hub.subscribe("p", &[("$share/workers/jobs/+".into(), QoS::AtLeastOnce)]);
    hub.disconnect("p", p.connection_id, true, Vec::new());
    for i in 0..6 {
        hub.publish(&msg(&format!("jobs/{i}"), QoS::AtLeastOnce, false, "j"));
    }
    assert_eq!(drain(&mut a).len() + drain(&mut b).len(), 6);
    // Unsubscribed members leave the group; the last one ends it.
    hub.unsubscribe("a", &["$share/workers/jobs/+".into()]);
    hub.unsubscribe("b", &["$share/workers/jobs/+".into()]);
    hub.publish(&msg("jobs/x", QoS::AtLeastOnce, false, "j"));
    assert_eq!(
        hub.sessions["p"].queue.len(),
        1,
        "the absent member is the only one left"
    );
}

#[test]
fn a_full_outbox_parks_qos1_in_order_and_congestion_holds_acknowledgements() {
    let mut hub = Hub::new(limits(100));
    let (tx, mut rx) = outbox::channel(2);
    hub.connect(info("slow", true), None, tx);
    hub.subscribe("slow", &[("t".into(), QoS::AtLeastOnce)]);
    for i in 0..5 {
        hub.publish(&msg("t", QoS::AtLeastOnce, false, &i.to_string()));
    }
    hub.publish(&msg("t", QoS::AtMostOnce, false, "qos0"));
    assert!(hub.congested());
    assert!(hub.congestion().load(Ordering::Acquire));
    let (held, mut answer) = tokio::sync::oneshot::channel();
    hub.hold(held, vec!["slow".into()]);
    assert!(
        answer.try_recv().is_err(),
        "held while its subscriber is behind"
    );
    let mut got = drain(&mut rx);
    hub.unpark();
    got.extend(drain(&mut rx));
    hub.unpark();
    got.extend(drain(&mut rx));
    hub.unpark();
    let payloads: Vec<_> = got.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(
        payloads,
        ["0", "1", "2", "3", "4"],
        "QoS 1 in order, none lost"
    );
    assert_eq!(hub.counters.dropped_qos0, 1, "QoS 0 is dropped, not parked");
    assert!(!hub.congested());
    assert_eq!(answer.try_recv(), Ok(true), "held acknowledgement released");
}

#[test]
fn parked_messages_of_a_connection_that_ended_go_to_its_persistent_session() {
    let mut hub = Hub::new(limits(100));
    let (tx, rx) = outbox::channel(1);
    let c = hub.connect(info("p", false), None, tx);
    hub.subscribe("p", &[("t".into(), QoS::AtLeastOnce)]);
    for i in 0..3 {
        hub.publish(&msg("t", QoS::AtLeastOnce, false, &i.to_string()));
    }
    // The connection is gone (its task took the outbox's message along)
    // before the hub heard of it.
    drop(rx);
    hub.unpark();
    hub.disconnect("p", c.connection_id, false, Vec::new());
    let queued: Vec<_> = hub.sessions["p"]
        .queue
        .iter()
        .map(|m| m.payload.clone())
        .collect();
    assert_eq!(queued, ["1", "2"], "both parked messages kept, in order");
}

#[test]
fn retained_set_replace_clear_and_sent_on_subscribe() {
    let mut hub = Hub::new(limits(10));
    hub.publish(&msg("r/1", QoS::AtLeastOnce, true, "old"));
    hub.publish(&msg("r/1", QoS::AtLeastOnce, true, "new"));
    hub.publish(&msg("r/2", QoS::AtMostOnce, true, "two"));
    hub.publish(&msg("r/2", QoS::AtMostOnce, true, ""));
    let (tx, _rx) = outbox::channel(10);
    hub.connect(info("a", true), None, tx);
    let retained = hub.subscribe("a", &[("r/#".into(), QoS::AtMostOnce)]);
    assert_eq!(retained.len(), 1);
    assert_eq!(retained[0].payload, Bytes::from_static(b"new"));
    assert!(retained[0].retain);
    assert_eq!(retained[0].qos, QoS::AtMostOnce);
}

#[test]
fn persistent_session_queues_while_away_and_will_on_abrupt_end() {
    let mut hub = Hub::new(limits(2));
    let (tx, _rx) = outbox::channel(10);
    let c = hub.connect(info("p", false), None, tx);
    hub.subscribe("p", &[("t".into(), QoS::AtLeastOnce)]);
    hub.disconnect(
        "p",
        c.connection_id,
        true,
        vec![msg("t", QoS::AtLeastOnce, false, "unacked")],
    );
    hub.publish(&msg("t", QoS::AtLeastOnce, false, "a"));
    hub.publish(&msg("t", QoS::AtMostOnce, false, "qos0 not queued"));
    hub.publish(&msg("t", QoS::AtLeastOnce, false, "over the limit"));
    assert_eq!(hub.counters.dropped_queue_full, 1);

    let (wtx, mut wrx) = outbox::channel(10);
    let w = hub.connect(info("watcher", true), None, wtx);
    hub.subscribe("watcher", &[("will".into(), QoS::AtMostOnce)]);

    let (tx, _rx) = outbox::channel(10);
    let c = hub.connect(
        info("p", false),
        Some(msg("will", QoS::AtMostOnce, false, "gone")),
        tx,
    );
    assert!(c.session_present);
    let payloads: Vec<_> = c.queued.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(
        payloads,
        vec![Bytes::from_static(b"unacked"), Bytes::from_static(b"a")]
    );
    hub.disconnect("p", c.connection_id, false, Vec::new());
    assert_eq!(drain(&mut wrx)[0].payload, Bytes::from_static(b"gone"));
    let _ = w;
}

#[test]
fn take_over_closes_the_old_connection_and_clean_session_forgets() {
    let mut hub = Hub::new(limits(10));
    let (tx1, rx1) = outbox::channel(10);
    let first = hub.connect(info("c", false), None, tx1);
    hub.subscribe("c", &[("t".into(), QoS::AtMostOnce)]);
    let (tx2, mut rx2) = outbox::channel(10);
    let second = hub.connect(info("c", true), None, tx2);
    assert!(matches!(rx1.try_recv(), Some(Notification::Close(0x8E, _))));
    assert!(!second.session_present);
    assert_eq!(hub.subscription_count("c"), 0);
    // Nor does the index still route the old filter to it.
    hub.publish(&msg("t", QoS::AtMostOnce, false, "x"));
    assert!(drain(&mut rx2).is_empty());
    // The old connection's late disconnect does not end the new one.
    hub.disconnect("c", first.connection_id, false, Vec::new());
    assert!(hub.clients()[0].connected);
}

#[test]
fn durable_subscriptions_count_only_persistent_sessions_with_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = Store::open(&dir.path().join("s.db")).unwrap();
    let mut hub = Hub::with_store(limits(10), store, loaded);
    let count = hub.durable_subscriptions();
    let (tx, _rx) = outbox::channel(10);
    hub.connect(info("clean", true), None, tx);
    hub.subscribe("clean", &[("a".into(), QoS::AtLeastOnce)]);
    hub.count_durable_subscriptions();
    assert_eq!(count.load(Ordering::Acquire), 0);
    let (tx, _rx) = outbox::channel(10);
    hub.connect(info("kept", false), None, tx);
    hub.subscribe(
        "kept",
        &[
            ("a".into(), QoS::AtLeastOnce),
            ("b".into(), QoS::AtMostOnce),
        ],
    );
    hub.count_durable_subscriptions();
    assert_eq!(count.load(Ordering::Acquire), 2);
    let (tx, _rx) = outbox::channel(10);
    hub.connect(info("kept", true), None, tx); // clean now: forgotten
    hub.count_durable_subscriptions();
    assert_eq!(count.load(Ordering::Acquire), 0);
    // Without a store nothing is durable.
    let mut memory = Hub::new(limits(10));
    let (tx, _rx) = outbox::channel(10);
    memory.connect(info("kept", false), None, tx);
    memory.subscribe("kept", &[("a".into(), QoS::AtLeastOnce)]);
    memory.count_durable_subscriptions();
    assert_eq!(memory.durable_subscriptions().load(Ordering::Acquire), 0);
}

#[test]
fn take_over_hands_unacked_messages_of_a_persistent_session_to_the_new_connection() {
    let mut hub = Hub::new(limits(10));
    let (tx1, _rx1) = outbox::channel(10);
    let first = hub.connect(info("p", false), None, tx1);
    let (tx2, mut rx2) = outbox::channel(10);
    hub.connect(info("p", false), None, tx2);
    hub.disconnect(
        "p",
        first.connection_id,
        false,
        vec![msg("t", QoS::AtLeastOnce, false, "in flight")],
    );
    let got = drain(&mut rx2);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from_static(b"in flight"));
}

#[test]
fn queued_bytes_are_limited_per_session() {
    let mut hub = Hub::new(QueueLimits {
        messages: 100,
        bytes: 10,
        stuck_after: None,
        hold_qos0: false,
    });
    let (tx, _rx) = outbox::channel(10);
    let c = hub.connect(info("p", false), None, tx);
    hub.subscribe("p", &[("t".into(), QoS::AtLeastOnce)]);
    hub.disconnect("p", c.connection_id, true, Vec::new());
    hub.publish(&msg("t", QoS::AtLeastOnce, false, "12345678")); // 9 bytes: kept
    hub.publish(&msg("t", QoS::AtLeastOnce, false, "12")); // 12 in all: refused
    assert_eq!(hub.counters.dropped_queue_full, 1);
    let (tx, _rx) = outbox::channel(10);
    let back = hub.connect(info("p", false), None, tx);
    assert_eq!(back.queued.len(), 1);
}

#[test]
fn wills_of_clients_connected_at_a_crash_are_published_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let will = |t: &str, retain| msg(t, QoS::AtLeastOnce, retain, "gone");
    {
        let (store, loaded) = Store::open(&path).unwrap();
        let mut hub = Hub::with_store(limits(10), store, loaded);
        let (tx, _rx) = outbox::channel(10);
        hub.connect(info("watcher", false), None, tx);
        hub.subscribe("watcher", &[("will/#".into(), QoS::AtLeastOnce)]);
        let mut outboxes = Vec::new();
        for (id, clean, retain) in [("c", true, false), ("p", false, true)] {
            let (tx, rx) = outbox::channel(10);
            outboxes.push(rx);
            hub.connect(
                info(id, clean),
                Some(will(&format!("will/{id}"), retain)),
                tx,
            );
        }
        // A 5.0 client with a will delay, and one that leaves cleanly.
        let (tx, _rx) = outbox::channel(10);
        hub.connect(info5("late", 60, 5), Some(will("will/late", false)), tx);
        let (tx, _rx) = outbox::channel(10);
        let polite = hub.connect(info("polite", true), Some(will("will/polite", false)), tx);
        hub.disconnect("polite", polite.connection_id, true, Vec::new());
        hub.store.as_mut().unwrap().commit().unwrap();
        // The broker dies here: no disconnect reaches the hub.
    }
    let (store, loaded) = Store::open(&path).unwrap();
    assert_eq!(
        loaded.wills.len(),
        3,
        "the polite client's will was discarded"
    );
    let mut hub = Hub::with_store(limits(10), store, loaded);
    assert_eq!(hub.publish_restored_wills(), 3);
    let (tx, mut watcher) = outbox::channel(10);
    let back = hub.connect(info("watcher", false), None, tx);
    let topics: Vec<String> = back.queued.iter().map(|m| m.topic.clone()).collect();
    assert_eq!(topics, vec!["will/c", "will/p"], "published at start");
    assert!(
        hub.retained.contains_key("will/p"),
        "a retained will is retained"
    );
    // The 5.0 client's session came back: its will waits for its delay.
    hub.sweep(std::time::Instant::now() + std::time::Duration::from_secs(6));
    assert_eq!(drain(&mut watcher)[0].topic, "will/late");
    hub.store.as_mut().unwrap().commit().unwrap();
    drop(hub);
    let (_, loaded) = Store::open(&path).unwrap();
    assert!(loaded.wills.is_empty(), "published wills are forgotten");
}

#[test]
fn a_connack_waits_for_the_disk_only_to_end_a_session_or_keep_a_will() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = Store::open(&dir.path().join("s.db")).unwrap();
    let mut hub = Hub::with_store(limits(10), store, loaded);
    let connect = |hub: &mut Hub, info: ClientInfo, will: Option<Message>| {
        let (tx, _rx) = outbox::channel(10);
        hub.connect(info, will, tx).wait_for_commit
    };
    assert!(
        !connect(&mut hub, info("p", false), None),
        "a new persistent session"
    );
    assert!(!connect(&mut hub, info("p", false), None), "resumed");
    let will = msg("gone", QoS::AtMostOnce, false, "x");
    assert!(connect(&mut hub, info("w", true), Some(will)), "a will");
    assert!(
        connect(&mut hub, info("p", true), None),
        "a persistent session ended"
    );
}

#[test]
fn a_connection_whose_certificate_is_not_allowed_any_more_is_closed() {
    let mut hub = Hub::new(limits(10));
    let device = |id: &str, cert: &str| ClientInfo {
        thing_name: Some(id.into()),
        certificate_id: Some(cert.into()),
        ..info(id, true)
    };
    let (old_tx, old_rx) = outbox::channel(10);
    hub.connect(device("dev", "old-cert"), None, old_tx);
    let (other_tx, other_rx) = outbox::channel(10);
    hub.connect(device("other", "other-cert"), None, other_tx);
    // The thing is still in the group, with another certificate now.
    let members = crate::identity::Members {
        things: ["dev".to_string(), "other".to_string()].into(),
        certificates: ["new-cert".to_string(), "other-cert".to_string()].into(),
    };
    hub.keep_only(&members);
    assert!(matches!(
        old_rx.try_recv(),
        Some(Notification::Close(0x87, _))
    ));
    assert!(other_rx.try_recv().is_none(), "its certificate is allowed");
}
