use super::*;

/// Writes a zip of `(name, contents, unix mode)`; a mode with
/// `0o120000` makes a symlink to `contents`.
pub(crate) fn write_zip(path: &Path, entries: &[(&str, &str, u32)]) {
    let mut w = zip::ZipWriter::new(File::create(path).unwrap());
    for (name, contents, mode) in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(*mode & 0o7777);
        if mode & 0o170_000 == 0o120_000 {
            w.add_symlink(*name, *contents, options).unwrap();
        } else {
            w.start_file(*name, options).unwrap();
            w.write_all(contents.as_bytes()).unwrap();
        }
    }
    w.finish().unwrap();
}

fn sha_of(path: &Path) -> String {
    sha256_of(File::open(path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Only entries, no temporary directories left.
fn names(store: &Artifacts) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&store.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn zips_unpack_into_their_digest_with_modes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Artifacts::new(&dir.path().join("data"));
    let zip = dir.path().join("f.zip");
    write_zip(
        &zip,
        &[
            ("main.py", "def handler(e, c):\n    return e\n", 0o644),
            ("bin/run", "#!/bin/sh\n", 0o755),
            ("lib/helper.py", "x = 1\n", 0o644),
            ("helper.py", "lib/helper.py", 0o120_777),
        ],
    );
    let sha = sha_of(&zip);
    let digest = store.put_zip(&zip, &sha).unwrap();
    assert_eq!(digest.as_str(), sha);
    let tree = store.path(&digest);
    assert_eq!(mode(&tree), 0o755);
    assert_eq!(mode(&store.root), 0o755);
    assert!(
        std::fs::read_to_string(tree.join("main.py"))
            .unwrap()
            .contains("handler")
    );
    assert_eq!(mode(&tree.join("bin/run")), 0o755);
    assert_eq!(mode(&tree.join("lib/helper.py")), 0o644);
    assert_eq!(
        std::fs::read_to_string(tree.join("helper.py")).unwrap(),
        "x = 1\n"
    );
    // Again: the entry is there already.
    assert_eq!(store.put_zip(&zip, &sha).unwrap(), digest);
    assert_eq!(names(&store), [sha]);

    let wrong = "0".repeat(64);
    let err = store.put_zip(&zip, &wrong).unwrap_err();
    assert!(matches!(err, ArtifactError::Mismatch { .. }), "{err}");
}

#[test]
fn zips_reaching_outside_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Artifacts::new(&dir.path().join("data"));
    let cases: [&[(&str, &str, u32)]; 4] = [
        &[("../../escaped.py", "x = 1\n", 0o644)],
        &[("ok.py", "", 0o644), ("link", "/etc", 0o120_777)],
        &[("link", "sub/../..", 0o120_777)],
        // Through a link that itself stays inside.
        &[("here", ".", 0o120_777), ("here/x.py", "x", 0o644)],
    ];
    for (i, entries) in cases.into_iter().enumerate() {
        let zip = dir.path().join(format!("{i}.zip"));
        write_zip(&zip, entries);
        let err = store.put_zip(&zip, &sha_of(&zip)).unwrap_err();
        assert!(matches!(err, ArtifactError::Escape { .. }), "{i}: {err}");
        assert_eq!(names(&store), Vec::<String>::new(), "{i}");
    }
    assert!(!dir.path().join("escaped.py").exists());
}

#[test]
fn trees_copy_with_a_digest_over_paths_modes_and_contents() {
    let dir = tempfile::tempdir().unwrap();
    let store = Artifacts::new(&dir.path().join("data"));
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("main.py"), "print(1)\n").unwrap();
    std::fs::write(src.join("lib/a.py"), "a = 1\n").unwrap();
    symlink("lib/a.py", src.join("a.py")).unwrap();
    let first = store.put_dir(&src).unwrap();
    let tree = store.path(&first);
    assert_eq!(
        std::fs::read_to_string(tree.join("a.py")).unwrap(),
        "a = 1\n"
    );
    assert!(
        std::fs::symlink_metadata(tree.join("a.py"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(store.put_dir(&src).unwrap(), first);

    set_mode(&src.join("main.py"), 0o4755).unwrap();
    let second = store.put_dir(&src).unwrap();
    assert_ne!(second, first);
    // No setuid bit in the store.
    assert_eq!(mode(&store.path(&second).join("main.py")), 0o755);
    std::fs::write(src.join("main.py"), "print(2)\n").unwrap();
    assert_ne!(store.put_dir(&src).unwrap(), second);

    symlink("../../outside", src.join("lib/out")).unwrap();
    let err = store.put_dir(&src).unwrap_err();
    assert!(matches!(err, ArtifactError::Escape { .. }), "{err}");
    assert_eq!(names(&store).len(), 3);
}

#[test]
fn install_swaps_a_symlink_and_moves_a_hand_made_directory_aside_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Artifacts::new(&dir.path().join("data"));
    let functions = dir.path().join("functions");
    let put = |text: &str| {
        let src = dir.path().join(text);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("main.py"), text).unwrap();
        store.put_dir(&src).unwrap()
    };
    let (one, two) = (put("one"), put("two"));
    let by_hand = functions.join("hello/3");
    std::fs::create_dir_all(&by_hand).unwrap();
    std::fs::write(by_hand.join("main.py"), "by hand").unwrap();

    let link = store.install(&functions, "hello", "3", &one).unwrap();
    assert_eq!(link, by_hand);
    assert_eq!(
        std::fs::read_to_string(link.join("main.py")).unwrap(),
        "one"
    );
    let target = std::fs::read_link(&link).unwrap();
    assert!(target.is_relative(), "{}", target.display());
    let aside = functions.join("hello/3.before-deployment");
    assert_eq!(
        std::fs::read_to_string(aside.join("main.py")).unwrap(),
        "by hand"
    );

    store.install(&functions, "hello", "3", &two).unwrap();
    assert_eq!(
        std::fs::read_to_string(link.join("main.py")).unwrap(),
        "two"
    );
    assert!(!functions.join("hello/3.tmp").exists());

    // A second hand-made directory does not overwrite the first.
    std::fs::remove_file(&link).unwrap();
    std::fs::create_dir(&link).unwrap();
    let err = store.install(&functions, "hello", "3", &one).unwrap_err();
    assert!(matches!(err, ArtifactError::Occupied { .. }), "{err}");

    let err = store.install(&functions, "..", "3", &one).unwrap_err();
    assert!(matches!(err, ArtifactError::Escape { .. }), "{err}");
}

#[test]
fn gc_removes_what_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Artifacts::new(&dir.path().join("data"));
    let mut digests = Vec::new();
    for text in ["a", "b", "c"] {
        let src = dir.path().join(text);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), text).unwrap();
        digests.push(store.put_dir(&src).unwrap());
    }
    std::fs::create_dir(store.root.join(".tmpLEFT")).unwrap();
    let keep: HashSet<Digest> = [digests[1].clone()].into();
    let mut gone = vec![digests[0].clone(), digests[2].clone()];
    gone.sort();
    assert_eq!(store.gc(&keep).unwrap(), gone);
    assert_eq!(names(&store), [digests[1].to_string()]);
    assert!(store.gc(&keep).unwrap().is_empty());
}

/// A gzipped tarball of `(name, contents)` at `path`; a name ending in
/// `/` is a directory, `@target` as contents a symlink.
fn write_tar_gz(path: &Path, entries: &[(&str, &str)]) {
    let gz =
        flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
    let mut w = tar::Builder::new(gz);
    for (name, contents) in entries {
        let mut h = tar::Header::new_gnu();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o700);
            h.set_size(0);
            w.append_data(&mut h, name, io::empty()).unwrap();
        } else if let Some(target) = contents.strip_prefix('@') {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            w.append_link(&mut h, name, target).unwrap();
        } else {
            h.set_mode(0o600);
            h.set_size(contents.len() as u64);
            w.append_data(&mut h, name, contents.as_bytes()).unwrap();
        }
    }
    w.into_inner().unwrap().finish().unwrap();
}

#[test]
fn models_are_unpacked_from_zips_and_tarballs_or_kept_as_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Artifacts::new(dir.path());
    let tgz = dir.path().join("model.tar.gz");
    write_tar_gz(
        &tgz,
        &[
            ("model/", ""),
            ("model/weights.bin", "0123"),
            ("labels.txt", "cat\ndog\n"),
        ],
    );
    let d = store
        .put_model(&tgz, &sha_of(&tgz), "model.tar.gz", None)
        .unwrap();
    let tree = store.path(&d);
    assert_eq!(
        std::fs::read_to_string(tree.join("model/weights.bin")).unwrap(),
        "0123"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("labels.txt")).unwrap(),
        "cat\ndog\n"
    );
    // Readable by every function's user, whatever the archive said.
    assert_eq!(mode(&tree.join("model")), 0o755);
    assert_eq!(mode(&tree.join("labels.txt")), 0o644);

    let zip = dir.path().join("m.zip");
    write_zip(&zip, &[("m.onnx", "onnx", 0o100_644)]);
    let d = store.put_model(&zip, &sha_of(&zip), "m.zip", None).unwrap();
    assert_eq!(
        std::fs::read_to_string(store.path(&d).join("m.onnx")).unwrap(),
        "onnx"
    );

    let file = dir.path().join("m.onnx");
    std::fs::write(&file, "plain").unwrap();
    let d = store
        .put_model(&file, &sha_of(&file), "m.onnx", None)
        .unwrap();
    assert_eq!(d.as_str(), sha_of(&file));
    assert_eq!(
        std::fs::read_to_string(store.path(&d).join("m.onnx")).unwrap(),
        "plain"
    );

    // A wrong hash, a link, or an entry leaving the tree keep nothing.
    let err = store
        .put_model(&file, &"a".repeat(64), "m.onnx", None)
        .unwrap_err();
    assert!(matches!(err, ArtifactError::Mismatch { .. }), "{err}");
    let bad = dir.path().join("bad.tar.gz");
    write_tar_gz(&bad, &[("link", "@/etc/passwd")]);
    let err = store
        .put_model(&bad, &sha_of(&bad), "bad.tar.gz", None)
        .unwrap_err();
    assert!(matches!(err, ArtifactError::Special { .. }), "{err}");
    assert_eq!(names(&store).len(), 3, "{:?}", names(&store));
}

#[test]
fn a_model_given_to_a_group_is_a_tree_of_its_own_that_only_the_group_reads() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Artifacts::new(dir.path());
    let tgz = dir.path().join("model.tar.gz");
    write_tar_gz(
        &tgz,
        &[
            ("weights/", ""),
            ("weights/w.bin", "01"),
            ("labels.txt", "a\n"),
        ],
    );
    let sha = sha_of(&tgz);
    let open = store.put_model(&tgz, &sha, "model.tar.gz", None).unwrap();
    // The caller's own group: a change of group it may always make.
    let gid = nix::unistd::getegid().as_raw();
    let given = store
        .put_model(&tgz, &sha, "model.tar.gz", Some(gid))
        .unwrap();
    assert_ne!(open, given);
    assert_eq!(given, Artifacts::model_key(&sha, Some(gid)).unwrap());
    let tree = store.path(&given);
    for (path, want) in [
        (tree.clone(), 0o750),
        (tree.join("weights"), 0o750),
        (tree.join("weights/w.bin"), 0o640),
        (tree.join("labels.txt"), 0o640),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);
    }
    // The tree for everyone is untouched.
    assert_eq!(mode(&store.path(&open).join("labels.txt")), 0o644);
}
