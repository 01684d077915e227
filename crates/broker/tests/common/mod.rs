//! A broker run in-process on a temp root with certificates made per test,
//! and MQTT clients (rumqttc) to talk to it.

#![allow(dead_code)]

pub mod raw;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;
use tokio::sync::mpsc;
use verdant_common::config::ConfigSource;
use verdant_common::daemon::Context;
use verdant_common::paths::Layout;
use verdant_common::shutdown::CancellationToken;
use verdant_proto::broker::v1 as pb;
use verdant_proto::broker::v1::broker_client::BrokerClient;

pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = p.self_signed(&key).unwrap();
    Ca {
        issuer: Issuer::new(p, key),
        pem: cert.pem(),
    }
}

/// A certificate and key signed by `ca`; `days` of validity from now
/// (negative: already expired).
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub id: String,
}

pub fn leaf(ca: &Ca, cn: &str, days: i64) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    p.distinguished_name.push(DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    if days < 0 {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now + time::Duration::days(days);
    } else {
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(days);
    }
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let id = verdant_group::certificate_id(cert.der().as_ref());
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        id,
    }
}

pub struct Broker {
    pub dir: TempDir,
    pub ca: Ca,
    pub tls_port: u16,
    pub tcp_port: Option<u16>,
    pub shutdown: CancellationToken,
    pub socket: PathBuf,
    /// Devices of the group, by thing name.
    pub devices: Vec<(String, Leaf)>,
}

/// Starts a broker whose group has `devices`; `extra` is appended to `[broker]`.
pub async fn start(devices: &[&str], extra: &str) -> Broker {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let certs = root.join("config/certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = ca("test group CA");
    let server = leaf(&ca, "core", 30);
    std::fs::write(certs.join("group-ca.pem"), &ca.pem).unwrap();
    std::fs::write(certs.join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(certs.join("server.key"), &server.key_pem).unwrap();
    let devices: Vec<(String, Leaf)> = devices
        .iter()
        .map(|d| (d.to_string(), leaf(&ca, d, 30)))
        .collect();
    let thing = |name: &str, id: &str| {
        serde_json::json!({
            "Id": name,
            "ThingArn": format!("arn:aws:iot:local-1:000000000000:thing/{name}"),
            "CertificateArn": format!("arn:aws:iot:local-1:000000000000:cert/{id}"),
        })
    };
    let group = serde_json::json!({
        "Id": "test",
        "CoreDefinitionVersion": {"Cores": [thing("core", &server.id)]},
        "DeviceDefinitionVersion": {"Devices": devices.iter().map(|(n, l)| thing(n, &l.id)).collect::<Vec<_>>()},
    });
    let deployment = root.join("deployments/current");
    std::fs::create_dir_all(&deployment).unwrap();
    std::fs::write(deployment.join("group.json"), group.to_string()).unwrap();

    let text = format!(
        "[broker]\nmode = \"local\"\n{extra}\n[broker.tls]\nbind = \"127.0.0.1:0\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n"
    );
    let layout = Layout::new(&root, None).unwrap();
    let socket = layout.socket("broker");
    let listener = verdant_common::uds::bind(&socket).unwrap();
    let shutdown = CancellationToken::new();
    let ctx = Context {
        layout,
        config: ConfigSource::from_str("verdant.toml", &text).unwrap(),
    };
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = verdant_broker::run(ctx, listener, stop).await {
            panic!("broker failed: {e}");
        }
    });
    let mut api = loop {
        if let Ok(ch) = verdant_common::uds::connect(&socket).await {
            break BrokerClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let listeners = loop {
        if let Ok(r) = api.list_listeners(pb::ListListenersRequest {}).await {
            break r.into_inner().listeners;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let port = |name: &str| {
        listeners.iter().find(|l| l.name == name).map(|l| {
            l.address
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap()
        })
    };
    Broker {
        tls_port: port("tls").unwrap(),
        tcp_port: port("tcp"),
        dir,
        ca,
        shutdown,
        socket,
        devices,
    }
}

impl Broker {
    pub fn device(&self, name: &str) -> &Leaf {
        &self.devices.iter().find(|(n, _)| n == name).unwrap().1
    }

    pub async fn api(&self) -> BrokerClient<tonic::transport::Channel> {
        BrokerClient::new(verdant_common::uds::connect(&self.socket).await.unwrap())
    }

    /// Options for a TLS client presenting `cert`, trusting the group CA.
    pub fn tls_options(&self, client_id: &str, cert: &Leaf) -> MqttOptions {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.pem.as_bytes()).unwrap())
            .unwrap();
        let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        let mut o = MqttOptions::new(client_id, "localhost", self.tls_port);
        o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            Arc::new(config),
        )));
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub fn tcp_options(&self, client_id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", self.tcp_port.unwrap());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }
}

/// A connected client and what it receives.
pub struct Client {
    pub mqtt: AsyncClient,
    pub received: mpsc::UnboundedReceiver<Publish>,
    pub session_present: bool,
}

/// Connects; `Err` is how the broker refused (or the transport failed).
pub async fn connect(options: MqttOptions) -> Result<Client, ConnectionError> {
    let (client, mut events) = AsyncClient::new(options, 100);
    let session_present = loop {
        if let Event::Incoming(Packet::ConnAck(ack)) = events.poll().await? {
            break ack.session_present;
        }
    };
    let (tx, received) = mpsc::unbounded_channel();
    tokio::spawn(pump(events, tx));
    Ok(Client {
        mqtt: client,
        received,
        session_present,
    })
}

async fn pump(mut events: EventLoop, tx: mpsc::UnboundedSender<Publish>) {
    while let Ok(event) = events.poll().await {
        if let Event::Incoming(Packet::Publish(p)) = event {
            let _ = tx.send(p);
        }
    }
}

impl Client {
    pub async fn subscribe(&self, filter: &str, qos: QoS) {
        self.mqtt.subscribe(filter, qos).await.unwrap();
        // Let the SUBACK land before anyone publishes.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pub async fn next(&mut self) -> Publish {
        tokio::time::timeout(Duration::from_secs(10), self.received.recv())
            .await
            .expect("a message within 10 s")
            .expect("client still running")
    }

    pub async fn nothing_for(&mut self, d: Duration) {
        if let Ok(Some(p)) = tokio::time::timeout(d, self.received.recv()).await {
            panic!("unexpected message {p:?}");
        }
    }
}

/// Waits until the broker no longer lists `client_id` as connected
/// (within `limit`).
pub async fn gone(
    api: &mut BrokerClient<tonic::transport::Channel>,
    client_id: &str,
    limit: Duration,
) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let clients = api
            .list_clients(pb::ListClientsRequest {})
            .await
            .unwrap()
            .into_inner()
            .clients;
        if !clients
            .iter()
            .any(|c| c.client_id == client_id && c.connected)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still connected: {clients:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
