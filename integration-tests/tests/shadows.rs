//! The shadow service with real clients: the AWS IoT Device SDK for
//! Python's shadow client, unmodified, over mutual TLS through the broker
//! and the router (the sample group routes the sample device's shadow
//! topics to `GGShadowService` and back).

use verdant_integration_tests::Core;

#[tokio::test]
async fn the_aws_iot_device_sdk_shadow_client_works_unmodified() {
    let core = Core::start();
    core.wait_all_running().await;
    let out = core
        .run_device_script("awsiot_shadow.py", &["sample-device"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let r = &v["results"];
    assert_eq!(r["update"]["status"], "accepted", "{v}");
    assert_eq!(r["update"]["payload"]["version"], 1, "{v}");
    assert_eq!(
        r["update"]["payload"]["state"]["desired"]["color"], "red",
        "{v}"
    );
    // The SDK drops a delta unless its version is newer than the last it saw.
    assert_eq!(v["deltas"][0]["state"]["color"], "red", "{v}");
    assert_eq!(r["get"]["status"], "accepted", "{v}");
    assert_eq!(r["get"]["payload"]["state"]["delta"]["color"], "red", "{v}");
    assert_eq!(r["report"]["status"], "accepted", "{v}");
    assert_eq!(r["report"]["payload"]["version"], 2, "{v}");
    assert_eq!(r["conflict"]["status"], "rejected", "{v}");
    assert_eq!(r["conflict"]["payload"]["code"], 409, "{v}");
    assert_eq!(r["delete"]["status"], "accepted", "{v}");
    assert_eq!(r["get_after_delete"]["status"], "rejected", "{v}");
    assert_eq!(r["get_after_delete"]["payload"]["code"], 404, "{v}");
}
