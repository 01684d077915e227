//! A real Mosquitto standing in for AWS IoT Core: mutual TLS with client
//! certificates required (the core's certificate, checked against the
//! group CA that signed it) on one port, and a plain loopback port for the
//! test's own observer clients. Its server certificate comes from a CA of
//! its own, which the core is told to trust.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

pub struct Cloud {
    dir: PathBuf,
    pub tls_port: u16,
    pub plain_port: u16,
    child: Option<Child>,
    /// Keep the two ports taken from prepare to drop.
    _held: [Held; 2],
}

/// A loopback port kept for a server the test starts later: a socket
/// bound with `SO_REUSEADDR` but not listening. No `bind` to port 0 and no
/// outgoing connection can be given the port while it is held, yet a
/// server that sets `SO_REUSEADDR` too (Mosquitto, tinyproxy) can bind and
/// listen on it. A port only picked, then released, was taken by another
/// socket of the tests running alongside before Mosquitto bound it.
pub struct Held {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl Held {
    pub fn new() -> Held {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .expect("a free loopback port");
        let port = socket.local_addr().expect("its address").port();
        Held {
            _socket: socket,
            port,
        }
    }
}

impl Default for Held {
    fn default() -> Held {
        Held::new()
    }
}

/// A listener on a free loopback port, and the port.
pub async fn bound_port() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

impl Cloud {
    /// Writes the cloud's CA and server certificate under `dir`, and picks
    /// ports; call [`Cloud::start`] once the group CA exists.
    pub fn prepare(dir: &Path) -> Cloud {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        std::fs::write(dir.join("cloud-ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        let held = [Held::new(), Held::new()];
        Cloud {
            dir: dir.to_path_buf(),
            tls_port: held[0].port,
            plain_port: held[1].port,
            child: None,
            _held: held,
        }
    }

    /// The CA the core must trust for the cloud's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("cloud-ca.pem")
    }

    /// `[router.cloud]` for a core to connect here (reconnecting every
    /// second at most, so tests do not wait on backoff).
    pub fn dropin(&self) -> String {
        self.dropin_via(self.tls_port, "")
    }

    /// [`Cloud::dropin`] reaching the cloud on `port` (a front or the
    /// cloud itself), with `extra` lines for `[router.cloud]`.
    pub fn dropin_via(&self, port: u16, extra: &str) -> String {
        format!(
            "[router.cloud]\nendpoint = \"localhost\"\nport = {port}\nca = \"{}\"\nmax_retry_interval_secs = 1\n{extra}",
            self.ca().display()
        )
    }

    /// Starts Mosquitto, requiring client certificates signed by `client_ca`,
    /// and waits until both ports accept connections. Sessions persist
    /// across [`Cloud::stop`] and a new start.
    pub fn start(&mut self, client_ca: &Path) {
        let conf = self.dir.join("mosquitto.conf");
        let d = self.dir.display();
        // Started as root, Mosquitto would switch to its own user, which
        // cannot write its database into our temp dir.
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_string(), |u| u.name);
        std::fs::write(
            &conf,
            format!(
                "user {user}\nlog_dest stderr\npersistence true\npersistence_location {d}/\nallow_anonymous true\n\
                 max_queued_messages 0\n\
                 listener {} 127.0.0.1\ncafile {}\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
                 require_certificate true\nuse_identity_as_username true\n\
                 listener {} 127.0.0.1\n",
                self.tls_port,
                client_ca.display(),
                self.plain_port
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (scripts/test-deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [self.tls_port, self.plain_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                assert!(
                    exited.is_none() && Instant::now() < deadline,
                    "mosquitto did not start on ports {} and {} ({exited:?}); its log:\n{}",
                    self.tls_port,
                    self.plain_port,
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops Mosquitto (SIGTERM: it saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TLS front standing in for AWS IoT's port 443: it completes the
/// handshake only with clients offering ALPN `x-amzn-mqtt-ca` and a
/// certificate from `client_ca`, then relays to the cloud's plain port.
/// Serves on `listener`, bound before the core that dials it starts (a
/// port only picked then could be taken in between).
pub fn alpn_front(cloud: &Cloud, listener: tokio::net::TcpListener, client_ca: &Path) {
    use std::sync::Arc;
    use verdant_common::pem;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = pem::roots(client_ca).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pem::certificates(&cloud.dir.join("server.pem")).unwrap(),
            pem::private_key(&cloud.dir.join("server.key")).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"x-amzn-mqtt-ca".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let upstream = cloud.plain_port;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                // rustls accepts a client that offers no ALPN at all: refuse it here.
                if tls.get_ref().1.alpn_protocol() != Some(b"x-amzn-mqtt-ca") {
                    return;
                }
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

/// Debian's tinyproxy on a free loopback port, allowing CONNECT to any
/// port and requiring `user`/`password` (basic auth).
pub struct Proxy {
    pub port: u16,
    dir: PathBuf,
    child: Child,
    _held: Held,
}

impl Proxy {
    pub fn start(dir: &Path, user: &str, password: &str) -> Proxy {
        std::fs::create_dir_all(dir).unwrap();
        let held = Held::new();
        let port = held.port;
        let conf = dir.join("tinyproxy.conf");
        let user_line = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| format!("User {}\n", u.name))
            .unwrap_or_default();
        std::fs::write(
            &conf,
            format!(
                "{user_line}Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n\
                 LogLevel Info\nLogFile \"{}\"\nBasicAuth {user} {password}\n",
                dir.join("tinyproxy.log").display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (scripts/test-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy {
            port,
            dir: dir.to_path_buf(),
            child,
            _held: held,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
