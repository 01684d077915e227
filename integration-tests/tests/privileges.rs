//! Least privilege: every daemon of a core keeps only the capabilities it
//! declares, in its effective and bounding sets (read from
//! `/proc/<pid>/status`), and says so over `GetInfo`.

use verdant_integration_tests::Core;
use verdant_proto::daemon::v1::GetInfoRequest;
use verdant_proto::daemon::v1::daemon_client::DaemonClient;

/// What each daemon declares, by the capabilities' numbers.
fn declared(service: &str) -> &'static [(u32, &'static str)] {
    match service {
        "lambda-runner" => &[
            (1, "CAP_DAC_OVERRIDE"),
            (3, "CAP_FOWNER"),
            (5, "CAP_KILL"),
            (6, "CAP_SETGID"),
            (7, "CAP_SETUID"),
            (8, "CAP_SETPCAP"),
            (21, "CAP_SYS_ADMIN"),
        ],
        // Model resources' files are given to their owner group.
        "ota-agent" => &[(0, "CAP_CHOWN")],
        // The broker's listeners are above 1024 by default.
        _ => &[],
    }
}

/// A capability set line of `/proc/<pid>/status`, e.g. `CapEff`.
fn set(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
        .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[tokio::test]
async fn every_daemon_keeps_only_the_capabilities_it_declares() {
    let core = Core::start();
    let services = core.wait_all_running().await;
    let root = nix::unistd::geteuid().is_root();
    assert_eq!(services.len(), 7, "{services:?}");
    for s in services {
        let want = declared(&s.name);
        let mask = want.iter().fold(0u64, |m, (bit, _)| m | (1 << bit));
        let effective = set(s.pid, "CapEff");
        let bounding = set(s.pid, "CapBnd");
        if root {
            assert_eq!(effective, mask, "{}: CapEff {effective:x}", s.name);
            assert_eq!(bounding, mask, "{}: CapBnd {bounding:x}", s.name);
            assert_eq!(set(s.pid, "CapPrm"), mask, "{}: CapPrm", s.name);
        } else {
            assert_eq!(effective, 0, "{}: unprivileged, nothing kept", s.name);
        }
        assert_eq!(set(s.pid, "CapInh"), 0, "{}", s.name);
        assert_eq!(set(s.pid, "CapAmb"), 0, "{}", s.name);
        let channel = verdant_common::uds::connect(&core.socket(&s.name))
            .await
            .unwrap();
        let info = DaemonClient::new(channel)
            .get_info(GetInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let names: Vec<&str> = if root {
            let mut n: Vec<&str> = want.iter().map(|(_, n)| *n).collect();
            n.sort_unstable();
            n
        } else {
            Vec::new()
        };
        assert_eq!(info.capabilities, names, "{}", s.name);
    }
}
