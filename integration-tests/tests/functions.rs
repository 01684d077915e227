//! Functions written for Greengrass v1 with the real greengrasssdk, run by
//! the lambda-runner: a device's message reaches a pinned function, which
//! updates a shadow, invokes an on-demand function and publishes back to
//! the device; handler errors, timeouts and strangers are told apart.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use verdant_integration_tests::PATIENCE;
use verdant_integration_tests::functions::{
    TCP, echo, function_arn, functions, reply, start, start_with, wait_function,
};
use verdant_integration_tests::mqtt::{connect, publish, subscribed};
use verdant_proto::lambda::v1 as pb;
use verdant_proto::lambda::v1::lambda_client::LambdaClient;

#[tokio::test]
async fn a_greengrasssdk_function_gets_messages_calls_shadows_and_functions_and_publishes() {
    let core = start().await;
    wait_function(&core, "echo", |f| f.instances == 1 && f.state == "ready").await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut ev, "echo/out").await;

    let out = echo(&core, &dev, &mut ev, json!({ "n": 1 })).await;
    assert_eq!(out["event"], json!({ "n": 1 }));
    assert_eq!(out["subject"], "in/x");
    assert_eq!(out["sum"], 101, "the adder answered");
    assert_eq!(out["shadow_version"], 1, "the shadow update was accepted");
    assert_eq!(out["uid"], 65534, "run as the group's RunAs");
    assert_eq!(out["function"], function_arn("echo"));
    let shadow = core.ctl(&["shadow", "get", "a"]);
    assert!(
        String::from_utf8_lossy(&shadow.stdout).contains("\"n\": 1"),
        "{shadow:?}"
    );

    // The same pinned instance takes the next message.
    let out = echo(&core, &dev, &mut ev, json!({ "n": 2 })).await;
    assert_eq!(
        (out["sum"].clone(), out["shadow_version"].clone()),
        (json!(102), json!(2))
    );
    wait_function(&core, "echo", |f| f.invocations == 2 && f.instances == 1).await;
    wait_function(&core, "adder", |f| f.invocations == 4 && f.errors == 0).await;

    // A handler that raises is an error, counted; the instance lives on.
    publish(&dev, &mut ev, "in/x", &json!({ "fail": true }).to_string()).await;
    wait_function(&core, "echo", |f| f.errors == 1 && f.instances == 1).await;

    // An invocation past its Timeout: the caller gets Unhandled, the
    // instance is killed, and the next call starts a new one.
    let out = echo(&core, &dev, &mut ev, json!({ "slow": 5 })).await;
    assert_eq!(out["error"], "Unhandled");
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .contains("Task timed out after 1.00 seconds"),
        "{out}"
    );
    wait_function(&core, "adder", |f| f.timeouts == 1).await;
    let out = echo(&core, &dev, &mut ev, json!({ "n": 3 })).await;
    assert_eq!(out["sum"], 103);

    // Operators invoke a function and read a function's log.
    let adder = function_arn("adder");
    let invoked = core.ctl(&["functions", "invoke", &adder, r#"{"a":2,"b":3}"#]);
    assert!(invoked.status.success(), "{invoked:?}");
    assert_eq!(
        String::from_utf8_lossy(&invoked.stdout).trim(),
        r#"{"sum": 5}"#
    );
    let log = core.ctl(&["logs", "--function", "echo", "-n", "100"]);
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("ValueError: asked to fail"),
        "{log:?}"
    );

    // What operators see: processes, memory, the last error.
    let json_list = core.ctl(&["-o", "json", "functions"]);
    let list: Value = serde_json::from_slice(&json_list.stdout).unwrap();
    let find = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|f| f["arn"] == function_arn(name))
            .unwrap()
            .clone()
    };
    let echo_row = find("echo");
    assert_eq!(echo_row["pids"].as_array().unwrap().len(), 1, "{echo_row}");
    assert!(
        echo_row["memory_bytes"].as_u64().unwrap() > 1 << 20,
        "{echo_row}"
    );
    assert!(
        echo_row["last_error"]
            .as_str()
            .unwrap()
            .contains("asked to fail"),
        "{echo_row}"
    );
    let adder_row = find("adder");
    assert!(
        adder_row["last_error"]
            .as_str()
            .unwrap()
            .contains("Task timed out after 1.00 seconds"),
        "{adder_row}"
    );
    let listed = core.ctl(&["functions"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    for want in [
        "function:echo:1",
        "pinned",
        "function:adder:1",
        "on-demand",
        "65534:65534",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
}

/// One HTTP/1.1 request to the IPC port: the status line.
fn http(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn strangers_without_a_token_are_refused_by_the_ipc_endpoint() {
    let core = start().await;
    let port = u16::try_from(functions(&core).await.ipc_port).unwrap();
    let path = format!("/2016-11-01/functions/{}", function_arn("adder"));
    for token in ["", "Authorization: not-a-token\r\n"] {
        let status = http(
            port,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\n{token}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
        );
        assert!(status.contains("401"), "{status}");
    }
    let status = http(
        port,
        &format!("GET {path}/work HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    assert!(status.contains("401"), "{status}");
    // Not on 8000 (a free port here): the operator was warned at start.
    core.wait_for_log(
        "lambda-runner",
        &[&format!("port {port}, not 8000"), "older than 1.6"],
    )
    .await;

    // A real token, stolen from the echo instance's environment (we are
    // root), is refused from a socket of another user than the instance's.
    wait_function(&core, "echo", |f| f.instances == 1).await;
    let token = stolen_token(&function_arn("echo"), port).expect("the echo instance's token");
    let echo = format!("/2016-11-01/functions/{}", function_arn("echo"));
    let status = http(
        port,
        &format!(
            "GET {echo}/work HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(status.contains("401"), "{status}");
}

#[tokio::test]
async fn instances_die_with_a_killed_lambda_runner_and_come_back_with_it() {
    let core = start().await;
    wait_function(&core, "echo", |f| f.instances == 1).await;
    let port = u16::try_from(functions(&core).await.ipc_port).unwrap();
    let (old, _) = instance(&function_arn("echo"), port).expect("the echo instance");
    let runner = core.service("lambda-runner").await.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(runner).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let gone = tokio::time::timeout(PATIENCE, async {
        while verdant_integration_tests::alive(old) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "instance {old} outlived its lambda-runner");
    // init restarts the lambda-runner, which starts the pinned function again.
    core.wait_until("the lambda-runner restarted", |list| {
        list.iter().any(|s| {
            s.name == "lambda-runner"
                && s.pid != runner
                && s.state() == verdant_proto::supervisor::v1::ServiceState::Running
        })
    })
    .await;
    let port = loop {
        if let Ok(channel) = verdant_common::uds::connect(&core.socket("lambda-runner")).await
            && let Ok(r) = LambdaClient::new(channel)
                .list_functions(pb::ListFunctionsRequest {})
                .await
        {
            break u16::try_from(r.into_inner().ipc_port).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_function(&core, "echo", |f| f.instances == 1).await;
    let (new, _) = instance(&function_arn("echo"), port).expect("a new echo instance");
    assert_ne!(new, old);
}

/// The pid and token of the process running `arn` for the core whose IPC
/// port is `port`.
fn instance(arn: &str, port: u16) -> Option<(u32, String)> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let has = |want: &str| vars.iter().any(|v| v == want);
        if has(&format!("MY_FUNCTION_ARN={arn}")) && has(&format!("GG_DAEMON_PORT={port}")) {
            let token = vars
                .iter()
                .find_map(|v| v.strip_prefix("AWS_CONTAINER_AUTHORIZATION_TOKEN="))?;
            return Some((pid, token.to_string()));
        }
    }
    None
}

/// The token in the environment of the process running `arn` for the
/// core whose IPC port is `port`.
fn stolen_token(arn: &str, port: u16) -> Option<String> {
    instance(arn, port).map(|(_, token)| token)
}

#[tokio::test]
async fn secure_mode_refuses_functions_on_a_host_without_link_protection() {
    let core = start_with(TCP).await;
    let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/fs/{name}")).unwrap();
    let protected =
        read("protected_hardlinks").trim() == "1" && read("protected_symlinks").trim() == "1";
    let listed = functions(&core).await;
    for f in &listed.functions {
        if protected {
            assert_eq!(f.state, "ready", "{f:?}");
        } else {
            assert!(f.state.starts_with("secure mode: fs.protected_"), "{f:?}");
            assert_eq!(f.instances, 0, "{f:?}");
        }
    }
}

#[tokio::test]
async fn an_aws_greengrass_core_sdk_nodejs_function_works_alongside_python_ones() {
    let core = start().await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut ev, "node/out").await;
    let early = publish(&dev, &mut ev, "node/in", &json!({ "n": 5 }).to_string()).await;
    let got = reply(&core, &mut ev, early, "no answer").await;
    let out: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(out["event"], json!({ "n": 5 }));
    assert_eq!(out["subject"], "node/in");
    assert_eq!(
        out["sum"], 1005,
        "the Python adder answered the Node.js caller"
    );
    assert_eq!(out["shadow_version"], 1);
    assert_eq!(out["uid"], 65534);
    assert_eq!(out["function"], function_arn("nodeecho"));
    wait_function(&core, "nodeecho", |f| {
        f.runtime == "nodejs" && f.invocations == 1 && f.errors == 0
    })
    .await;
}
