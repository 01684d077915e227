//! The broker's part of checking a group before it is deployed: a device
//! whose certificate the core holds (`config/certs/devices/<thing>.pem`,
//! as `verdantctl device add` writes it) must be the one the group names
//! and be signed by the group CA, or it could not connect.

use std::path::Path;

use verdant_group::Group;

use crate::identity::Tls;

/// Each problem as (JSON path, why); none when the devices could connect.
pub fn check_group(
    group_json: &[u8],
    devices_dir: &Path,
    tls: Option<&Tls>,
) -> Vec<(String, String)> {
    let group = match Group::parse(group_json) {
        Ok(g) => g,
        Err(problems) => return problems.into_iter().map(|p| (p.path, p.reason)).collect(),
    };
    let mut problems = Vec::new();
    for (i, device) in group.device_definition_version.devices.iter().enumerate() {
        let file = devices_dir.join(format!("{}.pem", device.thing_name()));
        if !file.is_file() {
            continue;
        }
        let path = format!("DeviceDefinitionVersion.Devices[{i}].CertificateArn");
        let chain = match verdant_common::pem::certificates(&file) {
            Ok(chain) => chain,
            Err(e) => {
                problems.push((path, format!("cannot read {}: {e}", file.display())));
                continue;
            }
        };
        let id = verdant_group::certificate_id(chain[0].as_ref());
        if id != device.certificate_id() {
            problems.push((
                path.clone(),
                format!(
                    "{} holds certificate {id}, not {}: the device could not connect",
                    file.display(),
                    device.certificate_id()
                ),
            ));
        }
        if let Some(why) = tls
            .and_then(|t| t.presented(&chain))
            .and_then(|p| p.chain_error)
        {
            problems.push((
                path,
                format!("{} is not signed by the group CA: {why}", file.display()),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_certificate_on_the_core_must_be_the_one_the_group_names() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["d".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("d.pem"), cert.pem()).unwrap();
        let id = verdant_group::certificate_id(cert.der());
        let group = |cert_id: &str| {
            serde_json::json!({
                "Id": "g",
                "CoreDefinitionVersion": { "Cores": [{ "Id": "c",
                    "ThingArn": "arn:aws:iot:us-east-1:123456789012:thing/c",
                    "CertificateArn": format!("arn:aws:iot:us-east-1:123456789012:cert/{}", "0".repeat(64)) }] },
                "DeviceDefinitionVersion": { "Devices": [
                    { "Id": "other", "ThingArn": "arn:aws:iot:us-east-1:123456789012:thing/other",
                      "CertificateArn": format!("arn:aws:iot:us-east-1:123456789012:cert/{}", "1".repeat(64)) },
                    { "Id": "d", "ThingArn": "arn:aws:iot:us-east-1:123456789012:thing/d",
                      "CertificateArn": format!("arn:aws:iot:us-east-1:123456789012:cert/{cert_id}") }] },
            })
            .to_string()
        };
        assert!(check_group(group(&id).as_bytes(), dir.path(), None).is_empty());
        let problems = check_group(group(&"2".repeat(64)).as_bytes(), dir.path(), None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].0,
            "DeviceDefinitionVersion.Devices[1].CertificateArn"
        );
        assert!(problems[0].1.contains(&id), "{problems:?}");
    }
}
