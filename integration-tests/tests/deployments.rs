//! Deployments through the ota-agent's `Deployments` API, with the real
//! daemons under init: a new group is validated, staged, switched and
//! applied hot (devices that stay keep their connection), an invalid one
//! changes nothing, and a stop of the ota-agent at any step ends with the
//! core wholly on the old deployment.

use std::time::Duration;

use verdant_integration_tests::deployments::{
    client, current, deploy, phases, routes, watch_to_end,
};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{publish, receive_messages, received, subscribed};
use verdant_integration_tests::{Core, Options, PATIENCE};
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::Phase;

const TCP: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";

/// Devices a and b (and c when `with_c`); a reaches b on `subject`.
fn group(subject: &str, with_c: bool) -> String {
    let mut devices = vec![thing("a", 2), thing("b", 3)];
    if with_c {
        devices.push(thing("c", 4));
    }
    serde_json::json!({
        "Id": "deploy-test",
        "Version": subject,
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": devices },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "a-to-b", "Source": arn("a"), "Subject": subject, "Target": arn("b") },
        ]},
    })
    .to_string()
}

async fn start(dropin: &str) -> (Core, u16) {
    let group = group("a/old/#", false);
    let dropin = format!("{TCP}{dropin}");
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(&group),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;
    (core, port)
}

#[tokio::test]
async fn a_new_group_is_applied_hot_and_connected_devices_stay() {
    let (core, port) = start("").await;
    let (dev_a, mut a_ev) = verdant_integration_tests::mqtt::connect(port, "a", false).await;
    let (dev_b, mut b_ev) = verdant_integration_tests::mqtt::connect(port, "b", false).await;
    subscribed(&dev_b, &mut b_ev, "a/#").await;

    let queued = deploy(&core, &group("a/new/#", true)).await;
    assert_eq!(queued.phase(), Phase::Queued);
    assert_eq!(queued.deployment_type, "NewDeployment");
    let seen = watch_to_end(&core, &queued.deployment_id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase(), Phase::Succeeded, "{last:?}");
    // In order, from wherever the watch came in, to the end.
    let order = [
        Phase::Queued,
        Phase::Validating,
        Phase::Staging,
        Phase::Applying,
        Phase::HealthCheck,
        Phase::Succeeded,
    ];
    let seen_phases = phases(&seen);
    let at: Vec<usize> = seen_phases
        .iter()
        .map(|p| {
            order
                .iter()
                .position(|o| o == p)
                .expect("a phase of success")
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] + 1 == w[1]), "{seen_phases:?}");
    assert_eq!(last.group_id, "deploy-test");
    assert_eq!(last.group_version, "a/new/#");
    assert_eq!(last.previous, "test");
    assert!(
        last.applied.iter().any(|a| a.daemon == "router"),
        "{:?}",
        last.applied
    );
    assert_eq!(current(&core), queued.deployment_id);
    assert_eq!(routes(&core).await, ["a/new/#"]);

    // The same connections carry the new table's routes.
    publish(&dev_a, &mut a_ev, "a/new/1", "new").await;
    assert_eq!(
        receive_messages(&mut b_ev, 1).await,
        [("a/new/1".to_string(), "new".to_string())]
    );
    publish(&dev_a, &mut a_ev, "a/old/1", "old").await;
    assert!(
        received(&mut b_ev, Duration::from_millis(300))
            .await
            .is_empty()
    );
    // The device the group added may connect.
    let _c = verdant_integration_tests::mqtt::connect(port, "c", false).await;

    let listed = client(&core)
        .await
        .list_deployments(pb::ListDeploymentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.current, queued.deployment_id);
    assert_eq!(listed.deployments[0].deployment_id, queued.deployment_id);
}

#[tokio::test]
async fn an_invalid_group_fails_with_its_json_paths_and_changes_nothing() {
    let (core, _port) = start("").await;
    let bad = group("a/new/#", false).replace(
        &format!("\"Target\":\"{}\"", arn("b")),
        "\"Target\":\"arn:aws:iot:us-east-1:123456789012:thing/nobody\"",
    );
    let queued = deploy(&core, &bad).await;
    let seen = watch_to_end(&core, &queued.deployment_id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase(), Phase::Failed, "{last:?}");
    assert!(last.reason.contains("invalid group"), "{}", last.reason);
    assert!(
        last.problems
            .iter()
            .any(|p| p.path == "SubscriptionDefinitionVersion.Subscriptions[0].Target"),
        "{:?}",
        last.problems
    );
    assert_eq!(current(&core), "test");
    assert!(
        !core
            .root()
            .join("deployments")
            .join(&queued.deployment_id)
            .exists()
    );
    assert_eq!(routes(&core).await, ["a/old/#"]);

    // Requests that are wrong in themselves are refused at once.
    let mut c = client(&core).await;
    let err = c
        .deploy(pb::DeployRequest {
            deployment_type: "SomeDeployment".into(),
            ..pb::DeployRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = c.deploy(pb::DeployRequest::default()).await.unwrap_err();
    assert!(err.message().contains("needs a group"), "{err:?}");
    let err = c
        .get_deployment(pb::DeploymentRequest {
            deployment_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_reset_leaves_the_core_alone_and_a_redeployment_brings_the_group_back() {
    let (core, _port) = start("").await;
    let reset = client(&core)
        .await
        .deploy(pb::DeployRequest {
            deployment_type: "ResetDeployment".into(),
            ..pb::DeployRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let seen = watch_to_end(&core, &reset.deployment_id).await;
    assert_eq!(seen.last().unwrap().phase(), Phase::Succeeded, "{seen:?}");
    assert!(routes(&core).await.is_empty());
    let deployed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(core.root().join("deployments/current/group.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(deployed["Id"], "deploy-test");
    assert_eq!(
        deployed["CoreDefinitionVersion"]["Cores"][0]["ThingArn"],
        arn("core")
    );
    assert!(
        deployed["DeviceDefinitionVersion"]["Devices"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let again = deploy(&core, &group("a/old/#", false)).await;
    let seen = watch_to_end(&core, &again.deployment_id).await;
    assert_eq!(seen.last().unwrap().phase(), Phase::Succeeded, "{seen:?}");
    assert_eq!(routes(&core).await, ["a/old/#"]);
}

/// What a test kills in the middle of a deployment.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// The ota-agent (init restarts it).
    Agent,
    /// A daemon that applies or carries the group (init restarts it).
    Daemon(&'static str),
    /// init and every daemon at once, then a new init on the same root.
    WholeCore,
}

/// Kills `what` with SIGKILL while a deployment is in `phase` (each step
/// paused so the test can), and checks that the deployment then ends with
/// the core wholly on the old group or wholly on the new one.
async fn killed_during(phase: Phase, what: Kill) {
    let (mut core, _port) = start("[ota-agent]\nstep_pause_ms = 1500\n").await;
    let queued = deploy(&core, &group("a/new/#", true)).await;
    let id = queued.deployment_id.clone();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let d = client(&core)
                .await
                .get_deployment(pb::DeploymentRequest {
                    deployment_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if d.phase() == phase {
                return;
            }
            assert!(
                !matches!(
                    d.phase(),
                    Phase::Succeeded | Phase::Failed | Phase::RolledBack
                ),
                "ended before {phase:?}: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the phase comes");
    match what {
        Kill::Agent => core.kill_9("ota-agent").await,
        Kill::Daemon(name) => core.kill_9(name).await,
        Kill::WholeCore => {
            core.power_cut().await;
            core.wait_all_running().await;
        }
    }
    let seen = watch_to_end(&core, &id).await;
    let last = seen.last().unwrap();
    // Wholly new, or wholly old.
    if last.phase() == Phase::Succeeded {
        assert_eq!(current(&core), id, "{phase:?} {what:?}: {last:?}");
        assert_eq!(routes(&core).await, ["a/new/#"], "{phase:?} {what:?}");
    } else {
        assert!(
            matches!(last.phase(), Phase::Failed | Phase::RolledBack),
            "{phase:?} {what:?}: {last:?}"
        );
        assert_eq!(current(&core), "test", "{phase:?} {what:?}: {last:?}");
        assert_eq!(routes(&core).await, ["a/old/#"], "{phase:?} {what:?}");
    }
    if !matches!(what, Kill::Daemon(_)) {
        // Killed, the agent cannot have finished it: it says so.
        assert!(last.reason.contains("interrupted during"), "{last:?}");
        // Before the switch nothing changed; after it, `current` is put back.
        let ended = match phase {
            Phase::Validating => vec![Phase::Failed],
            Phase::Staging => vec![Phase::Failed, Phase::RolledBack],
            _ => vec![Phase::RolledBack],
        };
        assert!(ended.contains(&last.phase()), "{phase:?}: {last:?}");
    }

    // The agent takes the next deployment as usual.
    let next = deploy(&core, &group("a/new/#", true)).await;
    let seen = watch_to_end(&core, &next.deployment_id).await;
    assert_eq!(seen.last().unwrap().phase(), Phase::Succeeded, "{seen:?}");
    assert_eq!(routes(&core).await, ["a/new/#"]);
}

#[tokio::test]
async fn the_ota_agent_killed_while_validating() {
    killed_during(Phase::Validating, Kill::Agent).await;
}

#[tokio::test]
async fn the_whole_core_killed_while_validating() {
    killed_during(Phase::Validating, Kill::WholeCore).await;
}

#[tokio::test]
async fn the_ota_agent_killed_while_staging() {
    killed_during(Phase::Staging, Kill::Agent).await;
}

#[tokio::test]
async fn the_whole_core_killed_while_staging() {
    killed_during(Phase::Staging, Kill::WholeCore).await;
}

#[tokio::test]
async fn the_ota_agent_killed_while_applying() {
    killed_during(Phase::Applying, Kill::Agent).await;
}

#[tokio::test]
async fn the_router_killed_while_applying() {
    killed_during(Phase::Applying, Kill::Daemon("router")).await;
}

#[tokio::test]
async fn the_broker_killed_while_applying() {
    killed_during(Phase::Applying, Kill::Daemon("broker")).await;
}

#[tokio::test]
async fn the_lambda_runner_killed_while_applying() {
    killed_during(Phase::Applying, Kill::Daemon("lambda-runner")).await;
}

#[tokio::test]
async fn the_shadow_service_killed_while_applying() {
    killed_during(Phase::Applying, Kill::Daemon("shadow")).await;
}

#[tokio::test]
async fn the_whole_core_killed_while_applying() {
    killed_during(Phase::Applying, Kill::WholeCore).await;
}

#[tokio::test]
async fn the_ota_agent_killed_while_health_check() {
    killed_during(Phase::HealthCheck, Kill::Agent).await;
}

#[tokio::test]
async fn the_router_killed_while_health_check() {
    killed_during(Phase::HealthCheck, Kill::Daemon("router")).await;
}

#[tokio::test]
async fn the_whole_core_killed_while_health_check() {
    killed_during(Phase::HealthCheck, Kill::WholeCore).await;
}

/// `group("a/new/#", false)` plus a pinned function that exits at once.
fn group_with_crashing_function() -> String {
    let mut g: serde_json::Value = serde_json::from_str(&group("a/new/#", false)).unwrap();
    g["FunctionDefinitionVersion"] = serde_json::json!({
        "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
            "RunAs": { "Uid": 65534, "Gid": 65534 } } },
        "Functions": [
            { "Id": "crash", "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:crash:1",
              "FunctionConfiguration": { "Executable": "crash.sh", "Pinned": true, "Timeout": 3 } }
        ]
    });
    g.to_string()
}

#[tokio::test]
async fn a_function_that_fails_its_health_check_is_rolled_back() {
    use std::os::unix::fs::PermissionsExt;
    let (core, _port) = start(&format!(
        "{}[ota-agent]\nhealth_check_secs = 3\n",
        verdant_integration_tests::functions::INSECURE
    ))
    .await;
    let dir = core.root().join("functions/crash/1");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("crash.sh");
    std::fs::write(&script, "#!/bin/sh\necho 'cannot start' >&2\nexit 3\n").unwrap();
    for p in [core.root().join("functions/crash"), dir.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let queued = deploy(&core, &group_with_crashing_function()).await;
    let seen = watch_to_end(&core, &queued.deployment_id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase(), Phase::RolledBack, "{last:?}");
    assert!(
        last.reason.contains("health check") && last.reason.contains("function:crash:1"),
        "{}",
        last.reason
    );
    assert!(
        last.reason.contains("back on deployment test"),
        "{}",
        last.reason
    );
    assert!(
        phases(&seen).contains(&Phase::RollingBack),
        "{:?}",
        phases(&seen)
    );
    assert_eq!(current(&core), "test");
    assert_eq!(routes(&core).await, ["a/old/#"]);
    let functions = verdant_integration_tests::functions::functions(&core)
        .await
        .functions;
    assert!(
        functions.iter().all(|f| !f.arn.contains("crash")),
        "{functions:?}"
    );
}

#[tokio::test]
async fn verdantctl_deploys_follows_and_lists() {
    let (core, _port) = start("").await;
    let file = core.dir.path().join("new-group.json");
    std::fs::write(&file, group("a/new/#", true)).unwrap();
    let out = core.ctl(&["deploy", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in ["APPLYING  router", "HEALTH_CHECK", "SUCCEEDED"] {
        assert!(text.contains(phase), "{phase}: {text}");
    }
    assert_eq!(routes(&core).await, ["a/new/#"]);

    let bad = core.dir.path().join("bad-group.json");
    std::fs::write(&bad, group("a/new/#", true).replace("a/new/#", "a/#/x")).unwrap();
    let out = core.ctl(&["deploy", bad.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("SubscriptionDefinitionVersion.Subscriptions[0].Subject"),
        "{text}"
    );

    let out = core.ctl(&["deployments", "-o", "json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert_eq!(listed.matches("\"SUCCEEDED\"").count(), 1, "{listed}");
    assert_eq!(listed.matches("\"FAILED\"").count(), 1, "{listed}");
    // A Redeployment without a file deploys the group the core runs.
    let out = core.ctl(&["deploy", "--type", "Redeployment"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(routes(&core).await, ["a/new/#"]);
}

#[tokio::test]
async fn the_queue_is_bounded_and_cancelled_deployments_never_block_the_next() {
    let (core, _port) = start("[ota-agent]\nstep_pause_ms = 300\nqueue = 2\n").await;
    let running = deploy(&core, &group("a/one/#", false)).await;
    let waiting = deploy(&core, &group("a/two/#", false)).await;
    let last = deploy(&core, &group("a/three/#", false)).await;
    let mut c = client(&core).await;
    let full = c
        .deploy(pb::DeployRequest {
            source: Some(pb::deploy_request::Source::GroupJson(
                group("a/four/#", false).into_bytes(),
            )),
            ..pb::DeployRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");

    let by_id = |id: &str| pb::DeploymentRequest {
        deployment_id: id.into(),
    };
    // The running one stops at its next step, before the switch: nothing changed.
    c.cancel_deployment(by_id(&running.deployment_id))
        .await
        .unwrap();
    // A queued one is dropped at once.
    let dropped = c
        .cancel_deployment(by_id(&waiting.deployment_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dropped.phase(), Phase::Cancelled, "{dropped:?}");

    let first = watch_to_end(&core, &running.deployment_id).await;
    let first = first.last().unwrap();
    assert!(
        matches!(first.phase(), Phase::Cancelled | Phase::RolledBack),
        "{first:?}"
    );
    assert!(first.reason.contains("cancelled"), "{first:?}");
    let third = watch_to_end(&core, &last.deployment_id).await;
    assert_eq!(third.last().unwrap().phase(), Phase::Succeeded, "{third:?}");
    assert_eq!(routes(&core).await, ["a/three/#"]);
    assert_eq!(current(&core), last.deployment_id);
    let err = c
        .cancel_deployment(by_id(&last.deployment_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
}

/// Deploys `group`, which must fail validation; its problem at `path`.
async fn failed_validation(core: &Core, group: &str, path: &str) -> pb::Problem {
    let queued = deploy(core, group).await;
    let seen = watch_to_end(core, &queued.deployment_id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase(), Phase::Failed, "{last:?}");
    last.problems
        .iter()
        .find(|p| p.path.starts_with(path))
        .unwrap_or_else(|| panic!("{last:?}"))
        .clone()
}

#[tokio::test]
async fn a_function_without_its_code_fails_validation_and_changes_nothing() {
    let (core, _port) = start(verdant_integration_tests::functions::INSECURE).await;
    // The crashing function's group, with no code installed for it.
    let problem = failed_validation(
        &core,
        &group_with_crashing_function(),
        "FunctionDefinitionVersion.Functions[0]",
    )
    .await;
    assert!(
        problem.message.starts_with("lambda-runner: ")
            && problem.message.contains("functions/crash/1"),
        "{problem:?}"
    );
    assert_eq!(current(&core), "test");
    assert_eq!(routes(&core).await, ["a/old/#"]);
}

#[tokio::test]
async fn a_device_whose_certificate_on_the_core_is_not_the_groups_fails_validation() {
    let (core, _port) = start("").await;
    // The sample device's certificate is on the core (config/certs/devices/):
    // a group naming another certificate for it could not let it connect.
    let mut g: serde_json::Value = serde_json::from_str(&group("a/new/#", false)).unwrap();
    g["DeviceDefinitionVersion"]["Devices"]
        .as_array_mut()
        .unwrap()
        .push(thing("sample-device", 9));
    let problem = failed_validation(
        &core,
        &g.to_string(),
        "DeviceDefinitionVersion.Devices[2].CertificateArn",
    )
    .await;
    assert!(
        problem.message.starts_with("broker: ") && problem.message.contains("could not connect"),
        "{problem:?}"
    );
    assert_eq!(current(&core), "test");
}
