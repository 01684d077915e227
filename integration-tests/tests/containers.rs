//! Functions in `GreengrassContainer` isolation and within their limits:
//! what a container sees, its memory limit told when it kills, cgroups
//! removed after their instances, native and Java functions in containers.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use verdant_integration_tests::PATIENCE;
use verdant_integration_tests::functions::{
    INSECURE, TCP, cgroups_of, function_arn, invoke, logs, memory_limit, reply, start, start_with,
    wait_function,
};
use verdant_integration_tests::mqtt::{connect, publish, subscribed};

#[tokio::test]
async fn a_function_killed_at_its_memory_limit_is_told_so_logged_and_counted() {
    let core = start().await;
    let hog = function_arn("hog");
    let r = invoke(&core.socket("lambda-runner"), &hog, r#"{"alloc_mb": 256}"#).await;
    let said = format!("function {hog} exceeded its MemorySize of 32768 KiB and was killed");
    assert_eq!(r.function_error, "Unhandled");
    assert_eq!(
        serde_json::from_slice::<Value>(&r.payload).unwrap(),
        json!({ "errorMessage": said }),
        "{}",
        logs(&core)
    );
    core.wait_for_log("lambda-runner", &[&said]).await;
    let log = std::fs::read_to_string(core.root().join("logs/lambda-runner.log")).unwrap();
    let line = log.lines().find(|l| l.contains(&said)).unwrap();
    assert!(line.contains("ERROR"), "{line}");
    wait_function(&core, "hog", |f| {
        f.out_of_memory == 1 && f.errors == 1 && f.last_error.contains(&said)
    })
    .await;
    // Operators see the count; within its limit a new instance answers.
    let listed = core.ctl(&["-o", "json", "functions"]);
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["arn"] == hog)
        .unwrap();
    assert_eq!(row["out_of_memory"], 1, "{row}");
    let r = invoke(&core.socket("lambda-runner"), &hog, r#"{"alloc_mb": 1}"#).await;
    assert_eq!(
        r.function_error,
        "",
        "{}",
        String::from_utf8_lossy(&r.payload)
    );
    wait_function(&core, "hog", |f| f.out_of_memory == 1 && f.invocations == 2).await;
}

#[tokio::test]
async fn no_cgroup_outlives_its_instance() {
    // Instances stop as soon as they are idle: every round below starts
    // and stops instances.
    let core = start_with(&format!("{TCP}{INSECURE}idle_secs = 0\n")).await;
    let runner = core.service("lambda-runner").await.pid;
    let hog = function_arn("hog");
    for _ in 0..10 {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (socket, hog) = (core.socket("lambda-runner"), hog.clone());
            calls.spawn(async move { invoke(&socket, &hog, "{}").await });
        }
        while let Some(r) = calls.join_next().await {
            let r = r.unwrap();
            assert_eq!(
                r.function_error,
                "",
                "{}",
                String::from_utf8_lossy(&r.payload)
            );
        }
        wait_function(&core, "hog", |f| f.instances == 0).await;
    }
    wait_function(&core, "hog", |f| f.invocations == 100 && f.errors == 0).await;
    let settled = tokio::time::timeout(PATIENCE, async {
        while !cgroups_of(runner).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "left: {:?}\n{}",
        cgroups_of(runner),
        core.stderr_text()
    );
}

#[tokio::test]
async fn a_greengrass_container_sees_only_its_code_and_the_system_within_its_limits() {
    let core = start().await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut ev, "boxed/out").await;
    let ask = |event: Value| event.to_string();
    let early = publish(&dev, &mut ev, "boxed/in", &ask(json!({}))).await;
    let got = reply(&core, &mut ev, early, "no answer").await;
    let r: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(r["uid"], 65534);
    assert_eq!(r["pid"], 1, "its own PID namespace");
    assert_eq!(r["hostname"], "boxed", "its own UTS namespace");
    assert_eq!(r["cwd"], "/lambda");
    let root: Vec<&str> = r["root"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in ["lambda", "runtime", "tmp", "proc", "dev", "usr", "etc"] {
        assert!(root.contains(&want), "{want} in {root:?}");
    }
    for hidden in ["root", "home", "var", "work", "srv"] {
        assert!(!root.contains(&hidden), "{hidden} visible: {root:?}");
    }
    assert_eq!(r["code_writable"], false, "its code is read-only");
    assert_eq!(r["tmp_writable"], true, "a private /tmp");
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(r[cap], "0000000000000000", "{cap}: {r}");
    }
    assert_eq!(r["NoNewPrivs"], "1");
    // Its resources: the volume written through, the device read-only,
    // /sys, and the volume's owner group (GroupOwner tty) joined.
    assert_eq!(
        std::fs::read_to_string(core.root().join("shared/hello")).unwrap(),
        "from the container"
    );
    assert_eq!(r["device"], true);
    // Read-only by the devices cgroup (a mount cannot make a device file
    // read-only).
    assert_eq!(r["device_error"], "EPERM", "the device is read-only");
    assert_eq!(r["sysfs"], true);
    let tty = nix::unistd::Group::from_name("tty")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert!(r["groups"].as_array().unwrap().contains(&json!(tty)), "{r}");
    // cgroup v1 here (v2 is tested against a made-up tree in the crate).
    if Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        let limit = memory_limit("boxed").expect("the instance's memory cgroup");
        assert_eq!(
            limit.trim(),
            (64u64 << 20).to_string(),
            "MemorySize 65536 KB"
        );
    }

    // The escape matrix, run as the function.
    let early = publish(&dev, &mut ev, "boxed/in", &ask(json!({ "escape": true }))).await;
    let got = reply(&core, &mut ev, early, "no escape report").await;
    let e: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(e["shadow_readable"], false, "/etc/shadow: {e}");
    assert!(
        e["pids_seen"].as_u64().unwrap() < 5,
        "host PIDs visible: {e}"
    );
    assert_eq!(e["written"], json!(["/tmp/x"]), "writes outside /tmp: {e}");
    assert_eq!(e["became_root"], false);
    assert_eq!(
        e["fork_error"], "EAGAIN",
        "the pids limit stops a fork bomb: {e}"
    );
    assert!(e["forked"].as_u64().unwrap() < 64, "{e}");

    // More memory than MemorySize: the kernel ends the instance, the
    // invocation fails, and a new instance answers the next one.
    publish(&dev, &mut ev, "boxed/in", &ask(json!({ "alloc_mb": 256 }))).await;
    wait_function(&core, "boxed", |f| f.errors == 1).await;
    let early = publish(&dev, &mut ev, "boxed/in", &ask(json!({ "alloc_mb": 8 }))).await;
    let got = reply(&core, &mut ev, early, "no answer after the OOM").await;
    assert!(got[0].1.contains("allocated"), "{got:?}");
}

#[tokio::test]
async fn a_native_function_written_with_the_rust_sdk_runs_in_a_container() {
    let core = start().await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut ev, "native/out").await;
    let early = publish(&dev, &mut ev, "native/in", &json!({ "n": 7 }).to_string()).await;
    let got = reply(&core, &mut ev, early, "no answer").await;
    let out: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(out["event"], json!({ "n": 7 }));
    assert_eq!(out["subject"], "native/in");
    assert_eq!(out["sum"], 10_007, "the Python adder answered");
    assert_eq!(out["shadow_version"], 1);
    assert_eq!(out["uid"], 65534);
    assert_eq!(out["function"], function_arn("native"));
    // A handled error is counted; the instance lives on.
    publish(
        &dev,
        &mut ev,
        "native/in",
        &json!({ "fail": true }).to_string(),
    )
    .await;
    wait_function(&core, "native", |f| {
        f.runtime == "executable" && f.invocations == 2 && f.errors == 1 && f.instances == 1
    })
    .await;
}

#[tokio::test]
async fn a_java_function_to_the_aws_lambda_convention_runs_in_a_container() {
    let core = start().await;
    let java = function_arn("javasum");
    let invoked = core.ctl(&[
        "functions",
        "invoke",
        &java,
        r#"{"a":2,"b":40}"#,
        "--subject",
        "java/in",
    ]);
    assert!(invoked.status.success(), "{invoked:?}\n{}", logs(&core));
    let out: Value = serde_json::from_slice(&invoked.stdout).unwrap();
    assert_eq!(out["sum"], 42);
    assert_eq!(out["subject"], "java/in");
    assert_eq!(out["function"], java);
    // A handler that throws: a handled error with its message.
    let failed = core.ctl(&["functions", "invoke", &java, r#"{"fail":1}"#]);
    assert!(!failed.status.success());
    let body = String::from_utf8_lossy(&failed.stdout);
    assert!(
        body.contains("IllegalArgumentException: asked to fail"),
        "{body}"
    );
    // Plain Java objects in and out.
    let pojo = core.ctl(&[
        "functions",
        "invoke",
        &function_arn("javapojo"),
        r#"{"name":"core","times":3,"unknown":true}"#,
    ]);
    assert!(pojo.status.success(), "{pojo:?}\n{}", logs(&core));
    let out: Value = serde_json::from_slice(&pojo.stdout).unwrap();
    assert_eq!(
        out,
        json!({ "lines": ["hello core", "hello core", "hello core"], "shouted": true })
    );
    wait_function(&core, "javasum", |f| {
        f.runtime == "java" && f.invocations == 2 && f.errors == 1 && f.instances == 1
    })
    .await;
}
