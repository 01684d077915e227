//! Routed mode (the default): the deployed group's subscription table
//! decides who gets a device's message, with the real broker and router
//! under init. Devices here use the plain listener, where in routed mode
//! the client id names the device.

use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, MqttOptions, QoS};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{publish, receive_messages, received, subscribed};
use verdant_integration_tests::{Core, Options, PATIENCE};
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

const TCP: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";

/// Devices a, b and c; a may talk to b on `a/to-b/#` and to itself on
/// `a/echo`; nothing else.
fn group() -> String {
    serde_json::json!({
        "Id": "routing-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2), thing("b", 3), thing("c", 4)] },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "a-to-b", "Source": arn("a"), "Subject": "a/to-b/#", "Target": arn("b") },
            { "Id": "a-echo", "Source": arn("a"), "Subject": "a/echo", "Target": arn("a") },
        ]},
    })
    .to_string()
}

/// a publishes on `a/echo`, routed back to itself, and gets it.
async fn client_publish_then_read_echo(a: &AsyncClient, events: &mut EventLoop) {
    a.publish("a/echo", QoS::AtLeastOnce, false, b"for a".to_vec())
        .await
        .unwrap();
    let mut got = receive_messages(events, 1).await;
    got.extend(received(events, Duration::from_millis(300)).await);
    assert_eq!(got, vec![("a/echo".to_string(), "for a".to_string())]);
}

fn count(r: &pb::ListRoutesResponse, id: &str) -> u64 {
    r.routes
        .iter()
        .find(|c| c.route.as_ref().is_some_and(|r| r.id == id))
        .map_or(0, |c| c.messages)
}

/// A core with [`group`] and the plain listener, once the broker has linked
/// with the router (and so has its table); returns the plain port.
async fn start() -> (Core, u16) {
    let group = group();
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        group: Some(&group),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;
    wait_linked(&core).await;
    (core, port)
}

/// Waits until the router (perhaps just restarted) has the broker linked.
async fn wait_linked(core: &Core) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(channel) = verdant_common::uds::connect(&core.socket("router")).await
                && let Ok(r) = RouterClient::new(channel)
                    .list_routes(pb::ListRoutesRequest {})
                    .await
                && r.into_inner().links.contains(&"broker".to_string())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the broker links with the router");
}

#[tokio::test]
async fn the_table_decides_and_messages_without_a_route_are_counted() {
    let (core, port) = start().await;

    // Not a device of the group: refused on the plain listener too.
    let mut stranger = MqttOptions::new("stranger", "127.0.0.1", port);
    stranger.set_keep_alive(Duration::from_secs(30));
    let (_client, mut events) = AsyncClient::new(stranger, 10);
    let refused = tokio::time::timeout(PATIENCE, events.poll()).await.unwrap();
    assert!(refused.is_err(), "{refused:?}");

    let (dev_a, mut a_ev) = verdant_integration_tests::mqtt::connect(port, "a", false).await;
    let (dev_b, mut b_ev) = verdant_integration_tests::mqtt::connect(port, "b", false).await;
    let (dev_c, mut c_ev) = verdant_integration_tests::mqtt::connect(port, "c", false).await;
    subscribed(&dev_b, &mut b_ev, "a/#").await;
    subscribed(&dev_c, &mut c_ev, "a/#").await;
    subscribed(&dev_a, &mut a_ev, "a/#").await;

    // (First: `publish` reads b's events up to its PUBACK.)
    publish(&dev_b, &mut b_ev, "a/to-b/2", "b has no routes").await;
    publish(&dev_a, &mut a_ev, "a/to-b/1", "for b").await;
    publish(&dev_a, &mut a_ev, "a/nowhere", "for nobody").await;
    client_publish_then_read_echo(&dev_a, &mut a_ev).await;

    let mut to_b = receive_messages(&mut b_ev, 1).await;
    to_b.extend(received(&mut b_ev, Duration::from_millis(300)).await);
    assert_eq!(to_b, vec![("a/to-b/1".to_string(), "for b".to_string())]);
    assert!(
        received(&mut c_ev, Duration::from_millis(300))
            .await
            .is_empty()
    );

    // Counters: per route, and per source for messages without a route
    // (the broker reports them at most a second late).
    tokio::time::timeout(PATIENCE, async {
        loop {
            let r = core.routes().await;
            let no_route: Vec<(String, u64)> = r
                .no_route
                .iter()
                .map(|d| (d.source.clone(), d.messages))
                .collect();
            if count(&r, "a-to-b") == 1
                && count(&r, "a-echo") == 1
                && no_route == vec![(arn("a"), 1), (arn("b"), 1)]
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("route counters");

    let out = core.ctl(&["routes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("a-to-b") && text.contains("thing/b"),
        "{text}"
    );
    assert!(text.contains("linked: broker"), "{text}");
    assert!(text.contains("no route: 1 from thing/a"), "{text}");
}

#[tokio::test]
async fn device_to_device_keeps_working_while_the_router_restarts() {
    let (core, port) = start().await;
    let (dev_a, mut a_ev) = verdant_integration_tests::mqtt::connect(port, "a", false).await;
    let (dev_b, mut b_ev) = verdant_integration_tests::mqtt::connect(port, "b", false).await;
    subscribed(&dev_b, &mut b_ev, "a/#").await;

    let router = core.service("router").await.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(router).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for i in 0..20 {
        publish(
            &dev_a,
            &mut a_ev,
            &format!("a/to-b/{i}"),
            "while the router is away",
        )
        .await;
    }
    let mut got = receive_messages(&mut b_ev, 20).await;
    got.extend(received(&mut b_ev, Duration::from_millis(300)).await);
    assert_eq!(got.len(), 20, "{got:?}");
    // init restarts the router and the broker links again.
    wait_linked(&core).await;
}

#[tokio::test]
async fn verdantctl_trace_shows_where_messages_went_and_why_not() {
    use tokio::io::AsyncBufReadExt;
    let (core, port) = start().await;
    let (dev_a, mut a_ev) = verdant_integration_tests::mqtt::connect(port, "a", false).await;
    let (dev_b, mut b_ev) = verdant_integration_tests::mqtt::connect(port, "b", false).await;
    let mut tracer = tokio::process::Command::new(verdant_integration_tests::bin("verdantctl"))
        .arg("--socket-dir")
        .arg(core.runtime_dir())
        .args(["trace", "--source", "a"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tracer.stdout.take().unwrap()).lines();
    // The trace starts once the router has told the broker: probe until a
    // probe shows.
    let first = tokio::time::timeout(PATIENCE, async {
        loop {
            publish(&dev_a, &mut a_ev, "a/nowhere", "probe").await;
            if let Ok(line) =
                tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
            {
                return line.unwrap().expect("a trace line");
            }
        }
    })
    .await
    .expect("the trace starts");
    assert!(
        first.contains("thing/a -> -  a/nowhere  5 B QoS 1  no route (broker)  \"probe\""),
        "{first}"
    );
    publish(&dev_b, &mut b_ev, "a/to-b/x", "not traced: another source").await;
    publish(&dev_a, &mut a_ev, "a/to-b/1", "for b").await;
    let line = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a trace line");
            if !line.contains("a/nowhere") {
                return line;
            }
        }
    })
    .await
    .expect("traced");
    assert!(
        line.contains("thing/a -> b  a/to-b/1  5 B QoS 1  routed (broker)  \"for b\""),
        "{line}"
    );
}

#[tokio::test]
async fn a_reloaded_table_is_swapped_in_whole_and_a_bad_one_is_refused() {
    let (core, port) = start().await;
    let (dev_a, mut a_ev) = verdant_integration_tests::mqtt::connect(port, "a", false).await;
    let (dev_b, mut b_ev) = verdant_integration_tests::mqtt::connect(port, "b", false).await;
    subscribed(&dev_b, &mut b_ev, "a/#").await;
    let reload = || async {
        let channel = verdant_common::uds::connect(&core.socket("router"))
            .await
            .unwrap();
        RouterClient::new(channel)
            .reload_table(pb::ReloadTableRequest {})
            .await
    };
    let file = core.root().join("deployments/test/group.json");

    // A group that does not validate is refused with its JSON path, and
    // the old table stays.
    std::fs::write(
        &file,
        group().replace(
            &format!("\"Target\":\"{}\"", arn("b")),
            "\"Target\":\"arn:aws:iot:us-east-1:123456789012:thing/nobody\"",
        ),
    )
    .unwrap();
    let err = reload().await.unwrap_err();
    assert!(
        err.message()
            .contains("SubscriptionDefinitionVersion.Subscriptions[0].Target"),
        "{err:?}"
    );
    publish(&dev_a, &mut a_ev, "a/to-b/1", "old table").await;
    assert_eq!(receive_messages(&mut b_ev, 1).await.len(), 1);

    // The new table routes a/new/# to b instead.
    std::fs::write(&file, group().replace("a/to-b/#", "a/new/#")).unwrap();
    let swapped = reload().await.unwrap().into_inner();
    assert_eq!(
        (swapped.group_id.as_str(), swapped.routes),
        ("routing-test", 2)
    );
    let r = core.routes().await;
    assert_eq!(r.version, swapped.version);
    assert!(
        r.routes
            .iter()
            .any(|c| c.route.as_ref().unwrap().subject == "a/new/#")
    );
    // The broker has the new copy once the swap reached it over the link:
    // probe until the old route is gone.
    tokio::time::timeout(PATIENCE, async {
        loop {
            publish(&dev_a, &mut a_ev, "a/new/probe", "new table").await;
            if !received(&mut b_ev, Duration::from_millis(200))
                .await
                .is_empty()
            {
                break;
            }
        }
    })
    .await
    .expect("the new table reaches the broker");
    publish(&dev_a, &mut a_ev, "a/to-b/2", "no route any more").await;
    assert!(
        received(&mut b_ev, Duration::from_millis(500))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn devices_no_longer_in_a_reloaded_group_are_disconnected_and_refused() {
    let (core, port) = start().await;
    let (_dev_c, mut c_ev) = verdant_integration_tests::mqtt::connect(port, "c", false).await;
    let file = core.root().join("deployments/test/group.json");
    let mut g: serde_json::Value = serde_json::from_str(&group()).unwrap();
    g["DeviceDefinitionVersion"]["Devices"]
        .as_array_mut()
        .unwrap()
        .retain(|d| d["Id"] != "c");
    std::fs::write(&file, g.to_string()).unwrap();
    let channel = verdant_common::uds::connect(&core.socket("router"))
        .await
        .unwrap();
    RouterClient::new(channel)
        .reload_table(pb::ReloadTableRequest {})
        .await
        .unwrap();
    // c's connection is closed...
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Err(e) = c_ev.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("the broker closes c's connection");
    assert!(
        matches!(
            ended,
            rumqttc::ConnectionError::Io(_) | rumqttc::ConnectionError::MqttState(_)
        ),
        "{ended:?}"
    );
    // ... and c is refused from now on, while a stays welcome.
    let mut again = MqttOptions::new("c", "127.0.0.1", port);
    again.set_keep_alive(Duration::from_secs(30));
    let (_client, mut events) = AsyncClient::new(again, 10);
    let refused = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.poll().await {
                Err(e) => return e,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => {
                    panic!("c admitted again: {a:?}")
                }
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(
            refused,
            rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized)
        ),
        "{refused:?}"
    );
    verdant_integration_tests::mqtt::connect(port, "a", false).await;
}

/// What the broker acknowledged in routed mode survives `kill -9`: a
/// device's messages routed to an absent device with a persistent session
/// are acknowledged only once on disk, while a clean subscriber's copy is
/// acknowledged as it goes out; after the restart the persistent device
/// gets every one, in order.
#[tokio::test]
async fn routed_messages_for_an_absent_persistent_device_survive_kill_9() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use verdant_integration_tests::mqtt::connect;
    use verdant_proto::supervisor::v1 as spb;

    let (core, port) = start().await;
    let (dev_b, mut b_ev) = connect(port, "b", true).await;
    subscribed(&dev_b, &mut b_ev, "a/to-b/#").await;
    dev_b.disconnect().await.unwrap();
    let _ = tokio::time::timeout(PATIENCE, b_ev.poll()).await;
    drop(b_ev);
    let (dev_a, mut a_ev) = connect(port, "a", false).await;
    // A clean, connected subscriber's copy (a's echo to itself) is not
    // written to disk, and is acknowledged as it goes out.
    subscribed(&dev_a, &mut a_ev, "a/echo").await;
    for i in 0..50 {
        publish(&dev_a, &mut a_ev, &format!("a/to-b/{i}"), &i.to_string()).await;
    }
    client_publish_then_read_echo(&dev_a, &mut a_ev).await;

    let old = core.service("broker").await.pid;
    kill(Pid::from_raw(old.cast_signed()), Signal::SIGKILL).unwrap();
    core.wait_until("broker back", |l| {
        l.iter()
            .any(|s| s.name == "broker" && s.state() == spb::ServiceState::Running && s.pid != old)
    })
    .await;
    wait_linked(&core).await;
    let port = core.broker_port("tcp").await;
    let (_dev_b, mut b_ev) = connect(port, "b", true).await;
    let got = receive_messages(&mut b_ev, 50).await;
    let want: Vec<_> = (0..50)
        .map(|i| (format!("a/to-b/{i}"), i.to_string()))
        .collect();
    assert_eq!(got, want);
}
