//! The queue of messages bound for the cloud: in SQLite by default (WAL,
//! `synchronous=FULL`), so a message the router acknowledged survives
//! `kill -9` and a restart of the core; or in memory when configured (as
//! Greengrass's `GG_CONFIG_STORAGE_TYPE=Memory`).
//!
//! Every message is also kept in memory, in order, for sending: the byte
//! limit bounds both. A batch is added in one transaction; sent messages
//! are deleted when the cloud acknowledges them, also in batches.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{Connection, params};
use serde::Deserialize;

/// What happens when a message does not fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Greengrass's default: the oldest messages make room.
    #[default]
    DropOldest,
    /// The new message is refused (its publisher is not acknowledged).
    RefuseNew,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: u64,
    pub topic: String,
    pub payload: Bytes,
}

impl Queued {
    fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cloud queue {}: {source}", path.display())]
pub struct QueueError {
    pub path: PathBuf,
    pub source: rusqlite::Error,
}

/// Counts operators see.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    pub messages: usize,
    pub bytes: usize,
    /// Dropped to make room (drop-oldest).
    pub dropped_oldest: u64,
    /// Refused because they did not fit, or the disk failed.
    pub refused: u64,
}

pub struct CloudQueue {
    db: Option<(PathBuf, Connection)>,
    rows: VecDeque<Queued>,
    bytes: usize,
    limit: usize,
    policy: FullPolicy,
    next_id: u64,
    pub stats: QueueStats,
}

impl CloudQueue {
    /// A queue on disk at `path` (restoring what it held), or in memory.
    pub fn open(
        path: Option<&Path>,
        limit: usize,
        policy: FullPolicy,
    ) -> Result<CloudQueue, QueueError> {
        let mut q = CloudQueue {
            db: None,
            rows: VecDeque::new(),
            bytes: 0,
            limit,
            policy,
            next_id: 1,
            stats: QueueStats::default(),
        };
        let Some(path) = path else {
            return Ok(q);
        };
        let err = |source| QueueError {
            path: path.to_path_buf(),
            source,
        };
        let conn = verdant_common::sqlite::open(path).map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS queue (
                 id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL);",
        )
        .map_err(err)?;
        {
            let mut stmt = conn
                .prepare("SELECT id, topic, payload FROM queue ORDER BY id")
                .map_err(err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Queued {
                        id: r.get::<_, i64>(0)? as u64,
                        topic: r.get(1)?,
                        payload: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    })
                })
                .map_err(err)?;
            for row in rows {
                let row = row.map_err(err)?;
                q.bytes += row.size();
                q.next_id = row.id + 1;
                q.rows.push_back(row);
            }
        }
        q.db = Some((path.to_path_buf(), conn));
        q.stats.messages = q.rows.len();
        q.stats.bytes = q.bytes;
        Ok(q)
    }

    /// Adds a batch of (topic, payload, all-or-error) in one transaction;
    /// for each message, whether it was taken. A message marked
    /// all-or-error is refused rather than making room. Nothing is taken
    /// if the disk write fails.
    pub fn push(&mut self, batch: Vec<(String, Bytes, bool)>) -> Vec<bool> {
        let mut taken = Vec::with_capacity(batch.len());
        let mut added = Vec::new();
        let mut dropped = Vec::new();
        for (topic, payload, all_or_error) in batch {
            let m = Queued {
                id: self.next_id,
                topic,
                payload,
            };
            let size = m.size();
            if size > self.limit
                || ((all_or_error || self.policy == FullPolicy::RefuseNew)
                    && self.bytes + size > self.limit)
            {
                taken.push(false);
                continue;
            }
            while self.bytes + size > self.limit {
                let old = self.rows.pop_front().expect("bytes > 0 means rows");
                self.bytes -= old.size();
                dropped.push(old.id);
            }
            self.next_id += 1;
            self.bytes += size;
            added.push(m.clone());
            self.rows.push_back(m);
            taken.push(true);
        }
        if let Err(e) = self.write(&added, &dropped) {
            tracing::error!("{e}: {} messages for the cloud refused", added.len());
            // Undo in memory: the disk is the truth.
            for m in added.iter().rev() {
                if self.rows.back().map(|r| r.id) == Some(m.id) {
                    self.rows.pop_back();
                    self.bytes -= m.size();
                }
            }
            taken.fill(false);
        }
        self.stats.dropped_oldest += dropped.len() as u64;
        self.stats.refused += taken.iter().filter(|t| !**t).count() as u64;
        if !dropped.is_empty() {
            tracing::warn!(
                dropped = dropped.len(),
                limit = self.limit,
                "cloud queue full: oldest messages dropped"
            );
        }
        self.update_stats();
        taken
    }

    fn write(&mut self, added: &[Queued], dropped: &[u64]) -> Result<(), QueueError> {
        let Some((path, conn)) = &mut self.db else {
            return Ok(());
        };
        let err = |source| QueueError {
            path: path.clone(),
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        {
            let mut ins = tx
                .prepare_cached("INSERT INTO queue (id, topic, payload) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            for m in added {
                ins.execute(params![m.id as i64, m.topic, &m.payload[..]])
                    .map_err(err)?;
            }
            let mut del = tx
                .prepare_cached("DELETE FROM queue WHERE id = ?1")
                .map_err(err)?;
            for id in dropped {
                del.execute(params![*id as i64]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The cloud acknowledged these.
    pub fn remove(&mut self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        for id in ids {
            if let Ok(i) = self.rows.binary_search_by_key(id, |r| r.id) {
                let m = self.rows.remove(i).expect("found");
                self.bytes -= m.size();
            }
        }
        if let Err(e) = self.write(&[], ids) {
            // Sent again after a restart: at least once.
            tracing::warn!("{e}: acknowledged messages stay on disk");
        }
        self.update_stats();
    }

    /// The first message with an id at or after `from`.
    pub fn next_from(&self, from: u64) -> Option<&Queued> {
        let i = self.rows.partition_point(|r| r.id < from);
        self.rows.get(i)
    }

    /// The id of the oldest message, where sending starts on a new connection.
    pub fn first_id(&self) -> u64 {
        self.rows.front().map_or(self.next_id, |r| r.id)
    }

    fn update_stats(&mut self) {
        self.stats.messages = self.rows.len();
        self.stats.bytes = self.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: &[(&str, &str)]) -> Vec<(String, Bytes, bool)> {
        items
            .iter()
            .map(|(t, p)| {
                (
                    (*t).to_string(),
                    Bytes::copy_from_slice(p.as_bytes()),
                    false,
                )
            })
            .collect()
    }

    #[test]
    fn survives_reopening_in_order_and_acknowledged_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let mut q = CloudQueue::open(Some(&path), 1000, FullPolicy::DropOldest).unwrap();
        assert_eq!(
            q.push(batch(&[("a", "1"), ("b", "2"), ("a", "3")])),
            [true; 3]
        );
        q.remove(&[2]);
        drop(q);
        let q = CloudQueue::open(Some(&path), 1000, FullPolicy::DropOldest).unwrap();
        let first = q.next_from(q.first_id()).unwrap();
        assert_eq!((first.id, first.payload.as_ref()), (1, &b"1"[..]));
        let second = q.next_from(first.id + 1).unwrap();
        assert_eq!((second.id, second.payload.as_ref()), (3, &b"3"[..]));
        assert!(q.next_from(4).is_none());
        assert_eq!(q.stats.messages, 2);
    }

    #[test]
    fn a_failed_write_refuses_the_batch_and_the_queue_resumes_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let mut q = CloudQueue::open(Some(&path), 10_000_000, FullPolicy::DropOldest).unwrap();
        // A full disk, as SQLite sees it: the file may not grow.
        let limit = |q: &CloudQueue, pages: &str| {
            let (_, conn) = q.db.as_ref().unwrap();
            conn.execute_batch(&format!("PRAGMA max_page_count = {pages}"))
                .unwrap();
        };
        let (_, conn) = q.db.as_ref().unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        limit(&q, &(pages + 2).to_string());
        let big = "x".repeat(3000);
        let mut accepted = 0;
        loop {
            if q.push(batch(&[("t", &big)])) == [false] {
                break;
            }
            accepted += 1;
            assert!(accepted < 100, "the limit never bit");
        }
        assert_eq!(q.stats.messages, accepted);
        assert_eq!(q.stats.refused, 1);
        limit(&q, "1000000");
        assert_eq!(q.push(batch(&[("t", "after")])), [true]);
        drop(q);
        let q = CloudQueue::open(Some(&path), 10_000_000, FullPolicy::DropOldest).unwrap();
        assert_eq!(q.stats.messages, accepted + 1, "exactly what was accepted");
    }

    #[test]
    fn full_drops_oldest_or_refuses_new() {
        let mut q = CloudQueue::open(None, 10, FullPolicy::DropOldest).unwrap();
        q.push(batch(&[("t", "1234"), ("t", "5678")])); // 5 bytes each
        assert_eq!(q.push(batch(&[("t", "abcd")])), [true]);
        assert_eq!(q.next_from(0).unwrap().payload.as_ref(), b"5678");
        assert_eq!(q.stats.dropped_oldest, 1);
        // A publisher asking for all-or-error is refused instead.
        let all_or_error = vec![("t".to_string(), Bytes::from_static(b"wxyz"), true)];
        assert_eq!(q.push(all_or_error), [false]);
        assert_eq!(q.next_from(0).unwrap().payload.as_ref(), b"5678");

        let mut q = CloudQueue::open(None, 10, FullPolicy::RefuseNew).unwrap();
        q.push(batch(&[("t", "1234"), ("t", "5678")]));
        assert_eq!(q.push(batch(&[("t", "abcd")])), [false]);
        assert_eq!(q.next_from(0).unwrap().payload.as_ref(), b"1234");
        // Bigger than the whole queue: refused under either policy.
        let mut q = CloudQueue::open(None, 10, FullPolicy::DropOldest).unwrap();
        assert_eq!(q.push(batch(&[("t", "0123456789")])), [false]);
    }
}
