//! The latency probe: one publisher at a fixed rate and one subscriber on
//! plain threads with blocking sockets (MQTT 3.1.1 through rumqttc's
//! codec). A thread blocked in `read` is woken straight by the socket; an
//! async runtime adds its own wake-ups (the reactor, then the task) and
//! its timer's millisecond steps. What the probe measures is then mostly
//! the broker's path and the kernel's, which is what the latency scenario
//! compares. Plain TCP only: TLS targets use the lean async client.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, PubAck, Publish, Subscribe};

use crate::mqtt::{HEADER, Load, Outcome, Target, payload};

/// QoS 1 publishes the publisher may have unacknowledged.
const WINDOW: u64 = 100;
const MAX_PACKET: usize = 1 << 20;
/// The subscriber stops after this long without a message.
const IDLE: Duration = Duration::from_secs(5);

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    fn open(t: &Target, id: &str) -> Result<Conn, String> {
        let stream =
            TcpStream::connect((t.host.as_str(), t.port)).map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(IDLE))
            .map_err(|e| e.to_string())?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let mut connect = Connect::new(id);
        connect.keep_alive = 60;
        let mut out = BytesMut::new();
        connect.write(&mut out).map_err(|e| e.to_string())?;
        conn.send(&out)?;
        match conn.next()? {
            Packet::ConnAck(ack) if ack.code == rumqttc::ConnectReturnCode::Success => Ok(conn),
            other => Err(format!("refused: {other:?}")),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| e.to_string())
    }

    /// The next packet, reading as needed; an error at the end of the
    /// stream or after [`IDLE`] without a byte.
    fn next(&mut self) -> Result<Packet, String> {
        loop {
            match Packet::read(&mut self.buf, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
            fill(&mut self.stream, &mut self.buf)?;
        }
    }
}

fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) => Err("connection closed".into()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// One publisher sending `messages` of `size` at `rate`/s on `tag/0`, one
/// subscriber on `tag/#`; latencies from the publisher's clock to the
/// subscriber's read, in microseconds.
pub async fn latency(
    t: &Target,
    qos: QoS,
    size: usize,
    rate: u32,
    messages: u64,
    tag: &str,
) -> Result<Outcome, String> {
    let (t, tag) = (t.clone(), tag.to_owned());
    let load = Load {
        publishers: 1,
        subscribers: 1,
        qos,
        size,
        messages: usize::try_from(messages).map_err(|e| e.to_string())?,
    };
    tokio::task::spawn_blocking(move || run(&t, load, rate, &tag))
        .await
        .map_err(|e| e.to_string())?
}

fn run(t: &Target, load: Load, rate: u32, tag: &str) -> Result<Outcome, String> {
    let (qos, size, messages) = (load.qos, load.size, load.messages as u64);
    let base = Instant::now();
    let mut sub = Conn::open(t, &format!("{tag}-s0"))?;
    let mut subscribe = Subscribe::new(format!("{tag}/#"), qos);
    subscribe.pkid = 1;
    let mut out = BytesMut::new();
    subscribe.write(&mut out).map_err(|e| e.to_string())?;
    sub.send(&out)?;
    while !matches!(sub.next()?, Packet::SubAck(_)) {}
    let subscriber = std::thread::spawn(move || receive(sub, messages, base));

    let publisher = Conn::open(t, &format!("{tag}-p0"))?;
    let acked = Arc::new(AtomicU64::new(0));
    let mut acks = publisher.stream.try_clone().map_err(|e| e.to_string())?;
    let acks_seen = acked.clone();
    let mut leftover = publisher.buf;
    let ack_reader = std::thread::spawn(move || {
        while fill(&mut acks, &mut leftover).is_ok() {
            while let Ok(p) = Packet::read(&mut leftover, MAX_PACKET) {
                if let Packet::PubAck(_) = p {
                    acks_seen.fetch_add(1, Ordering::Release);
                }
            }
        }
    });
    let mut stream = publisher.stream;
    let mut message = Publish::new(format!("{tag}/0"), qos, Vec::new());
    let begun = Instant::now();
    let interval = Duration::from_secs(1) / rate;
    for seq in 0..messages {
        let due = begun + interval * u32::try_from(seq).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if qos != QoS::AtMostOnce {
            while seq - acked.load(Ordering::Acquire) >= WINDOW {
                std::thread::sleep(Duration::from_micros(50));
            }
            message.pkid = (seq % u64::from(u16::MAX)) as u16 + 1;
        }
        message.payload = payload(0, seq, base, size);
        out.clear();
        message.write(&mut out).map_err(|e| e.to_string())?;
        stream.write_all(&out).map_err(|e| e.to_string())?;
    }
    let (received, duplicated, latencies, last) = subscriber
        .join()
        .map_err(|_| "the subscriber thread panicked".to_string())?;
    if qos != QoS::AtMostOnce {
        let until = Instant::now() + IDLE;
        while acked.load(Ordering::Acquire) < messages && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = stream.write_all(&[0xE0, 0]); // DISCONNECT
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = ack_reader.join();
    Ok(Outcome {
        rate: received as f64 / last.duration_since(begun).as_secs_f64().max(1e-6),
        expected: messages,
        received,
        lost: messages.saturating_sub(received - duplicated),
        duplicated,
        latencies,
    })
}

/// (received, duplicated, latencies in µs, when the last one came).
fn receive(mut conn: Conn, expected: u64, base: Instant) -> (u64, u64, Vec<u64>, Instant) {
    let (mut received, mut duplicated) = (0u64, 0u64);
    let mut seen = HashSet::new();
    let mut latencies = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let mut acks = BytesMut::new();
    let mut last = Instant::now();
    while received < expected {
        loop {
            match Packet::read(&mut conn.buf, MAX_PACKET) {
                Ok(Packet::Publish(p)) => {
                    let now = base.elapsed().as_nanos() as u64;
                    if p.qos != QoS::AtMostOnce {
                        let _ = PubAck::new(p.pkid).write(&mut acks);
                    }
                    let mut b = p.payload;
                    if b.len() >= HEADER {
                        let (_publisher, seq, sent) = (b.get_u32(), b.get_u64(), b.get_u64());
                        received += 1;
                        latencies.push(now.saturating_sub(sent) / 1000);
                        if !seen.insert(seq) {
                            duplicated += 1;
                        }
                        last = Instant::now();
                    }
                }
                Ok(_) => {}
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(_) => return (received, duplicated, latencies, last),
            }
        }
        if !acks.is_empty() {
            if conn.send(&acks).is_err() {
                break;
            }
            acks.clear();
        }
        if received >= expected || fill(&mut conn.stream, &mut conn.buf).is_err() {
            break;
        }
    }
    let _ = conn.send(&[0xE0, 0]); // DISCONNECT
    (received, duplicated, latencies, last)
}
