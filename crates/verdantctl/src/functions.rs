//! The group's functions, over `verdant.lambda.v1.Lambda`.

use std::path::Path;

use serde::Serialize;
use verdant_proto::lambda::v1 as pb;
use verdant_proto::lambda::v1::lambda_client::LambdaClient;

use crate::{dial, output, status_error};

#[derive(Serialize)]
struct FunctionView<'a> {
    arn: &'a str,
    runtime: &'a str,
    pinned: bool,
    state: &'a str,
    instances: u32,
    queued: u32,
    invocations: u64,
    errors: u64,
    timeouts: u64,
    overflow: u64,
    uid: u32,
    gid: u32,
}

/// `function:<name>:<qualifier>`: what tells functions apart.
fn short(arn: &str) -> &str {
    arn.find("function:").map_or(arn, |i| &arn[i..])
}

pub async fn list(dir: &Path, json: bool) -> Result<(), String> {
    let resp = LambdaClient::new(dial(dir, "lambda-runner").await?)
        .list_functions(pb::ListFunctionsRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    let views: Vec<FunctionView<'_>> = resp
        .functions
        .iter()
        .map(|f| FunctionView {
            arn: &f.arn,
            runtime: &f.runtime,
            pinned: f.pinned,
            state: &f.state,
            instances: f.instances,
            queued: f.queued,
            invocations: f.invocations,
            errors: f.errors,
            timeouts: f.timeouts,
            overflow: f.overflow,
            uid: f.uid,
            gid: f.gid,
        })
        .collect();
    if json {
        output::json(&views);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|f| {
            vec![
                short(f.arn).to_string(),
                f.runtime.to_string(),
                if f.pinned { "pinned" } else { "on-demand" }.to_string(),
                f.instances.to_string(),
                f.queued.to_string(),
                f.invocations.to_string(),
                f.errors.to_string(),
                f.timeouts.to_string(),
                format!("{}:{}", f.uid, f.gid),
                if f.state == "ready" {
                    "ready"
                } else {
                    "cannot run"
                }
                .to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "FUNCTION",
            "RUNTIME",
            "LIFECYCLE",
            "INSTANCES",
            "QUEUED",
            "INVOCATIONS",
            "ERRORS",
            "TIMEOUTS",
            "RUN AS",
            "STATE",
        ],
        &rows,
    );
    for f in views.iter().filter(|f| f.state != "ready") {
        println!("\n{}: {}", short(f.arn), f.state);
    }
    println!("\nfunction IPC endpoint: 127.0.0.1:{}", resp.ipc_port);
    Ok(())
}
