//! Functions written for Greengrass v1 with the real greengrasssdk, run by
//! the lambda-runner: a device's message reaches a pinned function, which
//! updates a shadow, invokes an on-demand function and publishes back to
//! the device; handler errors, timeouts and strangers are told apart.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, publish, received, subscribed};
use verdant_integration_tests::{Core, Options, PATIENCE, bundle_greengrasssdk, copy_dir};
use verdant_proto::lambda::v1 as pb;
use verdant_proto::lambda::v1::lambda_client::LambdaClient;

const TCP: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";
/// This machine has `fs.protected_symlinks = 0`: the tests say deliberately
/// that functions may run anyway (the last test checks the refusal).
const INSECURE: &str = "[lambda-runner]\nrun_on_insecure_host = true\npids_limit = 64\n";

fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:1")
}

fn group() -> String {
    json!({
        "Id": "functions-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2)] },
        "FunctionDefinitionVersion": {
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                "RunAs": { "Uid": 65534, "Gid": 65534 } } },
            "Functions": [
                { "Id": "echo", "FunctionArn": function_arn("echo"),
                  "FunctionConfiguration": { "Executable": "echo.handler", "Pinned": true,
                    "Timeout": 10, "MemorySize": 32768, "EncodingType": "json",
                    "Environment": { "Variables": { "ADDER_ARN": function_arn("adder") } } } },
                { "Id": "adder", "FunctionArn": function_arn("adder"),
                  "FunctionConfiguration": { "Executable": "adder.handler", "Timeout": 1 } },
                { "Id": "boxed", "FunctionArn": function_arn("boxed"),
                  "FunctionConfiguration": { "Executable": "boxed.handler", "Timeout": 10,
                    "MemorySize": 65536,
                    "Environment": { "AccessSysfs": true,
                      "ResourceAccessPolicies": [
                        { "ResourceId": "shared", "Permission": "rw" },
                        { "ResourceId": "full", "Permission": "ro" } ],
                      "Execution": { "IsolationMode": "GreengrassContainer" } } } },
                { "Id": "native", "FunctionArn": function_arn("native"),
                  "FunctionConfiguration": { "Executable": "native-echo", "Timeout": 10,
                    "EncodingType": "binary",
                    "Environment": { "Variables": { "ADDER_ARN": function_arn("adder") } } } },
                { "Id": "javasum", "FunctionArn": function_arn("javasum"),
                  "FunctionConfiguration": { "Executable": "example.Sum::handleRequest",
                    "Timeout": 30, "MemorySize": 262_144 } },
                { "Id": "javapojo", "FunctionArn": function_arn("javapojo"),
                  "FunctionConfiguration": { "Executable": "example.Greeter",
                    "Timeout": 30, "MemorySize": 262_144 } },
                { "Id": "hog", "FunctionArn": function_arn("hog"),
                  "FunctionConfiguration": { "Executable": "hog.handler", "Timeout": 10,
                    "MemorySize": 32768,
                    "Environment": { "Execution": { "IsolationMode": "GreengrassContainer" } } } },
                { "Id": "nodeecho", "FunctionArn": function_arn("nodeecho"),
                  "FunctionConfiguration": { "Executable": "index.handler", "Timeout": 10,
                    "Environment": { "Variables": { "ADDER_ARN": function_arn("adder") } } } },
            ]
        },
        // The volume's source is under the core's root (`install_functions`).
        "ResourceDefinitionVersion": { "Resources": [
            { "Id": "shared", "Name": "shared", "ResourceDataContainer": {
                "LocalVolumeResourceData": { "SourcePath": "@ROOT@/shared",
                  "DestinationPath": "/data/shared",
                  "GroupOwnerSetting": { "AutoAddGroupOwner": false, "GroupOwner": "tty" } } } },
            { "Id": "full", "Name": "full", "ResourceDataContainer": {
                "LocalDeviceResourceData": { "SourcePath": "/dev/full" } } },
        ]},
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "in", "Source": arn("a"), "Subject": "in/#", "Target": function_arn("echo") },
            { "Id": "out", "Source": function_arn("echo"), "Subject": "echo/out", "Target": arn("a") },
            { "Id": "boxed-in", "Source": arn("a"), "Subject": "boxed/in", "Target": function_arn("boxed") },
            { "Id": "boxed-out", "Source": function_arn("boxed"), "Subject": "boxed/out", "Target": arn("a") },
            { "Id": "native-in", "Source": arn("a"), "Subject": "native/in", "Target": function_arn("native") },
            { "Id": "native-out", "Source": function_arn("native"), "Subject": "native/out", "Target": arn("a") },
            { "Id": "node-in", "Source": arn("a"), "Subject": "node/in", "Target": function_arn("nodeecho") },
            { "Id": "node-out", "Source": function_arn("nodeecho"), "Subject": "node/out", "Target": arn("a") },
        ]},
    })
    .to_string()
}

/// Puts the functions' code under `functions/<name>/1/`, each bundled with
/// greengrasssdk as users bundle it, readable by the functions' user.
fn install_functions(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions");
    for name in ["echo", "boxed"] {
        let dir = root.join("functions").join(name).join("1");
        copy_dir(&here.join(name), &dir);
        bundle_greengrasssdk(&dir);
    }
    copy_dir(&here.join("hog"), &root.join("functions/hog/1"));
    // The adder comes as a zip, as Greengrass deployments bring functions.
    std::fs::create_dir_all(root.join("functions/adder")).unwrap();
    let zipped = std::process::Command::new(verdant_integration_tests::python())
        .args(["-m", "zipfile", "-c"])
        .arg(root.join("functions/adder/1.zip"))
        .arg(here.join("adder/adder.py"))
        .output()
        .unwrap();
    assert!(zipped.status.success(), "{zipped:?}");
    // The Node.js function bundles aws-greengrass-core-sdk and its
    // dependencies in node_modules, as users do.
    let node_sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.node/node_modules");
    assert!(
        node_sdk.join("aws-greengrass-core-sdk").is_dir(),
        "aws-greengrass-core-sdk (scripts/test-deps.sh installs it)"
    );
    let dir = root.join("functions/nodeecho/1");
    copy_dir(&here.join("nodeecho"), &dir);
    copy_dir(&node_sdk, &dir.join("node_modules"));
    // The Java function: compiled here (javac of the JDK the CI machine has).
    let dir = root.join("functions/javasum/1");
    std::fs::create_dir_all(&dir).unwrap();
    let sources: Vec<String> = [
        "example/Sum.java",
        "example/Greeter.java",
        "com/amazonaws/services/lambda/runtime/RequestHandler.java",
        "com/amazonaws/services/lambda/runtime/Context.java",
        "com/amazonaws/services/lambda/runtime/ClientContext.java",
        "com/amazonaws/services/lambda/runtime/LambdaLogger.java",
    ]
    .iter()
    .map(|f| here.join("javasum/src").join(f).display().to_string())
    .collect();
    let javac = std::process::Command::new("javac")
        .arg("-d")
        .arg(&dir)
        .args(&sources)
        .output()
        .expect("javac (a JDK 11 or newer)");
    assert!(javac.status.success(), "{javac:?}");
    copy_dir(&dir, &root.join("functions/javapojo/1"));
    // The native function: a program built with verdant-function-sdk.
    let dir = root.join("functions/native/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        verdant_integration_tests::bin("native-echo"),
        dir.join("native-echo"),
    )
    .unwrap();
    // The volume resource, writable by the functions' user.
    let shared = root.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let deployed = root.join("deployments/test/group.json");
    let text = std::fs::read_to_string(&deployed).unwrap();
    std::fs::write(
        &deployed,
        text.replace("@ROOT@", &root.display().to_string()),
    )
    .unwrap();
    // The temp dir is private to us; the functions run as nobody.
    for dir in [root.parent().unwrap(), root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

async fn start() -> Core {
    start_with(&format!("{TCP}{INSECURE}")).await
}

async fn start_with(dropin: &str) -> Core {
    let group = group();
    let core = Core::start_with(&Options {
        dropin: Some(dropin),
        group: Some(&group),
        prepare: Some(&install_functions),
        ..Options::default()
    });
    core.wait_all_running().await;
    core
}

async fn functions(core: &Core) -> pb::ListFunctionsResponse {
    let channel = verdant_common::uds::connect(&core.socket("lambda-runner"))
        .await
        .unwrap();
    LambdaClient::new(channel)
        .list_functions(pb::ListFunctionsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the listed function `name` satisfies `pred`.
async fn wait_function(core: &Core, name: &str, pred: impl Fn(&pb::Function) -> bool) {
    let arn = function_arn(name);
    let mut last = None;
    let ok = tokio::time::timeout(PATIENCE, async {
        loop {
            let listed = functions(core).await;
            last = listed.functions.into_iter().find(|f| f.arn == arn);
            if last.as_ref().is_some_and(&pred) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "{name}: {last:?}");
}

/// What the functions wrote to their logs, and the core's log.
fn logs(core: &Core) -> String {
    let mut out = String::new();
    for name in [
        "echo", "adder", "boxed", "hog", "nodeecho", "native", "javasum",
    ] {
        let path = core.root().join(format!("logs/functions/{name}.log"));
        out += "--- ";
        out += name;
        out += ".log\n";
        out += &std::fs::read_to_string(path).unwrap_or_default();
    }
    out + "--- core\n" + &core.stderr_text()
}

/// The first message `ev` receives, or a failure showing `what` was
/// awaited and the logs.
/// The publishes `ev` receives, after those that came with the request's
/// PUBACK (`early`), until there is one.
async fn reply(
    core: &Core,
    ev: &mut rumqttc::EventLoop,
    early: Vec<(String, String)>,
    what: &str,
) -> Vec<(String, String)> {
    let mut got = early;
    let waited = tokio::time::timeout(PATIENCE, async {
        while got.is_empty() {
            got.extend(received(ev, Duration::from_millis(50)).await);
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}:\n{}", logs(core));
    got
}

async fn echo(
    core: &Core,
    dev: &rumqttc::AsyncClient,
    ev: &mut rumqttc::EventLoop,
    event: Value,
) -> Value {
    let early = publish(dev, ev, "in/x", &event.to_string()).await;
    let got = reply(core, ev, early, &format!("no answer to {event}")).await;
    assert_eq!(got[0].0, "echo/out");
    serde_json::from_str(&got[0].1).unwrap()
}

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

/// Where the lambda-runner makes its cgroups, by controller (v1: memory,
/// pids, devices; v2: "" for the unified hierarchy): under the test's own
/// cgroups, as the lambda-runner is the test's descendant.
fn cgroup_bases() -> Vec<(String, PathBuf)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let fs = Path::new("/sys/fs/cgroup");
    let unified_only = fs.join("cgroup.controllers").exists();
    own.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let root = match controllers {
                "" if unified_only => fs.to_path_buf(),
                "memory" | "pids" | "devices" => fs.join(controllers),
                _ => return None,
            };
            let base = root
                .join(path.trim_start_matches('/'))
                .join("verdant-functions");
            Some((controllers.to_string(), base))
        })
        .collect()
}

/// The cgroups of instances of the lambda-runner `pid`
/// (`<function>-<pid>-<instance>`), in every hierarchy.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    cgroup_bases()
        .into_iter()
        .filter_map(|(_, base)| std::fs::read_dir(base).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.rsplit('-').nth(1))
                    == Some(pid.to_string().as_str())
        })
        .collect()
}

/// The memory limit of the first cgroup of `function`'s instances (v1).
fn memory_limit(function: &str) -> Option<String> {
    let (_, base) = cgroup_bases().into_iter().find(|(c, _)| c == "memory")?;
    std::fs::read_dir(base).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with(&format!("{function}-"))
            .then(|| std::fs::read_to_string(e.path().join("memory.limit_in_bytes")).ok())
            .flatten()
    })
}

/// `Lambda/Invoke` of `arn` on the lambda-runner's `socket`, waiting for
/// the result.
async fn invoke(socket: &Path, arn: &str, payload: &str) -> pb::InvokeResponse {
    let channel = verdant_common::uds::connect(socket).await.unwrap();
    LambdaClient::new(channel)
        .invoke(pb::InvokeRequest {
            function_arn: arn.into(),
            payload: payload.as_bytes().to_vec(),
            invocation_type: "RequestResponse".into(),
            client_context: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

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
