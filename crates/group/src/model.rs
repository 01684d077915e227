//! The group definition, in the JSON shapes of the Greengrass API
//! (2017-06-07). Each `*DefinitionVersion` key holds exactly what
//! `aws greengrass get-*-definition-version` returns under `Definition`, so
//! an existing group can be brought over by pasting those objects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole group as deployed to a core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Group {
    /// The group id (`GGGroupId` in discovery).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The group version this file is, as the deployment named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub core_definition_version: CoreDefinition,
    #[serde(default)]
    pub device_definition_version: DeviceDefinition,
    #[serde(default)]
    pub function_definition_version: FunctionDefinition,
    #[serde(default)]
    pub subscription_definition_version: SubscriptionDefinition,
    #[serde(default)]
    pub logger_definition_version: LoggerDefinition,
    #[serde(default)]
    pub resource_definition_version: ResourceDefinition,
    #[serde(default)]
    pub connector_definition_version: ConnectorDefinition,
    /// Function code the core fetches by URL when the group is deployed.
    /// Verdant's own key: Greengrass names code by Lambda version instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}

/// What the core downloads for a deployment, with its SHA-256: a
/// function's code (a zip of it, what the lambda-runner takes as
/// `functions/<name>/<version>.zip`), or a machine learning model resource
/// (a zip, a tar.gz, or a single file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Artifact {
    /// The qualified ARN of a function of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_arn: Option<String>,
    /// Or the Id of a model resource of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// `https://...` or `file:///...`; a model's may be left out when its
    /// `S3Uri` says where it is ([`Group::artifact_url`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The file's SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CoreDefinition {
    pub cores: Vec<Thing>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeviceDefinition {
    #[serde(default)]
    pub devices: Vec<Thing>,
}

/// A core or a device: an AWS IoT thing and its certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Thing {
    pub id: String,
    pub thing_arn: String,
    /// `arn:...:cert/<id>`, where the id is the SHA-256 of the certificate's DER.
    pub certificate_arn: String,
    #[serde(default)]
    pub sync_shadow: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FunctionDefinition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<FunctionDefaultConfig>,
    #[serde(default)]
    pub functions: Vec<Function>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FunctionDefaultConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
}

/// How functions run: isolation and identity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Execution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_mode: Option<IsolationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IsolationMode {
    GreengrassContainer,
    NoContainer,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RunAs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Function {
    pub id: String,
    /// Qualified: a version or an alias, as subscriptions name it.
    pub function_arn: String,
    #[serde(default)]
    pub function_configuration: FunctionConfiguration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FunctionConfiguration {
    #[serde(default)]
    pub pinned: bool,
    /// Seconds per request (Greengrass default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Kilobytes (Greengrass default 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_type: Option<EncodingType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_runtime_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<FunctionEnvironment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingType {
    Json,
    Binary,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FunctionEnvironment {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub access_sysfs: bool,
    #[serde(default)]
    pub resource_access_policies: Vec<ResourceAccessPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ResourceAccessPolicy {
    pub resource_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<Permission>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Ro,
    Rw,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SubscriptionDefinition {
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
}

/// One route: messages from `source` on topics matching `subject` go to `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Subscription {
    pub id: String,
    pub source: String,
    pub subject: String,
    pub target: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoggerDefinition {
    #[serde(default)]
    pub loggers: Vec<Logger>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Logger {
    pub id: String,
    pub component: LoggerComponent,
    pub level: LoggerLevel,
    #[serde(rename = "Type")]
    pub kind: LoggerType,
    /// Kilobytes of disk for `FileSystem` loggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoggerComponent {
    GreengrassSystem,
    Lambda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LoggerLevel {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoggerType {
    FileSystem,
    AWSCloudWatch,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ResourceDefinition {
    #[serde(default)]
    pub resources: Vec<Resource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Resource {
    pub id: String,
    pub name: String,
    pub resource_data_container: ResourceDataContainer,
}

/// Exactly one of these is set (checked by validation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ResourceDataContainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_device_resource_data: Option<LocalDeviceResourceData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_volume_resource_data: Option<LocalVolumeResourceData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_machine_learning_model_resource_data: Option<ModelResourceData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sage_maker_machine_learning_model_resource_data: Option<ModelResourceData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_manager_secret_resource_data: Option<SecretResourceData>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GroupOwnerSetting {
    #[serde(default)]
    pub auto_add_group_owner: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_owner: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LocalDeviceResourceData {
    pub source_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_owner_setting: Option<GroupOwnerSetting>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LocalVolumeResourceData {
    pub source_path: String,
    pub destination_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_owner_setting: Option<GroupOwnerSetting>,
}

/// S3 and SageMaker model resources share one shape but their source key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ModelResourceData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sage_maker_job_arn: Option<String>,
    pub destination_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_setting: Option<OwnerSetting>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OwnerSetting {
    pub group_owner: String,
    pub group_permission: Permission,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SecretResourceData {
    #[serde(rename = "ARN")]
    pub arn: String,
    #[serde(default)]
    pub additional_staging_labels_to_download: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectorDefinition {
    #[serde(default)]
    pub connectors: Vec<Connector>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Connector {
    pub id: String,
    pub connector_arn: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}
