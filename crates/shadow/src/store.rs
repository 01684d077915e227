//! Shadows in SQLite (WAL, `synchronous=FULL`): one row per (thing,
//! shadow name), the document as JSON. A batch of changes is one
//! transaction, committed before any of them is acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::document::Shadow;

/// A shadow's key: the thing, and the shadow's name ("" for the classic one).
pub type Key = (String, String);

#[derive(Debug, thiserror::Error)]
#[error("shadow store {}: {source}", path.display())]
pub struct StoreError {
    pub path: PathBuf,
    pub source: rusqlite::Error,
}

/// One change of a batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Key, Shadow),
    Delete(Key),
}

pub struct Store {
    path: PathBuf,
    conn: Connection,
}

impl Store {
    /// Opens (creating) the store and reads every shadow.
    pub fn open(path: &Path) -> Result<(Store, HashMap<Key, Shadow>), StoreError> {
        let err = |source| StoreError {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS shadows (
                 thing TEXT NOT NULL, name TEXT NOT NULL, document TEXT NOT NULL,
                 PRIMARY KEY (thing, name));",
        )
        .map_err(err)?;
        let mut all = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT thing, name, document FROM shadows")
                .map_err(err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(err)?;
            for row in rows {
                let (thing, name, doc) = row.map_err(err)?;
                match serde_json::from_str(&doc)
                    .ok()
                    .as_ref()
                    .and_then(Shadow::from_json)
                {
                    Some(s) => {
                        all.insert((thing, name), s);
                    }
                    None => tracing::error!(thing, name, "unreadable shadow document skipped"),
                }
            }
        }
        Ok((
            Store {
                path: path.to_path_buf(),
                conn,
            },
            all,
        ))
    }

    /// Writes `ops` in one transaction.
    pub fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let err = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO shadows (thing, name, document) VALUES (?1, ?2, ?3)
                     ON CONFLICT (thing, name) DO UPDATE SET document = excluded.document",
                )
                .map_err(err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM shadows WHERE thing = ?1 AND name = ?2")
                .map_err(err)?;
            for op in ops {
                match op {
                    Op::Put((thing, name), s) => {
                        put.execute(params![thing, name, s.to_json().to_string()])
                            .map_err(err)?;
                    }
                    Op::Delete((thing, name)) => {
                        del.execute(params![thing, name]).map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)
    }
}
