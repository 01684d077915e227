//! The cloud bridge: the core's MQTT connection to the cloud broker
//! (rumqttc over mutual TLS) and the durable queue in front of it. To the
//! switch it is one more endpoint, linked in-process.
//!
//! Down (to the cloud): the switch's batches go into the [`CloudQueue`]
//! and are acknowledged once there (on disk by default). A connected
//! bridge sends the queue in order as QoS 1 publishes, up to `window` in
//! flight, and deletes each message when the cloud acknowledges it. A new
//! connection starts again from the oldest message still queued, so a
//! message is sent at least once and in order.
//!
//! Up (from the cloud): the bridge subscribes to every subject the table
//! routes from `cloud`, to synced shadows' answers and to the core's own
//! jobs (`jobs.rs`), and hands what arrives to the switch with source
//! `cloud`.
//!
//! Reconnects wait 1 s doubling up to `max_retry_interval_secs`, each
//! delay jittered down by up to half so a fleet does not reconnect in step.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use verdant_common::shutdown::CancellationToken;

use crate::config::{CloudConfig, SubscriptionQuality};
use crate::jobs::CoreJobs;
use crate::queue::{CloudQueue, QueueStats};
use crate::spread::Spread;
use crate::switch::{Down, Endpoint, Event, LinkId, Message};

/// What operators see of the cloud connection.
#[derive(Debug, Clone, Default)]
pub struct CloudStatus {
    /// `disabled` (no endpoint), `connecting`, `connected` or `waiting`
    /// (to reconnect).
    pub state: &'static str,
    pub endpoint: String,
    pub last_error: String,
    pub connected_since: Option<SystemTime>,
    pub queue: QueueStats,
    /// Messages the cloud acknowledged, and messages received from it.
    pub sent: u64,
    pub received: u64,
    pub subscriptions: usize,
}

pub type SharedStatus = Arc<Mutex<CloudStatus>>;

/// Messages the switch may hand the bridge before it takes them.
const CREDIT: u32 = 4096;
/// Acknowledged messages deleted from the queue in one transaction.
const DELETE_BATCH: usize = 512;
/// How long acknowledged messages wait to be deleted when traffic is low.
const DELETE_AFTER: Duration = Duration::from_millis(100);
/// Filters per SUBSCRIBE (AWS IoT takes at most 8).
const FILTERS_PER_SUBSCRIBE: usize = 8;
/// The largest message the cloud may send us (AWS IoT allows 128 KiB).
const MAX_INCOMING: usize = 256 * 1024;

pub struct Bridge {
    pub config: CloudConfig,
    /// `None` when no endpoint is configured.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The HTTP CONNECT proxy on the way, if any.
    pub proxy: Option<rumqttc::Proxy>,
    pub client_id: String,
    pub queue: CloudQueue,
    /// The subjects the table routes from `cloud`, and the jobs ones.
    pub subjects: Vec<String>,
    /// The core's own jobs topics, always subscribed.
    pub jobs: Option<CoreJobs>,
    pub switch: mpsc::Sender<Event>,
    pub status: SharedStatus,
    /// The live connections' clients (the first also publishes); empty
    /// while disconnected.
    pub clients: Vec<AsyncClient>,
    /// Which connection subscribes to what.
    pub spread: Spread,
    /// The subjects outgrew the live connections: make the set anew.
    pub outgrown: bool,
    /// QoS 1 messages from the cloud (persistent subscriptions), by the id
    /// the switch knows them by, acknowledged to the cloud once the
    /// switch says their targets have them.
    pub unacknowledged: HashMap<u64, (usize, rumqttc::Publish)>,
}

/// The subjects `table` routes from the cloud, with the answers of the
/// core's `jobs`, sorted, each once.
pub fn cloud_subjects(
    table: &verdant_group::routes::Table,
    jobs: Option<&CoreJobs>,
) -> Vec<String> {
    let mut subjects: Vec<String> = table
        .routes()
        .iter()
        .filter(|r| r.source == "cloud")
        .map(|r| r.subject.clone())
        .collect();
    // The cloud shadow service's answers for synced things (not the
    // requests: our own would come back).
    for thing in table.synced() {
        subjects.push(format!("$aws/things/{thing}/shadow/+/+"));
        subjects.push(format!("$aws/things/{thing}/shadow/name/+/+/+"));
    }
    subjects.extend(jobs.into_iter().flat_map(CoreJobs::cloud_filters));
    subjects.sort();
    subjects.dedup();
    subjects
}

const LINK: LinkId = LinkId {
    endpoint: Endpoint::Cloud,
    generation: 0,
};

/// The publishing connection's state (the first of the set).
struct Connection {
    /// CONNACK received.
    connected: bool,
    /// Where sending resumes: the oldest message not yet sent on this
    /// connection.
    next: u64,
    /// Sent, waiting for rumqttc to give them a packet id (in order).
    unnumbered: VecDeque<u64>,
    in_flight: HashMap<u16, u64>,
    /// Acknowledged by the cloud, to delete from the queue.
    acked: Vec<u64>,
    /// Sequence of messages from the cloud.
    seq: u64,
}

/// The tasks polling a connection set's event loops, ended with it.
struct Pumps(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Pumps {
    fn drop(&mut self) {
        for p in &self.0 {
            p.abort();
        }
    }
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    Failed(String),
}

impl Bridge {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (tx, mut down) = mpsc::unbounded_channel();
        if self
            .switch
            .send(Event::Linked {
                link: LINK,
                down: tx,
                credit: CREDIT,
            })
            .await
            .is_err()
        {
            return;
        }
        self.set_status(|s| {
            s.endpoint = format!("{}:{}", self.config.endpoint, self.config.port);
        });
        let Some(tls) = self.tls.clone() else {
            self.set_status(|s| s.state = "disabled");
            tracing::info!("no cloud endpoint configured: messages for the cloud are queued");
            self.idle(&mut down, &shutdown, None).await;
            return;
        };
        let max = Duration::from_secs(self.config.max_retry_interval_secs.max(1));
        let mut delay = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let ended = self.connected(&tls, &mut down, &shutdown).await;
            self.clients.clear();
            self.unacknowledged.clear();
            let _ = self.switch.send(Event::CloudState(false)).await;
            match ended {
                Ended::Shutdown => return,
                Ended::Failed(why) => {
                    tracing::warn!(endpoint = %self.config.endpoint, "cloud connection: {why}");
                    self.set_status(|s| {
                        s.state = "waiting";
                        s.last_error = why;
                        s.connected_since = None;
                    });
                }
            }
            if started.elapsed() > Duration::from_mins(1) {
                delay = Duration::from_secs(1);
            }
            let wait = jitter(delay);
            if !self.idle(&mut down, &shutdown, Some(wait)).await {
                return;
            }
            delay = (delay * 2).min(max);
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut CloudStatus)) {
        let mut s = self.status.lock().expect("status lock");
        f(&mut s);
        s.queue = self.queue.stats;
    }

    /// Takes messages into the queue for `wait` (forever if `None`);
    /// false when the router is stopping.
    async fn idle(
        &mut self,
        down: &mut mpsc::UnboundedReceiver<Down>,
        shutdown: &CancellationToken,
        wait: Option<Duration>,
    ) -> bool {
        // "Forever" is a year: long enough, and far from overflowing Instant.
        let sleep = tokio::time::sleep(wait.unwrap_or(Duration::from_hours(365 * 24)));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = &mut sleep => return true,
                d = down.recv() => match d {
                    Some(d) => self.on_down(d).await,
                    None => return false,
                },
            }
        }
    }

    /// Queues what the switch sends and acknowledges it; follows a new
    /// table's subjects from the cloud.
    async fn on_down(&mut self, d: Down) {
        let batch = match d {
            Down::Messages(batch) => batch,
            Down::Table(table) => {
                self.follow(&table);
                return;
            }
            Down::Acks { ids, refused } => {
                for id in ids {
                    if let Some((i, p)) = self.unacknowledged.remove(&id)
                        && let Some(client) = self.clients.get(i)
                    {
                        let _ = client.try_ack(&p);
                    }
                }
                // Not acknowledged: the cloud sends them again on the
                // next connection of the persistent session.
                for id in refused {
                    self.unacknowledged.remove(&id);
                }
                return;
            }
            // Credit: nothing to do in-process.
            _ => return,
        };
        let n = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let mut ids = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        for m in batch {
            ids.push((m.id, m.qos));
            items.push((m.topic, m.payload, m.all_or_error));
        }
        let taken = self.queue.push(items);
        let mut acks = Vec::new();
        let mut refused = Vec::new();
        for ((id, qos), ok) in ids.into_iter().zip(taken) {
            match (qos > 0, ok) {
                (true, true) => acks.push(id),
                (true, false) => refused.push(id),
                (false, _) => {}
            }
        }
        self.set_status(|_| {});
        let _ = self
            .switch
            .send(Event::Acks {
                link: LINK,
                ids: acks,
                refused,
            })
            .await;
        let _ = self.switch.send(Event::Credit(LINK, n)).await;
    }

    fn persistent(&self) -> bool {
        self.config.subscription_quality == SubscriptionQuality::AtLeastOncePersistent
    }

    /// Options of connection `index` of the set.
    fn options(&self, tls: &Arc<rustls::ClientConfig>, index: usize) -> MqttOptions {
        let id = if index == 0 {
            self.client_id.clone()
        } else {
            // Greengrass's naming for its extra connections.
            format!("{}-c{index:02}", self.client_id)
        };
        let mut o = MqttOptions::new(id, self.config.endpoint.clone(), self.config.port);
        o.set_keep_alive(Duration::from_secs(self.config.keep_alive_secs));
        o.set_clean_session(!self.persistent());
        o.set_manual_acks(self.persistent());
        o.set_inflight(self.config.window);
        o.set_max_packet_size(MAX_INCOMING, MAX_INCOMING);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
        if let Some(p) = &self.proxy {
            o.set_proxy(p.clone());
        }
        o
    }

    /// One connection's life.
    async fn connected(
        &mut self,
        tls: &Arc<rustls::ClientConfig>,
        down: &mut mpsc::UnboundedReceiver<Down>,
        shutdown: &CancellationToken,
    ) -> Ended {
        self.set_status(|s| s.state = "connecting");
        let window = usize::from(self.config.window);
        self.spread = Spread::new(&self.subjects, self.config.max_subscriptions_per_connection);
        // One task per connection polls its event loop; their events come
        // here tagged with the connection's index.
        let (events_tx, mut events) = mpsc::channel(256);
        let mut pumps = Pumps(Vec::new());
        let mut clients = Vec::new();
        for i in 0..self.spread.connections().len() {
            let (client, mut eventloop) =
                AsyncClient::new(self.options(tls, i), window + self.subjects.len() + 16);
            clients.push(client);
            let tx = events_tx.clone();
            pumps.0.push(tokio::spawn(async move {
                loop {
                    let ev = eventloop.poll().await.map_err(|e| e.to_string());
                    let failed = ev.is_err();
                    if tx.send((i, ev)).await.is_err() || failed {
                        return;
                    }
                }
            }));
        }
        let publisher = clients[0].clone();
        self.clients = clients;
        let mut c = Connection {
            connected: false,
            next: self.queue.first_id(),
            unnumbered: VecDeque::new(),
            in_flight: HashMap::new(),
            acked: Vec::new(),
            seq: 0,
        };
        let delete_timer = tokio::time::sleep(DELETE_AFTER);
        tokio::pin!(delete_timer);
        loop {
            while c.connected && c.unnumbered.len() + c.in_flight.len() < window {
                let Some(m) = self.queue.next_from(c.next) else {
                    break;
                };
                c.next = m.id + 1;
                if publisher
                    .try_publish(m.topic.clone(), QoS::AtLeastOnce, false, m.payload.clone())
                    .is_err()
                {
                    return Ended::Failed("the MQTT client stopped".into());
                }
                c.unnumbered.push_back(m.id);
            }
            let had_acked = c.acked.len();
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.flush_acked(&mut c.acked);
                    for client in &self.clients {
                        let _ = client.try_disconnect();
                    }
                    return Ended::Shutdown;
                }
                () = &mut delete_timer, if !c.acked.is_empty() => self.flush_acked(&mut c.acked),
                d = down.recv() => match d {
                    Some(d) => self.on_down(d).await,
                    None => return Ended::Shutdown,
                },
                Some((i, ev)) = events.recv() => {
                    if let Err(ended) = self.on_event(&mut c, i, ev).await {
                        self.flush_acked(&mut c.acked);
                        return ended;
                    }
                }
            }
            if self.outgrown {
                self.outgrown = false;
                self.flush_acked(&mut c.acked);
                return Ended::Failed(
                    "the cloud subscriptions need more connections: connecting anew".into(),
                );
            }
            if had_acked == 0 && !c.acked.is_empty() {
                delete_timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + DELETE_AFTER);
            }
            if c.acked.len() >= DELETE_BATCH {
                self.flush_acked(&mut c.acked);
            }
        }
    }

    /// Handles one event of the MQTT connection; `Err` ends it.
    async fn on_event(
        &mut self,
        c: &mut Connection,
        i: usize,
        ev: Result<MqttEvent, String>,
    ) -> Result<(), Ended> {
        let ev = ev.map_err(|e| Ended::Failed(format!("connection {i}: {e}")))?;
        match ev {
            MqttEvent::Incoming(Packet::ConnAck(ack)) => {
                if ack.code != ConnectReturnCode::Success {
                    return Err(Ended::Failed(format!(
                        "refused by the cloud: {:?}",
                        ack.code
                    )));
                }
                self.subscribe(i).map_err(Ended::Failed)?;
                if i > 0 {
                    return Ok(());
                }
                c.connected = true;
                tracing::info!(
                    endpoint = %self.config.endpoint,
                    queued = self.queue.stats.messages,
                    "connected to the cloud"
                );
                self.set_status(|s| {
                    s.state = "connected";
                    s.last_error.clear();
                    s.connected_since = Some(SystemTime::now());
                });
                if self.switch.send(Event::CloudState(true)).await.is_err() {
                    return Err(Ended::Shutdown);
                }
            }
            MqttEvent::Incoming(Packet::SubAck(ack)) => {
                let failed = ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    .count();
                if failed > 0 {
                    tracing::warn!(failed, "the cloud refused subscriptions");
                }
            }
            MqttEvent::Outgoing(Outgoing::Publish(pkid)) if i == 0 => {
                if let Some(id) = c.unnumbered.pop_front() {
                    c.in_flight.insert(pkid, id);
                }
            }
            MqttEvent::Incoming(Packet::PubAck(ack)) if i == 0 => {
                if let Some(id) = c.in_flight.remove(&ack.pkid) {
                    c.acked.push(id);
                }
            }
            MqttEvent::Incoming(Packet::Publish(p)) => {
                c.seq += 1;
                self.status.lock().expect("status lock").received += 1;
                let qos = u8::from(p.qos != QoS::AtMostOnce);
                if qos > 0 {
                    self.unacknowledged.insert(c.seq, (i, p.clone()));
                }
                let m = Message {
                    id: c.seq,
                    source: "cloud".into(),
                    topic: p.topic,
                    payload: p.payload,
                    qos,
                    retain: false,
                    targets: Vec::new(),
                    table_version: 0,
                    all_or_error: false,
                };
                if self.switch.send(Event::Up(LINK, vec![m])).await.is_err() {
                    return Err(Ended::Shutdown);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Subscribes to subjects the new table adds and unsubscribes from
    /// those it drops, on the live connections; when they no longer fit
    /// there, the connection set is made anew.
    fn follow(&mut self, table: &verdant_group::routes::Table) {
        let subjects = cloud_subjects(table, self.jobs.as_ref());
        if subjects == self.subjects {
            return;
        }
        if !self.clients.is_empty() {
            match self.spread.change(&subjects) {
                Some(changes) => {
                    let qos = self.subscription_qos();
                    for (i, s) in changes.subscribe {
                        let _ = self.clients[i].try_subscribe(s, qos);
                    }
                    for (i, s) in changes.unsubscribe {
                        let _ = self.clients[i].try_unsubscribe(s);
                    }
                }
                None => self.outgrown = true,
            }
        }
        tracing::info!(
            subscriptions = subjects.len(),
            "cloud subscriptions follow the new table"
        );
        self.set_status(|s| s.subscriptions = subjects.len());
        self.subjects = subjects;
    }

    fn subscription_qos(&self) -> QoS {
        if self.persistent() {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        }
    }

    /// Subscribes connection `i` to its subjects.
    fn subscribe(&self, i: usize) -> Result<(), String> {
        let qos = self.subscription_qos();
        for chunk in self.spread.connections()[i].chunks(FILTERS_PER_SUBSCRIBE) {
            let filters = chunk
                .iter()
                .map(|s| rumqttc::SubscribeFilter::new(s.clone(), qos));
            self.clients[i]
                .try_subscribe_many(filters)
                .map_err(|e| format!("subscribe: {e}"))?;
        }
        Ok(())
    }

    fn flush_acked(&mut self, acked: &mut Vec<u64>) {
        if acked.is_empty() {
            return;
        }
        acked.sort_unstable();
        self.queue.remove(acked);
        let n = acked.len() as u64;
        acked.clear();
        self.set_status(|s| s.sent += n);
    }
}

/// `delay` less up to half of it, from the clock's low bits (no need for
/// more randomness than that to spread reconnects).
fn jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    delay.mul_f64(1.0 - f64::from(nanos % 500) / 1000.0)
}

/// The proxy of `config`, if any. An `https://` proxy's certificate must
/// chain to `proxy_ca` (by default the cloud's CA file).
pub fn proxy(
    layout: &verdant_common::paths::Layout,
    config: &CloudConfig,
) -> Result<Option<rumqttc::Proxy>, crate::RouterError> {
    if config.proxy.is_empty() {
        return Ok(None);
    }
    let url = crate::config::ProxyUrl::parse(&config.proxy)
        .map_err(|reason| verdant_common::config::Invalid::new("router.cloud.proxy", reason))?;
    let ty = if url.tls {
        let ca = config.proxy_ca.as_ref().unwrap_or(&config.ca);
        let roots = verdant_common::pem::roots(&layout.resolve(ca))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let c = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        rumqttc::ProxyType::Https(TlsConfiguration::Rustls(Arc::new(c)))
    } else {
        rumqttc::ProxyType::Http
    };
    Ok(Some(rumqttc::Proxy {
        ty,
        auth: match url.credentials {
            Some((username, password)) => rumqttc::ProxyAuth::Basic { username, password },
            None => rumqttc::ProxyAuth::None,
        },
        addr: url.host,
        port: url.port,
    }))
}

/// The rustls client configuration for the cloud: its CA, the core's
/// certificate, and ALPN `x-amzn-mqtt-ca` on port 443.
pub fn tls(
    layout: &verdant_common::paths::Layout,
    config: &CloudConfig,
) -> Result<Arc<rustls::ClientConfig>, crate::RouterError> {
    use verdant_common::pem;
    let roots = pem::roots(&layout.resolve(&config.ca))?;
    let certs = pem::certificates(&layout.resolve(&config.certificate))?;
    let key = pem::private_key(&layout.resolve(&config.private_key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    if config.alpn() {
        c.alpn_protocols = vec![b"x-amzn-mqtt-ca".to_vec()];
    }
    Ok(Arc::new(c))
}
