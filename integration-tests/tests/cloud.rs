//! The cloud path with a real Mosquitto as the cloud (mutual TLS, client
//! certificates required): device → cloud, cloud → device, and the durable
//! queue through a cloud outage and `kill -9` of the router.

use std::time::Duration;

use verdant_integration_tests::cloud::{Cloud, Proxy, alpn_front, bound_port};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{
    assert_numbered, connect, publish, receive_distinct, receive_n, subscribed, until,
};
use verdant_integration_tests::{Core, Options, PATIENCE};
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

const TCP: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";

/// Device `a` may send telemetry to the cloud and get commands from it.
fn group() -> String {
    serde_json::json!({
        "Id": "cloud-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2)] },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "to-cloud", "Source": arn("a"), "Subject": "a/telemetry/#", "Target": "cloud" },
            { "Id": "from-cloud", "Source": "cloud", "Subject": "cmd/a/#", "Target": arn("a") },
        ]},
    })
    .to_string()
}

/// A core whose router connects to `cloud` (started here, once the core has
/// made its group CA).
async fn start(cloud: &mut Cloud) -> (Core, u16) {
    let dropin = cloud.dropin();
    let core = start_core(&dropin).await;
    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("connected", |c| c.state == "connected")
        .await;
    let port = core.broker_port("tcp").await;
    (core, port)
}

/// A core with [`group`], the plain listener and `cloud_dropin`.
async fn start_core(cloud_dropin: &str) -> Core {
    start_core_with(&group(), cloud_dropin).await
}

async fn start_core_with(group: &str, cloud_dropin: &str) -> Core {
    let dropin = format!("{TCP}{cloud_dropin}");
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(group),
        ..Options::default()
    });
    core.wait_all_running().await;
    core
}

/// Device `a` sends telemetry and the cloud's `observer` gets it.
async fn telemetry_arrives(core: &Core, cloud: &Cloud) {
    let (observer, mut obs) = connect(cloud.plain_port, "observer", false).await;
    subscribed(&observer, &mut obs, "a/telemetry/#").await;
    let port = core.broker_port("tcp").await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    publish(&dev, &mut dev_ev, "a/telemetry/via", "hello").await;
    assert_eq!(receive_n(&mut obs, 1).await, ["hello"]);
}

#[tokio::test]
async fn device_to_cloud_and_back_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, port) = start(&mut cloud).await;

    let (observer, mut obs) = connect(cloud.plain_port, "observer", false).await;
    subscribed(&observer, &mut obs, "#").await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut dev_ev, "cmd/a/#").await;

    for i in 0..10 {
        publish(
            &dev,
            &mut dev_ev,
            &format!("a/telemetry/{i}"),
            &i.to_string(),
        )
        .await;
    }
    // Not routed to the cloud: never arrives there.
    publish(&dev, &mut dev_ev, "a/private", "x").await;
    let got = receive_n(&mut obs, 10).await;
    assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());

    // The core's connection is the core's thing name, authenticated by its
    // certificate.
    assert!(cloud.log().contains("verdant-core"), "{}", cloud.log());

    publish(&observer, &mut obs, "cmd/a/reboot", "now").await;
    publish(&observer, &mut obs, "cmd/b/reboot", "not for a").await;
    let mut topic = String::new();
    until(&mut dev_ev, |p| match p {
        rumqttc::Packet::Publish(p) => {
            topic.clone_from(&p.topic);
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(topic, "cmd/a/reboot");
    core.wait_cloud("counted", |c| c.sent >= 10 && c.received >= 1)
        .await;
    let text = String::from_utf8_lossy(&core.ctl(&["cloud"]).stdout).into_owned();
    assert!(text.contains("connected"), "{text}");
    drop(core);
}

#[tokio::test]
async fn the_queue_survives_a_cloud_outage_and_kill_9_of_the_router_and_drains_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, port) = start(&mut cloud).await;
    // A persistent subscriber in the cloud, away while the core catches up.
    let (observer, mut obs) = connect(cloud.plain_port, "observer", true).await;
    subscribed(&observer, &mut obs, "a/telemetry/#").await;
    drop((observer, obs));

    cloud.stop();
    core.wait_cloud("disconnected", |c| c.state != "connected")
        .await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    for i in 0..100 {
        publish(&dev, &mut dev_ev, "a/telemetry/n", &i.to_string()).await;
    }
    core.wait_cloud("queued", |c| c.queued_messages == 100)
        .await;

    // Every acknowledged message is on disk: kill -9 the router.
    kill_router(&core).await;
    core.wait_cloud("restored after kill -9", |c| c.queued_messages == 100)
        .await;

    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("drained", |c| c.queued_messages == 0).await;
    let (_observer, mut obs) = connect(cloud.plain_port, "observer", true).await;
    // At least once, in order: without repeats it is exactly 0..100.
    let got = receive_distinct(&mut obs, 100).await;
    assert_numbered(&got, 100);
}

/// `kill -9` of the router; returns once init has started a new one.
async fn kill_router(core: &Core) {
    let router = core.service("router").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(router.pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::timeout(PATIENCE, async {
        while core.service("router").await.pid == router.pid {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("init restarts the router");
}

#[tokio::test]
async fn kill_9_of_the_router_while_it_drains_loses_nothing() {
    const N: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    // One message in flight at a time, so the drain takes a while.
    let mut cloud = Cloud::prepare(dir.path());
    let core = start_core(&cloud.dropin_via(cloud.tls_port, "window = 1\n")).await;
    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("connected", |c| c.state == "connected")
        .await;
    let (observer, mut obs) = connect(cloud.plain_port, "observer", true).await;
    subscribed(&observer, &mut obs, "a/telemetry/#").await;
    drop((observer, obs));
    cloud.stop();
    core.wait_cloud("disconnected", |c| c.state != "connected")
        .await;
    let port = core.broker_port("tcp").await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    for i in 0..N {
        publish(&dev, &mut dev_ev, "a/telemetry/n", &i.to_string()).await;
    }
    // At least: the core's own first messages (its connectivity, the jobs
    // request) may be queued too when the cloud went away before they left.
    core.wait_cloud("queued", |c| c.queued_messages as usize >= N)
        .await;

    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("draining", |c| c.sent > 0).await;
    kill_router(&core).await;
    core.wait_cloud("restarted mid-drain", |c| {
        c.state == "connected" || (c.queued_messages as usize) < N
    })
    .await;
    core.wait_cloud("drained", |c| c.queued_messages == 0).await;
    let (_observer, mut obs) = connect(cloud.plain_port, "observer", true).await;
    let got = receive_distinct(&mut obs, N).await;
    assert_numbered(&got, N);
}

#[tokio::test]
async fn alpn_x_amzn_mqtt_ca_through_a_front_that_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    // A core offering ALPN, as on AWS IoT's port 443.
    let (listener, front) = bound_port().await;
    let core = start_core(&cloud.dropin_via(front, "alpn = true\n")).await;
    let group_ca = std::path::PathBuf::from(core.cert("group-ca.pem"));
    cloud.start(&group_ca);
    alpn_front(&cloud, listener, &group_ca);
    core.wait_cloud("connected through the ALPN front", |c| {
        c.state == "connected"
    })
    .await;
    telemetry_arrives(&core, &cloud).await;

    // A core not offering it is refused by such a front.
    let (listener, other_front) = bound_port().await;
    let no_alpn = start_core(&cloud.dropin_via(other_front, "alpn = false\n")).await;
    alpn_front(
        &cloud,
        listener,
        std::path::Path::new(&no_alpn.cert("group-ca.pem")),
    );
    no_alpn
        .wait_cloud("refused without ALPN", |c| !c.last_error.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = no_alpn.cloud_state().await.unwrap();
    assert_ne!(state.state, "connected", "{state:?}");
}

#[tokio::test]
async fn through_an_http_proxy_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(&dir.path().join("cloud"));
    let proxy = Proxy::start(&dir.path().join("proxy"), "gg", "s3cret");
    let via = |password: &str| {
        cloud.dropin_via(
            cloud.tls_port,
            &format!(
                "proxy = \"http://gg:{password}@127.0.0.1:{}\"\n",
                proxy.port
            ),
        )
    };
    let core = start_core(&via("s3cret")).await;
    let wrong = start_core(&via("wrong")).await;
    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("connected through the proxy", |c| c.state == "connected")
        .await;
    telemetry_arrives(&core, &cloud).await;
    assert!(proxy.log().contains("CONNECT"), "{}", proxy.log());
    // The wrong password gets the proxy's refusal, and the password is in
    // no log line.
    wrong
        .wait_cloud("refused by the proxy", |c| !c.last_error.is_empty())
        .await;
    let state = wrong.cloud_state().await.unwrap();
    assert_ne!(state.state, "connected", "{state:?}");
    let logs =
        String::from_utf8_lossy(&wrong.ctl(&["logs", "router", "-n", "100"]).stdout).into_owned();
    assert!(
        !logs.contains("wrong") && !logs.contains("s3cret"),
        "{logs}"
    );
}

/// 1000-byte payloads numbered `i`.
fn numbered(i: usize) -> String {
    format!("{i:04}{}", "x".repeat(996))
}

/// The smallest queue Greengrass allows holds 258 of those (13-byte topic).
const SMALL_QUEUE: &str = "queue_max_bytes = 262144\n";
const FIT: usize = 262_144 / 1013;

#[tokio::test]
async fn a_full_queue_drops_the_oldest_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let core = start_core(&cloud.dropin_via(cloud.tls_port, SMALL_QUEUE)).await;
    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("connected", |c| c.state == "connected")
        .await;
    let (observer, mut obs) = connect(cloud.plain_port, "observer", true).await;
    subscribed(&observer, &mut obs, "a/telemetry/#").await;
    drop((observer, obs));
    cloud.stop();
    core.wait_cloud("disconnected", |c| c.state != "connected")
        .await;

    let port = core.broker_port("tcp").await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    for i in 0..400 {
        publish(&dev, &mut dev_ev, "a/telemetry/n", &numbered(i)).await;
    }
    // The core's own first messages (its connectivity, the jobs request)
    // may have been queued ahead of the device's when the cloud went away
    // before they left: then they are among the oldest dropped.
    core.wait_cloud("full", |c| {
        c.queued_messages as usize == FIT && c.dropped_oldest as usize >= 400 - FIT
    })
    .await;

    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("drained", |c| c.queued_messages == 0).await;
    let (_observer, mut obs) = connect(cloud.plain_port, "observer", true).await;
    let got = receive_n(&mut obs, FIT).await;
    let want: Vec<String> = (400 - FIT..400).map(numbered).collect();
    assert_eq!(got, want, "the newest {FIT}, in order");
}

#[tokio::test]
async fn a_full_queue_refuses_new_messages_when_told_and_the_device_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // The cloud never comes up.
    let cloud = Cloud::prepare(dir.path());
    let core = start_core(&cloud.dropin_via(
        cloud.tls_port,
        &format!("{SMALL_QUEUE}queue_full_policy = \"refuse-new\"\n"),
    ))
    .await;
    let port = core.broker_port("tcp").await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    for i in 0..FIT {
        publish(&dev, &mut dev_ev, "a/telemetry/n", &numbered(i)).await;
    }
    // One more does not fit: no PUBACK, and the broker closes the
    // connection so the device sends it again later.
    dev.publish(
        "a/telemetry/n",
        rumqttc::QoS::AtLeastOnce,
        false,
        numbered(FIT).into_bytes(),
    )
    .await
    .unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            match dev_ev.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    panic!("acknowledged a message the queue refused")
                }
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the connection ends");
    core.wait_cloud("refused", |c| {
        c.queued_messages as usize == FIT && c.refused == 1
    })
    .await;
}

#[tokio::test]
async fn cloud_subscriptions_follow_a_reloaded_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, port) = start(&mut cloud).await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut dev_ev, "#").await;
    let (observer, mut obs) = connect(cloud.plain_port, "observer", false).await;

    let file = core.root().join("deployments/test/group.json");
    std::fs::write(&file, group().replace("cmd/a/#", "orders/a/#")).unwrap();
    let channel = verdant_common::uds::connect(&core.socket("router"))
        .await
        .unwrap();
    RouterClient::new(channel)
        .reload_table(pb::ReloadTableRequest {})
        .await
        .unwrap();
    // The bridge subscribes to the new subject: probe until it arrives.
    let got = tokio::time::timeout(PATIENCE, async {
        loop {
            publish(&observer, &mut obs, "orders/a/1", "new").await;
            let got =
                verdant_integration_tests::mqtt::received(&mut dev_ev, Duration::from_millis(200))
                    .await;
            if !got.is_empty() {
                return got;
            }
        }
    })
    .await
    .expect("the new subject is subscribed");
    assert_eq!(got[0].0, "orders/a/1");
    // ... and no longer to the old one.
    publish(&observer, &mut obs, "cmd/a/1", "old").await;
    let late =
        verdant_integration_tests::mqtt::received(&mut dev_ev, Duration::from_millis(500)).await;
    assert!(late.iter().all(|(t, _)| t != "cmd/a/1"), "{late:?}");
}

/// [`group`] with `subjects` routed from the cloud to device `a`.
fn group_from_cloud(subjects: &[&str]) -> String {
    let mut g: serde_json::Value = serde_json::from_str(&group()).unwrap();
    let subs = g["SubscriptionDefinitionVersion"]["Subscriptions"]
        .as_array_mut()
        .unwrap();
    subs.retain(|s| s["Source"] != "cloud");
    for (i, subject) in subjects.iter().enumerate() {
        subs.push(serde_json::json!({
            "Id": format!("from-cloud-{i}"), "Source": "cloud", "Subject": subject, "Target": arn("a"),
        }));
    }
    g.to_string()
}

#[tokio::test]
async fn more_subscriptions_than_one_connection_holds_open_more_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let subjects = ["alerts/a/#", "cmd/a/#", "orders/a/#"];
    let core = start_core_with(
        &group_from_cloud(&subjects),
        &cloud.dropin_via(cloud.tls_port, "max_subscriptions_per_connection = 2\n"),
    )
    .await;
    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("connected", |c| c.state == "connected")
        .await;
    let port = core.broker_port("tcp").await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut dev_ev, "#").await;
    let (observer, mut obs) = connect(cloud.plain_port, "observer", false).await;
    // Every subject reaches the device, whichever connection subscribed it.
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while seen.len() < subjects.len() {
            for s in subjects {
                let topic = s.replace('#', "x");
                if !seen.contains(&topic) {
                    publish(&observer, &mut obs, &topic, "hi").await;
                }
            }
            for (t, _) in
                verdant_integration_tests::mqtt::received(&mut dev_ev, Duration::from_millis(200))
                    .await
            {
                if !seen.contains(&t) {
                    seen.push(t);
                }
            }
        }
    })
    .await
    .expect("every subject delivered");
    let log = cloud.log();
    assert!(
        log.contains("as verdant-core ") && log.contains("as verdant-core-c01 "),
        "{log}"
    );
}

#[tokio::test]
async fn persistent_cloud_subscriptions_keep_what_arrives_while_the_router_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let core = start_core(&cloud.dropin_via(
        cloud.tls_port,
        "subscription_quality = \"at-least-once-persistent\"\n",
    ))
    .await;
    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("connected", |c| c.state == "connected")
        .await;
    let port = core.broker_port("tcp").await;
    let (dev, mut dev_ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut dev_ev, "cmd/a/#").await;
    assert!(cloud.log().contains("cmd/a/# (QoS 1)"), "{}", cloud.log());

    // The router goes away; the cloud keeps the core's messages.
    let out = core.ctl(&["stop", "router"]);
    assert!(out.status.success(), "{out:?}");
    let (observer, mut obs) = connect(cloud.plain_port, "observer", false).await;
    for i in 0..20 {
        observer
            .publish("cmd/a/n", rumqttc::QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
        until(&mut obs, |p| matches!(p, rumqttc::Packet::PubAck(_))).await;
    }
    let out = core.ctl(&["start", "router"]);
    assert!(out.status.success(), "{out:?}");
    let got = receive_distinct(&mut dev_ev, 20).await;
    assert_numbered(&got, 20);
    // Acknowledged to the cloud once the device's session had them.
    tokio::time::timeout(PATIENCE, async {
        while cloud
            .log()
            .matches("Received PUBACK from verdant-core")
            .count()
            < 20
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the core acknowledges every message to the cloud");
}

#[tokio::test]
async fn the_core_tells_the_cloud_its_connectivity_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, _) = start(&mut cloud).await;
    let (observer, mut obs) = connect(cloud.plain_port, "observer", false).await;
    subscribed(&observer, &mut obs, "verdant/things/+/connectivity").await;
    let set = core.ctl(&[
        "connectivity",
        "set",
        "lan=192.168.7.2:8883",
        "core.example",
    ]);
    assert!(set.status.success(), "{set:?}");
    let got: serde_json::Value = serde_json::from_str(&receive_n(&mut obs, 1).await[0]).unwrap();
    // UpdateConnectivityInfo's shape, for the core's thing.
    assert_eq!(got["ThingName"], "verdant-core", "{got}");
    let info = &got["ConnectivityInfo"];
    assert_eq!(info[0]["Id"], "lan", "{got}");
    assert_eq!(info[0]["HostAddress"], "192.168.7.2", "{got}");
    assert_eq!(info[0]["PortNumber"], 8883, "{got}");
    assert_eq!(info[1]["HostAddress"], "core.example", "{got}");
    assert!(info[1]["PortNumber"].is_u64(), "{got}");
}
