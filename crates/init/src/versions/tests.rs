//! The versions' unit tests.

use super::*;

/// A root with versions `installed` and an update from `from` to the
/// running version, `attempts` starts in.
fn root_with(installed: &[&str], from: &str, attempts: u32) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let versions = Versions::new(root.path());
    for v in installed {
        let dir = root.path().join("versions").join(v);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(EXE), b"#!/bin/sh\n").unwrap();
    }
    versions
        .record(&Update {
            from: from.into(),
            to: verdant_common::version::version().into(),
            phase: SWITCHING.into(),
            attempts,
            ..Update::default()
        })
        .unwrap();
    versions
        .point_at(verdant_common::version::version())
        .unwrap();
    root
}

#[test]
fn a_release_left_staged_is_cleared_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("versions");
    for d in [".9.9.9.new", "9.9.8", ".current.new"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("9.9.8", dir.join("current")).unwrap();
    let cleared = Versions::new(root.path()).clear_staged();
    assert_eq!(cleared, [dir.join(".9.9.9.new")]);
    assert!(dir.join("9.9.8").is_dir() && dir.join("current").exists());
    assert!(Versions::new(root.path()).clear_staged().is_empty());
}

#[test]
fn a_new_version_that_never_settles_is_rolled_back_at_its_fourth_start() {
    let running = verdant_common::version::version();
    let root = root_with(&["0.0.9", running], "0.0.9", MAX_ATTEMPTS - 1);
    let versions = Versions::new(root.path());
    // Counted: still this version (it runs from elsewhere, so it would
    // move onto versions/current).
    let next = at_start(root.path());
    assert_eq!(versions.update().unwrap().attempts, MAX_ATTEMPTS);
    assert_eq!(next, versions.current_exe());
    // One start too many: back to the previous version.
    let next = at_start(root.path()).unwrap();
    assert!(next.ends_with("versions/0.0.9/verdant"), "{next:?}");
    let u = versions.update().unwrap();
    assert_eq!((u.phase.as_str(), u.to.as_str()), (ROLLED_BACK, "0.0.9"));
    assert_eq!(versions.current().unwrap(), "0.0.9");
    assert_eq!(versions.installed(), ["0.0.9", running]);
}

#[test]
fn a_switch_recorded_but_never_made_ends_failed_at_the_next_start() {
    let running = verdant_common::version::version();
    let root = tempfile::tempdir().unwrap();
    let versions = Versions::new(root.path());
    let dir = root.path().join("versions").join(running);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(EXE), b"#!/bin/sh\n").unwrap();
    versions
        .record(&Update {
            from: running.into(),
            to: "9.9.9".into(),
            phase: SWITCHING.into(),
            ..Update::default()
        })
        .unwrap();
    versions.point_at(running).unwrap();
    at_start(root.path());
    let u = versions.update().unwrap();
    assert_eq!(u.phase, FAILED, "{u:?}");
    assert!(u.reason.contains("stopped before it switched"), "{u:?}");
    // And a switch is possible again.
    assert!(switching_here(root.path()).is_none());
}

#[test]
fn settling_ends_the_update_kept_or_rolled_back() {
    let running = verdant_common::version::version();
    let root = root_with(&["0.0.9", running], "0.0.9", 1);
    assert_eq!(settled(root.path(), &[]), None);
    let versions = Versions::new(root.path());
    assert_eq!(versions.update().unwrap().phase, SUCCEEDED);
    // Another update that leaves a service down.
    let root = root_with(&["0.0.9", running], "0.0.9", 1);
    let back = settled(root.path(), &["broker did not run".to_string()]).unwrap();
    assert!(back.ends_with("versions/0.0.9/verdant"), "{back:?}");
    let u = Versions::new(root.path()).update().unwrap();
    assert!(u.reason.contains("broker"), "{u:?}");
    // Nothing to do without an update to this version.
    let none = tempfile::tempdir().unwrap();
    assert_eq!(settled(none.path(), &[]), None);
    assert_eq!(at_start(none.path()), None);
}

#[test]
fn a_successful_update_keeps_its_two_versions_and_removes_older_ones() {
    let running = verdant_common::version::version();
    let root = root_with(&["0.0.1", "0.0.2", "0.0.3", running], "0.0.3", 0);
    assert_eq!(settled(root.path(), &[]), None);
    let versions = Versions::new(root.path());
    assert_eq!(versions.update().unwrap().phase, SUCCEEDED);
    let mut left = versions.installed();
    left.sort();
    let mut want = vec!["0.0.3".to_string(), running.to_string()];
    want.sort();
    assert_eq!(left, want);
}
