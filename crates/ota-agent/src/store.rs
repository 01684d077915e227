//! Every deployment and the request that made it, in
//! `data/ota-agent/deployments.db`: written (and synced) at each step, so
//! a restart finds where each one was.

use std::path::Path;

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use verdant_proto::ota::v1::{DeployRequest, Deployment, Phase};

pub struct Store {
    conn: Connection,
}

/// Whether a deployment has ended (nothing more happens to it).
pub fn ended(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Succeeded | Phase::Failed | Phase::RolledBack | Phase::Cancelled
    )
}

impl Store {
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        let conn = verdant_common::sqlite::open(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS deployments (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 ended INTEGER NOT NULL,
                 record BLOB NOT NULL,
                 request BLOB NOT NULL
             );",
        )?;
        Ok(Store { conn })
    }

    /// Records a new deployment with the request that made it.
    pub fn insert(&self, d: &Deployment, request: &DeployRequest) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO deployments (id, ended, record, request) VALUES (?1, ?2, ?3, ?4)",
            params![
                d.deployment_id,
                ended(d.phase()),
                d.encode_to_vec(),
                request.encode_to_vec()
            ],
        )?;
        Ok(())
    }

    /// Writes a deployment's new state.
    pub fn update(&self, d: &Deployment) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET ended = ?2, record = ?3 WHERE id = ?1",
            params![d.deployment_id, ended(d.phase()), d.encode_to_vec()],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> rusqlite::Result<Option<Deployment>> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT record FROM deployments WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(blob.and_then(|b| Deployment::decode(b.as_slice()).ok()))
    }

    pub fn request(&self, id: &str) -> rusqlite::Result<Option<DeployRequest>> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT request FROM deployments WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(blob.and_then(|b| DeployRequest::decode(b.as_slice()).ok()))
    }

    /// The newest `limit` deployments, newest first.
    pub fn list(&self, limit: u32) -> rusqlite::Result<Vec<Deployment>> {
        self.select(
            "SELECT record FROM deployments ORDER BY seq DESC LIMIT ?1",
            i64::from(limit),
        )
    }

    /// The deployments that have not ended, oldest first.
    pub fn unfinished(&self) -> rusqlite::Result<Vec<Deployment>> {
        self.select(
            "SELECT record FROM deployments WHERE ended = 0 AND seq > ?1 ORDER BY seq",
            0,
        )
    }

    fn select(&self, sql: &str, arg: i64) -> rusqlite::Result<Vec<Deployment>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(params![arg], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for blob in rows {
            if let Ok(d) = Deployment::decode(blob?.as_slice()) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(id: &str, phase: Phase) -> Deployment {
        let mut d = Deployment {
            deployment_id: id.into(),
            ..Deployment::default()
        };
        d.set_phase(phase);
        d
    }

    #[test]
    fn records_survive_reopening_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        {
            let store = Store::open(&path).unwrap();
            let request = DeployRequest {
                origin: "test".into(),
                ..DeployRequest::default()
            };
            store
                .insert(&deployment("a", Phase::Queued), &request)
                .unwrap();
            store
                .insert(&deployment("b", Phase::Queued), &request)
                .unwrap();
            let mut a = deployment("a", Phase::Succeeded);
            a.reason = "done".into();
            store.update(&a).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let ids: Vec<_> = store
            .list(10)
            .unwrap()
            .into_iter()
            .map(|d| d.deployment_id)
            .collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(store.get("a").unwrap().unwrap().reason, "done");
        let unfinished: Vec<_> = store
            .unfinished()
            .unwrap()
            .into_iter()
            .map(|d| d.deployment_id)
            .collect();
        assert_eq!(unfinished, ["b"]);
        assert_eq!(store.request("b").unwrap().unwrap().origin, "test");
        assert!(store.get("c").unwrap().is_none());
    }
}
