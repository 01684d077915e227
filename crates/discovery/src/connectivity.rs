//! The core's connectivity, as devices are given it: the operator's list
//! (`verdantctl connectivity set`, kept in `data/discovery/connectivity.json`)
//! wins over `[[discovery.connectivity]]`, which wins over the host's own
//! addresses, looked at again every `refresh_secs`. Ports left out are the
//! broker's device port, asked of the broker.

use std::path::PathBuf;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use verdant_common::paths::Layout;
use verdant_proto::broker::v1 as broker;
use verdant_proto::broker::v1::broker_client::BrokerClient;

use crate::config::{Connectivity as Configured, DiscoveryConfig};
use crate::discover::Entry;

/// The device port when the broker cannot be asked.
const DEFAULT_DEVICE_PORT: u16 = 8883;

/// One entry as the operator sets it (the port may be left to the broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Set {
    pub id: String,
    pub host_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u16>,
    #[serde(default)]
    pub metadata: String,
}

/// Where the connectivity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Operator,
    Configuration,
    Detected,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Operator => "operator",
            Source::Configuration => "configuration",
            Source::Detected => "detected",
        }
    }
}

/// The connectivity and what it is made from.
pub struct Connectivity {
    layout: Layout,
    file: PathBuf,
    configured: Vec<Configured>,
    include_loopback: bool,
    state: RwLock<State>,
}

struct State {
    operator: Vec<Set>,
    detected: Vec<Entry>,
    port: u16,
    /// Whether the broker has told its port yet.
    port_known: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("connectivity entry {0}: id and host address are required")]
    Incomplete(usize),
    #[error("connectivity entry {index}: `{host}` is neither an IP address nor a DNS name")]
    BadHost { index: usize, host: String },
    #[error("connectivity entry {index}: id `{id}` is given twice")]
    Twice { index: usize, id: String },
    #[error("cannot keep the connectivity in {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: verdant_common::pki::PkiError,
    },
}

impl Connectivity {
    /// Reads the operator's list kept in `file` (a damaged one is logged
    /// and left out, not lost: it stays on disk until the next `set`).
    pub fn new(layout: Layout, config: &DiscoveryConfig, file: PathBuf) -> Self {
        let operator = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<Vec<Set>>(&bytes).unwrap_or_else(|e| {
                tracing::error!(
                    "{}: {e}: the operator's connectivity is left out until it is set again",
                    file.display()
                );
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let configured = config.connectivity.clone();
        Connectivity {
            layout,
            file,
            configured,
            include_loopback: config.include_loopback,
            state: RwLock::new(State {
                operator,
                detected: Vec::new(),
                port: DEFAULT_DEVICE_PORT,
                port_known: false,
            }),
        }
    }

    /// Looks at the host's addresses and the broker's port again; whether
    /// what devices get changed.
    pub async fn refresh(&self) -> bool {
        let port = broker_port(&self.layout).await;
        let detected = detected(port, self.include_loopback);
        let before = self.entries();
        {
            let mut s = self.state.write().expect("connectivity lock");
            if let Some(port) = port {
                s.port = port;
                s.port_known = true;
            }
            s.detected = detected;
        }
        let after = self.entries();
        if after != before {
            tracing::info!(
                source = after.1.as_str(),
                "connectivity: {}",
                after
                    .0
                    .iter()
                    .map(|e| format!("{}:{}", e.host_address, e.port_number))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        after != before
    }

    /// Whether the broker has told its device port yet.
    pub fn port_known(&self) -> bool {
        self.state.read().expect("connectivity lock").port_known
    }

    /// What devices get, and where it comes from.
    pub fn entries(&self) -> (Vec<Entry>, Source) {
        let s = self.state.read().expect("connectivity lock");
        let port = s.port;
        if !s.operator.is_empty() {
            let entries = s
                .operator
                .iter()
                .map(|c| entry(&c.id, &c.host_address, c.port_number, &c.metadata, port))
                .collect();
            return (entries, Source::Operator);
        }
        if !self.configured.is_empty() {
            let entries = self
                .configured
                .iter()
                .map(|c| entry(&c.id, &c.host_address, c.port_number, &c.metadata, port))
                .collect();
            return (entries, Source::Configuration);
        }
        let entries = s
            .detected
            .iter()
            .map(|e| Entry {
                port_number: port,
                ..e.clone()
            })
            .collect();
        (entries, Source::Detected)
    }

    /// Sets the operator's list (empty: back to the configuration or
    /// detection), kept on disk before it is used.
    pub fn set(&self, mut entries: Vec<Set>) -> Result<(), SetError> {
        // IP addresses kept the one way certificates write them.
        for c in &mut entries {
            if let Ok(ip) = c.host_address.parse::<std::net::IpAddr>() {
                c.host_address = ip.to_string();
            }
        }
        for (index, c) in entries.iter().enumerate() {
            if c.id.is_empty() || c.host_address.is_empty() {
                return Err(SetError::Incomplete(index));
            }
            if !host_ok(&c.host_address) {
                return Err(SetError::BadHost {
                    index,
                    host: c.host_address.clone(),
                });
            }
            if entries[..index].iter().any(|e| e.id == c.id) {
                return Err(SetError::Twice {
                    index,
                    id: c.id.clone(),
                });
            }
        }
        let text = serde_json::to_string_pretty(&entries).expect("serialisable");
        verdant_common::pki::replace(&self.file, &text, 0o640).map_err(|source| {
            SetError::Write {
                path: self.file.clone(),
                source,
            }
        })?;
        self.state.write().expect("connectivity lock").operator = entries;
        Ok(())
    }
}

fn entry(id: &str, host: &str, port: Option<u16>, metadata: &str, broker: u16) -> Entry {
    Entry {
        id: id.into(),
        host_address: host.into(),
        port_number: port.unwrap_or(broker),
        metadata: metadata.into(),
        port_from_broker: port.is_none(),
    }
}

/// An IP address, or a DNS name a certificate can carry.
fn host_ok(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || (host.len() <= 253
            && host.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

/// The host's addresses devices may use: IPv4 and global IPv6, without
/// loopback (unless `loopback`) and link-local ones, each with the
/// broker's `port`, named `AUTOIP_<address>_<n>` as Greengrass names them.
pub fn detected(port: Option<u16>, loopback: bool) -> Vec<Entry> {
    let port = port.unwrap_or(DEFAULT_DEVICE_PORT);
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<Entry> = Vec::new();
    for a in addrs {
        let Some(ip) = a.address.as_ref().and_then(|s| {
            s.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
        }) else {
            continue;
        };
        let link_local = match ip {
            std::net::IpAddr::V4(v4) => v4.is_link_local(),
            std::net::IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if link_local || (ip.is_loopback() && !loopback) || ip.is_unspecified() {
            continue;
        }
        let host = ip.to_string();
        if out.iter().any(|e| e.host_address == host) {
            continue;
        }
        out.push(Entry {
            id: format!("AUTOIP_{host}_{}", out.len()),
            host_address: host,
            port_number: port,
            metadata: String::new(),
            port_from_broker: true,
        });
    }
    out
}

/// The port of the broker's TLS listener, asked of the broker; `None`
/// when it does not answer.
async fn broker_port(layout: &Layout) -> Option<u16> {
    let channel = verdant_common::uds::connect(&layout.socket("broker"))
        .await
        .ok()?;
    BrokerClient::new(channel)
        .list_listeners(broker::ListListenersRequest {})
        .await
        .ok()?
        .into_inner()
        .listeners
        .into_iter()
        .find(|l| l.name == "tls")
        .and_then(|l| l.address.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, host: &str) -> Set {
        Set {
            id: id.into(),
            host_address: host.into(),
            port_number: None,
            metadata: String::new(),
        }
    }

    #[test]
    fn the_operator_wins_is_kept_and_an_empty_list_gives_way() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), Some(&dir.path().join("run"))).unwrap();
        let file = dir.path().join("data/discovery/connectivity.json");
        let config = DiscoveryConfig {
            connectivity: vec![Configured {
                id: "cfg".into(),
                host_address: "10.0.0.1".into(),
                port_number: Some(1883),
                metadata: String::new(),
            }],
            ..DiscoveryConfig::default()
        };
        let c = Connectivity::new(layout.clone(), &config, file.clone());
        assert_eq!(c.entries().1, Source::Configuration);
        c.set(vec![set("lan", "192.168.1.5"), set("name", "core.example")])
            .unwrap();
        let (entries, source) = c.entries();
        assert_eq!(source, Source::Operator);
        assert_eq!(entries[0].port_number, DEFAULT_DEVICE_PORT);
        assert_eq!(entries[1].host_address, "core.example");
        let again = Connectivity::new(layout, &config, file);
        assert_eq!(again.entries().0, entries, "kept across a restart");
        again.set(Vec::new()).unwrap();
        assert_eq!(again.entries().1, Source::Configuration);
    }

    #[test]
    fn bad_entries_are_refused_with_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None).unwrap();
        let c = Connectivity::new(
            layout,
            &DiscoveryConfig::default(),
            dir.path().join("c.json"),
        );
        let e = c.set(vec![set("a", "10.0.0.1"), set("b", "not a host")]);
        assert!(
            matches!(e, Err(SetError::BadHost { index: 1, .. })),
            "{e:?}"
        );
        let e = c.set(vec![set("a", "10.0.0.1"), set("a", "10.0.0.2")]);
        assert!(matches!(e, Err(SetError::Twice { index: 1, .. })), "{e:?}");
        assert!(matches!(
            c.set(vec![set("", "x")]),
            Err(SetError::Incomplete(0))
        ));
        assert_eq!(c.entries().1, Source::Detected, "nothing was set");
    }
}
