//! The server certificate the broker and the discovery API present: issued
//! by the group CA on the core with every name devices may connect to
//! (the core's local names and each connectivity address), and issued
//! again before it expires (a third of its validity left), when an address
//! is not in it, or when the group CA changed. The listeners take the new
//! files by themselves (`verdant_common::reload`), so devices already
//! connected stay connected.

use std::path::PathBuf;
use std::sync::Mutex;

use verdant_common::pki::{self, CertInfo, PkiError};

use crate::config::DiscoveryConfig;

/// Why a server certificate is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    Missing,
    Expiring,
    Names(Vec<String>),
    NewCa,
    OverlapOver,
    Asked,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Missing => f.write_str("the server certificate cannot be read"),
            Why::Expiring => f.write_str("a third of its validity is left"),
            Why::Names(n) => write!(f, "it does not name {}", n.join(", ")),
            Why::NewCa => f.write_str("the group CA was rotated"),
            Why::OverlapOver => {
                f.write_str("the group CA rotation's overlap is over: no cross-certificate")
            }
            Why::Asked => f.write_str("an operator asked for it"),
        }
    }
}

/// An IP address as a certificate gives it back; a DNS name as it is.
fn canonical(name: &str) -> String {
    name.parse::<std::net::IpAddr>()
        .map_or_else(|_| name.to_string(), |ip| ip.to_string())
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Issues server certificates, when the core holds the group CA's key.
pub struct Keeper {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub days: u32,
    /// One issuance at a time.
    lock: Mutex<()>,
}

impl Keeper {
    pub fn new(layout: &verdant_common::paths::Layout, config: &DiscoveryConfig) -> Self {
        Keeper {
            certificate: layout.resolve(&config.certificate),
            private_key: layout.resolve(&config.private_key),
            ca_cert: layout.resolve(&config.client_ca),
            ca_key: layout.resolve(&config.ca_key),
            days: config.server_certificate_days,
            lock: Mutex::new(()),
        }
    }

    /// Whether this core issues its server certificates.
    pub fn issues(&self) -> bool {
        self.ca_key.exists()
    }

    /// The server certificate now.
    pub fn current(&self) -> Result<CertInfo, PkiError> {
        pki::inspect_pem(&pki::read(&self.certificate)?)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Parse("no certificate in the file".into()))
    }

    /// Why the server certificate must be issued again for `names`, if it must.
    pub fn due(&self, names: &[String], now: i64) -> Option<Why> {
        let (Ok(cert), Ok(pem), Ok(key)) = (
            self.current(),
            pki::read(&self.certificate),
            pki::read(&self.private_key),
        ) else {
            return Some(Why::Missing);
        };
        // A key left from a replacement cut half-way is not the certificate's.
        if !pki::pair_matches(&pem, &key) {
            return Some(Why::Missing);
        }
        let validity = i64::from(self.days) * 86_400;
        if cert.not_after - now < validity / 3 {
            return Some(Why::Expiring);
        }
        let in_cert: Vec<String> = cert.names.iter().map(|n| canonical(n)).collect();
        let missing: Vec<String> = names
            .iter()
            .filter(|n| {
                !in_cert
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&canonical(n)))
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Some(Why::Names(missing));
        }
        let signing = pki::read(&self.ca_cert)
            .and_then(|cas| pki::signing_ca(&cas, &pki::read(&self.ca_key)?))
            .ok();
        if let Some(ca) = signing
            && ca.subject != cert.issuer
        {
            return Some(Why::NewCa);
        }
        // During a rotation's overlap the certificate carries the
        // cross-certificate; after it, not.
        let overlapping = pki::Rotation::load(&self.ca_cert)
            .ok()
            .flatten()
            .is_some_and(|r| r.overlapping(now));
        let chained = pki::pem_texts(&pem).len() > 1;
        match (overlapping, chained) {
            (true, false) => Some(Why::NewCa),
            (false, true) => Some(Why::OverlapOver),
            _ => None,
        }
    }

    /// Issues a server certificate for `names` now, for `why`, and puts it
    /// in place (the key first, then the certificate).
    pub fn issue(&self, cn: &str, names: &[String], why: &Why) -> Result<CertInfo, PkiError> {
        let _one = self.lock.lock().expect("keeper lock");
        // The group CA file may hold several CAs while one is retired: the
        // first one, whose key `ca_key` is, signs.
        let (mut cert, key) = pki::issue_server(
            &pki::read(&self.ca_cert)?,
            &pki::read(&self.ca_key)?,
            cn,
            names,
            self.days,
        )?;
        if let Some(r) = pki::Rotation::load(&self.ca_cert)?
            && r.overlapping(now())
        {
            cert.push_str(&r.cross_certificate);
        }
        pki::replace_pair(&self.certificate, &cert, &self.private_key, &key)?;
        let info = self.current()?;
        tracing::info!(
            serial = info.serial,
            names = info.names.join(", "),
            not_after = info.not_after,
            "issued a new server certificate: {why}"
        );
        Ok(info)
    }
}
