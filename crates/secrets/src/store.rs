//! The sealed secret store under `data/secrets/`:
//!
//! - `kek`: the key-encryption key, 32 random bytes made on the first
//!   start, readable only by this daemon's user (a file any other user may
//!   read is refused at start). It is the one place a hardware key
//!   (PKCS#11, TPM) would take over: it only wraps and unwraps the data key.
//! - `datakey.json`: the data keys, each 32 random bytes sealed with the
//!   KEK (AES-256-GCM, its id in the associated data); the first seals new
//!   values. [`Store::rotate_data_key`] puts a new one first, seals every
//!   value again under it, then drops the old: stopped at any point, every
//!   value still opens.
//! - `values/<sha256 of the ARN>.json`: one secret, each label's value
//!   sealed with the data key (AES-256-GCM, a random 96-bit nonce); the
//!   ARN, the label and the version id are the associated data, so a value
//!   moved to another secret, label or version does not open.
//!
//! Every file is written whole (a new file, synced, renamed over the old),
//! so a daemon killed during a `put` leaves the old value or the new one.
//! A file that does not open (tampered, truncated, sealed under another
//! key) is reported by its name; no error or log line carries a value.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The label every secret has: the value functions get by default.
pub const CURRENT: &str = "AWSCURRENT";
/// Where a value labelled [`CURRENT`] goes when a new one is put.
pub const PREVIOUS: &str = "AWSPREVIOUS";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is readable by other users (mode {mode:o}): the key-encryption key must be 0600 \
         (chmod 600 it)",
        path.display()
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("{}: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("no secret {0} on this core")]
    NoSecret(String),
    #[error("secret {arn} has no value labelled {label}")]
    NoLabel { arn: String, label: String },
    #[error(
        "`{0}` is not a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>)"
    )]
    BadArn(String),
    #[error("`{0}` is not a label: 1 to 256 of A-Z, a-z, 0-9 and _+=.@-")]
    BadLabel(String),
    #[error("`{0}` is not a version id: 1 to 64 of A-Z, a-z, 0-9, - and _")]
    BadVersion(String),
    #[error("a secret value is at most 65536 bytes; this one has {0}")]
    TooLarge(usize),
    #[error("the system's random source failed")]
    Random,
}

/// What a secret's value is, without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub arn: String,
    pub name: String,
    /// Label → (version id, created, ms since the epoch; size; binary).
    pub labels: BTreeMap<String, (String, i64, usize, bool)>,
}

/// A value opened for a caller.
pub struct Opened {
    pub arn: String,
    pub name: String,
    pub version_id: String,
    /// Every label this version carries.
    pub stages: Vec<String>,
    pub created_ms: i64,
    pub binary: bool,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("arn", &self.arn)
            .field("version_id", &self.version_id)
            .field("value", &"(not shown)")
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
struct WrappedKey {
    id: String,
    nonce: String,
    sealed: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeys {
    /// The current one first.
    keys: Vec<WrappedKey>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct SecretFile {
    #[serde(rename = "ARN")]
    arn: String,
    labels: BTreeMap<String, Sealed>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
struct Sealed {
    version_id: String,
    created_date: i64,
    binary: bool,
    size: usize,
    data_key: String,
    nonce: String,
    ciphertext: String,
}

/// The store, its data keys unwrapped in memory.
pub struct Store {
    dir: PathBuf,
    kek: LessSafeKey,
    /// (id, key, as the file holds it); the first seals.
    keys: Vec<(String, LessSafeKey, WrappedKey)>,
    random: SystemRandom,
}

const MAX_VALUE: usize = 65_536;

impl Store {
    /// Opens the store in `dir`, making the KEK and the data key on the
    /// first start.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let random = SystemRandom::new();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir.join("values")).map_err(io(dir))?;
        // Files a killed daemon was writing: the old ones are whole.
        for stale in std::fs::read_dir(dir.join("values"))
            .map_err(io(dir))?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "new"))
        {
            let _ = std::fs::remove_file(stale.path());
        }
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let kek_file = dir.join("kek");
        if !kek_file.exists() {
            let kek = random_bytes::<32>(&random)?;
            write_whole(&kek_file, &kek, 0o600)?;
        }
        let mode = std::fs::metadata(&kek_file)
            .map_err(io(&kek_file))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::KeyTooOpen {
                path: kek_file,
                mode: mode & 0o777,
            });
        }
        let kek_bytes = std::fs::read(&kek_file).map_err(io(&kek_file))?;
        let kek = key(&kek_bytes).ok_or_else(|| StoreError::Damaged {
            path: kek_file.clone(),
            reason: format!("a key is 32 bytes, this file has {}", kek_bytes.len()),
        })?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            kek,
            keys: Vec::new(),
            random,
        };
        let keys_file = store.keys_file();
        if keys_file.exists() {
            store.keys = unwrap_keys(&store.kek, &keys_file)?;
        } else {
            store.keys.push(store.new_key()?);
            store.write_keys()?;
        }
        Ok(store)
    }

    fn keys_file(&self) -> PathBuf {
        self.dir.join("datakey.json")
    }

    /// A new data key, wrapped by the KEK.
    fn new_key(&self) -> Result<(String, LessSafeKey, WrappedKey), StoreError> {
        let bytes = random_bytes::<32>(&self.random)?;
        let id = hex(&random_bytes::<8>(&self.random)?);
        let nonce = random_bytes::<NONCE_LEN>(&self.random)?;
        let mut sealed = bytes.to_vec();
        self.kek
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_aad(&id).as_bytes()),
                &mut sealed,
            )
            .map_err(|_| StoreError::Random)?;
        let wrapped = WrappedKey {
            id: id.clone(),
            nonce: B64.encode(nonce),
            sealed: B64.encode(&sealed),
        };
        Ok((id, key(&bytes).expect("32 bytes"), wrapped))
    }

    fn write_keys(&self) -> Result<(), StoreError> {
        let keys = DataKeys {
            keys: self.keys.iter().map(|(_, _, w)| w.clone()).collect(),
        };
        let text = serde_json::to_vec_pretty(&keys).expect("serialisable");
        write_whole(&self.keys_file(), &text, 0o600)
    }

    /// The id of the data key new values are sealed with.
    pub fn data_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// A new data key for every value: put first, every value sealed again
    /// under it, then the old keys dropped. Returns how many values.
    pub fn rotate_data_key(&mut self) -> Result<usize, StoreError> {
        let fresh = self.new_key()?;
        self.keys.insert(0, fresh);
        self.write_keys()?;
        let mut sealed = 0;
        for meta in self.list()? {
            let path = self.file(&meta.arn);
            let mut file = Self::read(&path)?;
            for (label, s) in file.labels.clone() {
                let value = self.open_sealed(&path, &meta.arn, &label, &s)?;
                let again = self.seal(
                    &meta.arn,
                    &label,
                    &s.version_id,
                    s.created_date,
                    &value,
                    s.binary,
                )?;
                file.labels.insert(label, again);
                sealed += 1;
            }
            write_whole(
                &path,
                &serde_json::to_vec_pretty(&file).expect("serialisable"),
                0o600,
            )?;
        }
        self.keys.truncate(1);
        self.write_keys()?;
        Ok(sealed)
    }

    fn file(&self, arn: &str) -> PathBuf {
        use sha2::Digest;
        self.dir.join("values").join(format!(
            "{}.json",
            hex(&sha2::Sha256::digest(arn.as_bytes()))
        ))
    }

    fn read(path: &Path) -> Result<SecretFile, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Damaged {
            path: path.to_path_buf(),
            reason: format!("not a sealed secret: {e}"),
        })
    }

    /// Puts `value` under `label` of `arn` as a new version; a new
    /// `AWSCURRENT` moves the previous one to `AWSPREVIOUS`.
    pub fn put(
        &self,
        arn: &str,
        label: &str,
        value: &[u8],
        binary: bool,
    ) -> Result<Meta, StoreError> {
        self.put_version(arn, label, value, binary, None)
            .map(|(meta, _)| meta)
    }

    /// As [`Store::put`], keeping the version id and creation time (ms
    /// since the epoch) the value has where it came from (the cloud's);
    /// nothing changes when `label` already has that version. Whether
    /// anything changed.
    pub fn put_version(
        &self,
        arn: &str,
        label: &str,
        value: &[u8],
        binary: bool,
        version: Option<(&str, i64)>,
    ) -> Result<(Meta, bool), StoreError> {
        check_arn(arn)?;
        check_label(label)?;
        if value.len() > MAX_VALUE {
            return Err(StoreError::TooLarge(value.len()));
        }
        if let Some((id, _)) = version {
            check_version(id)?;
        }
        let path = self.file(arn);
        let mut file = if path.exists() {
            Self::read(&path)?
        } else {
            SecretFile {
                arn: arn.into(),
                ..SecretFile::default()
            }
        };
        if let Some((id, _)) = version
            && file.labels.get(label).is_some_and(|s| s.version_id == id)
        {
            return Ok((meta(&file), false));
        }
        let (version_id, created) = match version {
            Some((id, created)) => (id.to_string(), created),
            None => (uuid_like(&self.random)?, now_ms()),
        };
        if label == CURRENT
            && let Some(previous) = file.labels.get(CURRENT).cloned()
        {
            // The previous value keeps its version; only its label moves.
            let opened = self.open_sealed(&path, arn, CURRENT, &previous)?;
            let moved = self.seal(
                arn,
                PREVIOUS,
                &previous.version_id,
                previous.created_date,
                &opened,
                previous.binary,
            )?;
            file.labels.insert(PREVIOUS.into(), moved);
        }
        let sealed = self.seal(arn, label, &version_id, created, value, binary)?;
        file.labels.insert(label.into(), sealed);
        write_whole(
            &path,
            &serde_json::to_vec_pretty(&file).expect("serialisable"),
            0o600,
        )?;
        Ok((meta(&file), true))
    }

    fn seal(
        &self,
        arn: &str,
        label: &str,
        version_id: &str,
        created: i64,
        value: &[u8],
        binary: bool,
    ) -> Result<Sealed, StoreError> {
        let nonce = random_bytes::<NONCE_LEN>(&self.random)?;
        let mut sealed = value.to_vec();
        self.keys[0]
            .1
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(value_aad(arn, label, version_id).as_bytes()),
                &mut sealed,
            )
            .map_err(|_| StoreError::Random)?;
        Ok(Sealed {
            version_id: version_id.into(),
            created_date: created,
            binary,
            size: value.len(),
            data_key: self.keys[0].0.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(&sealed),
        })
    }

    fn open_sealed(
        &self,
        path: &Path,
        arn: &str,
        label: &str,
        s: &Sealed,
    ) -> Result<Vec<u8>, StoreError> {
        let damaged = |reason: &str| StoreError::Damaged {
            path: path.to_path_buf(),
            reason: format!("label {label}: {reason}"),
        };
        let Some((_, data_key, _)) = self.keys.iter().find(|(id, ..)| *id == s.data_key) else {
            return Err(damaged("sealed under a data key this core does not have"));
        };
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&s.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| damaged("its nonce is not 12 bytes"))?;
        let mut sealed = B64
            .decode(&s.ciphertext)
            .map_err(|_| damaged("not base64"))?;
        let opened = data_key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(value_aad(arn, label, &s.version_id).as_bytes()),
                &mut sealed,
            )
            .map_err(|_| {
                damaged("does not open: tampered, truncated or moved from another secret")
            })?;
        Ok(opened.to_vec())
    }

    /// The value of `secret_id` (an ARN, or a name) labelled `label`.
    pub fn get(&self, secret_id: &str, label: &str) -> Result<Opened, StoreError> {
        let arn = self.resolve(secret_id)?;
        let path = self.file(&arn);
        let file = Self::read(&path)?;
        let sealed = file.labels.get(label).ok_or_else(|| StoreError::NoLabel {
            arn: arn.clone(),
            label: label.into(),
        })?;
        let value = self.open_sealed(&path, &arn, label, sealed)?;
        let stages = file
            .labels
            .iter()
            .filter(|(_, s)| s.version_id == sealed.version_id)
            .map(|(l, _)| l.clone())
            .collect();
        Ok(Opened {
            name: name_of(&arn).into(),
            arn,
            version_id: sealed.version_id.clone(),
            stages,
            created_ms: sealed.created_date,
            binary: sealed.binary,
            value,
        })
    }

    /// The ARN a secret id names: itself, or the ARN of the secret so named.
    pub fn resolve(&self, secret_id: &str) -> Result<String, StoreError> {
        if secret_id.starts_with("arn:") {
            return if self.file(secret_id).exists() {
                Ok(secret_id.into())
            } else {
                Err(StoreError::NoSecret(secret_id.into()))
            };
        }
        self.list()?
            .into_iter()
            .find(|m| m.name == secret_id)
            .map(|m| m.arn)
            .ok_or_else(|| StoreError::NoSecret(secret_id.into()))
    }

    /// Every secret, without values; a file that cannot be read is logged
    /// by name and left out, so that it does not hide the others.
    pub fn list(&self) -> Result<Vec<Meta>, StoreError> {
        let dir = self.dir.join("values");
        let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json") {
                match Self::read(&path) {
                    Ok(file) => out.push(meta(&file)),
                    Err(e) => tracing::error!("{e}"),
                }
            }
        }
        out.sort_by(|a, b| a.arn.cmp(&b.arn));
        Ok(out)
    }

    /// Deletes a secret; whether there was one.
    pub fn delete(&self, arn: &str) -> Result<bool, StoreError> {
        let path = self.file(arn);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }
}

fn meta(file: &SecretFile) -> Meta {
    Meta {
        arn: file.arn.clone(),
        name: name_of(&file.arn).into(),
        labels: file
            .labels
            .iter()
            .map(|(l, s)| {
                (
                    l.clone(),
                    (s.version_id.clone(), s.created_date, s.size, s.binary),
                )
            })
            .collect(),
    }
}

fn unwrap_keys(
    kek: &LessSafeKey,
    path: &Path,
) -> Result<Vec<(String, LessSafeKey, WrappedKey)>, StoreError> {
    let damaged = |reason: &str| StoreError::Damaged {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let keys: DataKeys =
        serde_json::from_slice(&bytes).map_err(|_| damaged("not a list of wrapped data keys"))?;
    if keys.keys.is_empty() {
        return Err(damaged("no data key"));
    }
    let mut out = Vec::new();
    for wrapped in keys.keys {
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&wrapped.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| damaged("a nonce is not 12 bytes"))?;
        let mut sealed = B64
            .decode(&wrapped.sealed)
            .map_err(|_| damaged("not base64"))?;
        let opened = kek
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_aad(&wrapped.id).as_bytes()),
                &mut sealed,
            )
            .map_err(|_| {
                damaged("does not open with the key-encryption key (another kek, or tampered)")
            })?;
        let key = key(opened).ok_or_else(|| damaged("a data key is not 32 bytes"))?;
        out.push((wrapped.id.clone(), key, wrapped));
    }
    Ok(out)
}

fn key(bytes: &[u8]) -> Option<LessSafeKey> {
    (bytes.len() == 32)
        .then(|| UnboundKey::new(&AES_256_GCM, bytes).ok())
        .flatten()
        .map(LessSafeKey::new)
}

fn key_aad(id: &str) -> String {
    format!("verdant data key {id}")
}

fn value_aad(arn: &str, label: &str, version_id: &str) -> String {
    format!("{arn}\0{label}\0{version_id}")
}

fn random_bytes<const N: usize>(random: &SystemRandom) -> Result<[u8; N], StoreError> {
    let mut b = [0u8; N];
    random.fill(&mut b).map_err(|_| StoreError::Random)?;
    Ok(b)
}

/// A version id in Secrets Manager's shape (a UUID).
fn uuid_like(random: &SystemRandom) -> Result<String, StoreError> {
    let b = random_bytes::<16>(random)?;
    let h = hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A secret's name: the ARN's last part without the 6 random characters
/// Secrets Manager appends (`…:secret:db-password-AbCdEf` is `db-password`).
pub fn name_of(arn: &str) -> &str {
    let last = arn.rsplit(':').next().unwrap_or(arn);
    match last.rsplit_once('-') {
        Some((name, suffix))
            if suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            name
        }
        _ => last,
    }
}

fn check_arn(arn: &str) -> Result<(), StoreError> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    let ok = parts.len() == 7
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "secretsmanager"
        && parts[5] == "secret"
        && !parts[6].is_empty();
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadArn(arn.into()))
    }
}

fn check_version(id: &str) -> Result<(), StoreError> {
    if (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(StoreError::BadVersion(id.chars().take(70).collect()))
    }
}

fn check_label(label: &str) -> Result<(), StoreError> {
    let ok = (1..=256).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadLabel(label.into()))
    }
}

/// Writes `path` whole (`verdant_common::fsutil::replace`).
fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    verdant_common::fsutil::replace(path, bytes, mode).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
