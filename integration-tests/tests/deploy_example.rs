//! `deploy/50-site.toml`, the example production drop-in, is a
//! configuration every daemon accepts: a core with it (and the
//! certificates it names) starts whole.

use std::path::Path;

use verdant_integration_tests::{Core, Options};

/// Over the example: this core's ports, and a cloud on loopback that
/// answers nothing (tests reach nothing but 127.0.0.1).
const LOCAL: &str = "[broker.tls]\nbind = \"127.0.0.1:0\"\n\
                     [router.cloud]\nendpoint = \"127.0.0.1\"\nport = 9\n";

/// The example, and stand-ins for the certificates it names beside the
/// development ones a first start makes.
fn install_example(root: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/50-site.toml");
    std::fs::copy(example, root.join("config/config.d/40-site.toml")).unwrap();
    let certs = root.join("config/certs");
    std::fs::create_dir_all(&certs).unwrap();
    let cloud = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(certs.join("cloud-ca.pem"), cloud.cert.pem()).unwrap();
    let core = rcgen::generate_simple_self_signed(vec!["line3-core".into()]).unwrap();
    std::fs::write(certs.join("aws-core.pem"), core.cert.pem()).unwrap();
    std::fs::write(certs.join("aws-core.key"), core.signing_key.serialize_pem()).unwrap();
}

#[tokio::test]
async fn the_example_production_drop_in_starts_a_whole_core() {
    let core = Core::start_with(&Options {
        dropin: Some(LOCAL),
        prepare: Some(&install_example),
        ..Options::default()
    });
    let list = core.wait_all_running().await;
    let router = list.iter().find(|s| s.name == "router").unwrap();
    assert!(router.note.contains("cloud 127.0.0.1:9"), "{router:?}");
}
