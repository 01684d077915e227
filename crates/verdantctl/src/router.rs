//! The subscription table and its counters, over `verdant.router.v1.Router`.

use std::path::Path;

use serde::Serialize;
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

use crate::{dial, output, status_error};

#[derive(Serialize)]
struct RouteView<'a> {
    id: &'a str,
    source: &'a str,
    subject: &'a str,
    target: &'a str,
    messages: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct RoutesView<'a> {
    version: u64,
    routes: Vec<RouteView<'a>>,
    /// Messages no route allowed, by source.
    no_route: Vec<(&'a str, u64)>,
    links: &'a [String],
    /// Copies targets could not take.
    undelivered: Vec<UndeliveredView<'a>>,
}

#[derive(Serialize)]
struct UndeliveredView<'a> {
    endpoint: &'a str,
    targets: &'a str,
    reason: &'a str,
    messages: u64,
}

/// A thing ARN shown as `thing/<name>`, which is what tells devices apart.
fn short(name: &str) -> &str {
    name.rfind("thing/").map_or(name, |i| &name[i..])
}

pub async fn routes(dir: &Path, json: bool) -> Result<(), String> {
    let mut api = RouterClient::new(dial(dir, "router").await?);
    let resp = api
        .list_routes(pb::ListRoutesRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    let view = RoutesView {
        version: resp.version,
        routes: resp
            .routes
            .iter()
            .filter_map(|c| {
                let r = c.route.as_ref()?;
                Some(RouteView {
                    id: &r.id,
                    source: &r.source,
                    subject: &r.subject,
                    target: &r.target,
                    messages: c.messages,
                    bytes: c.bytes,
                })
            })
            .collect(),
        no_route: resp
            .no_route
            .iter()
            .map(|d| (d.source.as_str(), d.messages))
            .collect(),
        links: &resp.links,
        undelivered: resp
            .undelivered
            .iter()
            .map(|u| UndeliveredView {
                endpoint: &u.endpoint,
                targets: &u.targets,
                reason: &u.reason,
                messages: u.messages,
            })
            .collect(),
    };
    if json {
        output::json(&view);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = view
        .routes
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                short(r.source).to_string(),
                r.subject.to_string(),
                short(r.target).to_string(),
                r.messages.to_string(),
                r.bytes.to_string(),
            ]
        })
        .collect();
    output::table(
        &["ID", "SOURCE", "SUBJECT", "TARGET", "MESSAGES", "BYTES"],
        &rows,
    );
    println!("\nlinked: {}", view.links.join(", "));
    for (source, n) in &view.no_route {
        println!("no route: {n} from {}", short(source));
    }
    for u in &view.undelivered {
        println!(
            "not delivered ({}): {} for {} on {}",
            u.reason,
            u.messages,
            short(u.targets),
            u.endpoint
        );
    }
    Ok(())
}

pub async fn cloud(dir: &Path, json: bool) -> Result<(), String> {
    let mut api = RouterClient::new(dial(dir, "router").await?);
    let c = api
        .get_cloud(pb::GetCloudRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    if json {
        let since = c.connected_since.map(|t| t.seconds).unwrap_or_default();
        let v = serde_json::json!({
            "state": c.state,
            "endpoint": c.endpoint,
            "last_error": c.last_error,
            "connected_since_unix": since,
            "queued_messages": c.queued_messages,
            "queued_bytes": c.queued_bytes,
            "dropped_oldest": c.dropped_oldest,
            "refused": c.refused,
            "sent": c.sent,
            "received": c.received,
            "subscriptions": c.subscriptions,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!("state          {}", c.state);
    println!("endpoint       {}", c.endpoint);
    if !c.last_error.is_empty() {
        println!("last error     {}", c.last_error);
    }
    println!(
        "queue          {} messages, {} bytes ({} dropped as oldest, {} refused)",
        c.queued_messages, c.queued_bytes, c.dropped_oldest, c.refused
    );
    println!("sent           {} (acknowledged by the cloud)", c.sent);
    println!(
        "received       {} on {} subscriptions",
        c.received, c.subscriptions
    );
    Ok(())
}

/// A payload preview as text: printable ASCII kept, the rest escaped.
fn preview(bytes: &[u8], size: u32) -> String {
    let mut s: String = bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() < size as usize {
        s.push_str("...");
    }
    s
}

pub async fn trace(
    dir: &Path,
    source: Option<String>,
    topic: Option<String>,
    json: bool,
) -> Result<(), String> {
    use std::io::Write;
    let mut api = RouterClient::new(dial(dir, "router").await?);
    let mut stream = api
        .trace(pb::TraceRequest {
            source: source.unwrap_or_default(),
            topic_filter: topic.unwrap_or_default(),
        })
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(e) = stream.message().await.map_err(|e| status_error(&e))? {
        let line = if json {
            serde_json::json!({
                "time_unix_ms": e.time.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000)),
                "source": e.source,
                "topic": e.topic,
                "targets": e.targets,
                "size": e.size,
                "qos": e.qos,
                "outcome": e.outcome,
                "by": e.by,
                "preview": preview(&e.preview, e.size),
            })
            .to_string()
        } else {
            let targets = if e.targets.is_empty() {
                "-".to_string()
            } else {
                e.targets
                    .iter()
                    .map(|t| short(t))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!(
                "{} -> {targets}  {}  {} B QoS {}  {} ({})  \"{}\"",
                short(&e.source),
                e.topic,
                e.size,
                e.qos,
                e.outcome,
                e.by,
                preview(&e.preview, e.size)
            )
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break; // stdout closed (e.g. piped into head)
        }
    }
    Ok(())
}
