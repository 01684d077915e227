//! Development certificates, written on a core's first start so a whole
//! core runs without any outside PKI: a group CA, the core's server
//! certificate (SANs: `localhost`, `127.0.0.1`, `::1`, the host name) and one
//! sample device. Keys are 0600, certificates 0644. Production cores bring
//! their own certificates under the same names.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Where the certificates of a core live.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub dir: PathBuf,
}

impl CertPaths {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("group-ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("group-ca.key")
    }
    pub fn core_cert(&self) -> PathBuf {
        self.dir.join("core.pem")
    }
    pub fn core_key(&self) -> PathBuf {
        self.dir.join("core.key")
    }
    pub fn device_cert(&self, name: &str) -> PathBuf {
        self.dir.join("devices").join(format!("{name}.pem"))
    }
    pub fn device_key(&self, name: &str) -> PathBuf {
        self.dir.join("devices").join(format!("{name}.key"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Writes the group CA, the core's and one device's certificates unless
/// the CA already exists. Returns whether anything was written.
pub fn ensure(paths: &CertPaths, core: &str, device: &str) -> Result<bool, CertError> {
    if paths.ca_cert().exists() {
        return Ok(false);
    }
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name("Verdant development group CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && h != "localhost");
    let mut sans = vec!["localhost".to_string()];
    sans.extend(host);
    let mut server = leaf(core, now)?;
    server.subject_alt_names = sans
        .into_iter()
        .map(|s| Ok(SanType::DnsName(s.try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    server.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let mut client = leaf(device, now)?;
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;

    write(&paths.ca_key(), &issuer.key().serialize_pem(), 0o600)?;
    write(&paths.core_cert(), &server_cert.pem(), 0o644)?;
    write(&paths.core_key(), &server_key.serialize_pem(), 0o600)?;
    write(&paths.device_cert(device), &client_cert.pem(), 0o644)?;
    write(
        &paths.device_key(device),
        &client_key.serialize_pem(),
        0o600,
    )?;
    // The CA certificate last: its presence means the set is complete.
    write(&paths.ca_cert(), &ca_cert.pem(), 0o644)?;
    Ok(true)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Verdant");
    dn
}

fn leaf(cn: &str, now: OffsetDateTime) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = name(cn);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(825);
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The AWS IoT certificate id of a PEM certificate: SHA-256 of its DER, hex.
pub fn certificate_id(path: &Path) -> Result<String, CertError> {
    let text = std::fs::read(path).map_err(|e| CertError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let pem = pem::parse(text).map_err(|e| CertError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(verdant_group::certificate_id(pem.contents()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_once_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths {
            dir: dir.path().join("certs"),
        };
        assert!(ensure(&paths, "core", "dev").unwrap());
        assert!(!ensure(&paths, "core", "dev").unwrap());
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(paths.ca_key()), 0o600);
        assert_eq!(mode(paths.device_key("dev")), 0o600);
        assert_eq!(mode(paths.ca_cert()), 0o644);
        assert_eq!(mode(paths.core_cert()), 0o644);
        let id = certificate_id(&paths.device_cert("dev")).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, certificate_id(&paths.core_cert()).unwrap());
    }
}
