//! Who may read what, from the deployed group: a function reads a secret
//! only through a `ResourceAccessPolicy` naming a secret resource
//! (`SecretsManagerSecretResourceData`) whose ARN is the secret's, and only
//! the labels that resource asks for: `AWSCURRENT` always, plus its
//! `AdditionalStagingLabelsToDownload`.

use verdant_group::{Group, SecretResourceData};

use crate::store::CURRENT;

/// The group's secret resources: (resource id, what it names).
fn resources(group: &Group) -> impl Iterator<Item = (&str, &SecretResourceData)> {
    group
        .resource_definition_version
        .resources
        .iter()
        .filter_map(|r| {
            r.resource_data_container
                .secrets_manager_secret_resource_data
                .as_ref()
                .map(|d| (r.id.as_str(), d))
        })
}

/// The labels the group asks for of `arn`, if it names it.
pub fn wanted_labels(group: &Group, arn: &str) -> Option<Vec<String>> {
    let mut labels: Vec<String> = Vec::new();
    for (_, d) in resources(group).filter(|(_, d)| d.arn == arn) {
        if labels.is_empty() {
            labels.push(CURRENT.into());
        }
        for l in &d.additional_staging_labels_to_download {
            if !labels.contains(l) {
                labels.push(l.clone());
            }
        }
    }
    (!labels.is_empty()).then_some(labels)
}

/// Every (ARN, label) the group asks for, each once, in order.
pub fn wanted(group: &Group) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for arn in named(group) {
        for label in wanted_labels(group, &arn).unwrap_or_default() {
            out.push((arn.clone(), label));
        }
    }
    out
}

/// Each secret resource of `group` (and each label it asks for) that has
/// no value in `has(arn, label)`: (JSON path, what is missing, with
/// `why(arn, label)` when it says why).
pub fn missing(
    group: &Group,
    has: impl Fn(&str, &str) -> bool,
    why: impl Fn(&str, &str) -> Option<String>,
) -> Vec<(String, String)> {
    let because = |arn: &str, label: &str| {
        why(arn, label).map_or_else(String::new, |w| format!("; from the cloud: {w}"))
    };
    let mut out = Vec::new();
    for (i, r) in group
        .resource_definition_version
        .resources
        .iter()
        .enumerate()
    {
        let Some(d) = &r
            .resource_data_container
            .secrets_manager_secret_resource_data
        else {
            continue;
        };
        let path = format!(
            "ResourceDefinitionVersion.Resources[{i}].ResourceDataContainer.SecretsManagerSecretResourceData"
        );
        if !has(&d.arn, CURRENT) {
            out.push((
                format!("{path}.ARN"),
                format!(
                    "secret {} has no value on this core (verdantctl secrets put {} < file){}",
                    d.arn,
                    d.arn,
                    because(&d.arn, CURRENT)
                ),
            ));
            continue;
        }
        for (j, label) in d.additional_staging_labels_to_download.iter().enumerate() {
            if !has(&d.arn, label) {
                out.push((
                    format!("{path}.AdditionalStagingLabelsToDownload[{j}]"),
                    format!(
                        "secret {} has no value labelled {label} on this core (verdantctl secrets put {} --label {label} < file){}",
                        d.arn,
                        d.arn,
                        because(&d.arn, label)
                    ),
                ));
            }
        }
    }
    out
}

/// Every secret ARN the group names.
pub fn named(group: &Group) -> Vec<String> {
    let mut arns: Vec<String> = resources(group).map(|(_, d)| d.arn.clone()).collect();
    arns.sort();
    arns.dedup();
    arns
}

/// The resource ids `function_arn` has a policy for.
fn policies<'a>(group: &'a Group, function_arn: &str) -> Vec<&'a str> {
    group
        .function_definition_version
        .functions
        .iter()
        .filter(|f| f.function_arn == function_arn)
        .filter_map(|f| f.function_configuration.environment.as_ref())
        .flat_map(|e| {
            e.resource_access_policies
                .iter()
                .map(|p| p.resource_id.as_str())
        })
        .collect()
}

/// Whether `function_arn` may read `label` of the secret `arn`.
pub fn allowed(group: &Group, function_arn: &str, arn: &str, label: &str) -> bool {
    let policies = policies(group, function_arn);
    resources(group).any(|(id, d)| {
        d.arn == arn
            && policies.contains(&id)
            && (label == CURRENT
                || d.additional_staging_labels_to_download
                    .iter()
                    .any(|l| l == label))
    })
}

/// The functions that may read `arn` (any label).
pub fn readers(group: &Group, arn: &str) -> Vec<String> {
    group
        .function_definition_version
        .functions
        .iter()
        .filter(|f| allowed(group, &f.function_arn, arn, CURRENT))
        .map(|f| f.function_arn.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";

    fn group() -> Group {
        let f = |name: &str, policies: serde_json::Value| {
            serde_json::json!({ "Id": name,
                "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:1"),
                "FunctionConfiguration": { "Executable": "x.handler", "Environment": {
                    "ResourceAccessPolicies": policies } } })
        };
        let g = serde_json::json!({
            "Id": "g",
            "CoreDefinitionVersion": { "Cores": [{ "Id": "core",
                "ThingArn": "arn:aws:iot:us-east-1:123456789012:thing/core",
                "CertificateArn": format!("arn:aws:iot:us-east-1:123456789012:cert/{}", "01".repeat(32)) }] },
            "FunctionDefinitionVersion": { "Functions": [
                f("reader", serde_json::json!([{ "ResourceId": "db", "Permission": "ro" }])),
                f("stranger", serde_json::json!([])),
            ]},
            "ResourceDefinitionVersion": { "Resources": [{ "Id": "db", "Name": "db",
                "ResourceDataContainer": { "SecretsManagerSecretResourceData": {
                    "ARN": SECRET, "AdditionalStagingLabelsToDownload": ["v2"] } } }] },
        });
        Group::parse(g.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn only_a_function_with_a_policy_reads_and_only_the_labels_asked_for() {
        let g = group();
        let reader = "arn:aws:lambda:us-east-1:123456789012:function:reader:1";
        let stranger = "arn:aws:lambda:us-east-1:123456789012:function:stranger:1";
        assert!(allowed(&g, reader, SECRET, "AWSCURRENT"));
        assert!(allowed(&g, reader, SECRET, "v2"));
        assert!(!allowed(&g, reader, SECRET, "v3"));
        assert!(!allowed(&g, stranger, SECRET, "AWSCURRENT"));
        assert!(!allowed(
            &g,
            reader,
            "arn:aws:secretsmanager:us-east-1:1:secret:other",
            "AWSCURRENT"
        ));
        assert_eq!(readers(&g, SECRET), [reader]);
        assert_eq!(wanted_labels(&g, SECRET).unwrap(), ["AWSCURRENT", "v2"]);
        assert_eq!(named(&g), [SECRET]);
        assert_eq!(
            wanted(&g),
            [
                (SECRET.to_string(), "AWSCURRENT".to_string()),
                (SECRET.to_string(), "v2".to_string())
            ]
        );
        let none = missing(&g, |_, _| false, |_, _| None);
        assert_eq!(none.len(), 1, "{none:?}");
        assert!(
            none[0].0.ends_with("SecretsManagerSecretResourceData.ARN"),
            "{none:?}"
        );
        assert!(none[0].1.contains(SECRET));
        let no_v2 = missing(
            &g,
            |_, label| label == "AWSCURRENT",
            |_, label| (label == "v2").then(|| "it said no".to_string()),
        );
        assert!(
            no_v2[0].0.ends_with("AdditionalStagingLabelsToDownload[0]"),
            "{no_v2:?}"
        );
        assert!(
            no_v2[0].1.ends_with("; from the cloud: it said no"),
            "{no_v2:?}"
        );
        assert!(missing(&g, |_, _| true, |_, _| None).is_empty());
    }
}
