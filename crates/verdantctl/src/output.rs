//! Listings as an aligned table or as JSON.

use std::fmt::Write;
use std::time::SystemTime;

use serde::Serialize;
use verdant_proto::supervisor::v1 as pb;

#[derive(Serialize)]
struct ServiceView<'a> {
    name: &'a str,
    state: &'static str,
    health: &'static str,
    pid: Option<u32>,
    uptime_secs: Option<u64>,
    restart_count: u32,
    last_exit: &'a str,
    message: &'a str,
    depends_on: &'a [String],
    version: &'a str,
    note: &'a str,
}

fn state(s: &pb::Service) -> &'static str {
    match s.state() {
        pb::ServiceState::Unspecified => "unknown",
        pb::ServiceState::Stopped => "stopped",
        pb::ServiceState::Waiting => "waiting",
        pb::ServiceState::Starting => "starting",
        pb::ServiceState::Running => "running",
        pb::ServiceState::Backoff => "backoff",
        pb::ServiceState::Stopping => "stopping",
        pb::ServiceState::Failed => "failed",
    }
}

fn health(s: &pb::Service) -> &'static str {
    match s.health() {
        pb::Health::Serving => "serving",
        pb::Health::NotServing => "not-serving",
        pb::Health::Unspecified | pb::Health::Unknown => "-",
    }
}

fn uptime(s: &pb::Service) -> Option<u64> {
    let t = s.started_at?;
    let started = SystemTime::UNIX_EPOCH
        + std::time::Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    Some(SystemTime::now().duration_since(started).ok()?.as_secs())
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub fn services(list: &[pb::Service], json: bool) {
    if json {
        let views: Vec<ServiceView> = list
            .iter()
            .map(|s| ServiceView {
                name: &s.name,
                state: state(s),
                health: health(s),
                pid: (s.pid != 0).then_some(s.pid),
                uptime_secs: uptime(s),
                restart_count: s.restart_count,
                last_exit: &s.last_exit,
                message: &s.message,
                depends_on: &s.depends_on,
                version: &s.version,
                note: &s.note,
            })
            .collect();
        self::json(&views);
        return;
    }
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|s| {
            let detail = [s.message.as_str(), s.note.as_str()]
                .iter()
                .filter(|x| !x.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("; ");
            [
                s.name.clone(),
                state(s).to_string(),
                health(s).to_string(),
                if s.pid == 0 {
                    "-".into()
                } else {
                    s.pid.to_string()
                },
                uptime(s).map_or("-".into(), human),
                s.restart_count.to_string(),
                detail,
            ]
        })
        .collect();
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    table(
        &[
            "SERVICE", "STATE", "HEALTH", "PID", "UPTIME", "RESTARTS", "DETAIL",
        ],
        &rows,
    );
}

/// Columns padded to their widest cell; the last one is not padded.
/// Pretty JSON of what a command shows, for `-o json`.
pub fn json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("views serialize")
    );
}

pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = *w);
            }
        }
        println!("{}", out.trim_end());
    };
    line(header);
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
