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
    assert!(logs.contains("no function yet"), "{logs}");

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
        .args(["logs", "shadow", "-f", "-n", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the follower subscribe, then make the service log something.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    text(&core.ctl(&["restart", "shadow"]));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    follow.kill().unwrap();
    let out = follow.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("[verdant-init] started pid"), "{seen}");
    assert!(seen.contains("no function yet"), "{seen}");
}
