//! Durable sessions: what a persistent session (clean session = 0) needs
//! to survive a restart or `kill -9` — its subscriptions and its queued QoS
//! 1/2 messages — and the retained messages, in SQLite (WAL,
//! `synchronous=FULL`).
//!
//! The hub records operations as it works ([`Store::record`]) and commits
//! them in one transaction per batch of requests ([`Store::commit`]); a
//! publisher's PUBACK, a SUBACK or a CONNACK waits for that commit. A
//! message stays in `queue` until its subscriber acknowledges it. A
//! connected client's will stays in `wills` until it is published or
//! discarded, so that a broker killed while the client was connected
//! still publishes it once it is back.

use std::path::Path;

use bytes::Bytes;
use rumqttc::QoS;
use rusqlite::{Connection, params};

use crate::message::Message;
use crate::wire::SubOptions;

#[derive(Debug, thiserror::Error)]
#[error("session store {path}: {source}")]
pub struct StoreError {
    path: String,
    source: rusqlite::Error,
}

/// One change to durable state.
#[derive(Debug)]
pub enum Op {
    /// Keeps a session, with its expiry interval in seconds.
    PutSession(String, u32),
    /// Forgets a session: its subscriptions and queue too.
    DropSession(String),
    Subscribe(String, String, QoS, SubOptions),
    Unsubscribe(String, String),
    Enqueue(u64, String, Message),
    /// The session's queued messages went to its connection: any of them
    /// read after a restart is sent with DUP set.
    Sent(String),
    Ack(u64),
    Retain(Message),
    Unretain(String),
    /// A client connected with a will (its row replaces any older one).
    PutWill(StoredWill),
    /// A client's will was published or discarded.
    DropWill(String),
}

/// A will as the store keeps it: enough to publish it after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWill {
    pub client_id: String,
    pub message: Message,
    /// Its will delay interval in seconds (5.0; 0 for 3.1.1).
    pub delay: u32,
    /// Its client's session expiry interval in seconds.
    pub expiry: u32,
    /// The device's thing ARN, the source routed mode needs.
    pub source: Option<std::sync::Arc<str>>,
}

/// A persistent session as found at start.
#[derive(Debug, Default)]
pub struct LoadedSession {
    pub client_id: String,
    /// Its session expiry interval in seconds (`u32::MAX`: never).
    pub expiry: u32,
    pub subscriptions: Vec<(String, QoS, SubOptions)>,
    /// Oldest first, each with its store id.
    pub queue: Vec<Message>,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub sessions: Vec<LoadedSession>,
    pub retained: Vec<Message>,
    /// Wills of clients that were connected, or whose will waited for its
    /// delay, when the broker stopped without publishing them.
    pub wills: Vec<StoredWill>,
}

pub struct Store {
    conn: Connection,
    path: String,
    pending: Vec<Op>,
    next_id: u64,
}

fn qos(n: i64) -> QoS {
    match n {
        2 => QoS::ExactlyOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::AtMostOnce,
    }
}

impl Store {
    /// Opens (creating) the store and reads what it holds.
    pub fn open(path: &Path) -> Result<(Store, Loaded), StoreError> {
        let err = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        let conn = verdant_common::sqlite::open(path).map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions (
                 client_id TEXT PRIMARY KEY, expiry INTEGER NOT NULL DEFAULT 4294967295);
             CREATE TABLE IF NOT EXISTS subscriptions (
                 client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
                 PRIMARY KEY (client_id, filter));
             CREATE TABLE IF NOT EXISTS queue (
                 id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, topic TEXT NOT NULL,
                 payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS queue_client ON queue (client_id, id);
             CREATE TABLE IF NOT EXISTS retained (
                 topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS wills (
                 client_id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
                 qos INTEGER NOT NULL, retain INTEGER NOT NULL, props BLOB,
                 delay INTEGER NOT NULL, expiry INTEGER NOT NULL, source TEXT);",
        )
        .map_err(err)?;
        // Stores from before MQTT 5.0: sessions never expire, messages
        // have no properties.
        add_column(
            &conn,
            "sessions",
            "expiry",
            "INTEGER NOT NULL DEFAULT 4294967295",
        )
        .and_then(|()| add_column(&conn, "queue", "props", "BLOB"))
        .and_then(|()| add_column(&conn, "retained", "props", "BLOB"))
        .and_then(|()| add_column(&conn, "queue", "dup", "INTEGER NOT NULL DEFAULT 0"))
        .and_then(|()| {
            add_column(
                &conn,
                "subscriptions",
                "sub_id",
                "INTEGER NOT NULL DEFAULT 0",
            )
        })
        .map_err(err)?;
        let loaded = load(&conn).map_err(err)?;
        let next_id = conn
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM queue", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(err)? as u64;
        Ok((
            Store {
                conn,
                path: path.display().to_string(),
                pending: Vec::new(),
                next_id,
            },
            loaded,
        ))
    }

    /// A new id for a queued message.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn record(&mut self, op: Op) {
        self.pending.push(op);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// How many operations wait for the next commit.
    pub fn pending_ops(&self) -> usize {
        self.pending.len()
    }

    /// Writes everything recorded since the last commit, durably.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        let path = self.path.clone();
        let err = |source| StoreError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for op in ops {
            let r = match op {
                Op::PutSession(c, expiry) => tx.execute(
                    "INSERT OR REPLACE INTO sessions (client_id, expiry) VALUES (?1, ?2)",
                    params![c, i64::from(expiry)],
                ),
                Op::DropSession(c) => tx
                    .execute("DELETE FROM sessions WHERE client_id = ?1", params![c])
                    .and_then(|_| tx.execute("DELETE FROM subscriptions WHERE client_id = ?1", params![c]))
                    .and_then(|_| tx.execute("DELETE FROM queue WHERE client_id = ?1", params![c])),
                // The qos column holds MQTT 5.0's whole options byte; for a
                // 3.1.1 subscription that is its QoS.
                Op::Subscribe(c, f, q, o) => tx.execute(
                    "INSERT OR REPLACE INTO subscriptions (client_id, filter, qos, sub_id) VALUES (?1, ?2, ?3, ?4)",
                    params![c, f, i64::from(o.byte(q)), i64::from(o.id)],
                ),
                Op::Unsubscribe(c, f) => tx.execute(
                    "DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2",
                    params![c, f],
                ),
                Op::Enqueue(id, c, m) => tx.execute(
                    "INSERT INTO queue (id, client_id, topic, payload, qos, retain, props, dup) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![id as i64, c, m.topic, &m.payload[..], m.qos as i64, i64::from(m.retain), props_bytes(&m), i64::from(m.dup)],
                ),
                Op::Sent(c) => tx.execute("UPDATE queue SET dup = 1 WHERE client_id = ?1 AND dup = 0", params![c]),
                Op::Ack(id) => tx.execute("DELETE FROM queue WHERE id = ?1", params![id as i64]),
                Op::Retain(m) => tx.execute(
                    "INSERT OR REPLACE INTO retained (topic, payload, qos, props) VALUES (?1, ?2, ?3, ?4)",
                    params![m.topic, &m.payload[..], m.qos as i64, props_bytes(&m)],
                ),
                Op::Unretain(t) => tx.execute("DELETE FROM retained WHERE topic = ?1", params![t]),
                Op::PutWill(w) => tx.execute(
                    "INSERT OR REPLACE INTO wills (client_id, topic, payload, qos, retain, props, delay, expiry, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        w.client_id,
                        w.message.topic,
                        &w.message.payload[..],
                        w.message.qos as i64,
                        i64::from(w.message.retain),
                        props_bytes(&w.message),
                        i64::from(w.delay),
                        i64::from(w.expiry),
                        w.source.as_deref()
                    ],
                ),
                Op::DropWill(c) => tx.execute("DELETE FROM wills WHERE client_id = ?1", params![c]),
            };
            r.map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

/// Adds `column` to `table` unless it is there.
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let there: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |r| r.get(0),
    )?;
    if there == 0 {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

fn props_bytes(m: &Message) -> Option<Vec<u8>> {
    m.props.as_ref().map(|p| p.to_bytes())
}

fn props_of(bytes: Option<Vec<u8>>) -> Option<std::sync::Arc<crate::wire::Props>> {
    bytes.and_then(|b| crate::wire::Props::from_bytes(&b))
}

/// Everything the store holds, as the hub starts from it.
fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut sessions = conn.prepare("SELECT client_id, expiry FROM sessions ORDER BY client_id")?;
    for row in sessions.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (id, expiry) = row?;
        loaded.sessions.push(LoadedSession {
            client_id: id,
            expiry: u32::try_from(expiry).unwrap_or(u32::MAX),
            ..LoadedSession::default()
        });
    }
    let index: std::collections::HashMap<String, usize> = loaded
        .sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.client_id.clone(), i))
        .collect();
    let mut subs = conn.prepare("SELECT client_id, filter, qos, sub_id FROM subscriptions")?;
    let rows = subs.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (client, filter, q, id) = row?;
        if let Some(&i) = index.get(&client) {
            let (mut options, q) = SubOptions::from_byte(u8::try_from(q).unwrap_or(0));
            options.id = u32::try_from(id).unwrap_or(0);
            loaded.sessions[i].subscriptions.push((filter, q, options));
        }
    }
    let mut queue = conn.prepare(
        "SELECT id, client_id, topic, payload, qos, retain, props, dup FROM queue ORDER BY id",
    )?;
    let rows = queue.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            Message {
                topic: r.get(2)?,
                payload: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                qos: qos(r.get(4)?),
                retain: r.get::<_, i64>(5)? != 0,
                stored: None,
                props: props_of(r.get(6)?),
                from: None,
                dup: r.get::<_, i64>(7)? != 0,
            },
        ))
    })?;
    for row in rows {
        let (id, client, mut m) = row?;
        m.stored = Some(id as u64);
        if let Some(&i) = index.get(&client) {
            loaded.sessions[i].queue.push(m);
        }
    }
    let mut retained = conn.prepare("SELECT topic, payload, qos, props FROM retained")?;
    let rows = retained.query_map([], |r| {
        Ok(Message {
            topic: r.get(0)?,
            payload: Bytes::from(r.get::<_, Vec<u8>>(1)?),
            qos: qos(r.get(2)?),
            retain: true,
            stored: None,
            props: props_of(r.get(3)?),
            from: None,
            dup: false,
        })
    })?;
    for m in rows {
        loaded.retained.push(m?);
    }
    let mut wills = conn.prepare(
        "SELECT client_id, topic, payload, qos, retain, props, delay, expiry, source FROM wills ORDER BY client_id",
    )?;
    let rows = wills.query_map([], |r| {
        Ok(StoredWill {
            client_id: r.get(0)?,
            message: Message {
                topic: r.get(1)?,
                payload: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                qos: qos(r.get(3)?),
                retain: r.get::<_, i64>(4)? != 0,
                stored: None,
                props: props_of(r.get(5)?),
                from: None,
                dup: false,
            },
            delay: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
            expiry: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(u32::MAX),
            source: r.get::<_, Option<String>>(8)?.map(std::sync::Arc::from),
        })
    })?;
    for w in rows {
        loaded.wills.push(w?);
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(topic: &str, n: u8) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from(vec![n]),
            qos: QoS::AtLeastOnce,
            retain: false,
            stored: None,
            props: None,
            from: None,
            dup: false,
        }
    }

    #[test]
    fn opens_a_store_from_before_mqtt_5() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE sessions (client_id TEXT PRIMARY KEY);
             CREATE TABLE subscriptions (client_id TEXT NOT NULL, filter TEXT NOT NULL,
                 qos INTEGER NOT NULL, PRIMARY KEY (client_id, filter));
             CREATE TABLE queue (id INTEGER PRIMARY KEY, client_id TEXT NOT NULL,
                 topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
                 retain INTEGER NOT NULL);
             CREATE TABLE retained (topic TEXT PRIMARY KEY, payload BLOB NOT NULL,
                 qos INTEGER NOT NULL);
             INSERT INTO sessions VALUES ('old');
             INSERT INTO subscriptions VALUES ('old', 'a/#', 1);
             INSERT INTO queue VALUES (1, 'old', 'a/b', x'01', 1, 0);
             INSERT INTO retained VALUES ('r', x'02', 0);",
        )
        .unwrap();
        drop(old);
        let (_s, loaded) = Store::open(&path).unwrap();
        let old = &loaded.sessions[0];
        assert_eq!(old.expiry, u32::MAX, "3.1.1 sessions never expire");
        assert_eq!(old.subscriptions[0].1, QoS::AtLeastOnce);
        assert_eq!(old.queue.len(), 1);
        assert!(old.queue[0].props.is_none());
        assert_eq!(loaded.retained.len(), 1);
    }

    #[test]
    fn what_was_handed_to_a_connection_comes_back_as_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let (mut s, _) = Store::open(&path).unwrap();
            for c in ["on", "away"] {
                s.record(Op::PutSession(c.into(), u32::MAX));
            }
            // Delivered to a connected client, then queued while away.
            let handed = Message {
                dup: true,
                ..m("t", 1)
            };
            let mut enqueue = |c: &str, m: Message| {
                let id = s.next_id();
                s.record(Op::Enqueue(id, c.into(), m));
            };
            enqueue("on", handed);
            enqueue("on", m("t", 2));
            // Queued while away, then taken by its connection.
            enqueue("away", m("t", 3));
            s.record(Op::Sent("away".into()));
            s.commit().unwrap();
        }
        let (_s, loaded) = Store::open(&path).unwrap();
        let dup: Vec<(u8, bool)> = loaded
            .sessions
            .iter()
            .flat_map(|s| s.queue.iter().map(|m| (m.payload[0], m.dup)))
            .collect();
        // Sessions in client id order: "away", then "on".
        assert_eq!(dup, vec![(3, true), (1, true), (2, false)]);
    }

    #[test]
    fn survives_reopen_and_forgets_what_is_acked_or_dropped() {
        let no_local = SubOptions {
            no_local: true,
            id: 7,
            ..SubOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let (mut s, loaded) = Store::open(&path).unwrap();
            assert!(loaded.sessions.is_empty());
            s.record(Op::PutSession("a".into(), 60));
            s.record(Op::PutSession("b".into(), u32::MAX));
            s.record(Op::Subscribe(
                "a".into(),
                "x/#".into(),
                QoS::ExactlyOnce,
                no_local,
            ));
            s.record(Op::Subscribe(
                "b".into(),
                "y".into(),
                QoS::AtLeastOnce,
                SubOptions::default(),
            ));
            for n in 0..3 {
                let id = s.next_id();
                let props = crate::wire::Props {
                    user_properties: vec![("n".into(), n.to_string())],
                    correlation_data: Some(Bytes::from_static(b"\x00c")),
                    ..crate::wire::Props::default()
                };
                let message = Message {
                    props: Some(std::sync::Arc::new(props)),
                    ..m("x/1", n)
                };
                s.record(Op::Enqueue(id, "a".into(), message));
            }
            s.record(Op::Ack(2));
            s.record(Op::Retain(Message {
                retain: true,
                ..m("r", 9)
            }));
            s.record(Op::DropSession("b".into()));
            s.commit().unwrap();
        }
        let (mut s, loaded) = Store::open(&path).unwrap();
        assert_eq!(loaded.sessions.len(), 1);
        let a = &loaded.sessions[0];
        assert_eq!(a.expiry, 60);
        assert_eq!(
            a.subscriptions,
            vec![("x/#".to_string(), QoS::ExactlyOnce, no_local)]
        );
        let payloads: Vec<u8> = a.queue.iter().map(|m| m.payload[0]).collect();
        assert_eq!(payloads, vec![0, 2]);
        let props = a.queue[1].props.as_ref().expect("5.0 properties kept");
        assert_eq!(
            props.user_properties,
            vec![("n".to_string(), "2".to_string())]
        );
        assert_eq!(props.correlation_data.as_deref(), Some(&b"\x00c"[..]));
        assert_eq!(a.queue[1].stored, Some(3));
        assert_eq!(loaded.retained.len(), 1);
        assert_eq!(s.next_id(), 4);
    }

    #[test]
    fn keeps_wills_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let will = |client: &str, delay| StoredWill {
            client_id: client.into(),
            message: Message {
                retain: true,
                ..m("gone", 1)
            },
            delay,
            expiry: 30,
            source: Some("arn:thing".into()),
        };
        {
            let (mut s, _) = Store::open(&path).unwrap();
            s.record(Op::PutWill(will("a", 5)));
            s.record(Op::PutWill(will("b", 0)));
            s.record(Op::PutWill(will("a", 9)));
            s.record(Op::DropWill("b".into()));
            s.commit().unwrap();
        }
        let (_, loaded) = Store::open(&path).unwrap();
        assert_eq!(loaded.wills, vec![will("a", 9)]);
    }
}
