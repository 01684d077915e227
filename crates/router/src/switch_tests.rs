//! The switch without sockets: links are channels.
use super::*;
use verdant_group::routes::Route;

const DEV_A: &str = "arn:aws:iot:r:1:thing/a";
const DEV_B: &str = "arn:aws:iot:r:1:thing/b";

fn table() -> Table {
    let r = |id: &str, s: &str, subj: &str, t: &str| Route {
        id: id.into(),
        source: s.into(),
        subject: subj.into(),
        target: t.into(),
    };
    Table::new(
        7,
        vec![
            r("a-b", DEV_A, "x/#", DEV_B),
            r("a-cloud", DEV_A, "x/#", "cloud"),
            r("cloud-b", "cloud", "cmd/+", DEV_B),
            r(
                "a-shadow",
                DEV_A,
                "$aws/things/a/shadow/#",
                "GGShadowService",
            ),
        ],
    )
}

fn switch(held: usize) -> Switch {
    Switch::new(table(), held, tokio::sync::broadcast::channel(16).0)
}

fn msg(id: u64, source: &str, topic: &str, qos: u8) -> Message {
    Message {
        id,
        source: source.into(),
        topic: topic.into(),
        payload: Bytes::from_static(b"p"),
        qos,
        retain: false,
        targets: Vec::new(),
        table_version: 7,
        all_or_error: false,
    }
}

fn link(
    s: &mut Switch,
    endpoint: Endpoint,
    generation: u64,
) -> (LinkId, mpsc::UnboundedReceiver<Down>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let id = LinkId {
        endpoint,
        generation,
    };
    s.handle(Event::Linked {
        link: id,
        down: tx,
        credit: 100,
    });
    (id, rx)
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Down>) -> Vec<Down> {
    let mut v = Vec::new();
    while let Ok(d) = rx.try_recv() {
        v.push(d);
    }
    v
}

fn messages(downs: &[Down]) -> Vec<Message> {
    downs
        .iter()
        .filter_map(|d| match d {
            Down::Messages(m) => Some(m.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The topics of the messages a link got.
fn topics(rx: &mut mpsc::UnboundedReceiver<Down>) -> Vec<String> {
    messages(&drain(rx)).into_iter().map(|m| m.topic).collect()
}

fn acks(downs: &[Down]) -> (Vec<u64>, Vec<u64>) {
    let mut out = (Vec::new(), Vec::new());
    for d in downs {
        if let Down::Acks { ids, refused } = d {
            out.0.extend(ids);
            out.1.extend(refused);
        }
    }
    out
}

#[test]
fn broker_gets_the_table_and_only_non_device_targets_come_through_the_router() {
    let mut s = switch(10);
    let (broker, mut brx) = link(&mut s, Endpoint::Broker, 1);
    let (cloud, mut crx) = link(&mut s, Endpoint::Cloud, 1);
    assert!(matches!(drain(&mut brx)[0], Down::Table(_)));
    s.handle(Event::Up(broker, vec![msg(1, DEV_A, "x/1", 1)]));
    let tocloud = messages(&drain(&mut crx));
    assert_eq!(tocloud.len(), 1);
    assert_eq!(tocloud[0].targets, ["cloud"]);
    // Not acknowledged to the broker until the cloud bridge has it.
    assert_eq!(acks(&drain(&mut brx)), (vec![], vec![]));
    s.handle(Event::Acks {
        link: cloud,
        ids: vec![tocloud[0].id],
        refused: vec![],
    });
    assert_eq!(acks(&drain(&mut brx)), (vec![1], vec![]));
    // From the cloud to a device: down to the broker with its name.
    s.handle(Event::Up(cloud, vec![msg(5, "cloud", "cmd/go", 0)]));
    let to_broker = messages(&drain(&mut brx));
    assert_eq!(to_broker[0].targets, ["b"]);
    let view = s.view();
    assert_eq!(view.routes[1].1, 1); // a-cloud
    assert_eq!(view.routes[2].1, 1); // cloud-b
}

#[test]
fn no_route_is_counted_and_acknowledged() {
    let mut s = switch(10);
    let (broker, mut brx) = link(&mut s, Endpoint::Broker, 1);
    s.handle(Event::Up(broker, vec![msg(3, DEV_B, "x/1", 1)]));
    assert_eq!(acks(&drain(&mut brx)), (vec![3], vec![]));
    assert_eq!(s.view().no_route, vec![(DEV_B.to_string(), 1)]);
}

#[test]
fn held_while_unlinked_resent_after_relink_and_full_queue_drops_or_refuses() {
    let mut s = switch(2);
    let (broker, mut brx) = link(&mut s, Endpoint::Broker, 1);
    let (shadow, _srx) = link(&mut s, Endpoint::Shadow, 1);
    let topic = "$aws/things/a/shadow/update";
    s.handle(Event::Up(broker, vec![msg(1, DEV_A, topic, 1)]));
    // The shadow daemon dies before acknowledging.
    s.handle(Event::Unlinked(shadow));
    s.handle(Event::Up(broker, vec![msg(2, DEV_A, topic, 1)]));
    // Over the held limit of 2: the shadow's copy is lost and counted, and
    // the device is acknowledged; one asking for all-or-error is refused.
    s.handle(Event::Up(broker, vec![msg(3, DEV_A, topic, 1)]));
    let strict = Message {
        all_or_error: true,
        ..msg(4, DEV_A, topic, 1)
    };
    s.handle(Event::Up(broker, vec![strict]));
    assert_eq!(acks(&drain(&mut brx)), (vec![3], vec![4]));
    let undelivered = s.view().undelivered;
    assert_eq!(undelivered.len(), 1);
    assert_eq!(
        (
            undelivered[0].endpoint,
            undelivered[0].reason,
            undelivered[0].messages
        ),
        ("shadow", "queue full", 1)
    );
    let (shadow2, mut srx) = link(&mut s, Endpoint::Shadow, 2);
    let got = messages(&drain(&mut srx));
    let ids: Vec<u64> = got.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 2, "the unacknowledged one and the held one");
    s.handle(Event::Acks {
        link: shadow2,
        ids,
        refused: vec![],
    });
    assert_eq!(acks(&drain(&mut brx)), (vec![1, 2], vec![]));
}

#[test]
fn a_target_refusing_its_copy_does_not_hold_the_publisher() {
    let mut s = switch(10);
    let (broker, mut brx) = link(&mut s, Endpoint::Broker, 1);
    let (shadow, mut srx) = link(&mut s, Endpoint::Shadow, 1);
    let topic = "$aws/things/a/shadow/update";
    s.handle(Event::Up(broker, vec![msg(1, DEV_A, topic, 1)]));
    let strict = Message {
        all_or_error: true,
        ..msg(2, DEV_A, topic, 1)
    };
    s.handle(Event::Up(broker, vec![strict]));
    let ids: Vec<u64> = messages(&drain(&mut srx)).iter().map(|m| m.id).collect();
    s.handle(Event::Acks {
        link: shadow,
        ids: vec![],
        refused: ids,
    });
    assert_eq!(
        acks(&drain(&mut brx)),
        (vec![1], vec![2]),
        "acknowledged unless it asked for all or an error"
    );
    let undelivered = s.view().undelivered;
    assert_eq!(
        (
            undelivered[0].endpoint,
            undelivered[0].reason,
            undelivered[0].messages
        ),
        ("shadow", "refused", 2)
    );
}

#[test]
fn tracing_tells_the_broker_and_records_outcomes() {
    let (tx, mut traces) = tokio::sync::broadcast::channel(16);
    let mut s = Switch::new(table(), 10, tx);
    let (broker, mut brx) = link(&mut s, Endpoint::Broker, 1);
    drain(&mut brx);
    s.handle(Event::TracersChanged);
    assert!(matches!(drain(&mut brx)[..], [Down::Tracing(true)]));
    s.handle(Event::Up(broker, vec![msg(1, DEV_A, "x/1", 0)]));
    s.handle(Event::Up(broker, vec![msg(2, DEV_B, "y", 0)]));
    let first = traces.try_recv().unwrap();
    assert_eq!(
        (first.outcome.as_str(), first.targets.clone()),
        ("routed", vec!["cloud".to_string()])
    );
    assert_eq!(traces.try_recv().unwrap().outcome, "no route");
    drop(traces);
    s.handle(Event::TracersChanged);
    assert!(matches!(drain(&mut brx)[..], [Down::Tracing(false)]));
}

#[test]
fn a_broker_message_is_routed_wholly_by_the_table_it_was_tagged_with() {
    let mut s = switch(10);
    let (broker, mut brx) = link(&mut s, Endpoint::Broker, 1);
    let (_cloud, mut crx) = link(&mut s, Endpoint::Cloud, 1);
    drain(&mut brx);
    // Version 8 drops a-cloud.
    let old = table();
    let routes = old
        .routes()
        .iter()
        .filter(|r| r.id != "a-cloud")
        .cloned()
        .collect();
    s.handle(Event::Swap(Table::new(8, routes)));
    assert!(matches!(drain(&mut brx)[..], [Down::Table(ref t)] if t.version() == 8));
    // Tagged with 7: the broker delivered the device part by the old
    // table, so the router sends the rest by it too.
    s.handle(Event::Up(broker, vec![msg(1, DEV_A, "x/1", 0)]));
    assert_eq!(messages(&drain(&mut crx)).len(), 1);
    let mut by_new = msg(2, DEV_A, "x/2", 0);
    by_new.table_version = 8;
    s.handle(Event::Up(broker, vec![by_new]));
    assert!(messages(&drain(&mut crx)).is_empty());
}

#[test]
fn credit_limits_what_is_sent() {
    let mut s = switch(10);
    let (broker, _brx) = link(&mut s, Endpoint::Broker, 1);
    let (tx, mut crx) = mpsc::unbounded_channel();
    let cloud = LinkId {
        endpoint: Endpoint::Cloud,
        generation: 1,
    };
    s.handle(Event::Linked {
        link: cloud,
        down: tx,
        credit: 1,
    });
    s.handle(Event::Up(
        broker,
        vec![msg(1, DEV_A, "x/1", 0), msg(2, DEV_A, "x/2", 0)],
    ));
    assert_eq!(messages(&drain(&mut crx)).len(), 1);
    s.handle(Event::Credit(cloud, 5));
    assert_eq!(messages(&drain(&mut crx))[0].topic, "x/2");
}

#[test]
fn shadow_sync_travels_outside_the_routes_for_synced_things_only() {
    let mut s = Switch::new(
        table().with_synced(vec!["a".into()]),
        10,
        tokio::sync::broadcast::channel(16).0,
    );
    let (shadow, mut srx) = link(&mut s, Endpoint::Shadow, 1);
    let (cloud, mut crx) = link(&mut s, Endpoint::Cloud, 1);
    // The shadow service learns what is synced and whether the cloud is up.
    let downs = drain(&mut srx);
    assert!(matches!(&downs[0], Down::Table(t) if t.synced() == ["a"]));
    assert!(matches!(downs[1], Down::Cloud(false)));
    s.handle(Event::CloudState(true));
    assert!(matches!(drain(&mut srx)[..], [Down::Cloud(true)]));
    // Its requests for a synced thing go to the cloud with no route; for
    // another thing, and its replies, the table decides (none here).
    s.handle(Event::Up(
        shadow,
        vec![
            msg(1, "GGShadowService", "$aws/things/a/shadow/update", 0),
            msg(2, "GGShadowService", "$aws/things/b/shadow/update", 0),
            msg(
                3,
                "GGShadowService",
                "$aws/things/a/shadow/update/accepted",
                0,
            ),
        ],
    ));
    let up: Vec<String> = topics(&mut crx);
    assert_eq!(up, ["$aws/things/a/shadow/update"]);
    // The cloud's answers for a synced thing come to the shadow service.
    s.handle(Event::Up(
        cloud,
        vec![
            msg(1, "cloud", "$aws/things/a/shadow/update/accepted", 0),
            msg(2, "cloud", "$aws/things/a/shadow/update/delta", 0),
            msg(3, "cloud", "$aws/things/b/shadow/update/accepted", 0),
        ],
    ));
    let down: Vec<String> = topics(&mut srx);
    assert_eq!(down, ["$aws/things/a/shadow/update/accepted"]);
    // The cloud subscribes to synced things' answers.
    let subjects = crate::cloud::cloud_subjects(&table().with_synced(vec!["a".into()]), None);
    assert!(subjects.contains(&"$aws/things/a/shadow/+/+".to_string()));
    assert!(subjects.contains(&"$aws/things/a/shadow/name/+/+/+".to_string()));
}

#[test]
fn the_core_s_jobs_travel_between_the_ota_agent_and_the_cloud_outside_the_routes() {
    let mut s = switch(10).with_core_jobs("core");
    let (cloud, mut crx) = link(&mut s, Endpoint::Cloud, 1);
    // Answers that come before the ota-agent links wait for it.
    s.handle(Event::Up(
        cloud,
        vec![msg(1, "cloud", "$aws/things/core/jobs/notify-next", 1)],
    ));
    let (ota, mut orx) = link(&mut s, Endpoint::Ota, 1);
    let downs = drain(&mut orx);
    assert!(matches!(downs[0], Down::Cloud(false)), "{downs:?}");
    let down: Vec<String> = messages(&downs).into_iter().map(|m| m.topic).collect();
    assert_eq!(down, ["$aws/things/core/jobs/notify-next"]);
    // It learns when the cloud connects.
    s.handle(Event::CloudState(true));
    assert!(matches!(drain(&mut orx)[..], [Down::Cloud(true)]));
    // Its requests go to the cloud; another thing's jobs do not, and no
    // other topic of its has a route.
    s.handle(Event::Up(
        ota,
        vec![
            msg(1, "ota-agent", "$aws/things/core/jobs/start-next", 1),
            msg(2, "ota-agent", "$aws/things/other/jobs/start-next", 1),
            msg(3, "ota-agent", "x/1", 1),
        ],
    ));
    let up: Vec<String> = topics(&mut crx);
    assert_eq!(up, ["$aws/things/core/jobs/start-next"]);
    // The cloud's answers for the core reach it, not another thing's; a
    // device's message on a jobs topic follows the table (no route here).
    s.handle(Event::Up(
        cloud,
        vec![
            msg(2, "cloud", "$aws/things/core/jobs/start-next/accepted", 0),
            msg(3, "cloud", "$aws/things/other/jobs/notify-next", 0),
        ],
    ));
    let (broker, _brx) = link(&mut s, Endpoint::Broker, 1);
    s.handle(Event::Up(
        broker,
        vec![msg(1, DEV_A, "$aws/things/core/jobs/start-next", 0)],
    ));
    let down: Vec<String> = topics(&mut orx);
    assert_eq!(down, ["$aws/things/core/jobs/start-next/accepted"]);
    assert!(messages(&drain(&mut crx)).is_empty());
    // The cloud bridge subscribes to the core's jobs answers.
    let jobs = crate::jobs::CoreJobs::new("core");
    let subjects = crate::cloud::cloud_subjects(&table(), Some(&jobs));
    assert!(subjects.contains(&"$aws/things/core/jobs/notify-next".to_string()));
    assert!(subjects.contains(&"cmd/+".to_string()));
}

#[test]
fn the_ota_agent_links_by_its_hello_name() {
    assert_eq!(Endpoint::from_hello("ota-agent"), Some(Endpoint::Ota));
    assert_eq!(Endpoint::from_hello("cloud"), None);
}

#[test]
fn the_core_s_connectivity_goes_from_discovery_to_the_cloud_and_nothing_else_does() {
    let mut s = switch(10).with_core_jobs("core");
    let (cloud, mut crx) = link(&mut s, Endpoint::Cloud, 1);
    assert_eq!(Endpoint::from_hello("discovery"), Some(Endpoint::Discovery));
    let (discovery, mut drx) = link(&mut s, Endpoint::Discovery, 1);
    assert!(matches!(drain(&mut drx)[..], [Down::Cloud(false)]));
    s.handle(Event::CloudState(true));
    assert!(matches!(drain(&mut drx)[..], [Down::Cloud(true)]));
    s.handle(Event::Up(
        discovery,
        vec![
            msg(1, "discovery", "verdant/things/core/connectivity", 1),
            msg(2, "discovery", "verdant/things/other/connectivity", 1),
            msg(3, "discovery", "cmd/x", 1),
        ],
    ));
    let up: Vec<String> = topics(&mut crx);
    assert_eq!(up, ["verdant/things/core/connectivity"]);
    // The cloud cannot send to it.
    s.handle(Event::Up(
        cloud,
        vec![msg(1, "cloud", "verdant/things/core/connectivity", 0)],
    ));
    assert!(messages(&drain(&mut drx)).is_empty());
}

#[test]
fn secret_requests_go_to_the_cloud_its_answers_only_to_the_secrets_daemon_and_no_trace_shows_them()
{
    let (tx, mut traces) = tokio::sync::broadcast::channel(16);
    let mut s = Switch::new(table(), 10, tx).with_core_jobs("core");
    let (cloud, mut crx) = link(&mut s, Endpoint::Cloud, 1);
    let (broker, mut brx) = link(&mut s, Endpoint::Broker, 1);
    drain(&mut brx);
    assert_eq!(Endpoint::from_hello("secrets"), Some(Endpoint::Secrets));
    let (secrets, mut srx) = link(&mut s, Endpoint::Secrets, 1);
    assert!(matches!(drain(&mut srx)[..], [Down::Cloud(false)]));
    s.handle(Event::CloudState(true));
    assert!(matches!(drain(&mut srx)[..], [Down::Cloud(true)]));
    s.handle(Event::TracersChanged);
    s.handle(Event::Up(
        secrets,
        vec![
            msg(1, "secrets", "verdant/things/core/secrets/get", 1),
            msg(2, "secrets", "verdant/things/other/secrets/get", 1),
            msg(3, "secrets", "x/1", 1),
        ],
    ));
    assert_eq!(topics(&mut crx), ["verdant/things/core/secrets/get"]);
    s.handle(Event::Up(
        cloud,
        vec![
            msg(1, "cloud", "verdant/things/core/secrets/get/accepted", 1),
            msg(2, "cloud", "verdant/things/core/secrets/get/rejected", 1),
            msg(3, "cloud", "verdant/things/core/secrets/get", 1),
        ],
    ));
    assert_eq!(
        topics(&mut srx),
        [
            "verdant/things/core/secrets/get/accepted",
            "verdant/things/core/secrets/get/rejected"
        ]
    );
    // A device cannot answer for the cloud, nor send to the cloud on the
    // secrets topics, whatever the routes say; the cloud's echo of a
    // request goes nowhere.
    s.handle(Event::Up(
        broker,
        vec![
            msg(4, DEV_A, "verdant/things/core/secrets/get/accepted", 0),
            msg(5, DEV_A, "verdant/things/core/secrets/get", 0),
        ],
    ));
    assert!(messages(&drain(&mut srx)).is_empty());
    assert!(messages(&drain(&mut crx)).is_empty());
    let mut seen = 0;
    while let Ok(t) = traces.try_recv() {
        if t.topic.contains("/secrets/get") {
            assert!(t.preview.is_empty(), "{t:?}");
            seen += 1;
        }
    }
    assert!(seen >= 4, "{seen}");
}

#[test]
fn no_route_carries_the_secrets_topics_from_a_device_or_back_to_one() {
    let r = |id: &str, s: &str, t: &str| Route {
        id: id.into(),
        source: s.into(),
        subject: "#".into(),
        target: t.into(),
    };
    let table = Table::new(
        7,
        vec![r("all-up", DEV_A, "cloud"), r("all-down", "cloud", DEV_B)],
    );
    let mut s =
        Switch::new(table, 10, tokio::sync::broadcast::channel(16).0).with_core_jobs("core");
    let (cloud, mut crx) = link(&mut s, Endpoint::Cloud, 1);
    let (broker, mut brx) = link(&mut s, Endpoint::Broker, 1);
    drain(&mut brx);
    s.handle(Event::Up(
        broker,
        vec![
            msg(1, DEV_A, "verdant/things/core/secrets/get/accepted", 0),
            msg(2, DEV_A, "verdant/things/core/secrets/get", 0),
            msg(3, DEV_A, "other", 0),
        ],
    ));
    assert_eq!(topics(&mut crx), ["other"]);
    // The cloud's echo of a request (with its clientToken) reaches no device.
    s.handle(Event::Up(
        cloud,
        vec![
            msg(1, "cloud", "verdant/things/core/secrets/get", 0),
            msg(2, "cloud", "news", 0),
        ],
    ));
    let down: Vec<String> = messages(&drain(&mut brx))
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(down, ["news"]);
}

#[test]
fn connectors_are_reached_in_the_lambda_runner_and_speak_as_their_arn() {
    const MODBUS: &str = "arn:aws:greengrass:r::/connectors/ModbusRTUProtocolAdapter/versions/3";
    let r = |id: &str, s: &str, subj: &str, t: &str| Route {
        id: id.into(),
        source: s.into(),
        subject: subj.into(),
        target: t.into(),
    };
    let table = Table::new(
        7,
        vec![
            r("req", DEV_A, "modbus/adapter/request", MODBUS),
            r("resp", MODBUS, "modbus/adapter/response", "cloud"),
        ],
    );
    let mut s = Switch::new(table, 10, tokio::sync::broadcast::channel(16).0);
    let (broker, _brx) = link(&mut s, Endpoint::Broker, 1);
    let (lambda, mut lrx) = link(&mut s, Endpoint::Lambda, 1);
    let (_cloud, mut crx) = link(&mut s, Endpoint::Cloud, 1);
    s.handle(Event::Up(
        broker,
        vec![msg(1, DEV_A, "modbus/adapter/request", 1)],
    ));
    let down = messages(&drain(&mut lrx));
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].targets, [MODBUS]);
    s.handle(Event::Up(
        lambda,
        vec![msg(2, MODBUS, "modbus/adapter/response", 1)],
    ));
    assert_eq!(topics(&mut crx), ["modbus/adapter/response"]);
}
