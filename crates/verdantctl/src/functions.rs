//! The group's functions, over `verdant.lambda.v1.Lambda`.

use std::path::Path;

use base64::Engine;
use clap::Subcommand;
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
    out_of_memory: u64,
    uid: u32,
    gid: u32,
    pids: &'a [u32],
    memory_bytes: u64,
    last_error: &'a str,
}

/// `function:<name>:<qualifier>`: what tells functions apart.
fn short(arn: &str) -> &str {
    arn.find("function:").map_or(arn, |i| &arn[i..])
}

#[derive(Debug, Subcommand)]
pub enum FunctionsCmd {
    /// Instances, queues and counters (the default).
    List,
    /// Run a function with a payload, as another function's invoke would;
    /// prints its result (or, with `--event`, its invocation id).
    Invoke {
        /// The function's qualified ARN.
        function: String,
        /// The payload the function gets (JSON or any text; default: empty).
        #[arg(default_value = "")]
        payload: String,
        /// Do not wait for the result.
        #[arg(long)]
        event: bool,
        /// The topic the function sees as `client_context.custom.subject`.
        #[arg(long)]
        subject: Option<String>,
    },
    /// Add a function to the deployed group (its code: in the directory
    /// this prints); prints its ARN for routes.
    Add(crate::group::NewFunction),
    /// What a function wrote to stdout and stderr.
    Logs {
        /// Its qualified ARN or its name.
        function: String,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
    },
}

pub async fn run(dir: &Path, cmd: Option<FunctionsCmd>, json: bool) -> Result<(), String> {
    match cmd.unwrap_or(FunctionsCmd::List) {
        FunctionsCmd::List => list(dir, json).await,
        FunctionsCmd::Add(_) => unreachable!("handled before dialling"),
        FunctionsCmd::Invoke {
            function,
            payload,
            event,
            subject,
        } => {
            let client_context = subject.map_or_else(String::new, |s| {
                let v = serde_json::json!({ "custom": { "subject": s } });
                base64::engine::general_purpose::STANDARD.encode(v.to_string())
            });
            let r = LambdaClient::new(dial(dir, "lambda-runner").await?)
                .invoke(pb::InvokeRequest {
                    function_arn: function,
                    payload: payload.into_bytes(),
                    invocation_type: if event { "Event" } else { "RequestResponse" }.into(),
                    client_context,
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            if event {
                println!("{}", r.invocation_id);
                return Ok(());
            }
            println!("{}", String::from_utf8_lossy(&r.payload));
            if r.function_error.is_empty() {
                Ok(())
            } else {
                Err(format!("the function failed ({})", r.function_error))
            }
        }
        FunctionsCmd::Logs {
            function,
            follow,
            lines,
        } => {
            let mut stream = LambdaClient::new(dial(dir, "lambda-runner").await?)
                .logs(pb::LogsRequest {
                    function,
                    lines,
                    follow,
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            while let Some(chunk) = stream.message().await.map_err(|e| status_error(&e))? {
                for line in chunk.lines {
                    println!("{line}");
                }
            }
            Ok(())
        }
    }
}

async fn list(dir: &Path, json: bool) -> Result<(), String> {
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
            out_of_memory: f.out_of_memory,
            uid: f.uid,
            gid: f.gid,
            pids: &f.pids,
            memory_bytes: f.memory_bytes,
            last_error: &f.last_error,
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
                f.pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                format!("{:.1} MiB", f.memory_bytes as f64 / f64::from(1 << 20)),
                f.queued.to_string(),
                f.invocations.to_string(),
                f.errors.to_string(),
                f.timeouts.to_string(),
                f.out_of_memory.to_string(),
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
            "PIDS",
            "MEMORY",
            "QUEUED",
            "INVOCATIONS",
            "ERRORS",
            "TIMEOUTS",
            "OOM KILLS",
            "RUN AS",
            "STATE",
        ],
        &rows,
    );
    for f in views.iter().filter(|f| f.state != "ready") {
        println!("\n{}: {}", short(f.arn), f.state);
    }
    for f in views.iter().filter(|f| !f.last_error.is_empty()) {
        println!("\n{} last error: {}", short(f.arn), f.last_error);
    }
    println!("\nfunction IPC endpoint: 127.0.0.1:{}", resp.ipc_port);
    Ok(())
}
