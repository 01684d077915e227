//! The connectors a Verdant release ships: packaged integrations a group
//! enables by `ConnectorArn` and `Parameters` instead of writing a
//! function (docs/connectors.md). Each has a name, the versions this
//! release carries and a parameter schema; a deployment's parameters are
//! checked against it here, so a wrong one fails the deployment with its
//! JSON path before anything runs.

use crate::model::Group;
use crate::validate::Problem;

/// What a parameter's value (always a string in the group) must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any text, `min` characters at least.
    Text { min: usize },
    /// A decimal integer in `min..=max`.
    Integer { min: i64, max: i64 },
    /// `true` or `false`.
    Boolean,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// The Id of a local device resource of the group.
    DeviceResource,
    /// An MQTT topic to publish on (no wildcards).
    Topic,
    /// `host:port`.
    Address,
}

impl Kind {
    /// How the schema names the kind (`verdantctl connectors list`).
    pub fn describe(&self) -> String {
        match self {
            Kind::Text { .. } => "string".into(),
            Kind::Integer { min, max } => format!("integer {min}..{max}"),
            Kind::Boolean => "boolean".into(),
            Kind::OneOf(words) => words.join(" | "),
            Kind::DeviceResource => "device resource id".into(),
            Kind::Topic => "topic".into(),
            Kind::Address => "host:port".into(),
        }
    }
}

/// One parameter of a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameter {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// What an absent optional parameter means, given to the connector.
    pub default: Option<&'static str>,
    pub description: &'static str,
}

/// A connector this release ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connector {
    /// As in its ARN: `arn:aws:greengrass:<region>::/connectors/<name>/versions/<n>`.
    pub name: &'static str,
    /// The program of the `verdant` executable that runs it
    /// (`verdant connector <program>`).
    pub program: &'static str,
    /// The versions a group may name: each runs this release's code with
    /// the same parameters.
    pub versions: &'static [u32],
    pub description: &'static str,
    pub parameters: &'static [Parameter],
    /// Whether the group may choose `IsolationMode` (else it runs as a
    /// plain process: it needs the host's view, as the metrics do).
    pub containable: bool,
}

const fn param(
    name: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    description: &'static str,
) -> Parameter {
    Parameter {
        name,
        kind,
        required: default.is_none(),
        default,
        description,
    }
}

const fn optional(name: &'static str, kind: Kind, description: &'static str) -> Parameter {
    Parameter {
        name,
        kind,
        required: false,
        default: None,
        description,
    }
}

/// `IsolationMode` of connectors that may run in a container.
const ISOLATION: Parameter = Parameter {
    name: "IsolationMode",
    kind: Kind::OneOf(&["GreengrassContainer", "NoContainer"]),
    required: false,
    default: Some("GreengrassContainer"),
    description: "run in a Greengrass container (the serial device bound into it), as \
                  Greengrass does, or as a plain process",
};

/// Every connector of this release.
pub const CATALOG: &[Connector] = &[
    Connector {
        name: "ModbusRTUProtocolAdapter",
        program: "modbus",
        versions: &[1, 2, 3],
        description: "Modbus requests from functions on modbus/adapter/request, sent to devices \
                      over a serial line (RTU) or Modbus TCP; answers on modbus/adapter/response",
        parameters: &[
            optional(
                "ModbusSerialPort-ResourceId",
                Kind::DeviceResource,
                "the local device resource of the serial port (required unless ModbusTcpAddress)",
            ),
            optional(
                "ModbusSerialPort",
                Kind::Text { min: 1 },
                "the serial port's path, e.g. /dev/ttyS2 (required unless ModbusTcpAddress)",
            ),
            ISOLATION,
            param(
                "ModbusBaudRate",
                Kind::Integer {
                    min: 1200,
                    max: 921_600,
                },
                Some("9600"),
                "the serial line's speed (8 data bits, no parity, 1 stop bit)",
            ),
            optional(
                "ModbusTcpAddress",
                Kind::Address,
                "a Modbus TCP server instead of the serial line, e.g. 192.168.1.20:502",
            ),
            param(
                "ModbusTimeoutMs",
                Kind::Integer {
                    min: 10,
                    max: 60_000,
                },
                Some("1000"),
                "how long a request waits for the device's answer",
            ),
        ],
        containable: true,
    },
    Connector {
        name: "DeviceMetrics",
        program: "metrics",
        versions: &[1],
        description: "the core's CPU, memory, disk, network and per-daemon process figures, as \
                      JSON on a topic at an interval",
        parameters: &[
            param(
                "PublishInterval",
                Kind::Integer {
                    min: 1,
                    max: 86_400,
                },
                Some("60"),
                "seconds between two publications",
            ),
            param(
                "PublishTopic",
                Kind::Topic,
                Some("verdant/metrics"),
                "where the figures are published (route it with a subscription whose Source is \
                 the connector's ARN)",
            ),
            param(
                "DiskPaths",
                Kind::Text { min: 1 },
                Some("/"),
                "comma-separated paths whose file systems are reported",
            ),
        ],
        containable: false,
    },
];

/// The connector and version `arn` names:
/// `arn:aws:greengrass:<region>::/connectors/<name>/versions/<n>`.
pub fn find(arn: &str) -> Result<(&'static Connector, u32), String> {
    let shape = || {
        format!(
            "`{arn}` is not a connector ARN \
             (arn:aws:greengrass:<region>::/connectors/<name>/versions/<version>)"
        )
    };
    let rest = arn.strip_prefix("arn:").ok_or_else(shape)?;
    let (partition, rest) = rest.split_once(':').ok_or_else(shape)?;
    let rest = rest.strip_prefix("greengrass:").ok_or_else(shape)?;
    let (_region, rest) = rest.split_once(':').ok_or_else(shape)?;
    let path = rest.strip_prefix(":/connectors/").ok_or_else(shape)?;
    let (name, version) = path.split_once("/versions/").ok_or_else(shape)?;
    if !partition.starts_with("aws") {
        return Err(shape());
    }
    let version: u32 = version.parse().map_err(|_| shape())?;
    let Some(connector) = CATALOG.iter().find(|c| c.name == name) else {
        let known: Vec<&str> = CATALOG.iter().map(|c| c.name).collect();
        return Err(format!(
            "no connector `{name}` in this release (it has: {})",
            known.join(", ")
        ));
    };
    if !connector.versions.contains(&version) {
        return Err(format!(
            "connector {name} has no version {version} in this release (it has: {})",
            connector
                .versions
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok((connector, version))
}

impl Connector {
    /// The parameters the connector runs with: the group's, and the
    /// defaults of those it left out.
    pub fn effective(
        &self,
        given: &std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String> {
        let mut out = given.clone();
        for p in self.parameters {
            if let (Some(d), false) = (p.default, out.contains_key(p.name)) {
                out.insert(p.name.into(), d.into());
            }
        }
        out
    }
}

/// Why `value` is not a `kind`, if it is not.
fn value_problem(kind: Kind, value: &str, group: &Group) -> Option<String> {
    match kind {
        Kind::Text { .. } if value.contains('\0') => Some("contains a NUL character".into()),
        Kind::Text { min } => {
            (value.chars().count() < min).then(|| format!("must be at least {min} character(s)"))
        }
        Kind::Integer { min, max } => match value.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => None,
            Ok(n) => Some(format!("{n} is out of range {min}..{max}")),
            Err(_) => Some(format!("`{value}` is not an integer")),
        },
        Kind::Boolean => {
            (!matches!(value, "true" | "false")).then(|| format!("`{value}` is not true or false"))
        }
        Kind::OneOf(words) => (!words.contains(&value))
            .then(|| format!("`{value}` is not one of {}", words.join(", "))),
        Kind::DeviceResource => {
            let found = group
                .resource_definition_version
                .resources
                .iter()
                .find(|r| r.id == value);
            match found {
                None => Some(format!("no resource `{value}` in this group")),
                Some(r)
                    if r.resource_data_container
                        .local_device_resource_data
                        .is_none() =>
                {
                    Some(format!("resource `{value}` is not a local device resource"))
                }
                Some(_) => None,
            }
        }
        Kind::Topic => {
            if value.is_empty() || value.contains(['+', '#', '\0']) {
                Some(format!("`{value}` is not a topic to publish on"))
            } else {
                None
            }
        }
        Kind::Address => match value.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                None
            }
            _ => Some(format!("`{value}` is not host:port")),
        },
    }
}

/// The problems of the group's connectors: known ARNs, each connector
/// once (in one version), parameters as their schema says.
pub(crate) fn check(group: &Group, out: &mut Vec<Problem>) {
    let at = "ConnectorDefinitionVersion.Connectors";
    let mut seen = std::collections::HashMap::new();
    for (i, c) in group
        .connector_definition_version
        .connectors
        .iter()
        .enumerate()
    {
        let here = format!("{at}[{i}]");
        let (connector, version) = match find(&c.connector_arn) {
            Ok(found) => found,
            Err(why) => {
                out.push(Problem::new(format!("{here}.ConnectorArn"), why));
                continue;
            }
        };
        if let Some(first) = seen.insert(connector.name, i) {
            out.push(Problem::new(
                format!("{here}.ConnectorArn"),
                format!(
                    "connector {} is in the group already (Connectors[{first}]): a group \
                     runs one version of each",
                    connector.name
                ),
            ));
        }
        let schema = connector.parameters;
        for (name, value) in &c.parameters {
            let path = format!("{here}.Parameters.{name}");
            match schema.iter().find(|p| p.name == name) {
                None => out.push(Problem::new(
                    path,
                    format!(
                        "{} version {version} takes no such parameter (it takes: {})",
                        connector.name,
                        schema.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                    ),
                )),
                Some(p) => {
                    if let Some(why) = value_problem(p.kind, value, group) {
                        out.push(Problem::new(path, why));
                    }
                }
            }
        }
        for p in schema.iter().filter(|p| p.required) {
            if !c.parameters.contains_key(p.name) {
                out.push(Problem::new(
                    format!("{here}.Parameters.{}", p.name),
                    "required",
                ));
            }
        }
        if connector.program == "modbus" && !c.parameters.contains_key("ModbusTcpAddress") {
            serial_line(group, c, &here, out);
        }
    }
}

/// A serial Modbus line needs its port and the device resource of that
/// port (bound into the connector's container at its `SourcePath`).
fn serial_line(group: &Group, c: &crate::model::Connector, here: &str, out: &mut Vec<Problem>) {
    for name in ["ModbusSerialPort-ResourceId", "ModbusSerialPort"] {
        if !c.parameters.contains_key(name) {
            out.push(Problem::new(
                format!("{here}.Parameters.{name}"),
                "required for a serial line (or set ModbusTcpAddress)",
            ));
        }
    }
    let (Some(id), Some(port)) = (
        c.parameters.get("ModbusSerialPort-ResourceId"),
        c.parameters.get("ModbusSerialPort"),
    ) else {
        return;
    };
    let source = group
        .resource_definition_version
        .resources
        .iter()
        .find(|r| &r.id == id)
        .and_then(|r| {
            r.resource_data_container
                .local_device_resource_data
                .as_ref()
        })
        .map(|d| d.source_path.as_str());
    if let Some(source) = source
        && source != port
    {
        out.push(Problem::new(
            format!("{here}.Parameters.ModbusSerialPort"),
            format!("`{port}` is not the SourcePath of resource `{id}` (`{source}`)"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_name_a_connector_and_version_of_the_catalog() {
        let (c, v) =
            find("arn:aws:greengrass:eu-west-1::/connectors/ModbusRTUProtocolAdapter/versions/3")
                .unwrap();
        assert_eq!((c.name, v), ("ModbusRTUProtocolAdapter", 3));
        let err = find("arn:aws:greengrass:r::/connectors/Nope/versions/1").unwrap_err();
        assert!(err.contains("no connector `Nope`"), "{err}");
        assert!(err.contains("DeviceMetrics"), "{err}");
        let err = find("arn:aws:greengrass:r::/connectors/DeviceMetrics/versions/9").unwrap_err();
        assert!(err.contains("no version 9"), "{err}");
        let err = find("arn:aws:lambda:r:1:function:x:1").unwrap_err();
        assert!(err.contains("not a connector ARN"), "{err}");
    }

    #[test]
    fn defaults_fill_what_the_group_left_out() {
        let (c, v) = find("arn:aws:greengrass:r::/connectors/DeviceMetrics/versions/1").unwrap();
        let given = [("PublishInterval".to_string(), "5".to_string())].into();
        assert_eq!(v, 1);
        let got = c.effective(&given);
        assert_eq!(got["PublishInterval"], "5");
        assert_eq!(got["PublishTopic"], "verdant/metrics");
    }
}
