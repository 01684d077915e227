//! The rules a group must follow beyond its JSON shape: identifiers,
//! ARNs, references between definitions, and topic filters.

use std::collections::HashSet;

use crate::model::{Group, ResourceDataContainer, Thing};

/// One thing wrong with a group, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// What a subscription's Source or Target names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteEnd {
    /// `cloud`: AWS IoT Core or whichever broker the core bridges to.
    Cloud,
    /// `GGShadowService`: the local shadow service.
    Shadow,
    /// A core or device, by thing ARN.
    Thing(String),
    /// A function, by the (qualified) ARN its definition uses.
    Function(String),
    /// A connector, by ARN.
    Connector(String),
}

impl RouteEnd {
    /// Resolves `name` against `group`; `Err` says why it names nothing there.
    pub fn resolve(group: &Group, name: &str) -> Result<RouteEnd, String> {
        match name {
            "cloud" => return Ok(RouteEnd::Cloud),
            "GGShadowService" => return Ok(RouteEnd::Shadow),
            _ => {}
        }
        let things = group
            .core_definition_version
            .cores
            .iter()
            .chain(&group.device_definition_version.devices);
        if name.contains(":iot:") {
            return if things.clone().any(|t| t.thing_arn == name) {
                Ok(RouteEnd::Thing(name.into()))
            } else {
                Err(format!(
                    "unknown thing {name}: not a core or device of this group"
                ))
            };
        }
        if name.contains(":lambda:") {
            return if group
                .function_definition_version
                .functions
                .iter()
                .any(|f| f.function_arn == name)
            {
                Ok(RouteEnd::Function(name.into()))
            } else {
                Err(unknown_function(name))
            };
        }
        if group
            .connector_definition_version
            .connectors
            .iter()
            .any(|c| c.connector_arn == name)
        {
            return Ok(RouteEnd::Connector(name.into()));
        }
        Err(format!(
            "unknown source or target `{name}`: expected `cloud`, `GGShadowService`, or the ARN \
             of a thing, function or connector of this group"
        ))
    }
}

fn unknown_function(arn: &str) -> String {
    format!(
        "unknown function {arn}: no function of this group has exactly this ARN \
         (alias or version included)"
    )
}

/// Why `filter` is not a valid MQTT topic filter, if it is not.
pub fn topic_filter_problem(filter: &str) -> Option<&'static str> {
    if filter.is_empty() {
        return Some("empty topic filter");
    }
    if filter.len() > 65_535 {
        return Some("topic filter longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Some("topic filter contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Some("`#` must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Some("`+` must be a whole level");
        }
    }
    None
}

fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > 128 {
        Some("an Id is 1 to 128 characters")
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'))
    {
        Some("an Id may contain only letters, digits, ':', '_' and '-'")
    } else {
        None
    }
}

/// `arn:<partition>:<service>:<region>:<account>:<resource>` split.
fn arn_parts(arn: &str) -> Option<(&str, &str, &str, &str)> {
    let mut it = arn.splitn(6, ':');
    let (prefix, partition) = (it.next()?, it.next()?);
    if prefix != "arn" || !partition.starts_with("aws") {
        return None;
    }
    Some((it.next()?, it.next()?, it.next()?, it.next()?))
}

fn thing_arn_problem(arn: &str) -> Option<String> {
    match arn_parts(arn) {
        Some(("iot", region, account, resource)) if !region.is_empty() && !account.is_empty() => {
            let name = resource.strip_prefix("thing/")?;
            let ok = !name.is_empty()
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'));
            (!ok).then(|| format!("`{name}` is not a valid thing name"))
        }
        _ => Some(format!(
            "`{arn}` is not a thing ARN (arn:aws:iot:<region>:<account>:thing/<name>)"
        )),
    }
    .or_else(|| (!arn.contains(":thing/")).then(|| format!("`{arn}` is not a thing ARN")))
}

fn certificate_arn_problem(arn: &str) -> Option<String> {
    let id = match arn_parts(arn) {
        Some(("iot", _, _, resource)) => resource.strip_prefix("cert/"),
        _ => None,
    };
    match id {
        Some(id) if id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()) => None,
        _ => Some(format!(
            "`{arn}` is not a certificate ARN (arn:aws:iot:<region>:<account>:cert/<64 hex digits>)"
        )),
    }
}

/// System functions of Greengrass have no region or account.
const SYSTEM_FUNCTIONS: &[&str] = &[
    "arn:aws:lambda:::function:GGCloudSpooler:1",
    "arn:aws:lambda:::function:GGShadowService",
    "arn:aws:lambda:::function:GGRouter",
    "arn:aws:lambda:::function:GGSecretManager:1",
];

fn function_arn_problem(arn: &str) -> Option<String> {
    if SYSTEM_FUNCTIONS.contains(&arn) {
        return None;
    }
    let Some(("lambda", region, account, resource)) = arn_parts(arn) else {
        return Some(format!(
            "`{arn}` is not a function ARN (arn:aws:lambda:<region>:<account>:function:<name>:<alias or version>)"
        ));
    };
    let Some(rest) = resource.strip_prefix("function:") else {
        return Some(format!("`{arn}` is not a function ARN"));
    };
    if region.is_empty() || account.is_empty() {
        return Some(format!("`{arn}` lacks a region or account"));
    }
    match rest.split_once(':') {
        None => Some(format!(
            "`{arn}` has no alias or version; Greengrass needs a qualified ARN"
        )),
        Some((_, "$LATEST")) => Some(format!(
            "`{arn}`: $LATEST cannot be deployed; use a version or an alias"
        )),
        Some((name, qualifier)) => {
            let word = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            };
            (!word(name) || !word(qualifier))
                .then(|| format!("`{arn}` has an invalid function name or qualifier"))
        }
    }
}

/// Every problem of `group`; empty when it is valid.
pub fn validate(group: &Group) -> Vec<Problem> {
    let mut out = Vec::new();
    if group.id.is_empty() {
        out.push(Problem::new("Id", "the group id is empty"));
    }
    let cores = &group.core_definition_version.cores;
    if cores.len() != 1 {
        out.push(Problem::new(
            "CoreDefinitionVersion.Cores",
            format!("a group has exactly one core, found {}", cores.len()),
        ));
    }
    let mut thing_arns = HashSet::new();
    check_things(
        cores,
        "CoreDefinitionVersion.Cores",
        &mut thing_arns,
        &mut out,
    );
    check_things(
        &group.device_definition_version.devices,
        "DeviceDefinitionVersion.Devices",
        &mut thing_arns,
        &mut out,
    );
    check_functions(group, &mut out);
    check_subscriptions(group, &mut out);
    check_artifacts(group, &mut out);
    let loggers = &group.logger_definition_version.loggers;
    check_ids(
        loggers.iter().map(|l| l.id.as_str()),
        "LoggerDefinitionVersion.Loggers",
        &mut out,
    );
    let resources = &group.resource_definition_version.resources;
    check_ids(
        resources.iter().map(|r| r.id.as_str()),
        "ResourceDefinitionVersion.Resources",
        &mut out,
    );
    for (i, r) in resources.iter().enumerate() {
        let p = format!("ResourceDefinitionVersion.Resources[{i}]");
        if r.name.is_empty() {
            out.push(Problem::new(format!("{p}.Name"), "empty"));
        }
        if containers(&r.resource_data_container) != 1 {
            out.push(Problem::new(
                format!("{p}.ResourceDataContainer"),
                "must hold exactly one kind of resource data",
            ));
        }
    }
    let connectors = &group.connector_definition_version.connectors;
    check_ids(
        connectors.iter().map(|c| c.id.as_str()),
        "ConnectorDefinitionVersion.Connectors",
        &mut out,
    );
    crate::connectors::check(group, &mut out);
    out
}

/// Each Id well-formed and unique within its list at `at`.
fn check_ids<'a>(ids: impl Iterator<Item = &'a str>, at: &str, out: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if let Some(r) = id_problem(id) {
            out.push(Problem::new(format!("{at}[{i}].Id"), r));
        }
        if !seen.insert(id) {
            out.push(Problem::new(
                format!("{at}[{i}].Id"),
                format!("duplicate Id `{id}`"),
            ));
        }
    }
}

fn check_things(
    list: &[Thing],
    at: &str,
    thing_arns: &mut HashSet<String>,
    out: &mut Vec<Problem>,
) {
    check_ids(list.iter().map(|t| t.id.as_str()), at, out);
    for (i, t) in list.iter().enumerate() {
        let p = format!("{at}[{i}]");
        if let Some(r) = thing_arn_problem(&t.thing_arn) {
            out.push(Problem::new(format!("{p}.ThingArn"), r));
        } else if !thing_arns.insert(t.thing_arn.clone()) {
            out.push(Problem::new(
                format!("{p}.ThingArn"),
                format!("{} is listed twice", t.thing_arn),
            ));
        }
        if let Some(r) = certificate_arn_problem(&t.certificate_arn) {
            out.push(Problem::new(format!("{p}.CertificateArn"), r));
        }
    }
}

fn check_functions(group: &Group, out: &mut Vec<Problem>) {
    let resource_ids: HashSet<&str> = group
        .resource_definition_version
        .resources
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let functions = &group.function_definition_version.functions;
    let at = "FunctionDefinitionVersion.Functions";
    check_ids(functions.iter().map(|f| f.id.as_str()), at, out);
    let mut arns = HashSet::new();
    for (i, f) in functions.iter().enumerate() {
        let p = format!("{at}[{i}]");
        if let Some(r) = function_arn_problem(&f.function_arn) {
            out.push(Problem::new(format!("{p}.FunctionArn"), r));
        } else if !arns.insert(&f.function_arn) {
            out.push(Problem::new(
                format!("{p}.FunctionArn"),
                format!("{} is listed twice", f.function_arn),
            ));
        }
        let c = &f.function_configuration;
        let p = format!("{p}.FunctionConfiguration");
        if c.timeout == Some(0) {
            out.push(Problem::new(
                format!("{p}.Timeout"),
                "must be at least 1 second",
            ));
        }
        if c.memory_size == Some(0) {
            out.push(Problem::new(
                format!("{p}.MemorySize"),
                "must be at least 1 KB",
            ));
        }
        let Some(env) = &c.environment else {
            continue;
        };
        if env.resource_access_policies.len() > 10 {
            out.push(Problem::new(
                format!("{p}.Environment.ResourceAccessPolicies"),
                "at most 10 per function",
            ));
        }
        for (j, rap) in env.resource_access_policies.iter().enumerate() {
            if !resource_ids.contains(rap.resource_id.as_str()) {
                out.push(Problem::new(
                    format!("{p}.Environment.ResourceAccessPolicies[{j}].ResourceId"),
                    format!("unknown resource `{}`", rap.resource_id),
                ));
            }
        }
    }
}

fn check_subscriptions(group: &Group, out: &mut Vec<Problem>) {
    let subs = &group.subscription_definition_version.subscriptions;
    let at = "SubscriptionDefinitionVersion.Subscriptions";
    check_ids(subs.iter().map(|s| s.id.as_str()), at, out);
    for (i, s) in subs.iter().enumerate() {
        let p = format!("{at}[{i}]");
        if let Err(r) = RouteEnd::resolve(group, &s.source) {
            out.push(Problem::new(format!("{p}.Source"), r));
        }
        if let Err(r) = RouteEnd::resolve(group, &s.target) {
            out.push(Problem::new(format!("{p}.Target"), r));
        }
        if let Some(r) = topic_filter_problem(&s.subject) {
            out.push(Problem::new(format!("{p}.Subject"), r));
        }
    }
}

/// Why `url` cannot name an artifact, if it cannot.
fn artifact_url_problem(url: &str) -> Option<&'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("a URL has no spaces or control characters");
    }
    if let Some(rest) = url.strip_prefix("https://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        return (host.is_empty() || host.starts_with(':')).then_some("an https URL names a host");
    }
    if let Some(path) = url.strip_prefix("file://") {
        return (!path.starts_with('/') || path.len() < 2)
            .then_some("a file URL is `file:///<absolute path>` (no host)");
    }
    Some("unsupported URL scheme: expected `https://` or `file:///`")
}

/// Each artifact for one function or model resource of the group, by a
/// URL it can fetch, with a hash it can check.
fn check_artifacts(group: &Group, out: &mut Vec<Problem>) {
    let functions: HashSet<&str> = group
        .function_definition_version
        .functions
        .iter()
        .map(|f| f.function_arn.as_str())
        .collect();
    let (mut seen_functions, mut seen_models) = (HashSet::new(), HashSet::new());
    for (i, a) in group.artifacts.iter().enumerate() {
        let p = format!("Artifacts[{i}]");
        match (&a.function_arn, &a.resource_id) {
            (Some(arn), None) => {
                if !functions.contains(arn.as_str()) {
                    out.push(Problem::new(
                        format!("{p}.FunctionArn"),
                        unknown_function(arn),
                    ));
                } else if !seen_functions.insert(arn.as_str()) {
                    out.push(Problem::new(
                        format!("{p}.FunctionArn"),
                        format!("{arn} has an artifact already"),
                    ));
                }
            }
            (None, Some(id)) => {
                if group.model(id).is_none() {
                    out.push(Problem::new(
                        format!("{p}.ResourceId"),
                        format!("`{id}` is not a machine learning model resource of this group"),
                    ));
                } else if !seen_models.insert(id.as_str()) {
                    out.push(Problem::new(
                        format!("{p}.ResourceId"),
                        format!("{id} has an artifact already"),
                    ));
                }
            }
            _ => out.push(Problem::new(
                p.clone(),
                "names a FunctionArn or a ResourceId (exactly one)",
            )),
        }
        match (&a.url, group.artifact_url(a)) {
            (Some(url), _) => {
                if let Some(r) = artifact_url_problem(url) {
                    out.push(Problem::new(format!("{p}.Url"), r));
                }
            }
            (None, Some(url)) => {
                if let Some(r) = artifact_url_problem(&url) {
                    out.push(Problem::new(
                        format!("{p}.Url"),
                        format!("required: the resource's S3Uri gives `{url}`: {r}"),
                    ));
                }
            }
            (None, None) => out.push(Problem::new(
                format!("{p}.Url"),
                "required (a model's may be left out when its S3Uri is https://, file:/// or s3://)",
            )),
        }
        if a.sha256.len() != 64
            || !a
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            out.push(Problem::new(
                format!("{p}.Sha256"),
                "a SHA-256 is 64 lowercase hex digits",
            ));
        }
    }
}

fn containers(c: &ResourceDataContainer) -> usize {
    [
        c.local_device_resource_data.is_some(),
        c.local_volume_resource_data.is_some(),
        c.s3_machine_learning_model_resource_data.is_some(),
        c.sage_maker_machine_learning_model_resource_data.is_some(),
        c.secrets_manager_secret_resource_data.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count()
}
