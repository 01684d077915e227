//! Connectors under the real core: enabled by `ConnectorArn` and
//! `Parameters` in the group, routed by their ARN, run by the
//! lambda-runner as programs of the `verdant` executable; parameters that
//! break the connector's schema fail the deployment with their JSON paths.

use serde_json::{Value, json};
use verdant_integration_tests::deployments::{current, deploy, watch_to_end};
use verdant_integration_tests::functions::{functions, reply, start_group};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, subscribed};
use verdant_proto::ota::v1::Phase;

const METRICS: &str = "arn:aws:greengrass:us-east-1::/connectors/DeviceMetrics/versions/1";

fn metrics_group(parameters: &Value) -> String {
    json!({
        "Id": "connectors-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2)] },
        "ConnectorDefinitionVersion": { "Connectors": [
            { "Id": "metrics", "ConnectorArn": METRICS, "Parameters": parameters },
        ]},
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "metrics", "Source": METRICS, "Subject": "metrics/#", "Target": arn("a") },
        ]},
    })
    .to_string()
}

#[tokio::test]
async fn the_metrics_connector_publishes_the_core_s_figures_where_the_routes_send_them() {
    let group = metrics_group(&json!({
        "PublishInterval": "1", "PublishTopic": "metrics/core", "DiskPaths": "/, /nonexistent" }));
    let core = start_group(&group).await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut ev, "metrics/#").await;
    let got = reply(&core, &mut ev, Vec::new(), "no metrics published").await;
    assert_eq!(got[0].0, "metrics/core");
    let m: Value = serde_json::from_str(&got[0].1).unwrap();
    // The core's own thing name (`[core] thing_name`).
    assert_eq!(m["thing_name"], "verdant-core", "{m}");
    let usage = m["cpu"]["usage_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&usage), "{m}");
    assert!(m["memory"]["total_bytes"].as_u64().unwrap() > 0, "{m}");
    assert!(m["memory"]["available_bytes"].as_u64().is_some(), "{m}");
    assert_eq!(m["disks"][0]["path"], "/", "{m}");
    assert!(m["disks"][0]["total_bytes"].as_u64().unwrap() > 0, "{m}");
    assert!(m["disks"][1]["error"].is_string(), "{m}");
    let lo = m["network"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["interface"] == "lo")
        .unwrap_or_else(|| panic!("no loopback: {m}"));
    assert!(lo["rx_bytes"].as_u64().is_some(), "{m}");
    // Every process of the core, by name, with its memory.
    let names: Vec<&str> = m["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for daemon in [
        "verdant-init",
        "verdant-broker",
        "verdant-router",
        "verdant-shadow",
        "verdant-lambda-runner",
        "verdant-ota-agent",
    ] {
        assert!(names.contains(&daemon), "{daemon} in {names:?}");
    }
    for p in m["processes"].as_array().unwrap() {
        assert!(p["rss_bytes"].as_u64().unwrap() > 0, "{p}");
        assert!(p["cpu_percent"].as_f64().is_some(), "{p}");
    }
    // Operators see it among the functions, running as a pinned one.
    let listed = functions(&core).await;
    let row = listed
        .functions
        .iter()
        .find(|f| f.arn == METRICS)
        .expect("the connector is listed");
    assert!(row.pinned, "{row:?}");
}

#[tokio::test]
async fn connector_parameters_that_break_its_schema_fail_the_deployment_with_their_paths() {
    let core = start_group(&metrics_group(&json!({}))).await;
    let bad = metrics_group(&json!({ "PublishInterval": "often", "Colour": "red" }));
    let queued = deploy(&core, &bad).await;
    let seen = watch_to_end(&core, &queued.deployment_id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase(), Phase::Failed, "{last:?}");
    let at = "ConnectorDefinitionVersion.Connectors[0].Parameters";
    let problem = |path: &str| {
        last.problems.iter().find(|p| p.path == path).map_or_else(
            || panic!("{path}: {:?}", last.problems),
            |p| p.message.clone(),
        )
    };
    assert_eq!(
        problem(&format!("{at}.PublishInterval")),
        "`often` is not an integer"
    );
    assert!(problem(&format!("{at}.Colour")).contains("takes no such parameter"));
    assert_eq!(current(&core), "test");
}

#[test]
fn verdantctl_lists_the_connectors_with_their_parameters() {
    let out = std::process::Command::new(verdant_integration_tests::bin("verdantctl"))
        .args(["-o", "json", "connectors", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let modbus = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ModbusRTUProtocolAdapter")
        .expect("Modbus is shipped");
    assert_eq!(modbus["versions"], json!([1, 2, 3]));
    let port = modbus["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ModbusSerialPort-ResourceId")
        .unwrap();
    assert_eq!(port["type"], "device resource id");
    let text = std::process::Command::new(verdant_integration_tests::bin("verdantctl"))
        .arg("connectors")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("arn:aws:greengrass:<region>::/connectors/DeviceMetrics/versions/1"),
        "{text}"
    );
}
