//! `verdantctl connectors`: the connectors this release ships and their
//! parameters, read from the catalog deployments are checked against (no
//! core needed).

use clap::Subcommand;
use serde_json::json;
use verdant_group::connectors::{CATALOG, Connector};

#[derive(Debug, Subcommand)]
pub enum ConnectorsCmd {
    /// Every connector with its versions, ARN and parameters (the default).
    List,
}

/// The ARN a group names connector `c` by.
fn arn(c: &Connector) -> String {
    let versions: Vec<String> = c.versions.iter().map(u32::to_string).collect();
    format!(
        "arn:aws:greengrass:<region>::/connectors/{}/versions/{}",
        c.name,
        versions.join("|")
    )
}

pub fn run(command: Option<&ConnectorsCmd>, json: bool) {
    match command.unwrap_or(&ConnectorsCmd::List) {
        ConnectorsCmd::List => list(json),
    }
}

fn list(json: bool) {
    if json {
        let all: Vec<_> = CATALOG
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "versions": c.versions,
                    "arn": arn(c),
                    "description": c.description,
                    "parameters": c.parameters.iter().map(|p| json!({
                        "name": p.name,
                        "type": p.kind.describe(),
                        "required": p.required,
                        "default": p.default,
                        "description": p.description,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::from(all));
        return;
    }
    for (i, c) in CATALOG.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!(
            "{}: {}",
            c.name,
            c.description
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!("{}", arn(c));
        let rows: Vec<Vec<String>> = c
            .parameters
            .iter()
            .map(|p| {
                vec![
                    format!("  {}", p.name),
                    p.kind.describe(),
                    match (p.required, p.default) {
                        (true, _) => "required".into(),
                        (false, Some(d)) => d.into(),
                        (false, None) => "-".into(),
                    },
                    p.description
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect();
        crate::output::table(&["  PARAMETER", "TYPE", "DEFAULT", "DESCRIPTION"], &rows);
    }
}
