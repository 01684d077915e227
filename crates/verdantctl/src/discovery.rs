//! Connectivity, certificates and discovery requests, over
//! `verdant.discovery.v1.Discovery`.

use std::path::Path;

use clap::Subcommand;
use serde::Serialize;
use verdant_proto::discovery::v1 as pb;
use verdant_proto::discovery::v1::discovery_client::DiscoveryClient;

use crate::{dial, output, status_error};

#[derive(Debug, Subcommand)]
pub enum ConnectivityCmd {
    /// What devices are told (the default).
    List,
    /// Replace the list: each entry `[ID=]HOST[:PORT]` (IPv6 with a port
    /// as `[ADDR]:PORT`; no port: the broker's device port).
    Set {
        #[arg(required = true)]
        entries: Vec<String>,
    },
    /// Add one entry `[ID=]HOST[:PORT]` after the others.
    Add {
        entry: String,
        /// Free text devices get with it.
        #[arg(long, default_value = "")]
        metadata: String,
    },
    /// Remove the entry with this id or host address.
    Remove { id_or_host: String },
    /// Forget the operator's list: back to `[[discovery.connectivity]]`,
    /// or the host's own addresses.
    Clear,
}

#[derive(Debug, Subcommand)]
pub enum CertificatesCmd {
    /// The server certificate, the group CAs and the devices' certificates,
    /// with their expiry (the default).
    List,
    /// Issue a new server certificate now (the listeners take it without
    /// dropping connected devices).
    Rotate,
}

async fn client(dir: &Path) -> Result<DiscoveryClient<tonic::transport::Channel>, String> {
    Ok(DiscoveryClient::new(dial(dir, "discovery").await?))
}

/// `[ID=]HOST[:PORT]` as an entry; ids default to `HOST`.
fn parse_entry(text: &str) -> Result<pb::ConnectivityEntry, String> {
    let (id, rest) = match text.split_once('=') {
        Some((id, rest)) => (Some(id), rest),
        None => (None, text),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{text}`: `[` without `]`"))?;
        (host, after.strip_prefix(':'))
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').expect("one colon");
        (h, Some(p))
    } else {
        (rest, None)
    };
    let port_number = match port {
        None => 0,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{text}`: the port must be 1 to 65535"))?
            .into(),
    };
    Ok(pb::ConnectivityEntry {
        id: id.unwrap_or(host).to_string(),
        host_address: host.to_string(),
        port_number,
        metadata: String::new(),
        port_from_broker: false,
    })
}

#[derive(Serialize)]
struct EntryView<'a> {
    id: &'a str,
    host_address: &'a str,
    port_number: u32,
    metadata: &'a str,
}

fn print_connectivity(c: &pb::Connectivity, json: bool) {
    if json {
        let entries: Vec<EntryView> = c
            .entries
            .iter()
            .map(|e| EntryView {
                id: &e.id,
                host_address: &e.host_address,
                port_number: e.port_number,
                metadata: &e.metadata,
            })
            .collect();
        output::json(&serde_json::json!({ "source": c.source, "entries": entries }));
        return;
    }
    let rows: Vec<Vec<String>> = c
        .entries
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.host_address.clone(),
                e.port_number.to_string(),
                e.metadata.clone(),
            ]
        })
        .collect();
    output::table(&["ID", "HOST", "PORT", "METADATA"], &rows);
    println!("source: {}", c.source);
}

pub async fn connectivity(
    dir: &Path,
    command: Option<ConnectivityCmd>,
    json: bool,
) -> Result<(), String> {
    let mut api = client(dir).await?;
    let current = api
        .get_connectivity(pb::GetConnectivityRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    // Only the operator's own entries are edited; detected or configured
    // ones are the starting point of an `add` or `remove`.
    let entries = match command.unwrap_or(ConnectivityCmd::List) {
        ConnectivityCmd::List => {
            print_connectivity(&current, json);
            return Ok(());
        }
        ConnectivityCmd::Set { entries } => entries
            .iter()
            .map(|e| parse_entry(e))
            .collect::<Result<Vec<_>, _>>()?,
        ConnectivityCmd::Add { entry, metadata } => {
            let mut entries = editable(&current);
            entries.push(pb::ConnectivityEntry {
                metadata,
                ..parse_entry(&entry)?
            });
            entries
        }
        ConnectivityCmd::Remove { id_or_host } => {
            if current.source == "detected" {
                return Err(
                    "devices get the host's detected addresses: `verdantctl connectivity set` \
                     a list of your own instead"
                        .into(),
                );
            }
            let mut entries = editable(&current);
            let before = entries.len();
            entries.retain(|e| e.id != id_or_host && e.host_address != id_or_host);
            if entries.len() == before {
                return Err(format!(
                    "no connectivity entry has id or host `{id_or_host}`"
                ));
            }
            if entries.is_empty() {
                return Err(
                    "that would leave devices no address: `verdantctl connectivity clear` goes \
                     back to the configured or detected ones"
                        .into(),
                );
            }
            entries
        }
        ConnectivityCmd::Clear => Vec::new(),
    };
    let now = api
        .set_connectivity(pb::SetConnectivityRequest { entries })
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    print_connectivity(&now, json);
    Ok(())
}

/// The entries an `add` or `remove` starts from: the operator's or the
/// configured ones, with the ports no one set left to the broker; none
/// when devices get the detected addresses (those keep following the
/// host, they are not frozen into a list).
fn editable(current: &pb::Connectivity) -> Vec<pb::ConnectivityEntry> {
    if current.source == "detected" {
        return Vec::new();
    }
    let mut entries = current.entries.clone();
    for e in &mut entries {
        if e.port_from_broker {
            e.port_number = 0;
        }
    }
    entries
}

pub fn date(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs).map_or_else(
        |_| secs.to_string(),
        |t| format!("{} {:02}:{:02}", t.date(), t.hour(), t.minute()),
    )
}

#[derive(Serialize)]
struct CertView<'a> {
    role: &'a str,
    thing_name: &'a str,
    subject: &'a str,
    issuer: &'a str,
    serial: &'a str,
    id: &'a str,
    not_after: i64,
    names: &'a [String],
    problem: &'a str,
}

fn view(c: &pb::Certificate) -> CertView<'_> {
    CertView {
        role: &c.role,
        thing_name: &c.thing_name,
        subject: &c.subject,
        issuer: &c.issuer,
        serial: &c.serial,
        id: &c.id,
        not_after: c.not_after,
        names: &c.names,
        problem: &c.problem,
    }
}

pub async fn certificates(
    dir: &Path,
    command: Option<CertificatesCmd>,
    json: bool,
) -> Result<(), String> {
    let mut api = client(dir).await?;
    if let Some(CertificatesCmd::Rotate) = command {
        let c = api
            .rotate_server_certificate(pb::RotateServerCertificateRequest {})
            .await
            .map_err(|e| status_error(&e))?
            .into_inner();
        if json {
            output::json(&view(&c));
        } else {
            println!(
                "new server certificate, serial {}, valid until {}, names {}",
                c.serial,
                date(c.not_after),
                c.names.join(", ")
            );
        }
        return Ok(());
    }
    let resp = api
        .list_certificates(pb::ListCertificatesRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    if json {
        let views: Vec<CertView> = resp.certificates.iter().map(view).collect();
        output::json(&serde_json::json!({
            "server_certificate_days": resp.server_certificate_days,
            "certificates": views,
        }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = resp
        .certificates
        .iter()
        .map(|c| {
            let what = if c.thing_name.is_empty() {
                c.role.clone()
            } else {
                format!("{} {}", c.role, c.thing_name)
            };
            let shown = if c.problem.is_empty() {
                format!("until {}", date(c.not_after))
            } else {
                c.problem.clone()
            };
            vec![
                what,
                c.id.get(..12).unwrap_or(&c.id).to_string(),
                shown,
                c.names.join(","),
            ]
        })
        .collect();
    output::table(&["CERTIFICATE", "ID", "VALID", "NAMES"], &rows);
    match resp.server_certificate_days {
        0 => println!("server certificate: the operator's (no group CA key on this core)"),
        d => println!("server certificate: issued here for {d} days, renewed with a third left"),
    }
    Ok(())
}

pub async fn requests(dir: &Path, json: bool) -> Result<(), String> {
    let resp = client(dir)
        .await?
        .list_requests(pb::ListRequestsRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    if json {
        let views: Vec<serde_json::Value> = resp
            .requests
            .iter()
            .map(|r| {
                serde_json::json!({ "at": r.at, "peer": r.peer, "path": r.path,
                    "certificate_id": r.certificate_id, "status": r.status })
            })
            .collect();
        output::json(&views);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = resp
        .requests
        .iter()
        .map(|r| {
            vec![
                date(r.at),
                r.peer.clone(),
                r.path.clone(),
                r.status.to_string(),
                r.certificate_id
                    .get(..12)
                    .unwrap_or(&r.certificate_id)
                    .to_string(),
            ]
        })
        .collect();
    output::table(&["AT", "PEER", "PATH", "STATUS", "CERTIFICATE"], &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_with_ids_ports_and_ipv6() {
        let e = parse_entry("lan=192.168.1.5:8883").unwrap();
        assert_eq!(
            (e.id.as_str(), e.host_address.as_str(), e.port_number),
            ("lan", "192.168.1.5", 8883)
        );
        let e = parse_entry("core.example").unwrap();
        assert_eq!((e.id.as_str(), e.port_number), ("core.example", 0));
        let e = parse_entry("[fd00::5]:443").unwrap();
        assert_eq!((e.host_address.as_str(), e.port_number), ("fd00::5", 443));
        let e = parse_entry("fd00::5").unwrap();
        assert_eq!((e.host_address.as_str(), e.port_number), ("fd00::5", 0));
        assert!(parse_entry("h:0").is_err());
        assert!(parse_entry("h:99999").is_err());
    }
}
