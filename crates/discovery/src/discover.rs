//! The answer to `GET /greengrass/discover/thing/<thingName>`, as AWS's
//! discovery API gives it and the real SDKs parse it: the group the asking
//! device is in, its core's connectivity and the group CA. Only a device
//! of the deployed group, presenting the certificate the group names for
//! it, gets it.

use std::collections::HashSet;

use serde_json::json;
use verdant_group::Group;

/// One way to reach the core's broker, as devices get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub host_address: String,
    pub port_number: u16,
    pub metadata: String,
    /// No port was set: it is the broker's device port.
    pub port_from_broker: bool,
}

/// A status code, its reason phrase (the v1 SDK needs one) and the JSON body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

fn error(status: u16, message: &str) -> Answer {
    Answer {
        status,
        body: json!({ "errorMessage": message }).to_string(),
    }
}

const PREFIX: &str = "/greengrass/discover/thing/";

/// The answer for `path`, asked by a client presenting `certificate_id`
/// (the SHA-256 of its certificate), with `group` deployed.
pub fn answer(
    path: &str,
    certificate_id: &str,
    revoked: &HashSet<String>,
    group: &Group,
    connectivity: &[Entry],
    cas: &[String],
) -> Answer {
    let Some(thing) = path.strip_prefix(PREFIX) else {
        return error(404, "no such resource");
    };
    if thing.is_empty() || thing.contains('/') || thing.len() > 128 {
        return error(400, "a thing name is 1 to 128 characters, without '/'");
    }
    if revoked.contains(certificate_id) {
        return error(401, "the certificate presented is revoked on this core");
    }
    let Some(device) = group
        .device_definition_version
        .devices
        .iter()
        .find(|d| d.thing_name() == thing)
    else {
        return error(404, &format!("thing {thing} is in no group of this core"));
    };
    if device.certificate_id() != certificate_id {
        return error(
            401,
            &format!("the certificate presented is not the one of thing {thing}"),
        );
    }
    let core = group.core();
    let connectivity: Vec<_> = connectivity
        .iter()
        .map(|c| {
            json!({ "Id": c.id, "HostAddress": c.host_address,
                    "PortNumber": c.port_number, "Metadata": c.metadata })
        })
        .collect();
    let body = json!({ "GGGroups": [{
        "GGGroupId": group.id,
        "Cores": [{ "thingArn": core.thing_arn, "Connectivity": connectivity }],
        "CAs": cas,
    }]});
    Answer {
        status: 200,
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Group {
        let thing = |name: &str, n: u8| {
            json!({ "Id": name, "ThingArn": format!("arn:aws:iot:us-east-1:123456789012:thing/{name}"),
                    "CertificateArn": format!("arn:aws:iot:us-east-1:123456789012:cert/{}", format!("{n:02x}").repeat(32)) })
        };
        let g = json!({ "Id": "g1", "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
                        "DeviceDefinitionVersion": { "Devices": [thing("dev", 2)] } });
        Group::parse(g.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_device_of_the_group_gets_its_core_and_ca_in_the_real_shape() {
        let entries = [Entry {
            id: "lan".into(),
            host_address: "192.168.1.5".into(),
            port_number: 8883,
            metadata: String::new(),
            port_from_broker: false,
        }];
        let a = answer(
            "/greengrass/discover/thing/dev",
            &"02".repeat(32),
            &HashSet::new(),
            &group(),
            &entries,
            &["PEM".to_string()],
        );
        assert_eq!(a.status, 200);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        let g = &v["GGGroups"][0];
        assert_eq!(g["GGGroupId"], "g1");
        assert_eq!(g["CAs"][0], "PEM");
        let core = &g["Cores"][0];
        assert_eq!(
            core["thingArn"],
            "arn:aws:iot:us-east-1:123456789012:thing/core"
        );
        assert_eq!(core["Connectivity"][0]["PortNumber"], 8883, "an integer");
        assert_eq!(core["Connectivity"][0]["HostAddress"], "192.168.1.5");
    }

    #[test]
    fn strangers_and_impostors_are_refused() {
        let g = group();
        let none = HashSet::new();
        let ask = |path: &str, id: &str| answer(path, id, &none, &g, &[], &[]).status;
        assert_eq!(
            ask("/greengrass/discover/thing/nobody", &"02".repeat(32)),
            404
        );
        assert_eq!(ask("/greengrass/discover/thing/dev", &"03".repeat(32)), 401);
        assert_eq!(ask("/greengrass/discover/thing/", &"02".repeat(32)), 400);
        assert_eq!(ask("/elsewhere", &"02".repeat(32)), 404);
        let revoked = HashSet::from(["02".repeat(32)]);
        let a = answer(
            "/greengrass/discover/thing/dev",
            &"02".repeat(32),
            &revoked,
            &g,
            &[],
            &[],
        );
        assert_eq!(a.status, 401, "revoked");
    }
}
