//! verdantctl against a running core: what an operator types.

use verdant_integration_tests::Core;

fn text(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test]
async fn status_restart_logs_and_json() {
    let core = Core::start();
    core.wait_all_running().await;

    let status = text(&core.ctl(&["status"]));
    let lines: Vec<&str> = status.lines().collect();
    assert!(lines[0].starts_with("SERVICE"), "{status}");
    assert_eq!(lines.len(), 8, "{status}");
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l.contains("running") && l.contains("serving")),
        "{status}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&text(&core.ctl(&["status", "--output", "json"]))).unwrap();
    let router = json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "router")
        .unwrap();
    assert_eq!(router["state"], "running");
    assert!(router["pid"].as_u64().unwrap() > 0);

    let restarted: serde_json::Value =
        serde_json::from_str(&text(&core.ctl(&["-o", "json", "restart", "router"]))).unwrap();
    assert_eq!(restarted[0]["state"], "running");
    assert_eq!(restarted[0]["restart_count"], 1);
    assert_ne!(restarted[0]["pid"], router["pid"]);

    let logs = text(&core.ctl(&["logs", "router", "-n", "3"]));
    assert_eq!(logs.lines().count(), 3, "{logs}");
    let logs = text(&core.ctl(&["logs", "router", "-n", "50"]));
    assert!(logs.contains("subscription table loaded"), "{logs}");

    let out = core.ctl(&["stop", "nope"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "verdantctl: no service named `nope`"
    );

    let completions = text(&core.ctl(&["completions", "bash"]));
    assert!(completions.contains("verdantctl"), "{completions}");

    let out = text(&core.ctl(&["shutdown"]));
    assert!(out.contains("shutting down"), "{out}");
}

#[tokio::test]
async fn logs_follow_streams_new_lines() {
    let core = Core::start();
    core.wait_all_running().await;
    let mut follow = std::process::Command::new(verdant_integration_tests::bin("verdantctl"))
        .arg("--socket-dir")
        .arg(core.runtime_dir())
        .args(["logs", "secrets", "-f", "-n", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the follower subscribe, then make the service log something.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    text(&core.ctl(&["restart", "secrets"]));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    follow.kill().unwrap();
    let out = follow.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("[verdant-init] started pid"), "{seen}");
    assert!(seen.contains("secret store open"), "{seen}");
}

#[tokio::test]
async fn clients_and_disconnect_through_the_broker() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let core = Core::start_with(&verdant_integration_tests::Options {
        dropin: Some(
            "[broker]\nmode = \"local\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n",
        ),
        ..verdant_integration_tests::Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;
    let mut o = MqttOptions::new("keeper", "127.0.0.1", port);
    o.set_clean_session(false);
    let (client, mut events) = AsyncClient::new(o, 10);
    client.subscribe("jobs/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
            break;
        }
    }
    // Keep the connection served until the broker closes it.
    let served = tokio::spawn(async move { while events.poll().await.is_ok() {} });

    let listed = text(&core.ctl(&["clients"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with("keeper"))
        .unwrap_or_default();
    assert!(
        row.contains("connected") && row.contains("jobs/# (QoS 1)"),
        "{listed}"
    );

    let out = text(&core.ctl(&["disconnect", "keeper"]));
    assert_eq!(out.trim(), "disconnected keeper");
    tokio::time::timeout(std::time::Duration::from_secs(10), served)
        .await
        .expect("the client was disconnected")
        .unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&text(&core.ctl(&["clients", "-o", "json"]))).unwrap();
    let keeper = json
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "keeper")
        .unwrap();
    assert_eq!(keeper["connected"], false, "{json}");

    let out = core.ctl(&["disconnect", "keeper"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "verdantctl: keeper is not connected"
    );
    drop(client);
}
