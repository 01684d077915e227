//! What the functions tests share: the group of test functions, their code
//! installed as users bundle it, a core that runs them, and ways to watch
//! them (the lambda-runner's API, its cgroups, the functions' logs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use verdant_proto::lambda::v1 as pb;
use verdant_proto::lambda::v1::lambda_client::LambdaClient;

use crate::groups::{arn, thing};
use crate::mqtt::{publish, received};
use crate::{Core, Options, PATIENCE, bundle_greengrasssdk, copy_dir};

pub const TCP: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";
/// This machine has `fs.protected_symlinks = 0`: the tests say deliberately
/// that functions may run anyway (the last test checks the refusal).
pub const INSECURE: &str = "[lambda-runner]\nrun_on_insecure_host = true\npids_limit = 64\n";

pub fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:1")
}

pub fn group() -> String {
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
pub fn install_functions(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions");
    for name in ["echo", "boxed"] {
        let dir = root.join("functions").join(name).join("1");
        copy_dir(&here.join(name), &dir);
        bundle_greengrasssdk(&dir);
    }
    copy_dir(&here.join("hog"), &root.join("functions/hog/1"));
    install_adder(root);
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
    std::fs::copy(crate::bin("native-echo"), dir.join("native-echo")).unwrap();
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
    open_to_functions(root);
}

/// The adder as a zip, as Greengrass deployments bring functions.
fn install_adder(root: &Path) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions");
    std::fs::create_dir_all(root.join("functions/adder")).unwrap();
    let zipped = std::process::Command::new(crate::python())
        .args(["-m", "zipfile", "-c"])
        .arg(root.join("functions/adder/1.zip"))
        .arg(here.join("adder/adder.py"))
        .output()
        .unwrap();
    assert!(zipped.status.success(), "{zipped:?}");
}

/// The temp dir is private to us; the functions run as nobody.
pub fn open_to_functions(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for dir in [root.parent().unwrap(), root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A group of the pinned greengrasssdk `echo` function, with the
/// subscriptions it needs, and `functions` (`FunctionDefinitionVersion`
/// entries).
pub fn group_of(functions: &[Value]) -> String {
    json!({
        "Id": "apply-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2)] },
        "FunctionDefinitionVersion": {
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                "RunAs": { "Uid": 65534, "Gid": 65534 } } },
            "Functions": functions,
        },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "in", "Source": arn("a"), "Subject": "in/#", "Target": function_arn("echo") },
            { "Id": "out", "Source": function_arn("echo"), "Subject": "echo/out", "Target": arn("a") },
        ]},
    })
    .to_string()
}

/// The group entry of the pinned `echo`, which asks the `adder`.
pub fn echo_function() -> Value {
    json!({ "Id": "echo", "FunctionArn": function_arn("echo"),
        "FunctionConfiguration": { "Executable": "echo.handler", "Pinned": true, "Timeout": 10,
            "Environment": { "Variables": { "ADDER_ARN": function_arn("adder") } } } })
}

/// The group entry of the on-demand `adder`.
pub fn adder_function() -> Value {
    json!({ "Id": "adder", "FunctionArn": function_arn("adder"),
        "FunctionConfiguration": { "Executable": "adder.handler", "Timeout": 3 } })
}

/// The group entry of a function `name` running the greeter's code, told
/// `greeting` in its environment.
pub fn greeter_function(name: &str, pinned: bool, greeting: &str) -> Value {
    json!({ "Id": name, "FunctionArn": function_arn(name),
        "FunctionConfiguration": { "Executable": "greeter.handler", "Pinned": pinned,
            "Timeout": 60, "Environment": { "Variables": { "GREETING": greeting } } } })
}

/// `echo` (with greengrasssdk), the zipped `adder`, and the greeter's
/// code as each of `greeters`.
pub fn install_greeters(root: &Path, greeters: &[&str]) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions");
    let dir = root.join("functions/echo/1");
    copy_dir(&here.join("echo"), &dir);
    bundle_greengrasssdk(&dir);
    install_adder(root);
    for name in greeters {
        copy_dir(
            &here.join("greeter"),
            &root.join("functions").join(name).join("1"),
        );
    }
    open_to_functions(root);
}

/// `Lambda/ApplyGroup` on the core's lambda-runner.
pub async fn apply_group(core: &Core) -> Result<pb::ApplyGroupResponse, tonic::Status> {
    let channel = verdant_common::uds::connect(&core.socket("lambda-runner"))
        .await
        .unwrap();
    LambdaClient::new(channel)
        .apply_group(pb::ApplyGroupRequest {})
        .await
        .map(tonic::Response::into_inner)
}

pub async fn start() -> Core {
    start_with(&format!("{TCP}{INSECURE}")).await
}

pub async fn start_with(dropin: &str) -> Core {
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

/// A core on the plain listener that may run functions, with `group`
/// (whose code, if any, is already where it says).
pub async fn start_group(group: &str) -> Core {
    start_prepared(group, None).await
}

/// [`start_group`], with the root `prepare`d first (code installed).
pub async fn start_prepared(group: &str, prepare: Option<&dyn Fn(&Path)>) -> Core {
    let dropin = format!("{TCP}{INSECURE}");
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(group),
        prepare,
        ..Options::default()
    });
    core.wait_all_running().await;
    core
}

pub async fn functions(core: &Core) -> pb::ListFunctionsResponse {
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
pub async fn wait_function(core: &Core, name: &str, pred: impl Fn(&pb::Function) -> bool) {
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
pub fn logs(core: &Core) -> String {
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
pub async fn reply(
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

pub async fn echo(
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

/// Where the lambda-runner makes its cgroups, by controller (v1: memory,
/// pids, devices; v2: "" for the unified hierarchy): under the test's own
/// cgroups, as the lambda-runner is the test's descendant.
pub fn cgroup_bases() -> Vec<(String, PathBuf)> {
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
pub fn cgroups_of(pid: u32) -> Vec<PathBuf> {
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
pub fn memory_limit(function: &str) -> Option<String> {
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
pub async fn invoke(socket: &Path, arn: &str, payload: &str) -> pb::InvokeResponse {
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
