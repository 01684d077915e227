//! A new group taken by a running lambda-runner (`Lambda/ApplyGroup`, as
//! the ota-agent calls it after switching `deployments/current`): functions
//! added, removed and changed while an unchanged pinned greengrasssdk
//! function keeps its process; a group that cannot be read changes nothing.

use std::time::Duration;

use serde_json::{Value, json};
use verdant_integration_tests::functions::{
    INSECURE, TCP, adder_function, apply_group, cgroups_of, echo, echo_function, function_arn,
    functions, greeter_function, group_of, install_greeters, invoke, wait_function,
};
use verdant_integration_tests::mqtt::{connect, subscribed};
use verdant_integration_tests::{Core, Options, PATIENCE, alive};

const GREETERS: &[&str] = &["greeter", "leaving", "arriving", "busy"];

async fn start(group: &str) -> Core {
    let dropin = format!("{TCP}{INSECURE}");
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(group),
        prepare: Some(&|root| install_greeters(root, GREETERS)),
        ..Options::default()
    });
    core.wait_all_running().await;
    core
}

/// The pids `ListFunctions` shows for `name`, once it runs one instance.
async fn running(core: &Core, name: &str) -> Vec<u32> {
    wait_function(core, name, |f| f.instances == 1 && f.pids.len() == 1).await;
    let arn = function_arn(name);
    let listed = functions(core).await;
    listed
        .functions
        .into_iter()
        .find(|f| f.arn == arn)
        .unwrap()
        .pids
}

/// What the greeter-code function `name` answers an invoke with.
async fn greet(core: &Core, name: &str) -> Value {
    let reply = invoke(&core.socket("lambda-runner"), &function_arn(name), "{}").await;
    assert_eq!(reply.function_error, "", "{reply:?}");
    serde_json::from_slice(&reply.payload).unwrap()
}

fn deployed(core: &Core, group: &str) {
    std::fs::write(core.root().join("deployments/test/group.json"), group).unwrap();
}

/// The cgroups of the lambda-runner `runner`'s instances of `name`.
fn cgroups(runner: u32, name: &str) -> Vec<std::path::PathBuf> {
    cgroups_of(runner)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}-")))
        })
        .collect()
}

#[tokio::test]
async fn apply_group_starts_stops_and_restarts_what_changed_and_leaves_the_rest_running() {
    // The function to remove runs in a container (its cgroups go with it).
    let mut leaving = greeter_function("leaving", false, "bye");
    leaving["FunctionConfiguration"]["MemorySize"] = json!(65536);
    leaving["FunctionConfiguration"]["Environment"]["Execution"] =
        json!({ "IsolationMode": "GreengrassContainer" });
    let core = start(&group_of(&[
        echo_function(),
        adder_function(),
        greeter_function("greeter", true, "hello"),
        leaving,
    ]))
    .await;
    let echo_pids = running(&core, "echo").await;
    let greeter_pids = running(&core, "greeter").await;
    assert_eq!(greet(&core, "greeter").await["greeting"], "hello");
    assert_eq!(greet(&core, "leaving").await["greeting"], "bye");
    let leaving = running(&core, "leaving").await[0];
    let runner = core.service("lambda-runner").await.pid;
    assert!(
        !cgroups(runner, "leaving").is_empty(),
        "a container instance"
    );

    deployed(
        &core,
        &group_of(&[
            echo_function(),
            adder_function(),
            greeter_function("greeter", true, "bonjour"),
            greeter_function("arriving", true, "welcome"),
        ]),
    );
    let applied = apply_group(&core).await.expect("the group applied");
    assert_eq!(applied.deployment_id, "test");
    assert_eq!(applied.started, [function_arn("arriving")]);
    assert_eq!(applied.restarted, [function_arn("greeter")]);
    assert_eq!(applied.stopped, [function_arn("leaving")]);
    assert_eq!(
        applied.unchanged,
        [function_arn("echo"), function_arn("adder")]
    );

    // The removed function is gone, its idle instance killed.
    let listed = functions(&core).await;
    let arns: Vec<&str> = listed.functions.iter().map(|f| f.arn.as_str()).collect();
    assert!(
        !arns.contains(&function_arn("leaving").as_str()),
        "{arns:?}"
    );
    let gone = tokio::time::timeout(PATIENCE, async {
        while alive(leaving) || !cgroups(runner, "leaving").is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the removed function's instance {leaving} or its cgroups live on: {:?}",
        cgroups(runner, "leaving")
    );
    // The new pinned function runs and answers.
    running(&core, "arriving").await;
    assert_eq!(greet(&core, "arriving").await["greeting"], "welcome");
    // The changed one runs anew, with its new environment.
    let answer = greet(&core, "greeter").await;
    assert_eq!(answer["greeting"], "bonjour");
    assert_ne!(
        u32::try_from(answer["pid"].as_u64().unwrap()).unwrap(),
        greeter_pids[0]
    );
    // The unchanged pinned function kept its process, and works on: a
    // device's message through it, and through it to the unchanged adder.
    assert_eq!(running(&core, "echo").await, echo_pids);
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut ev, "echo/out").await;
    let out = echo(&core, &dev, &mut ev, json!({ "n": 7 })).await;
    assert_eq!(out["sum"], 107);
    assert_eq!(running(&core, "echo").await, echo_pids);
}

#[tokio::test]
async fn a_changed_on_demand_function_finishes_its_invocation_under_the_old_code() {
    let core = start(&group_of(&[
        echo_function(),
        greeter_function("busy", false, "before"),
    ]))
    .await;
    // An invocation that runs until the test lets it end.
    let go = core.dir.path().join("go");
    let event = json!({ "wait_for": go }).to_string();
    let socket = core.socket("lambda-runner");
    let in_flight =
        tokio::spawn(async move { invoke(&socket, &function_arn("busy"), &event).await });
    wait_function(&core, "busy", |f| f.invocations == 1 && f.instances == 1).await;

    deployed(
        &core,
        &group_of(&[echo_function(), greeter_function("busy", false, "after")]),
    );
    let applied = apply_group(&core).await.expect("the group applied");
    assert_eq!(applied.restarted, [function_arn("busy")]);
    // New work runs the new configuration, beside the old instance.
    assert_eq!(greet(&core, "busy").await["greeting"], "after");
    assert!(!in_flight.is_finished(), "the old instance was not killed");
    std::fs::write(&go, "").unwrap();
    let reply = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("the invocation in flight ends")
        .unwrap();
    assert_eq!(reply.function_error, "", "{reply:?}");
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        answer["greeting"], "before",
        "it ran under the old configuration"
    );
}

#[tokio::test]
async fn a_group_that_cannot_be_read_is_refused_and_changes_nothing() {
    let group = group_of(&[echo_function(), greeter_function("greeter", true, "hello")]);
    let core = start(&group).await;
    let echo_pids = running(&core, "echo").await;
    let greeter_pids = running(&core, "greeter").await;

    // The same function listed twice, and a greeter changed: refused whole.
    deployed(
        &core,
        &group_of(&[
            echo_function(),
            greeter_function("greeter", true, "bonjour"),
            greeter_function("greeter", false, "again"),
        ]),
    );
    let refused = apply_group(&core)
        .await
        .expect_err("a group with a problem");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("is listed twice"),
        "the loader's message: {refused:?}"
    );
    std::fs::write(core.root().join("deployments/test/group.json"), "{").unwrap();
    let refused = apply_group(&core).await.expect_err("not JSON");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    let listed = functions(&core).await;
    let arns: Vec<&str> = listed.functions.iter().map(|f| f.arn.as_str()).collect();
    assert_eq!(arns, [function_arn("echo"), function_arn("greeter")]);
    assert_eq!(running(&core, "echo").await, echo_pids);
    assert_eq!(running(&core, "greeter").await, greeter_pids);
    assert_eq!(greet(&core, "greeter").await["greeting"], "hello");

    // Put right, it applies.
    deployed(&core, &group);
    let applied = apply_group(&core).await.expect("the group applied");
    assert_eq!(applied.unchanged.len(), 2, "{applied:?}");
}
