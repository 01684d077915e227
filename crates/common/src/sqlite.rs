//! The SQLite databases of the daemons (the broker's sessions, the
//! router's cloud queue, the shadows): write-ahead log and
//! `synchronous=FULL`, so that what a daemon acknowledged after a commit
//! survives `kill -9` and a power cut.

use std::path::Path;

use rusqlite::Connection;

/// Opens (creating) the database at `path` with the project's pragmas; the
/// caller creates its tables.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    #[test]
    fn wal_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open(&dir.path().join("t.db")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // FULL is 2.
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2);
    }
}
