//! `[discovery]` in the core config: where the discovery API listens,
//! the certificate it serves, and the connectivity it hands devices.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use verdant_common::config::{Invalid, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Where the HTTPS discovery API listens (Greengrass's port 8443).
    pub bind: SocketAddr,
    /// Also listen here for clients that offer ALPN `x-amzn-http-ca`, as
    /// AWS serves discovery on port 443 (e.g. `0.0.0.0:443`, kept only
    /// with the capability to bind it). Clients offering no such ALPN are
    /// refused there.
    pub alpn_bind: Option<SocketAddr>,
    /// The server certificate and key (the broker's: devices check both
    /// against the group CA), relative to the root. Issued again here,
    /// before they expire and when the connectivity changes, when the
    /// group CA's key is at `ca_key`.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The group CA: client certificates must chain to it; it is what
    /// devices get back in `CAs`.
    pub client_ca: PathBuf,
    /// The group CA's key, which signs the server certificates. Absent:
    /// the server certificate is the operator's to renew.
    pub ca_key: PathBuf,
    /// How long a server certificate issued here is valid (2 to 30 days,
    /// as in Greengrass). A new one is issued when a third of it is left.
    pub server_certificate_days: u32,
    /// The addresses devices are told to connect to, in this order. Empty:
    /// the host's own addresses. `verdantctl connectivity set` wins over both.
    pub connectivity: Vec<Connectivity>,
    /// With no `connectivity` set, also hand out loopback addresses (a
    /// device on the core's own host).
    pub include_loopback: bool,
    /// How often the host's addresses (and the broker's port) are looked
    /// at again, in seconds.
    pub refresh_secs: u64,
}

/// One way to reach the core's broker.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Connectivity {
    pub id: String,
    pub host_address: String,
    /// The broker's device port when absent (its TLS listener's real port).
    pub port_number: Option<u16>,
    #[serde(default)]
    pub metadata: String,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            bind: "0.0.0.0:8443".parse().expect("an address"),
            alpn_bind: None,
            certificate: "config/certs/server.pem".into(),
            private_key: "config/certs/server.key".into(),
            client_ca: "config/certs/group-ca.pem".into(),
            ca_key: "config/certs/group-ca.key".into(),
            server_certificate_days: 7,
            connectivity: Vec::new(),
            include_loopback: false,
            refresh_secs: 10,
        }
    }
}

impl Section for DiscoveryConfig {
    const NAME: &'static str = "discovery";

    fn check(&self) -> Result<(), Invalid> {
        if !(2..=30).contains(&self.server_certificate_days) {
            return Err(Invalid::new(
                "discovery.server_certificate_days",
                "must be 2 to 30",
            ));
        }
        if self.refresh_secs == 0 {
            return Err(Invalid::new("discovery.refresh_secs", "must be at least 1"));
        }
        for (i, c) in self.connectivity.iter().enumerate() {
            if c.id.is_empty() || c.host_address.is_empty() {
                return Err(Invalid::new(
                    format!("discovery.connectivity[{i}]"),
                    "id and host_address are required",
                ));
            }
        }
        Ok(())
    }
}
