//! The deployed group: [`model`] in Greengrass's JSON shapes, loaded and
//! validated once here so every daemon sees the same, checked group.
//! Every error names the JSON path and the reason, e.g.
//! `SubscriptionDefinitionVersion.Subscriptions[3].Target: unknown function arn:...`.

pub mod connectors;
pub mod model;
pub mod revoked;
pub mod routes;
mod validate;

use std::path::{Path, PathBuf};

pub use model::*;
pub use validate::{Problem, RouteEnd, topic_filter_problem};

/// Why a group file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {}", path.display(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl Group {
    /// Reads and validates a group file.
    pub fn load(path: &Path) -> Result<Group, GroupError> {
        let text = std::fs::read(path).map_err(|source| GroupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Group::parse(&text).map_err(|problems| GroupError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates group JSON.
    pub fn parse(json: &[u8]) -> Result<Group, Vec<Problem>> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let group: Group = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            vec![Problem::new(
                if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                e.into_inner().to_string(),
            )]
        })?;
        let problems = validate::validate(&group);
        if problems.is_empty() {
            Ok(group)
        } else {
            Err(problems)
        }
    }

    /// The group's one core.
    pub fn core(&self) -> &Thing {
        &self.core_definition_version.cores[0]
    }

    /// A core or device of this group by thing name.
    pub fn thing(&self, name: &str) -> Option<&Thing> {
        self.core_definition_version
            .cores
            .iter()
            .chain(&self.device_definition_version.devices)
            .find(|t| t.thing_name() == name)
    }

    /// The group's core, one device and routes between them, the shadow
    /// service and the cloud: what a first start deploys.
    pub fn sample(core: &Thing, device: &Thing) -> Group {
        let dev = device.thing_arn.clone();
        let name = device.thing_name().to_string();
        let sub = |id: &str, source: &str, subject: String, target: &str| Subscription {
            id: id.into(),
            source: source.into(),
            subject,
            target: target.into(),
        };
        Group {
            id: "verdant-dev-group".into(),
            name: Some("Verdant development group".into()),
            version: Some("1".into()),
            core_definition_version: CoreDefinition {
                cores: vec![core.clone()],
            },
            device_definition_version: DeviceDefinition {
                devices: vec![device.clone()],
            },
            function_definition_version: FunctionDefinition {
                default_config: Some(FunctionDefaultConfig {
                    execution: Some(Execution {
                        isolation_mode: Some(IsolationMode::GreengrassContainer),
                        run_as: None,
                    }),
                }),
                functions: Vec::new(),
            },
            subscription_definition_version: SubscriptionDefinition {
                subscriptions: vec![
                    sub("device-to-device", &dev, format!("{name}/local/#"), &dev),
                    sub(
                        "device-to-cloud",
                        &dev,
                        format!("{name}/telemetry/#"),
                        "cloud",
                    ),
                    sub(
                        "cloud-to-device",
                        "cloud",
                        format!("{name}/commands/#"),
                        &dev,
                    ),
                    sub(
                        "device-to-shadow",
                        &dev,
                        format!("$aws/things/{name}/shadow/#"),
                        "GGShadowService",
                    ),
                    sub(
                        "shadow-to-device",
                        "GGShadowService",
                        format!("$aws/things/{name}/shadow/#"),
                        &dev,
                    ),
                ],
            },
            logger_definition_version: LoggerDefinition {
                loggers: vec![Logger {
                    id: "system".into(),
                    component: LoggerComponent::GreengrassSystem,
                    level: LoggerLevel::Info,
                    kind: LoggerType::FileSystem,
                    space: Some(25_600),
                }],
            },
            resource_definition_version: ResourceDefinition::default(),
            connector_definition_version: ConnectorDefinition::default(),
            artifacts: Vec::new(),
        }
    }
}

/// The AWS IoT certificate id of a certificate: the SHA-256 of its DER, as
/// lowercase hex. A thing's `CertificateArn` ends in it.
pub fn certificate_id(der: &[u8]) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    sha2::Sha256::digest(der)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

impl Thing {
    /// The thing name: the part of the ARN after `thing/`.
    pub fn thing_name(&self) -> &str {
        self.thing_arn.rsplit_once("thing/").map_or("", |(_, n)| n)
    }

    /// The certificate id: the SHA-256 of the certificate's DER, hex.
    pub fn certificate_id(&self) -> &str {
        self.certificate_arn
            .rsplit_once("cert/")
            .map_or("", |(_, n)| n)
    }

    /// The thing `name` with the certificate `certificate_id`, in the same
    /// partition, region and account as this one (a device of a core).
    pub fn sibling(&self, name: &str, certificate_id: &str) -> Thing {
        let prefix = self
            .thing_arn
            .rsplit_once("thing/")
            .map_or(self.thing_arn.as_str(), |(p, _)| p);
        Thing {
            id: name.to_string(),
            thing_arn: format!("{prefix}thing/{name}"),
            certificate_arn: format!("{prefix}cert/{certificate_id}"),
            sync_shadow: false,
        }
    }
}

impl Group {
    /// The model resource `id` of this group (S3 or SageMaker).
    pub fn model(&self, id: &str) -> Option<&ModelResourceData> {
        let r = self
            .resource_definition_version
            .resources
            .iter()
            .find(|r| r.id == id)?;
        let data = &r.resource_data_container;
        data.s3_machine_learning_model_resource_data
            .as_ref()
            .or(data
                .sage_maker_machine_learning_model_resource_data
                .as_ref())
    }

    /// Where artifact `a` is fetched from: its `Url`, else, for a model,
    /// its `S3Uri` as a URL ([`s3_url`]).
    pub fn artifact_url(&self, a: &Artifact) -> Option<String> {
        if let Some(url) = &a.url {
            return Some(url.clone());
        }
        let model = self.model(a.resource_id.as_deref()?)?;
        s3_url(model.s3_uri.as_deref()?)
    }
}

/// An `S3Uri` as a URL the core can fetch: an `https://` or `file:///`
/// URL as it is, and `s3://<bucket>/<key>` as the object's address,
/// `https://<bucket>.s3.amazonaws.com/<key>` (path-style,
/// `https://s3.amazonaws.com/<bucket>/<key>`, for a bucket with dots,
/// which the wildcard certificate does not cover), the key's reserved
/// characters percent-encoded. A public object; a private one needs a
/// presigned `Url` in the artifact instead.
pub fn s3_url(uri: &str) -> Option<String> {
    use std::fmt::Write;
    if uri.starts_with("https://") || uri.starts_with("file:///") {
        return Some(uri.to_string());
    }
    let (bucket, key) = uri.strip_prefix("s3://")?.split_once('/')?;
    if bucket.is_empty() || key.is_empty() {
        return None;
    }
    let key = key.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    });
    Some(if bucket.contains('.') {
        format!("https://s3.amazonaws.com/{bucket}/{key}")
    } else {
        format!("https://{bucket}.s3.amazonaws.com/{key}")
    })
}
