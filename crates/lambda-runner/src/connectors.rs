//! The group's connectors as the lambda-runner runs them: each a pinned
//! function whose code is a program of the `verdant` executable
//! (`verdant connector <program>`), whose ARN is its `ConnectorArn` (so
//! routes reach it and its publishes come from it), and whose parameters,
//! defaults filled in, are its environment variables.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use verdant_group::{Group, Permission, ResourceAccessPolicy, connectors};

use crate::function::{Dirs, Fingerprint, Runtime, Spec};
use crate::resources::Grants;

/// Memory of a connector's container (KB): the programs are small.
const MEMORY_KB: u32 = 65_536;
/// Per request of a connector that does not say.
const TIMEOUT: Duration = Duration::from_mins(1);

/// How long one request may take: a Modbus request opens the line and
/// waits for the device, each within `ModbusTimeoutMs`, then publishes.
fn timeout(variables: &BTreeMap<String, String>) -> Duration {
    variables
        .get("ModbusTimeoutMs")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map_or(TIMEOUT, |ms| Duration::from_millis(2 * ms + 5_000))
}

/// The specs of the group's connectors, in the group's order, running as
/// `identity`. One that cannot run here gets `Runtime::Unavailable` with
/// the reason.
pub fn specs(
    group: &Group,
    dirs: &Dirs,
    identity: (u32, u32),
    containers: &Result<(), String>,
) -> Vec<Spec> {
    let (dir, program) = match (dirs.exe.parent(), dirs.exe.file_name()) {
        (Some(d), Some(p)) if dirs.exe.is_absolute() => {
            (d.to_path_buf(), p.to_string_lossy().into_owned())
        }
        _ => (dirs.exe.clone(), String::new()),
    };
    let fingerprint = Fingerprint::of(&dirs.exe);
    group
        .connector_definition_version
        .connectors
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let at = format!("ConnectorDefinitionVersion.Connectors[{i}]");
            // The group was validated: the ARN names a connector here.
            let (connector, version) = connectors::find(&c.connector_arn).ok()?;
            let mut variables = connector.effective(&c.parameters);
            let container = connector.containable
                && variables.get("IsolationMode").map(String::as_str) != Some("NoContainer");
            let mut runtime = if program.is_empty() {
                Runtime::Unavailable(format!(
                    "{at}: the verdant executable's path is not known (/proc/self/exe)"
                ))
            } else {
                Runtime::Executable {
                    program: program.clone(),
                    args: vec!["connector".into(), connector.program.into()],
                }
            };
            let grants = serial_port(group, &variables, container, &at).unwrap_or_else(|why| {
                runtime = Runtime::Unavailable(why);
                Grants::default()
            });
            if let (true, Err(why)) = (container, containers) {
                runtime = Runtime::Unavailable(format!(
                    "{at}.Parameters.IsolationMode: GreengrassContainer (the default) needs {why}; \
                     set NoContainer"
                ));
            }
            if connector.program == "metrics" {
                variables.insert("VERDANT_CORE_PID".into(), core_pid().to_string());
            }
            let timeout = timeout(&variables);
            Some(Spec {
                arn: c.connector_arn.clone(),
                name: connector.name.to_string(),
                version: version.to_string(),
                dir: dir.clone(),
                fingerprint,
                runtime,
                pinned: true,
                timeout,
                memory_kb: MEMORY_KB,
                binary: false,
                variables,
                uid: identity.0,
                gid: identity.1,
                container,
                grants,
                access_sysfs: false,
            })
        })
        .collect()
}

/// A container connector's serial port (`ModbusSerialPort-ResourceId`),
/// bound read-write with its owner group, as Greengrass grants it.
fn serial_port(
    group: &Group,
    variables: &BTreeMap<String, String>,
    container: bool,
    at: &str,
) -> Result<Grants, String> {
    let Some(id) = variables.get("ModbusSerialPort-ResourceId") else {
        return Ok(Grants::default());
    };
    if !container || variables.contains_key("ModbusTcpAddress") {
        return Ok(Grants::default());
    }
    let policy = ResourceAccessPolicy {
        resource_id: id.clone(),
        permission: Some(Permission::Rw),
    };
    crate::resources::grants(group, &[policy], "", &|_| PathBuf::new()).map_err(|why| {
        let why = why.split_once(": ").map_or(why.as_str(), |(_, w)| w);
        format!("{at}.Parameters.ModbusSerialPort-ResourceId: {why}")
    })
}

/// The core's supervisor (the lambda-runner's parent when it started),
/// whose daemons the metrics connector reports (`VERDANT_CORE_PID`).
fn core_pid() -> i32 {
    static PID: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *PID.get_or_init(|| nix::unistd::getppid().as_raw())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const METRICS: &str = "arn:aws:greengrass:r::/connectors/DeviceMetrics/versions/1";
    const MODBUS: &str = "arn:aws:greengrass:r::/connectors/ModbusRTUProtocolAdapter/versions/2";

    fn dirs(dir: &Path) -> Dirs {
        let exe = dir.join("verdant");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        Dirs {
            functions: dir.join("functions"),
            unpacked: dir.join("unpacked"),
            models: dir.join("models"),
            staged: std::collections::HashMap::new(),
            exe,
        }
    }

    #[test]
    fn a_connector_is_a_pinned_program_of_this_executable_with_its_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = crate::function::test_group();
        g.connector_definition_version = serde_json::from_value(serde_json::json!({
            "Connectors": [
                { "Id": "m", "ConnectorArn": METRICS, "Parameters": { "PublishInterval": "5" } },
                { "Id": "b", "ConnectorArn": MODBUS,
                  "Parameters": { "ModbusTcpAddress": "127.0.0.1:502" } },
            ]
        }))
        .unwrap();
        let specs = specs(&g, &dirs(dir.path()), (65534, 65534), &Ok(()));
        let m = &specs[0];
        assert_eq!(
            (m.arn.as_str(), m.name.as_str()),
            (METRICS, "DeviceMetrics")
        );
        assert_eq!(
            m.runtime,
            Runtime::Executable {
                program: "verdant".into(),
                args: vec!["connector".into(), "metrics".into()]
            }
        );
        assert!(m.pinned && !m.container, "the metrics see the host");
        assert_eq!(m.variables["PublishInterval"], "5");
        assert_eq!(m.variables["PublishTopic"], "verdant/metrics");
        assert_eq!(m.dir, dir.path());
        let b = &specs[1];
        assert!(b.container, "Modbus runs in a container unless told");
        assert_eq!(b.variables["ModbusBaudRate"], "9600");
        let none = specs_without_containers(&g, dir.path());
        assert!(
            matches!(&none[1].runtime, Runtime::Unavailable(why) if why.contains("IsolationMode")),
            "{:?}",
            none[1].runtime
        );
    }

    fn specs_without_containers(g: &Group, dir: &Path) -> Vec<Spec> {
        specs(g, &dirs(dir), (65534, 65534), &Err("root".into()))
    }
}
