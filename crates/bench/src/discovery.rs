//! The discovery API under load: `clients` concurrent devices, each
//! asking again and again as a real one does (a new TCP connection, a
//! mutual-TLS handshake with its certificate, one GET, the connection
//! closed), for `seconds`; requests answered per second and latency
//! percentiles per run, medians over runs.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mqtt::percentile;
use crate::spawn;

const LIMIT: Duration = Duration::from_secs(30);
const REQUEST: &[u8] =
    b"GET /greengrass/discover/thing/sample-device HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// One device's request: its latency in µs, or why it failed.
async fn ask(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    buf: &mut Vec<u8>,
) -> Result<u64, String> {
    let t = Instant::now();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(REQUEST)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    tls.read_to_end(buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if !buf.starts_with(b"HTTP/1.1 200 OK") {
        return Err(format!(
            "answer: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(60)])
        ));
    }
    Ok(t.elapsed().as_micros() as u64)
}

/// `clients` devices asking for `seconds`: requests/s, sorted latencies
/// in µs, failures.
async fn load(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    clients: usize,
    seconds: u64,
) -> (f64, Vec<u64>, usize) {
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed, mut buf) = (Vec::new(), 0usize, Vec::new());
            while Instant::now() < end {
                match ask(&connector, port, &mut buf).await {
                    Ok(us) => lat.push(us),
                    Err(e) => {
                        if failed == 0 {
                            eprintln!("discovery request failed: {e}");
                        }
                        failed += 1;
                    }
                }
            }
            (lat, failed)
        }));
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (lat, f) = t.await.expect("a client");
        all.extend(lat);
        failed += f;
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_unstable();
    (rate, all, failed)
}

pub async fn run(bin_dir: &Path, clients: usize, seconds: u64, runs: usize) {
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let port = spawn::free_port();
    let mut core = spawn::core(
        &bin_dir,
        &root,
        &format!(
            "[broker.tls]\nbind = \"127.0.0.1:0\"\n[discovery]\nbind = \"127.0.0.1:{port}\"\n\
             [[discovery.connectivity]]\nid = \"loopback\"\nhost_address = \"127.0.0.1\"\n"
        ),
        None,
    );
    let certs = root.join("config/certs");
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the core did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let file = |name: &str| certs.join(name).display().to_string();
    let tls = crate::mqtt::device_tls(
        &file("group-ca.pem"),
        &file("devices/sample-device.pem"),
        &file("devices/sample-device.key"),
    )
    .expect("the sample device's TLS");
    let connector = tokio_rustls::TlsConnector::from(tls);
    // Warm up (and check the answer) before measuring.
    let (_, _, failed) = load(&connector, port, 4, 1).await;
    assert_eq!(failed, 0, "the discovery API does not answer 200");

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut rates, mut p50, mut p99, mut failures) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let (rate, lat, failed) = load(&connector, port, clients, seconds).await;
        rates.push(rate);
        p50.push(percentile(&lat, 50.0) as f64 / 1000.0);
        p99.push(percentile(&lat, 99.0) as f64 / 1000.0);
        failures += failed;
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.0}–{hi:.0}")
    };
    println!("| figure | median of {runs} runs | range |\n|---|---|---|");
    println!(
        "| discovery requests/s, {clients} concurrent devices, mutual TLS, one request per connection | {:.0} | {} |",
        median(rates.clone()),
        spread(&rates)
    );
    println!(
        "| latency p50, ms (connect + handshake + answer) | {:.1} | {} |",
        median(p50.clone()),
        spread(&p50)
    );
    println!(
        "| latency p99, ms | {:.1} | {} |",
        median(p99.clone()),
        spread(&p99)
    );
    println!("| failed requests | {failures} | |");
    spawn::stop(&mut core);
}
