//! The sealed store on a temporary directory.
use super::*;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password-AbCdEf";

#[test]
fn a_version_from_elsewhere_keeps_its_id_and_is_put_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = Some(("a1b2c3d4-0000-4000-8000-000000000001", 1_700_000_000_000));
    let (_, changed) = store.put_version(ARN, CURRENT, b"one", false, v1).unwrap();
    assert!(changed);
    let (_, changed) = store.put_version(ARN, CURRENT, b"one", false, v1).unwrap();
    assert!(!changed, "the same version is not put twice");
    let got = store.get(ARN, CURRENT).unwrap();
    assert_eq!(
        (got.version_id.as_str(), got.created_ms),
        ("a1b2c3d4-0000-4000-8000-000000000001", 1_700_000_000_000)
    );
    let v2 = Some(("a1b2c3d4-0000-4000-8000-000000000002", 1_700_000_001_000));
    let (meta, changed) = store.put_version(ARN, CURRENT, b"two", false, v2).unwrap();
    assert!(changed);
    assert_eq!(
        meta.labels[PREVIOUS].0,
        "a1b2c3d4-0000-4000-8000-000000000001"
    );
    assert!(matches!(
        store.put_version(ARN, CURRENT, b"x", false, Some(("a\0b", 0))),
        Err(StoreError::BadVersion(_))
    ));
}

#[test]
fn a_value_put_is_got_back_and_a_new_current_moves_the_old_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put(ARN, CURRENT, b"first", false).unwrap();
    let meta = store.put(ARN, CURRENT, b"second", false).unwrap();
    assert_eq!(meta.name, "db-password");
    assert!(meta.labels.contains_key(PREVIOUS));
    let current = store.get("db-password", CURRENT).unwrap();
    assert_eq!(current.value, b"second");
    assert_eq!(current.stages, [CURRENT]);
    assert_eq!(store.get(ARN, PREVIOUS).unwrap().value, b"first");
    // Opened again from disk, with the same keys.
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(again.get(ARN, CURRENT).unwrap().value, b"second");
    assert!(matches!(
        again.get(ARN, "NOPE"),
        Err(StoreError::NoLabel { .. })
    ));
    assert!(matches!(
        again.get("other", CURRENT),
        Err(StoreError::NoSecret(_))
    ));
}

#[test]
fn nothing_is_kept_in_clear_and_a_tampered_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put(ARN, CURRENT, b"canary-7d1f", false).unwrap();
    let file = store.file(ARN);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("canary-7d1f"));
    // A value moved to another label does not open.
    let moved = text.replace("AWSCURRENT", "AWSPENDING");
    std::fs::write(&file, moved).unwrap();
    match store.get(ARN, "AWSPENDING") {
        Err(StoreError::Damaged { path, .. }) => assert_eq!(path, file),
        other => panic!("{other:?}"),
    }
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    let e = store.get(ARN, CURRENT).unwrap_err().to_string();
    assert!(e.contains(&file.display().to_string()), "{e}");
    // It does not hide the others.
    let other = "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-AbCdEf";
    store.put(other, CURRENT, b"fine", false).unwrap();
    assert_eq!(store.get("other", CURRENT).unwrap().value, b"fine");
}

#[test]
fn a_new_data_key_seals_every_value_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.put(ARN, CURRENT, b"one", false).unwrap();
    store.put(ARN, CURRENT, b"two", false).unwrap();
    let old = store.data_key_id().to_string();
    assert_eq!(store.rotate_data_key().unwrap(), 2);
    assert_ne!(store.data_key_id(), old);
    let text = std::fs::read_to_string(store.file(ARN)).unwrap();
    assert!(!text.contains(&old), "no value is sealed under the old key");
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(again.get(ARN, CURRENT).unwrap().value, b"two");
    assert_eq!(again.get(ARN, PREVIOUS).unwrap().value, b"one");
    let keys = std::fs::read_to_string(dir.path().join("datakey.json")).unwrap();
    assert_eq!(keys.matches("\"Id\"").count(), 1, "{keys}");
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    std::fs::set_permissions(
        dir.path().join("kek"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::KeyTooOpen { .. })
    ));
}

#[test]
fn names_arns_and_labels() {
    assert_eq!(name_of(ARN), "db-password");
    assert_eq!(name_of("arn:aws:secretsmanager:r:1:secret:plain"), "plain");
    assert!(check_arn("arn:aws:s3:::bucket").is_err());
    assert!(check_label("AWS CURRENT").is_err());
    assert!(check_label("v1.2@x").is_ok());
}
