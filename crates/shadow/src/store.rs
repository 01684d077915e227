//! Shadows in SQLite (WAL, `synchronous=FULL`): one row per (thing,
//! shadow name), the document as JSON. A batch of changes is one
//! transaction, committed before any of them is acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::document::Shadow;
use crate::sync::{Agreed, Sides};

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
        let conn = verdant_common::sqlite::open(path).map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS shadows (
                 thing TEXT NOT NULL, name TEXT NOT NULL, document TEXT NOT NULL,
                 PRIMARY KEY (thing, name));
             CREATE TABLE IF NOT EXISTS sync (
                 thing TEXT NOT NULL, name TEXT NOT NULL, base TEXT, cloud_version INTEGER NOT NULL,
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

    /// What each synced shadow last agreed on with the cloud.
    pub fn agreed(&self) -> Result<HashMap<Key, Agreed>, StoreError> {
        let err = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT thing, name, base, cloud_version FROM sync")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(err)?;
        let mut all = HashMap::new();
        for row in rows {
            let (key, base, version) = row.map_err(err)?;
            let base = base
                .and_then(|b| serde_json::from_str(&b).ok())
                .map(|v| Sides::from_json(&v));
            all.insert(
                key,
                Agreed {
                    base,
                    cloud_version: u64::try_from(version).unwrap_or(0),
                },
            );
        }
        Ok(all)
    }

    /// Writes `ops` and the sync states `agreed` in one transaction.
    pub fn commit(&mut self, ops: &[Op], agreed: &[(Key, Agreed)]) -> Result<(), StoreError> {
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
            let mut sync = tx
                .prepare_cached(
                    "INSERT INTO sync (thing, name, base, cloud_version) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (thing, name) DO UPDATE
                     SET base = excluded.base, cloud_version = excluded.cloud_version",
                )
                .map_err(err)?;
            for ((thing, name), a) in agreed {
                let base = a.base.as_ref().map(|b| b.to_json().to_string());
                let version = i64::try_from(a.cloud_version).unwrap_or(i64::MAX);
                sync.execute(params![thing, name, base, version])
                    .map_err(err)?;
            }
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
