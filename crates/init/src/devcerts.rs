//! Development certificates, written on a core's first start so a whole
//! core runs without any outside PKI: a group CA, the core's server
//! certificate (SANs: `localhost`, `127.0.0.1`, `::1`, the host name) and one
//! sample device; more devices later with [`issue_device`] (`verdantctl
//! device add`). Keys are 0600, certificates 0644. Production cores bring
//! their own certificates under the same names.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
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
    #[error("{} exists already: remove it (and its key) to issue a new one", path.display())]
    Exists { path: PathBuf },
    #[error("`{name}` cannot be a thing name: use 1 to 128 of a-z, A-Z, 0-9, `_`, `-` and `:`")]
    BadName { name: String },
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

    let (client_cert, client_key) = sign_device(device, now, &issuer)?;

    write(&paths.ca_key(), &issuer.key().serialize_pem(), 0o600)?;
    write(&paths.core_cert(), &server_cert.pem(), 0o644)?;
    write(&paths.core_key(), &server_key.serialize_pem(), 0o600)?;
    write_device(paths, device, &client_cert, &client_key)?;
    // The CA certificate last: its presence means the set is complete.
    write(&paths.ca_cert(), &ca_cert.pem(), 0o644)?;
    Ok(true)
}

/// Issues a certificate for the device `thing` (X.509 v3, ECDSA P-256,
/// client authentication, 825 days), signed by the group CA in `paths`, and
/// writes it with its key as `devices/<thing>.pem` and `.key`. Refuses to
/// overwrite either. Returns the certificate id a group's `CertificateArn`
/// ends in.
pub fn issue_device(paths: &CertPaths, thing: &str) -> Result<String, CertError> {
    let valid = (1..=128).contains(&thing.len())
        && thing
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b));
    if !valid {
        return Err(CertError::BadName { name: thing.into() });
    }
    for path in [paths.device_cert(thing), paths.device_key(thing)] {
        if path.exists() {
            return Err(CertError::Exists { path });
        }
    }
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).map_err(|e| CertError::Read {
            reason: e.to_string(),
            path,
        })
    };
    let ca_key = KeyPair::from_pem(&read(paths.ca_key())?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(paths.ca_cert())?, ca_key)?;
    let (cert, key) = sign_device(thing, OffsetDateTime::now_utc(), &issuer)?;
    write_device(paths, thing, &cert, &key)?;
    Ok(verdant_group::certificate_id(cert.der()))
}

/// A device's certificate, for client authentication, and its new key.
fn sign_device(
    thing: &str,
    now: OffsetDateTime,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(Certificate, KeyPair), rcgen::Error> {
    let mut params = leaf(thing, now)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert, key))
}

fn write_device(
    paths: &CertPaths,
    thing: &str,
    cert: &Certificate,
    key: &KeyPair,
) -> Result<(), CertError> {
    write(&paths.device_key(thing), &key.serialize_pem(), 0o600)?;
    write(&paths.device_cert(thing), &cert.pem(), 0o644)
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

    #[test]
    fn issues_more_devices_from_the_ca_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths {
            dir: dir.path().join("certs"),
        };
        ensure(&paths, "core", "dev").unwrap();
        let id = issue_device(&paths, "sensor-1").unwrap();
        assert_eq!(id, certificate_id(&paths.device_cert("sensor-1")).unwrap());
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(paths.device_key("sensor-1")), 0o600);

        // Signed by the group CA: its issuer is the CA's subject, and the
        // signature checks against the CA's public key.
        let der = |p: PathBuf| pem::parse(std::fs::read(p).unwrap()).unwrap();
        let (ca, leaf) = (der(paths.ca_cert()), der(paths.device_cert("sensor-1")));
        let (_, ca) = x509_parser::parse_x509_certificate(ca.contents()).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
        assert_eq!(leaf.version(), x509_parser::x509::X509Version::V3);
        assert_eq!(leaf.issuer(), ca.subject());
        assert!(leaf.subject().to_string().contains("CN=sensor-1"));
        leaf.verify_signature(Some(ca.public_key())).unwrap();

        assert!(matches!(
            issue_device(&paths, "sensor-1"),
            Err(CertError::Exists { .. })
        ));
        assert!(matches!(
            issue_device(&paths, "a/b"),
            Err(CertError::BadName { .. })
        ));
    }
}
