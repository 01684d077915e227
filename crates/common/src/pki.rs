//! Server certificates issued by the group CA on the core, and what a
//! certificate says (its names, issuer and expiry), for the daemons and
//! tools that keep the core's certificates: `verdant-init` on a first
//! start, `verdant-discovery` when it rotates them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a certificate: {0}")]
    Parse(String),
    #[error("the group CA's key is the key of no CA in the group CA file")]
    KeyMismatch,
    #[error(
        "a group CA rotation is under way until {until} (seconds since the epoch): wait for its overlap to end"
    )]
    Rotating { until: i64 },
}

/// A subject distinguished name of Verdant's certificates.
pub fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Verdant");
    dn
}

/// The names a core's server certificate always carries: `localhost`,
/// the host name, `127.0.0.1` and `::1`.
pub fn local_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    names.extend(
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty() && h != "localhost"),
    );
    names.push("127.0.0.1".into());
    names.push("::1".into());
    names
}

/// A server certificate for `names` (IP addresses and DNS names), valid
/// for `days` from an hour ago, signed by the CA whose certificate and key
/// are given in PEM. Returns the certificate and its new key, in PEM.
pub fn issue_server(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    cn: &str,
    names: &[String],
    days: u32,
) -> Result<(String, String), PkiError> {
    let issuer = issuer(ca_cert_pem, ca_key_pem)?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    params.use_authority_key_identifier_extension = true;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut seen = std::collections::HashSet::new();
    for n in names.iter().filter(|n| seen.insert(n.as_str())) {
        params.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.clone().try_into()?),
        });
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA of `ca_cert_pem` (a bundle) whose key `ca_key_pem` is, ready to
/// sign: normally the first, but while a rotation is being written the
/// key may still be the previous CA's. A key that is no bundle CA's is
/// refused.
pub fn issuer(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(ca_key_pem)?;
    let der = signing_der(ca_cert_pem, &key)?;
    Ok(Issuer::from_ca_cert_der(&der.into(), key)?)
}

/// What the CA that `ca_key_pem` belongs to says (see [`issuer`]).
pub fn signing_ca(ca_cert_pem: &str, ca_key_pem: &str) -> Result<CertInfo, PkiError> {
    let key = KeyPair::from_pem(ca_key_pem)?;
    inspect_der(&signing_der(ca_cert_pem, &key)?)
}

fn signing_der(ca_cert_pem: &str, key: &KeyPair) -> Result<Vec<u8>, PkiError> {
    pem_blocks(ca_cert_pem)?
        .into_iter()
        .find(|der| public_key_is(der, key.public_key_raw()))
        .ok_or(PkiError::KeyMismatch)
}

fn public_key_is(der: &[u8], raw: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .is_ok_and(|(_, c)| c.public_key().subject_public_key.data.as_ref() == raw)
}

/// Whether the private key in `key_pem` is the one of the first
/// certificate in `cert_pem` (a pair replaced half-way is not).
pub fn pair_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    pem_blocks(cert_pem)
        .ok()
        .and_then(|b| b.into_iter().next())
        .is_some_and(|der| public_key_is(&der, key.public_key_raw()))
}

/// A new CA named `cn`, valid `days`: its certificate and key in PEM.
pub fn new_ca(cn: &str, days: u32) -> Result<(CertificateParams, KeyPair, String), PkiError> {
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name(cn);
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(i64::from(days));
    let pem = ca.self_signed(&key)?.pem();
    Ok((ca, key, pem))
}

/// The CA `params`/`key` certified by `by` instead of itself (a
/// cross-certificate): a client that trusts only `by` verifies, through
/// it, what the new CA signs.
pub fn cross_sign(
    params: &CertificateParams,
    key: &KeyPair,
    by: &Issuer<'_, KeyPair>,
) -> Result<String, PkiError> {
    Ok(params.signed_by(key, by)?.pem())
}

/// Replaces a certificate and its key, each by writing a new file and
/// renaming it over the old one: the key first (0600), then the
/// certificate (0644), so that a reader never sees a partial file, and a
/// certificate always has its key in place.
pub fn replace_pair(
    cert: &Path,
    cert_pem: &str,
    key: &Path,
    key_pem: &str,
) -> Result<(), PkiError> {
    replace(key, key_pem, 0o600)?;
    replace(cert, cert_pem, 0o644)
}

/// Writes `path` whole: a new file beside it (a name no other writer
/// uses), synced, renamed over it. Run as root (`sudo verdantctl`), the
/// file is given to the owner of its directory, so the core's daemons can
/// still read what root wrote.
pub fn replace(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    crate::fsutil::replace(path, text.as_bytes(), mode).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A group CA rotation: the new CA signs from now on; until
/// `overlap_until` the server certificate also carries
/// `cross_certificate` (the new CA certified by the previous one), so
/// devices that know only the previous CA still verify the core, and the
/// discovery API hands out both. Kept beside the CA file as
/// `<name>.rotation.json` (`group-ca.rotation.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Rotation {
    /// The certificate id of the previous (signing) CA.
    pub previous_id: String,
    /// Every CA of the file before the rotation: handed out only during
    /// the overlap.
    #[serde(default)]
    pub previous_ids: Vec<String>,
    /// The new CA's id.
    pub current_id: String,
    /// PEM.
    pub cross_certificate: String,
    /// Seconds since the epoch.
    pub rotated_at: i64,
    pub overlap_until: i64,
}

impl Rotation {
    /// Where the rotation of the CA file `ca_cert` is kept.
    pub fn file(ca_cert: &Path) -> PathBuf {
        ca_cert.with_extension("rotation.json")
    }

    /// The rotation kept for `ca_cert`, if there was one.
    pub fn load(ca_cert: &Path) -> Result<Option<Rotation>, PkiError> {
        let file = Rotation::file(ca_cert);
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| PkiError::Read {
                    path: file,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PkiError::Read {
                path: file,
                reason: e.to_string(),
            }),
        }
    }

    /// Whether the previous CA is still handed out at `now`.
    pub fn overlapping(&self, now: i64) -> bool {
        now < self.overlap_until
    }
}

/// Rotates the group CA in `ca_cert` (a bundle whose first certificate is
/// the signing CA, its key in `ca_key`): a new CA, first in the bundle
/// (the previous ones stay, trusted for the device certificates they
/// signed), its key in place of the old one, and the [`Rotation`] with a
/// cross-certificate for `overlap_secs`. Refused while a rotation's
/// overlap is still running. Written rotation first, then bundle, then
/// key: until the new key is in place the previous CA, still in the
/// bundle, is the one that signs ([`issuer`]).
pub fn rotate_ca(
    ca_cert: &Path,
    ca_key: &Path,
    overlap_secs: i64,
    now: i64,
) -> Result<(CertInfo, CertInfo, Rotation), PkiError> {
    if let Some(r) = Rotation::load(ca_cert)?
        && r.overlapping(now)
    {
        return Err(PkiError::Rotating {
            until: r.overlap_until,
        });
    }
    let bundle = read(ca_cert)?;
    let key_pem = read(ca_key)?;
    let previous = issuer(&bundle, &key_pem)?;
    let old = signing_ca(&bundle, &key_pem)?;
    let stamp = OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let cn = format!(
        "Verdant group CA {}{:02}{:02}T{:02}{:02}{:02}Z",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second()
    );
    let (params, key, pem) = new_ca(&cn, 3650)?;
    let new = inspect_pem(&pem)?.remove(0);
    let rotation = Rotation {
        previous_id: old.id.clone(),
        previous_ids: inspect_pem(&bundle)?.into_iter().map(|c| c.id).collect(),
        current_id: new.id.clone(),
        cross_certificate: cross_sign(&params, &key, &previous)?,
        rotated_at: now,
        overlap_until: now + overlap_secs,
    };
    let text = serde_json::to_string_pretty(&rotation).expect("serialisable");
    replace(&Rotation::file(ca_cert), &text, 0o644)?;
    replace(ca_cert, &format!("{pem}{bundle}"), 0o644)?;
    replace(ca_key, &key.serialize_pem(), 0o600)?;
    Ok((new, old, rotation))
}

/// What a certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Its subject alternative names: DNS names and IP addresses.
    pub names: Vec<String>,
    /// SHA-256 of its DER, hex: AWS IoT's certificate id.
    pub id: String,
}

/// Every certificate in a PEM text, in order.
pub fn inspect_pem(text: &str) -> Result<Vec<CertInfo>, PkiError> {
    let blocks = pem_blocks(text)?;
    blocks.iter().map(|der| inspect_der(der)).collect()
}

/// The DER of each certificate in a PEM text.
pub fn pem_blocks(text: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| {
            c.map(|c| c.to_vec())
                .map_err(|e| PkiError::Parse(e.to_string()))
        })
        .collect()
}

/// Each certificate of a PEM text as its own PEM text, in order.
pub fn pem_texts(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line == "-----END CERTIFICATE-----"
            && let Some(block) = current.take()
        {
            out.push(block);
        }
    }
    out
}

/// What one DER certificate says.
pub fn inspect_der(der: &[u8]) -> Result<CertInfo, PkiError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4")).to_string()),
                    16 => {
                        names.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16")).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let validity = cert.validity();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        names,
        id: sha256_hex(der),
    })
}

fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    sha2::Sha256::digest(der)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads a text file, naming it in the error.
pub fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| PkiError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (String, String) {
        let (_, key, pem) = new_ca("test CA", 10).unwrap();
        (pem, key.serialize_pem())
    }

    #[test]
    fn a_rotated_ca_signs_keeps_the_old_one_and_cross_certifies_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("group-ca.pem"),
            dir.path().join("group-ca.key"),
        );
        let (old_pem, old_key) = ca();
        replace_pair(&cert, &old_pem, &key, &old_key).unwrap();
        let (new, old, rotation) = rotate_ca(&cert, &key, 60, 1_000).unwrap();
        let bundle = inspect_pem(&read(&cert).unwrap()).unwrap();
        assert_eq!(bundle.len(), 2);
        assert_eq!(
            (bundle[0].id.as_str(), bundle[1].id.as_str()),
            (new.id.as_str(), old.id.as_str())
        );
        assert_eq!(Rotation::load(&cert).unwrap().unwrap(), rotation);
        assert!(rotation.overlapping(1_059) && !rotation.overlapping(1_060));
        let cross = &inspect_pem(&rotation.cross_certificate).unwrap()[0];
        assert_eq!(cross.subject, new.subject);
        assert_eq!(cross.issuer, old.subject);
        // The new key signs now.
        let (server, _) =
            issue_server(&read(&cert).unwrap(), &read(&key).unwrap(), "core", &[], 7).unwrap();
        assert_eq!(inspect_pem(&server).unwrap()[0].issuer, new.subject);
        assert!(matches!(
            rotate_ca(&cert, &key, 60, 1_030),
            Err(PkiError::Rotating { until: 1_060 })
        ));
        rotate_ca(&cert, &key, 60, 1_060).unwrap();
        let text = read(&cert).unwrap();
        assert_eq!(inspect_pem(&text).unwrap().len(), 3);
        let texts = pem_texts(&text);
        assert_eq!(texts.len(), 3);
        assert_eq!(inspect_pem(&texts[2]).unwrap()[0].id, old.id);
    }

    #[test]
    fn the_key_picks_its_ca_in_the_bundle_and_a_half_replaced_pair_shows() {
        let (a_pem, a_key) = ca();
        let (b_pem, b_key) = ca();
        let bundle = format!("{b_pem}{a_pem}");
        let a = &inspect_pem(&a_pem).unwrap()[0];
        assert_eq!(
            signing_ca(&bundle, &a_key).unwrap().id,
            a.id,
            "the second CA's key"
        );
        let (server, server_key) = issue_server(&bundle, &a_key, "core", &[], 7).unwrap();
        assert_eq!(inspect_pem(&server).unwrap()[0].issuer, a.subject);
        assert!(pair_matches(&server, &server_key));
        assert!(!pair_matches(&server, &b_key));
        assert!(!pair_matches(&b_pem, "not a key"));
    }

    #[test]
    fn a_key_that_is_not_the_cas_is_refused() {
        let (ca_pem, _) = ca();
        let (_, other_key) = ca();
        assert!(matches!(
            issue_server(&ca_pem, &other_key, "core", &["localhost".into()], 7),
            Err(PkiError::KeyMismatch)
        ));
    }

    #[test]
    fn a_server_certificate_carries_every_name_and_its_validity() {
        let (ca_pem, ca_key) = ca();
        let names = vec![
            "localhost".to_string(),
            "192.168.1.20".into(),
            "::1".into(),
            "core.example".into(),
            "localhost".into(),
        ];
        let (pem, key) = issue_server(&ca_pem, &ca_key, "core", &names, 7).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let info = &inspect_pem(&pem).unwrap()[0];
        assert_eq!(
            info.names,
            ["localhost", "192.168.1.20", "::1", "core.example"]
        );
        let days = (info.not_after - info.not_before) / 86_400;
        assert_eq!(days, 7, "7 days and an hour");
        assert!(info.issuer.contains("test CA"), "{}", info.issuer);
        assert_eq!(info.id.len(), 64);
    }

    #[test]
    fn a_replaced_pair_has_its_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("s.pem"), dir.path().join("s.key"));
        replace_pair(&c, "CERT", &k, "KEY").unwrap();
        replace_pair(&c, "CERT2", &k, "KEY2").unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), "CERT2");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&c), mode(&k)), (0o644, 0o600));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file is left");
    }
}
