//! What `deploy` and `deployments` print: pure functions from the
//! ota-agent's messages to lines, so they are tested without a server.

use std::borrow::Cow;

use serde::Serialize;
use verdant_proto::ota::v1::{Deployment, ListDeploymentsResponse, Phase};

use crate::progress::{BAR_WIDTH, Shown, bar, fit, transfer};

/// The phase as the API names it (`DOWNLOADING`), or its number when this
/// verdantctl is older than the agent.
pub fn phase_name(d: &Deployment) -> Cow<'static, str> {
    Phase::try_from(d.phase).map_or_else(
        |_| Cow::Owned(format!("PHASE_{}", d.phase)),
        |p| Cow::Borrowed(p.as_str_name()),
    )
}

/// Whether the deployment has ended: nothing about it changes any more.
pub fn has_ended(d: &Deployment) -> bool {
    matches!(
        Phase::try_from(d.phase),
        Ok(Phase::Succeeded | Phase::Failed | Phase::RolledBack | Phase::Cancelled)
    )
}

pub fn succeeded(d: &Deployment) -> bool {
    d.phase == Phase::Succeeded as i32
}

/// A deployment as `-o json` prints it.
#[derive(Debug, Serialize)]
pub struct DeploymentView<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub deployment_type: &'a str,
    pub origin: &'a str,
    pub phase: Cow<'static, str>,
    pub step: &'a str,
    pub reason: &'a str,
    pub problems: Vec<ProblemView<'a>>,
    pub group_id: &'a str,
    pub group_version: &'a str,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub previous: &'a str,
    pub applied: Vec<AppliedView<'a>>,
    /// Whether the core runs it (`deployments show` and `list` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct ProblemView<'a> {
    pub path: &'a str,
    pub message: &'a str,
}

#[derive(Debug, Serialize)]
pub struct AppliedView<'a> {
    pub daemon: &'a str,
    pub summary: &'a str,
}

pub fn view(d: &Deployment, current: Option<bool>) -> DeploymentView<'_> {
    DeploymentView {
        id: &d.deployment_id,
        deployment_type: &d.deployment_type,
        origin: &d.origin,
        phase: phase_name(d),
        step: &d.step,
        reason: &d.reason,
        problems: d
            .problems
            .iter()
            .map(|p| ProblemView {
                path: &p.path,
                message: &p.message,
            })
            .collect(),
        group_id: &d.group_id,
        group_version: &d.group_version,
        bytes_done: d.bytes_done,
        bytes_total: d.bytes_total,
        created_ms: d.created_ms,
        updated_ms: d.updated_ms,
        previous: &d.previous,
        applied: d
            .applied
            .iter()
            .map(|a| AppliedView {
                daemon: &a.daemon,
                summary: &a.summary,
            })
            .collect(),
        current,
    }
}

/// One compact JSON object: a line of `deploy -o json` or `watch -o json`.
pub fn json_line(d: &Deployment) -> String {
    serde_json::to_string(&view(d, None)).expect("a view serializes")
}

/// `3.0 MiB / 10.0 MiB (30%)`, or what is known of it.
fn download(d: &Deployment) -> String {
    transfer(d.bytes_done, d.bytes_total)
}

fn downloading(d: &Deployment) -> bool {
    d.phase == Phase::Downloading as i32
}

/// A change as one plain line: `DOWNLOADING  artifacts  3.0 MiB / 10.0 MiB (30%)`.
pub fn status_line(d: &Deployment) -> String {
    let mut parts = vec![phase_name(d).into_owned()];
    if !d.step.is_empty() {
        parts.push(d.step.clone());
    }
    if downloading(d) && (d.bytes_done > 0 || d.bytes_total > 0) {
        parts.push(download(d));
    }
    parts.join("  ")
}

/// The line a terminal redraws in place, at most `width - 1` characters so
/// it never wraps (a wrapped line cannot be redrawn with `\r`).
pub fn progress_line(d: &Deployment, width: usize) -> String {
    let mut line = status_line(d);
    if downloading(d) && d.bytes_total > 0 {
        let mut parts = vec![phase_name(d).into_owned()];
        if !d.step.is_empty() {
            parts.push(d.step.clone());
        }
        parts.push(bar(d.bytes_done, d.bytes_total, BAR_WIDTH));
        parts.push(download(d));
        line = parts.join("  ");
    }
    fit(line, width)
}

impl Shown for Deployment {
    fn json_line(&self) -> String {
        json_line(self)
    }

    fn status_line(&self) -> String {
        status_line(self)
    }

    fn progress_line(&self, width: usize) -> String {
        progress_line(self, width)
    }
}

/// What a validation problem prints as: `  <path>: <message>`.
pub fn problem_line(path: &str, message: &str) -> String {
    if path.is_empty() {
        format!("  {message}")
    } else {
        format!("  {path}: {message}")
    }
}

/// What is printed once the deployment has ended: the outcome, then why
/// it did not succeed and what that left on the core.
pub fn outcome_lines(d: &Deployment) -> Vec<String> {
    let mut head = format!("deployment {} {}", d.deployment_id, phase_name(d));
    if !d.reason.is_empty() {
        head.push_str(": ");
        head.push_str(&d.reason);
    }
    let mut lines = vec![head];
    let phase = Phase::try_from(d.phase).ok();
    if phase == Some(Phase::Succeeded) && !d.group_id.is_empty() {
        lines.push(format!(
            "the core runs group {} version {}",
            d.group_id,
            or_dash(&d.group_version)
        ));
    }
    if !d.problems.is_empty() {
        lines.push("problems:".into());
        lines.extend(d.problems.iter().map(|p| problem_line(&p.path, &p.message)));
    }
    match phase {
        Some(Phase::Succeeded) => {
            lines.extend(
                d.applied
                    .iter()
                    .map(|a| format!("  {}: {}", a.daemon, a.summary)),
            );
        }
        Some(Phase::Failed) => lines.push("nothing on the core was changed".into()),
        Some(Phase::RolledBack) => lines.push(if d.previous.is_empty() {
            "the core is back on what it ran before".into()
        } else {
            format!("the core is back on deployment {}", d.previous)
        }),
        _ => {}
    }
    lines
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// `group-id/version`, or `-` before validation.
fn group(d: &Deployment) -> String {
    match (d.group_id.as_str(), d.group_version.as_str()) {
        ("", _) => "-".into(),
        (id, "") => id.into(),
        (id, version) => format!("{id}/{version}"),
    }
}

/// Unix milliseconds as `2026-12-07T14:35:01Z` (`-` for none).
pub fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub const LIST_HEADER: [&str; 8] = [
    "", "ID", "TYPE", "PHASE", "GROUP", "ORIGIN", "CREATED", "REASON",
];

/// The rows of `deployments list`; `*` marks the deployment the core runs.
pub fn list_rows(resp: &ListDeploymentsResponse) -> Vec<Vec<String>> {
    resp.deployments
        .iter()
        .map(|d| {
            vec![
                if d.deployment_id == resp.current {
                    "*"
                } else {
                    ""
                }
                .into(),
                d.deployment_id.clone(),
                or_dash(&d.deployment_type).into(),
                phase_name(d).into_owned(),
                group(d),
                or_dash(&d.origin).into(),
                utc(d.created_ms),
                d.reason.clone(),
            ]
        })
        .collect()
}

/// Everything about one deployment, for `deployments show`.
pub fn show_lines(d: &Deployment, current: bool) -> Vec<String> {
    let phase = if current {
        format!("{} (the core runs it)", phase_name(d))
    } else {
        phase_name(d).into_owned()
    };
    let mut lines = vec![
        format!("id:        {}", d.deployment_id),
        format!("type:      {}", or_dash(&d.deployment_type)),
        format!("origin:    {}", or_dash(&d.origin)),
        format!("phase:     {phase}"),
        format!("step:      {}", or_dash(&d.step)),
        format!("reason:    {}", or_dash(&d.reason)),
        format!("group:     {}", group(d)),
        format!("download:  {}", download(d)),
        format!("created:   {}", utc(d.created_ms)),
        format!("updated:   {}", utc(d.updated_ms)),
        format!("previous:  {}", or_dash(&d.previous)),
    ];
    if d.problems.is_empty() {
        lines.push("problems:  none".into());
    } else {
        lines.push("problems:".into());
        lines.extend(d.problems.iter().map(|p| problem_line(&p.path, &p.message)));
    }
    if d.applied.is_empty() {
        lines.push("applied:   -".into());
    } else {
        lines.push("applied:".into());
        lines.extend(
            d.applied
                .iter()
                .map(|a| format!("  {}: {}", a.daemon, a.summary)),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdant_proto::ota::v1::{Applied, Problem};

    fn deployment(phase: Phase) -> Deployment {
        Deployment {
            deployment_id: "0b7c0b3e-5d0e-4c59-9d6e-2f3b4c5d6e7f".into(),
            deployment_type: "NewDeployment".into(),
            origin: "verdantctl".into(),
            phase: phase as i32,
            group_id: "line3".into(),
            group_version: "7".into(),
            created_ms: 1_796_654_101_000,
            updated_ms: 1_796_654_102_500,
            ..Deployment::default()
        }
    }

    #[test]
    fn phases_end_only_in_the_four_final_ones() {
        let ended: Vec<&str> = (0..=10)
            .map(|p| Deployment {
                phase: p,
                ..Deployment::default()
            })
            .filter(has_ended)
            .map(|d| Phase::try_from(d.phase).unwrap().as_str_name())
            .collect();
        assert_eq!(ended, ["SUCCEEDED", "FAILED", "ROLLED_BACK", "CANCELLED"]);
        let unknown = Deployment {
            phase: 42,
            ..Deployment::default()
        };
        assert!(!has_ended(&unknown));
        assert_eq!(phase_name(&unknown), "PHASE_42");
    }

    #[test]
    fn status_lines_name_phase_step_and_download() {
        let mut d = deployment(Phase::Applying);
        d.step = "router".into();
        assert_eq!(status_line(&d), "APPLYING  router");
        d.phase = Phase::Downloading as i32;
        d.step = "artifacts".into();
        d.bytes_done = 3 << 20;
        d.bytes_total = 10 << 20;
        assert_eq!(
            status_line(&d),
            "DOWNLOADING  artifacts  3.0 MiB / 10.0 MiB (30%)"
        );
        d.bytes_total = 0;
        assert_eq!(status_line(&d), "DOWNLOADING  artifacts  3.0 MiB");
        let queued = deployment(Phase::Queued);
        assert_eq!(status_line(&queued), "QUEUED");
    }

    #[test]
    fn the_redrawn_line_has_a_bar_and_never_wraps() {
        let mut d = deployment(Phase::Downloading);
        d.bytes_done = 5 << 20;
        d.bytes_total = 10 << 20;
        let line = progress_line(&d, 80);
        assert_eq!(
            line,
            "DOWNLOADING  [############------------]  5.0 MiB / 10.0 MiB (50%)"
        );
        let narrow = progress_line(&d, 20);
        assert_eq!(narrow.chars().count(), 19);
        assert!(line.starts_with(&narrow));
        let mut v = deployment(Phase::Validating);
        v.step = "group.json".into();
        assert_eq!(progress_line(&v, 80), "VALIDATING  group.json");
        assert_eq!(progress_line(&v, 0), "");
    }

    #[test]
    fn a_failure_prints_its_reason_and_each_problem() {
        let mut d = deployment(Phase::Failed);
        d.reason = "the group is not valid".into();
        d.problems = vec![
            Problem {
                path: "SubscriptionDefinitionVersion.Subscriptions[3].Target".into(),
                message: "unknown function arn:aws:lambda:eu-west-1:1:function:x:1".into(),
            },
            Problem {
                path: String::new(),
                message: "expected value at line 1 column 1".into(),
            },
        ];
        assert_eq!(
            outcome_lines(&d),
            [
                "deployment 0b7c0b3e-5d0e-4c59-9d6e-2f3b4c5d6e7f FAILED: the group is not valid",
                "problems:",
                "  SubscriptionDefinitionVersion.Subscriptions[3].Target: unknown function arn:aws:lambda:eu-west-1:1:function:x:1",
                "  expected value at line 1 column 1",
                "nothing on the core was changed",
            ]
        );
    }

    #[test]
    fn a_rollback_says_where_the_core_is() {
        let mut d = deployment(Phase::RolledBack);
        d.reason = "health check: lambda-runner NOT_SERVING after 30 s".into();
        d.previous = "11111111-2222-4333-8444-555555555555".into();
        let lines = outcome_lines(&d);
        assert_eq!(
            lines[0],
            "deployment 0b7c0b3e-5d0e-4c59-9d6e-2f3b4c5d6e7f ROLLED_BACK: health check: lambda-runner NOT_SERVING after 30 s"
        );
        assert_eq!(
            lines.last().unwrap(),
            "the core is back on deployment 11111111-2222-4333-8444-555555555555"
        );
        d.previous.clear();
        assert_eq!(
            outcome_lines(&d).last().unwrap(),
            "the core is back on what it ran before"
        );
        let mut c = deployment(Phase::Cancelled);
        c.reason = "cancelled by verdantctl".into();
        assert_eq!(
            outcome_lines(&c),
            ["deployment 0b7c0b3e-5d0e-4c59-9d6e-2f3b4c5d6e7f CANCELLED: cancelled by verdantctl"]
        );
    }

    #[test]
    fn a_success_names_the_group_and_what_each_daemon_did() {
        let mut d = deployment(Phase::Succeeded);
        d.applied = vec![
            Applied {
                daemon: "router".into(),
                summary: "routes: 12".into(),
            },
            Applied {
                daemon: "lambda-runner".into(),
                summary: "started 1, restarted 0, stopped 2, unchanged 3".into(),
            },
        ];
        assert_eq!(
            outcome_lines(&d),
            [
                "deployment 0b7c0b3e-5d0e-4c59-9d6e-2f3b4c5d6e7f SUCCEEDED",
                "the core runs group line3 version 7",
                "  router: routes: 12",
                "  lambda-runner: started 1, restarted 0, stopped 2, unchanged 3",
            ]
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_654_101_000), "2026-12-07T14:35:01Z");
        assert_eq!(utc(4_102_444_799_000), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn the_list_marks_the_current_deployment() {
        let mut old = deployment(Phase::RolledBack);
        old.deployment_id = "old".into();
        old.reason = "health check failed".into();
        let mut reset = deployment(Phase::Succeeded);
        reset.deployment_id = "reset".into();
        reset.deployment_type = "ResetDeployment".into();
        reset.group_id.clear();
        reset.group_version.clear();
        let resp = ListDeploymentsResponse {
            deployments: vec![reset, old],
            current: "reset".into(),
        };
        assert_eq!(
            list_rows(&resp),
            [
                [
                    "*",
                    "reset",
                    "ResetDeployment",
                    "SUCCEEDED",
                    "-",
                    "verdantctl",
                    "2026-12-07T14:35:01Z",
                    ""
                ],
                [
                    "",
                    "old",
                    "NewDeployment",
                    "ROLLED_BACK",
                    "line3/7",
                    "verdantctl",
                    "2026-12-07T14:35:01Z",
                    "health check failed"
                ],
            ]
        );
    }

    #[test]
    fn show_prints_everything() {
        let mut d = deployment(Phase::Failed);
        d.problems = vec![Problem {
            path: "Id".into(),
            message: "missing".into(),
        }];
        let lines = show_lines(&d, false);
        assert!(
            lines.contains(&"phase:     FAILED".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"group:     line3/7".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"previous:  -".to_string()), "{lines:?}");
        assert!(lines.contains(&"  Id: missing".to_string()), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "applied:   -");
        let mut ok = deployment(Phase::Succeeded);
        ok.applied = vec![Applied {
            daemon: "router".into(),
            summary: "routes: 2".into(),
        }];
        let lines = show_lines(&ok, true);
        assert!(lines.contains(&"phase:     SUCCEEDED (the core runs it)".to_string()));
        assert_eq!(lines.last().unwrap(), "  router: routes: 2");
    }

    #[test]
    fn json_lines_are_one_object_with_names_for_enums() {
        let mut d = deployment(Phase::Downloading);
        d.bytes_done = 7;
        d.problems = vec![Problem {
            path: "Id".into(),
            message: "missing".into(),
        }];
        let line = json_line(&d);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["phase"], "DOWNLOADING");
        assert_eq!(v["type"], "NewDeployment");
        assert_eq!(v["bytes_done"], 7);
        assert_eq!(v["problems"][0]["path"], "Id");
        assert!(v.get("current").is_none());
        let shown = serde_json::to_value(view(&d, Some(true))).unwrap();
        assert_eq!(shown["current"], true);
    }
}
