//! Development certificates, written on a core's first start so a whole
//! core runs without any outside PKI: a group CA, the core's own
//! certificate (its identity as a thing of the group), the server
//! certificate its listeners present (SANs: `localhost`, `127.0.0.1`,
//! `::1`, the host name; valid [`SERVER_DAYS`] days, then rotated by
//! `verdant-discovery` with the core's addresses added) and one sample
//! device; more devices later with [`issue_device`] (`verdantctl device
//! add`). Keys are 0600, certificates 0644. Production cores bring their
//! own certificates under the same names.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    Certificate, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
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
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
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
    #[error("{0}")]
    Pki(#[from] verdant_common::pki::PkiError),
    #[error("not a certificate signing request: {0}")]
    Csr(String),
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
    let (ca, ca_key, ca_pem) = verdant_common::pki::new_ca("Verdant development group CA", 3650)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut core_cert = leaf(core, now)?;
    core_cert.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let core_key = KeyPair::generate()?;
    let core_cert = core_cert.signed_by(&core_key, &issuer)?;

    let (client_cert, client_key) = sign_device(device, now, &issuer)?;

    write(&paths.ca_key(), &issuer.key().serialize_pem(), 0o600)?;
    write(&paths.core_cert(), &core_cert.pem(), 0o644)?;
    write(&paths.core_key(), &core_key.serialize_pem(), 0o600)?;
    write_device(paths, device, &client_cert, &client_key)?;
    // The CA certificate last: its presence means the set is complete.
    write(&paths.ca_cert(), &ca_pem, 0o644)?;
    ensure_server(paths, core)?;
    Ok(true)
}

/// How long the server certificate issued at start is valid; the
/// discovery daemon rotates it with its own `[discovery]` validity.
pub const SERVER_DAYS: u32 = 7;

/// Puts a server certificate in place when there is none usable (missing,
/// expired, or its key not its own): issued with the core's local names
/// when the group CA's key is here; on a core whose certificates come from
/// elsewhere (no CA key), the core's own certificate, which served devices
/// before `server.pem` existed. Returns whether it wrote one.
pub fn ensure_server(paths: &CertPaths, core: &str) -> Result<bool, CertError> {
    use verdant_common::pki;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let usable = match (
        pki::read(&paths.server_cert()),
        pki::read(&paths.server_key()),
    ) {
        (Ok(cert), Ok(key)) => {
            pki::pair_matches(&cert, &key)
                && pki::inspect_pem(&cert)
                    .ok()
                    .and_then(|c| c.first().map(|c| c.not_after > now))
                    .unwrap_or(false)
        }
        _ => false,
    };
    if usable {
        return Ok(false);
    }
    if !paths.ca_key().exists() {
        if paths.server_cert().exists() || !paths.core_cert().exists() {
            return Ok(false);
        }
        pki::replace_pair(
            &paths.server_cert(),
            &pki::read(&paths.core_cert())?,
            &paths.server_key(),
            &pki::read(&paths.core_key())?,
        )?;
        return Ok(true);
    }
    let (cert, key) = pki::issue_server(
        &pki::read(&paths.ca_cert())?,
        &pki::read(&paths.ca_key())?,
        core,
        &pki::local_names(),
        SERVER_DAYS,
    )?;
    pki::replace_pair(&paths.server_cert(), &cert, &paths.server_key(), &key)?;
    Ok(true)
}

/// Issues a certificate for the device `thing` (X.509 v3, ECDSA P-256,
/// client authentication, 825 days), signed by the group CA in `paths`, and
/// writes it with its key as `devices/<thing>.pem` and `.key`. Refuses to
/// overwrite either. Returns the certificate id a group's `CertificateArn`
/// ends in.
pub fn issue_device(paths: &CertPaths, thing: &str) -> Result<String, CertError> {
    check_name(thing)?;
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
    let issuer = verdant_common::pki::issuer(&read(paths.ca_cert())?, &read(paths.ca_key())?)?;
    let (cert, key) = sign_device(thing, OffsetDateTime::now_utc(), &issuer)?;
    write_device(paths, thing, &cert, &key)?;
    Ok(verdant_group::certificate_id(cert.der()))
}

/// Signs the certificate signing request in `csr_pem` for the device
/// `thing` (its key never leaves the device): client authentication, 825
/// days, the thing name as its subject, signed by the group CA in
/// `paths`; written as `devices/<thing>.pem`, refusing to overwrite one.
/// Returns the certificate id.
pub fn sign_device_csr(paths: &CertPaths, thing: &str, csr_pem: &str) -> Result<String, CertError> {
    check_name(thing)?;
    let path = paths.device_cert(thing);
    if path.exists() {
        return Err(CertError::Exists { path });
    }
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CertError::Csr(e.to_string()))?;
    let template = leaf(thing, OffsetDateTime::now_utc())?;
    csr.params.distinguished_name = template.distinguished_name;
    csr.params.key_usages = template.key_usages;
    csr.params.not_before = template.not_before;
    csr.params.not_after = template.not_after;
    csr.params.use_authority_key_identifier_extension = true;
    csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    csr.params.is_ca = IsCa::ExplicitNoCa;
    csr.params.subject_alt_names.clear();
    let issuer = verdant_common::pki::issuer(
        &verdant_common::pki::read(&paths.ca_cert())?,
        &verdant_common::pki::read(&paths.ca_key())?,
    )?;
    let cert = csr.signed_by(&issuer)?;
    write(&path, &cert.pem(), 0o644)?;
    Ok(verdant_group::certificate_id(cert.der()))
}

fn check_name(thing: &str) -> Result<(), CertError> {
    let valid = (1..=128).contains(&thing.len())
        && thing
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(CertError::BadName { name: thing.into() })
    }
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

fn leaf(cn: &str, now: OffsetDateTime) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = verdant_common::pki::name(cn);
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
        assert_eq!(mode(paths.server_key()), 0o600);
        let id = certificate_id(&paths.device_cert("dev")).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, certificate_id(&paths.core_cert()).unwrap());
    }

    #[test]
    fn a_device_csr_is_signed_for_its_thing_and_its_key_stays_away() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths {
            dir: dir.path().join("certs"),
        };
        ensure(&paths, "core", "dev").unwrap();
        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["ignored.example".to_string()]).unwrap();
        req.distinguished_name = verdant_common::pki::name("whatever the device says");
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let id = sign_device_csr(&paths, "sensor-7", &csr).unwrap();
        assert_eq!(id, certificate_id(&paths.device_cert("sensor-7")).unwrap());
        assert!(
            !paths.device_key("sensor-7").exists(),
            "the key stays on the device"
        );
        let pem = std::fs::read_to_string(paths.device_cert("sensor-7")).unwrap();
        let info = &verdant_common::pki::inspect_pem(&pem).unwrap()[0];
        assert!(info.subject.contains("CN=sensor-7"), "{}", info.subject);
        assert!(info.names.is_empty(), "{:?}", info.names);
        assert!(matches!(
            sign_device_csr(&paths, "sensor-7", &csr),
            Err(CertError::Exists { .. })
        ));
        assert!(matches!(
            sign_device_csr(&paths, "other", "not a csr"),
            Err(CertError::Csr(_))
        ));
    }

    #[test]
    fn a_missing_or_expired_server_certificate_is_issued_again() {
        use verdant_common::pki;
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths {
            dir: dir.path().join("certs"),
        };
        ensure(&paths, "core", "dev").unwrap();
        let first = pki::read(&paths.server_cert()).unwrap();
        let info = &pki::inspect_pem(&first).unwrap()[0];
        assert!(info.names.contains(&"localhost".to_string()));
        assert!(info.names.contains(&"127.0.0.1".to_string()));
        assert!(!ensure_server(&paths, "core").unwrap(), "still valid");
        std::fs::remove_file(paths.server_cert()).unwrap();
        assert!(ensure_server(&paths, "core").unwrap());
        assert_ne!(pki::read(&paths.server_cert()).unwrap(), first);
        // A key that is not the certificate's: issued again.
        std::fs::copy(paths.core_key(), paths.server_key()).unwrap();
        assert!(ensure_server(&paths, "core").unwrap());
        // No CA key and no server certificate: the core's own serves.
        std::fs::remove_file(paths.ca_key()).unwrap();
        std::fs::remove_file(paths.server_cert()).unwrap();
        assert!(ensure_server(&paths, "core").unwrap());
        assert_eq!(
            pki::read(&paths.server_cert()).unwrap(),
            pki::read(&paths.core_cert()).unwrap()
        );
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
