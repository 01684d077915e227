//! Who a device is: TLS with the group CA, and the group's devices.
//!
//! The TLS layer asks every client for a certificate and checks its
//! signatures, but accepts any chain, so that a refused device gets an
//! MQTT answer (CONNACK "not authorized") and the log a line naming its
//! certificate subject and the reason, rather than a bare handshake
//! failure. The chain is then checked against the group CA here, and the
//! certificate mapped to a device:
//!
//! - a certificate belongs to the device whose `CertificateArn` ends in the
//!   SHA-256 of the certificate's DER (AWS IoT's certificate id);
//! - the MQTT client id must equal that device's thing name (Greengrass's
//!   rule; `broker.require_client_id_match = false` relaxes it);
//! - the username and password are ignored (the AWS IoT Device SDK for
//!   Python sends `?SDK=Python&Version=...`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, ServerConfig, SignatureScheme};
use verdant_common::reload::Reloaded;
use verdant_group::Group;

/// The result of checking a TLS client's certificate, kept for its CONNECT.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The certificate's subject, for log lines.
    pub subject: String,
    /// SHA-256 of the DER, hex: the AWS IoT certificate id.
    pub certificate_id: String,
    /// Why the chain is not acceptable, if it is not.
    pub chain_error: Option<String>,
}

/// How a connection came in.
#[derive(Debug, Clone)]
pub enum Peer {
    Tls(Presented),
    /// The plain lab listener: nobody is authenticated.
    Plain,
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// An admitted client's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub thing_name: String,
    pub thing_arn: Arc<str>,
}

/// Who may stay connected: the group's things, by the certificates the
/// group names for them (revoked ones left out).
#[derive(Debug, Clone, Default)]
pub struct Members {
    pub things: std::collections::HashSet<String>,
    pub certificates: std::collections::HashSet<String>,
}

/// The devices (and cores) of the deployed group, by certificate id,
/// without those whose certificate is revoked on this core.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    by_certificate: HashMap<String, Device>,
    by_name: HashMap<String, Device>,
    revoked: std::collections::HashSet<String>,
}

impl Devices {
    pub fn from_group(group: &Group, revoked: &std::collections::HashSet<String>) -> Self {
        let by_certificate = group
            .core_definition_version
            .cores
            .iter()
            .chain(&group.device_definition_version.devices)
            .filter(|t| !revoked.contains(&t.certificate_id().to_ascii_lowercase()))
            .map(|t| {
                (
                    t.certificate_id().to_ascii_lowercase(),
                    Device {
                        thing_name: t.thing_name().to_string(),
                        thing_arn: t.thing_arn.as_str().into(),
                    },
                )
            })
            .collect::<HashMap<_, _>>();
        let by_name = by_certificate
            .values()
            .map(|d| (d.thing_name.clone(), d.clone()))
            .collect();
        Devices {
            by_certificate,
            by_name,
            revoked: revoked.clone(),
        }
    }

    /// Leaves out the devices whose certificate is in `revoked` too.
    pub fn revoke(&mut self, revoked: &std::collections::HashSet<String>) {
        self.by_certificate.retain(|id, _| !revoked.contains(id));
        let left: std::collections::HashSet<&str> = self
            .by_certificate
            .values()
            .map(|d| d.thing_name.as_str())
            .collect();
        self.by_name.retain(|name, _| left.contains(name.as_str()));
        self.revoked.extend(revoked.iter().cloned());
    }

    /// The thing names and certificates allowed in.
    pub fn members(&self) -> Members {
        Members {
            things: self.by_name.keys().cloned().collect(),
            certificates: self.by_certificate.keys().cloned().collect(),
        }
    }

    /// Decides a CONNECT: `Ok(Some(device))` for a device, `Ok(None)` on
    /// the plain listener in local mode. In routed mode a client of the
    /// plain listener is the device its client id names (labs and tests:
    /// nothing authenticates it), and must name one.
    pub fn admit(
        &self,
        peer: &Peer,
        client_id: &str,
        require_client_id_match: bool,
        routed: bool,
    ) -> Result<Option<Device>, Refusal> {
        let presented = match peer {
            Peer::Plain if routed => {
                return match self.by_name.get(client_id) {
                    Some(d) => Ok(Some(d.clone())),
                    None => Err(Refusal(format!(
                        "routed mode: on the plain listener the client id must be the thing \
                         name of a device of the group, and `{}` is none",
                        verdant_common::telemetry::bounded(client_id)
                    ))),
                };
            }
            Peer::Plain => return Ok(None),
            Peer::Tls(p) => p,
        };
        if let Some(e) = &presented.chain_error {
            return Err(Refusal(format!("certificate not accepted: {e}")));
        }
        if self.revoked.contains(&presented.certificate_id) {
            return Err(Refusal(format!(
                "certificate {} is revoked on this core",
                presented.certificate_id
            )));
        }
        let Some(thing) = self.by_certificate.get(&presented.certificate_id) else {
            return Err(Refusal(format!(
                "certificate {} belongs to no device of the deployed group",
                presented.certificate_id
            )));
        };
        if require_client_id_match && client_id != thing.thing_name {
            return Err(Refusal(format!(
                "client id `{}` is not the device's thing name `{}`",
                verdant_common::telemetry::bounded(client_id),
                thing.thing_name
            )));
        }
        Ok(Some(thing.clone()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{0}")]
    File(#[from] verdant_common::pem::PemError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    Verifier(String),
}

/// The broker's TLS: its server configuration and the verifier that checks
/// client chains after the handshake, built again when the certificate,
/// its key or the group CA file change (a rotated server certificate, a
/// CA added or retired): new connections get the new ones, connections
/// already up are not touched.
#[derive(Clone)]
pub struct Tls(Arc<Reloaded<Loaded>>);

/// One build of the broker's TLS.
pub struct Loaded {
    pub server: Arc<ServerConfig>,
    pub chains: Arc<dyn ClientCertVerifier>,
}

impl Tls {
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<Tls, TlsSetupError> {
        let files = vec![
            cert.to_path_buf(),
            key.to_path_buf(),
            client_ca.to_path_buf(),
        ];
        let (cert, key, client_ca) = (
            cert.to_path_buf(),
            key.to_path_buf(),
            client_ca.to_path_buf(),
        );
        Reloaded::new("the broker's TLS", files, move || {
            Loaded::build(&cert, &key, &client_ca)
        })
        .map(Tls)
    }

    /// Watches the files until `shutdown`.
    pub fn watch(&self, shutdown: verdant_common::shutdown::CancellationToken) {
        self.0.watch(shutdown);
    }

    /// The acceptor for a new connection: the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.current().server.clone())
    }

    /// What a TLS client presented, checked against the group CA now.
    pub fn presented(&self, chain: &[CertificateDer<'_>]) -> Option<Presented> {
        let (end, intermediates) = chain.split_first()?;
        let certificate_id = verdant_group::certificate_id(end.as_ref());
        let subject = x509_parser::parse_x509_certificate(end.as_ref()).map_or_else(
            |_| "(unparsable certificate)".into(),
            |(_, c)| c.subject().to_string(),
        );
        let chain_error = self
            .0
            .current()
            .chains
            .verify_client_cert(end, intermediates, UnixTime::now())
            .err()
            .map(|e| e.to_string());
        Some(Presented {
            subject,
            certificate_id,
            chain_error,
        })
    }
}

impl Loaded {
    fn build(cert: &Path, key: &Path, client_ca: &Path) -> Result<Loaded, TlsSetupError> {
        let certs = verdant_common::pem::certificates(cert)?;
        let key = verdant_common::pem::private_key(key)?;
        let roots = verdant_common::pem::roots(client_ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chains = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(Arc::new(AnyChain(chains.clone())))
            .with_single_cert(certs, key)?;
        Ok(Loaded {
            server: Arc::new(server),
            chains,
        })
    }
}

/// A failed TLS handshake as the log tells it: with how to issue a
/// version 3 certificate when the client's is X.509 version 1 (what
/// `openssl x509 -req` makes without extensions), which the handshake's
/// signature check cannot read.
pub fn handshake_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("UnsupportedCertVersion") {
        format!(
            "{text}: the client certificate is X.509 version 1; issue a version 3 certificate, \
             e.g. `openssl x509 -req` with `-extfile` giving `basicConstraints=CA:FALSE` and \
             `extendedKeyUsage=clientAuth` (docs/broker.md, \"Device certificates\")"
        )
    } else {
        text
    }
}

/// Requires a client certificate and checks the handshake signatures with
/// it, but leaves judging the chain to [`Tls::presented`] (see the module
/// doc for why).
#[derive(Debug)]
struct AnyChain(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AnyChain {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}
