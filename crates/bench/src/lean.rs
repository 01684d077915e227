//! The lean load client (the default, `--client lean`): MQTT 3.1.1 with
//! rumqttc's packet codec straight on the socket, one task per direction,
//! many packets per write and per read, and each subscriber tallying what
//! it receives itself. rumqttc's event loop (`--client rumqttc`) costs
//! about as much CPU per message as the broker under test, and on a 2-core
//! machine the load tool's CPU is taken from the broker's: the lighter the
//! tool, the more the figures say about the brokers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, PubAck, Publish, Subscribe};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Semaphore;

use crate::mqtt::{HEADER, Load, Outcome, Target, payload};

/// A plain or TLS connection.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Pin<Box<dyn Io>>;

/// QoS 1 publishes a publisher has awaiting their PUBACK (as rumqttc's
/// `set_inflight(100)` in the other client).
const WINDOW: u32 = 100;
const MAX_PACKET: usize = 1 << 20;
/// Bytes of publishes gathered before one write.
const BATCH: usize = 64 * 1024;
/// A subscriber stops after this long without a message.
const IDLE: Duration = Duration::from_secs(5);

struct Conn {
    read: ReadHalf<Stream>,
    write: WriteHalf<Stream>,
    buf: BytesMut,
}

impl Conn {
    /// Connects, sends CONNECT (clean session) and waits for CONNACK.
    async fn open(t: &Target, id: &str) -> Result<Conn, String> {
        let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let stream: Stream = match &t.tls {
            None => Box::pin(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| e.to_string())?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Box::pin(tls)
            }
        };
        let (read, write) = tokio::io::split(stream);
        let mut conn = Conn {
            read,
            write,
            buf: BytesMut::with_capacity(BATCH),
        };
        let mut connect = Connect::new(id);
        connect.keep_alive = 60;
        let mut out = BytesMut::new();
        connect.write(&mut out).map_err(|e| e.to_string())?;
        conn.send(&out).await?;
        match conn.next().await? {
            Packet::ConnAck(ack) if ack.code == rumqttc::ConnectReturnCode::Success => Ok(conn),
            other => Err(format!("refused: {other:?}")),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.write.write_all(bytes).await.map_err(|e| e.to_string())
    }

    /// Reads more bytes; `Ok(false)` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, String> {
        self.buf.reserve(BATCH);
        let n = self
            .read
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok(n > 0)
    }

    /// The next whole packet already read, if any.
    fn decoded(&mut self) -> Result<Option<Packet>, String> {
        match Packet::read(&mut self.buf, MAX_PACKET) {
            Ok(p) => Ok(Some(p)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The next packet, reading as needed.
    async fn next(&mut self) -> Result<Packet, String> {
        loop {
            if let Some(p) = self.decoded()? {
                return Ok(p);
            }
            if !self.fill().await? {
                return Err("connection closed".into());
            }
        }
    }
}

/// What one subscriber saw.
#[derive(Default)]
struct Tally {
    received: u64,
    duplicated: u64,
    latencies: Vec<u64>,
    last: Option<Instant>,
}

/// Subscribes to `filter` and returns the connection, ready to receive.
async fn subscribe(t: &Target, id: &str, filter: &str, qos: QoS) -> Result<Conn, String> {
    let mut conn = Conn::open(t, id).await?;
    let mut subscribe = Subscribe::new(filter, qos);
    subscribe.pkid = 1;
    let mut out = BytesMut::new();
    subscribe.write(&mut out).map_err(|e| e.to_string())?;
    conn.send(&out).await?;
    loop {
        if let Packet::SubAck(_) = conn.next().await? {
            return Ok(conn);
        }
    }
}

/// Receives until `expected` arrived or nothing came for [`IDLE`],
/// acknowledging QoS 1 deliveries once per read.
async fn receive(mut conn: Conn, expected: u64, base: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut seen: HashMap<(u32, u64), u32> = HashMap::new();
    let mut acks = BytesMut::new();
    while tally.received < expected {
        let before = tally.received;
        loop {
            match conn.decoded() {
                Ok(Some(Packet::Publish(p))) => {
                    if p.qos != QoS::AtMostOnce {
                        let _ = PubAck::new(p.pkid).write(&mut acks);
                    }
                    let mut b: Bytes = p.payload;
                    if b.len() >= HEADER {
                        let (publisher, seq, sent) = (b.get_u32(), b.get_u64(), b.get_u64());
                        tally.received += 1;
                        let now = base.elapsed().as_nanos() as u64;
                        tally.latencies.push(now.saturating_sub(sent) / 1000);
                        let n = seen.entry((publisher, seq)).or_default();
                        *n += 1;
                        if *n > 1 {
                            tally.duplicated += 1;
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return tally,
            }
        }
        if !acks.is_empty() {
            if conn.send(&acks).await.is_err() {
                break;
            }
            acks.clear();
        }
        if tally.received > before {
            tally.last = Some(Instant::now());
        }
        if tally.received >= expected {
            break;
        }
        match tokio::time::timeout(IDLE, conn.fill()).await {
            Ok(Ok(true)) => {}
            _ => break,
        }
    }
    let _ = conn.send(&[0xE0, 0]).await; // DISCONNECT
    tally
}

/// Sends `load.messages` of `load.size` on `topic`: as fast as the broker takes them, or,
/// with `rate`, that many per second whether or not it keeps up (open
/// loop: what is due is sent at once). QoS 1 keeps [`WINDOW`] in flight.
async fn publish(
    conn: Conn,
    topic: String,
    index: u32,
    load: Load,
    rate: Option<u32>,
    base: Instant,
) -> Result<(), String> {
    let (qos, size, n) = (load.qos, load.size, load.messages as u64);
    let Conn {
        mut read,
        mut write,
        buf,
    } = conn;
    let window = Arc::new(Semaphore::new(WINDOW as usize));
    let acked = window.clone();
    // PUBACKs give their window slots back, many per read.
    let acks = tokio::spawn(async move {
        let mut conn_buf = buf;
        loop {
            let mut freed = 0;
            loop {
                match Packet::read(&mut conn_buf, MAX_PACKET) {
                    Ok(Packet::PubAck(_)) => freed += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            acked.add_permits(freed);
            conn_buf.reserve(BATCH);
            match read.read_buf(&mut conn_buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let mut message = Publish::from_bytes(topic, qos, Bytes::new());
    let mut out = BytesMut::with_capacity(BATCH);
    let begun = Instant::now();
    let mut seq = 0u64;
    while seq < n {
        let due = match rate {
            None => n,
            Some(r) => {
                let due = ((begun.elapsed().as_secs_f64() * f64::from(r)) as u64 + 1).min(n);
                if due <= seq {
                    let at = begun + Duration::from_secs_f64(seq as f64 / f64::from(r));
                    tokio::time::sleep_until(at.into()).await;
                    continue;
                }
                due
            }
        };
        while seq < due && out.len() < BATCH {
            if qos != QoS::AtMostOnce {
                let permit = if out.is_empty() {
                    window.acquire().await.map_err(|e| e.to_string())?
                } else {
                    match window.try_acquire() {
                        Ok(p) => p,
                        Err(_) => break, // send what is gathered, then wait
                    }
                };
                permit.forget();
                message.pkid = (seq % u64::from(u16::MAX)) as u16 + 1;
            }
            message.payload = payload(index, seq, base, size);
            message.write(&mut out).map_err(|e| e.to_string())?;
            seq += 1;
        }
        write.write_all(&out).await.map_err(|e| e.to_string())?;
        out.clear();
    }
    if qos != QoS::AtMostOnce {
        // Every PUBACK back before leaving (a DISCONNECT does not wait).
        let _ = tokio::time::timeout(IDLE, window.acquire_many(WINDOW)).await;
    }
    let _ = write.write_all(&[0xE0, 0]).await;
    acks.abort();
    Ok(())
}

/// `publishers` publishers, each with `messages`, at `rate` each if given;
/// `subscribers` subscribers to all of it.
pub async fn run(t: &Target, load: Load, rate: Option<u32>, tag: &str) -> Result<Outcome, String> {
    let base = Instant::now();
    let per_subscriber = (load.publishers * load.messages) as u64;
    let mut subs = Vec::new();
    for s in 0..load.subscribers {
        let conn = subscribe(t, &format!("{tag}-s{s}"), &format!("{tag}/#"), load.qos).await?;
        subs.push(tokio::spawn(receive(conn, per_subscriber, base)));
    }
    let mut conns = Vec::new();
    for p in 0..load.publishers {
        conns.push(Conn::open(t, &format!("{tag}-p{p}")).await?);
    }
    let begun = Instant::now();
    let mut pubs = Vec::new();
    for (p, conn) in conns.into_iter().enumerate() {
        let topic = format!("{tag}/{p}");
        pubs.push(tokio::spawn(publish(
            conn, topic, p as u32, load, rate, base,
        )));
    }
    let mut out = Outcome {
        expected: per_subscriber * load.subscribers as u64,
        ..Outcome::default()
    };
    let mut last = begun;
    for s in subs {
        let tally = s.await.map_err(|e| e.to_string())?;
        out.received += tally.received;
        out.duplicated += tally.duplicated;
        out.latencies.extend(tally.latencies);
        last = last.max(tally.last.unwrap_or(begun));
    }
    for p in pubs {
        if let Ok(Err(e)) = p.await {
            eprintln!("{tag}: a publisher stopped: {e}");
        }
    }
    out.lost = out.expected.saturating_sub(out.received - out.duplicated);
    out.rate = out.received as f64 / last.duration_since(begun).as_secs_f64().max(1e-6);
    Ok(out)
}
