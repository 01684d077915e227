//! MQTT load against any broker, to compare Verdant's with Mosquitto in one
//! run: fan-in (N publishers → 1 subscriber), fan-out (1 → M), and latency
//! at a fixed rate. Every payload carries its publisher, sequence number and
//! send time, so lost and duplicated messages are counted, not guessed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// One broker under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Mutual TLS with this client configuration (`--tls`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Load it with rumqttc's event loop instead of the lean client
    /// (`--client rumqttc`; see `lean.rs`).
    pub rumqttc: bool,
    /// The latency scenarios on blocking threads (`--client probe`; see
    /// `probe.rs`); plain TCP only.
    pub probe: bool,
}

impl Target {
    /// Speaks mutual TLS, trusting `ca` and presenting `cert` and `key`
    /// (PEM files), as a device of the group does.
    pub fn use_tls(&mut self, ca: &str, cert: &str, key: &str) -> Result<(), String> {
        self.tls = Some(device_tls(ca, cert, key)?);
        Ok(())
    }
}

/// A device's TLS: trusting `ca`, presenting `cert` and `key` (PEM files).
pub fn device_tls(
    ca: &str,
    cert: &str,
    key: &str,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use std::path::Path;
    use verdant_common::pem;
    let roots = pem::roots(Path::new(ca)).map_err(|e| e.to_string())?;
    let chain = pem::certificates(Path::new(cert)).map_err(|e| e.to_string())?;
    let key = pem::private_key(Path::new(key)).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| e.to_string())?;
    Ok(std::sync::Arc::new(config))
}

impl std::str::FromStr for Target {
    type Err = String;
    /// `name=host:port`
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, addr) = s.split_once('=').ok_or("expected name=host:port")?;
        let (host, port) = addr.rsplit_once(':').ok_or("expected host:port")?;
        Ok(Target {
            name: name.into(),
            host: host.into(),
            port: port.parse().map_err(|e| format!("port: {e}"))?,
            tls: None,
            rumqttc: false,
            probe: false,
        })
    }
}

/// A scenario's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: QoS,
    pub size: usize,
    /// Per publisher.
    pub messages: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Deliveries per second, all subscribers together.
    pub rate: f64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Latencies in microseconds, in the order they arrived (each
    /// subscriber's in turn); `compare` sorts them.
    pub latencies: Vec<u64>,
}

pub(crate) const HEADER: usize = 4 + 8 + 8;

pub(crate) fn payload(publisher: u32, seq: u64, base: Instant, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.put_u32(publisher);
    b.put_u64(seq);
    b.put_u64(base.elapsed().as_nanos() as u64);
    b.resize(size.max(HEADER), 0xab);
    b.freeze()
}

pub(crate) fn options(t: &Target, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, t.host.clone(), t.port);
    o.set_keep_alive(Duration::from_mins(1));
    o.set_inflight(100);
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(config) = &t.tls {
        o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            config.clone(),
        )));
    }
    o
}

/// A client with Nagle off: small QoS 0 packets would otherwise wait for a
/// delayed ACK (40 ms) and the tail would measure the client, not the broker.
fn client(t: &Target, id: &str) -> (AsyncClient, EventLoop) {
    let (client, mut events) = AsyncClient::new(options(t, id), 1000);
    let mut net = events.network_options();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    (client, events)
}

/// Polls until CONNACK; `Err` names the problem.
pub(crate) async fn connected(events: &mut EventLoop) -> Result<(), String> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// What a subscriber saw: (subscriber, publisher, seq, sent nanos).
type Seen = (u32, u32, u64, u64);

/// A subscriber: reports what arrives, tagged with its own index.
async fn subscriber(
    t: &Target,
    index: u32,
    id: String,
    filter: &str,
    qos: QoS,
    tx: mpsc::UnboundedSender<Seen>,
) -> Result<AsyncClient, String> {
    let (client, mut events) = client(t, &id);
    connected(&mut events).await?;
    client
        .subscribe(filter, qos)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let mut b = p.payload;
                if b.len() >= HEADER {
                    let _ = tx.send((index, b.get_u32(), b.get_u64(), b.get_u64()));
                }
            }
        }
    });
    Ok(client)
}

async fn publisher(t: &Target, id: String) -> Result<AsyncClient, String> {
    let (client, mut events) = client(t, &id);
    connected(&mut events).await?;
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    Ok(client)
}

/// Tallies deliveries until `expected` arrived or nothing came for `idle`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    expected: u64,
    base: Instant,
    idle: Duration,
) -> (Outcome, Instant) {
    let mut seen: HashMap<(u32, u32, u64), u32> = HashMap::new();
    let mut out = Outcome {
        expected,
        ..Outcome::default()
    };
    let mut last = Instant::now();
    while out.received < expected {
        match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some((s, p, seq, sent))) => {
                last = Instant::now();
                out.received += 1;
                let now = base.elapsed().as_nanos() as u64;
                out.latencies.push(now.saturating_sub(sent) / 1000);
                *seen.entry((s, p, seq)).or_default() += 1;
            }
            _ => break,
        }
    }
    out.duplicated = seen.values().map(|n| u64::from(n - 1)).sum();
    out.lost = expected.saturating_sub(out.received - out.duplicated);
    (out, last)
}

/// N publishers each send `messages` as fast as the broker takes them;
/// every subscriber subscribes to all of it.
pub async fn throughput(t: &Target, load: Load, tag: &str) -> Result<Outcome, String> {
    if !t.rumqttc {
        return crate::lean::run(t, load, None, tag).await;
    }
    let base = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut subs = Vec::new();
    for s in 0..load.subscribers {
        let id = format!("{tag}-s{s}");
        subs.push(subscriber(t, s as u32, id, &format!("{tag}/#"), load.qos, tx.clone()).await?);
    }
    drop(tx);
    let mut pubs = Vec::new();
    for p in 0..load.publishers {
        pubs.push(publisher(t, format!("{tag}-p{p}")).await?);
    }
    let begun = Instant::now();
    let mut tasks = Vec::new();
    for (p, client) in pubs.iter().enumerate() {
        let client = client.clone();
        let (topic, qos, size, n) = (format!("{tag}/{p}"), load.qos, load.size, load.messages);
        tasks.push(tokio::spawn(async move {
            for seq in 0..n as u64 {
                let body = payload(p as u32, seq, base, size);
                if client
                    .publish_bytes(topic.clone(), qos, false, body)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    let expected = (load.publishers * load.messages * load.subscribers) as u64;
    let (mut out, last) = collect(&mut rx, expected, base, Duration::from_secs(5)).await;
    let elapsed = last.duration_since(begun).as_secs_f64().max(1e-6);
    out.rate = out.received as f64 / elapsed;
    for t in tasks {
        let _ = t.await;
    }
    for c in pubs.iter().chain(&subs) {
        let _ = c.disconnect().await;
    }
    Ok(out)
}

/// One publisher at `rate` messages/s for `seconds`, one subscriber.
pub async fn latency(
    t: &Target,
    qos: QoS,
    size: usize,
    rate: u32,
    seconds: u64,
    tag: &str,
) -> Result<Outcome, String> {
    let mut out = if t.probe && t.tls.is_none() {
        crate::probe::latency(t, qos, size, rate, u64::from(rate) * seconds, tag).await?
    } else {
        paced(t, 1, qos, size, rate, seconds, tag).await?
    };
    out.rate = f64::from(rate);
    Ok(out)
}

/// `publishers` each offering `rate` messages/s for `seconds` whether or
/// not the broker keeps up (open loop: a publisher that falls behind sends
/// what it owes at once), one subscriber; the rate is what arrived per
/// second, the broker's queues draining included.
pub async fn paced(
    t: &Target,
    publishers: usize,
    qos: QoS,
    size: usize,
    rate: u32,
    seconds: u64,
    tag: &str,
) -> Result<Outcome, String> {
    if !t.rumqttc {
        let load = Load {
            publishers,
            subscribers: 1,
            qos,
            size,
            messages: (u64::from(rate) * seconds) as usize,
        };
        return crate::lean::run(t, load, Some(rate), tag).await;
    }
    let base = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sub = subscriber(t, 0, format!("{tag}-s"), &format!("{tag}/#"), qos, tx).await?;
    let mut pubs = Vec::new();
    for p in 0..publishers {
        pubs.push(publisher(t, format!("{tag}-p{p}")).await?);
    }
    let n = u64::from(rate) * seconds;
    let begun = Instant::now();
    let mut tasks = Vec::new();
    for (p, sender) in pubs.iter().enumerate() {
        let (sender, topic) = (sender.clone(), format!("{tag}/{p}"));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for seq in 0..n {
                tick.tick().await;
                let body = payload(p as u32, seq, base, size);
                if sender
                    .publish_bytes(topic.clone(), qos, false, body)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    let expected = n * publishers as u64;
    let (mut out, last) = collect(&mut rx, expected, base, Duration::from_secs(5)).await;
    out.rate = out.received as f64 / last.duration_since(begun).as_secs_f64().max(1e-6);
    for task in tasks {
        let _ = task.await;
    }
    for c in pubs.iter().chain(std::iter::once(&sub)) {
        let _ = c.disconnect().await;
    }
    Ok(out)
}

/// The peak resident memory of a process so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What a connection storm measured.
#[derive(Debug, Clone, Default)]
pub struct Storm {
    /// From the first CONNECT to the last SUBACK.
    pub seconds: f64,
    pub connected: usize,
    /// The broker's RSS before the storm and with every client connected,
    /// subscribed and idle, in KiB (when its pid is known).
    pub rss_before: Option<u64>,
    pub rss_connected: Option<u64>,
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `n` clients connect and subscribe at once; they stay connected (idle)
/// until the broker's memory is read, then leave.
pub async fn storm(t: &Target, n: usize, pid: Option<u32>, tag: &str) -> Result<Storm, String> {
    let rss_before = pid.and_then(rss_kib);
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let stop = tokio_util_stop();
    let begun = Instant::now();
    for i in 0..n {
        let (t, ready_tx, mut stop) = (t.clone(), ready_tx.clone(), stop.subscribe());
        let id = format!("{tag}-c{i}");
        tokio::spawn(async move {
            let (client, mut events) = client(&t, &id);
            let ok = async {
                connected(&mut events).await?;
                client
                    .subscribe(format!("{id}/#"), QoS::AtLeastOnce)
                    .await
                    .map_err(|e| e.to_string())?;
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => return Ok::<(), String>(()),
                        Ok(_) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            .await;
            let _ = ready_tx.send(ok.is_ok());
            if ok.is_ok() {
                tokio::select! {
                    _ = stop.recv() => {}
                    () = async { while events.poll().await.is_ok() {} } => {}
                }
                let _ = client.disconnect().await;
            }
        });
    }
    drop(ready_tx);
    let mut connected = 0;
    let mut answered = 0;
    while answered < n {
        match tokio::time::timeout(Duration::from_mins(1), ready.recv()).await {
            Ok(Some(ok)) => {
                answered += 1;
                connected += usize::from(ok);
            }
            _ => break,
        }
    }
    let seconds = begun.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = pid.and_then(rss_kib);
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Storm {
        seconds,
        connected,
        rss_before,
        rss_connected,
    })
}

/// A broadcast used to tell every storm client to leave.
fn tokio_util_stop() -> tokio::sync::broadcast::Sender<()> {
    tokio::sync::broadcast::channel(1).0
}

/// The `p`th percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
