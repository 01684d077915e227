//! Local resources a `GreengrassContainer` function is granted
//! (`ResourceAccessPolicies` on the group's `ResourceDefinitionVersion`):
//! device files and volumes bound into its root, read-only or read-write,
//! with the group that owns them added to the function's groups when the
//! resource says so.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use verdant_group::{Group, GroupOwnerSetting, Permission, ResourceAccessPolicy};

/// One bind mount into an instance's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: PathBuf,
    /// Where the function sees it.
    pub destination: PathBuf,
    pub writable: bool,
    /// A device file (bound onto a file), else a directory.
    pub device: bool,
}

/// What a function is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub mounts: Vec<Mount>,
    /// Groups the function's process joins (the resources' owners).
    pub groups: Vec<u32>,
}

/// The group a `GroupOwnerSetting` adds: the named group, or the owner of
/// `source` when `AutoAddGroupOwner`.
fn owner(setting: Option<&GroupOwnerSetting>, source: &str) -> Result<Option<u32>, String> {
    let Some(s) = setting else {
        return Ok(None);
    };
    if let Some(name) = &s.group_owner {
        return match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
            _ => Err(format!("GroupOwner `{name}`: no such group")),
        };
    }
    if s.auto_add_group_owner {
        let meta = std::fs::metadata(source).map_err(|e| format!("{source}: {e}"))?;
        return Ok(Some(meta.gid()));
    }
    Ok(None)
}

/// The mounts and groups `policies` grant, from `group`'s resources; `Err`
/// with the JSON path and reason if one cannot be granted here. `model`
/// says where a machine learning model resource's directory is (the
/// deployment downloads it); it is bound as the directory it resolves to,
/// so a changed model is a changed grant.
pub fn grants(
    group: &Group,
    policies: &[ResourceAccessPolicy],
    at: &str,
    model: &dyn Fn(&str) -> PathBuf,
) -> Result<Grants, String> {
    let mut out = Grants::default();
    for (j, policy) in policies.iter().enumerate() {
        let here = format!("{at}.ResourceAccessPolicies[{j}]");
        let Some(resource) = group
            .resource_definition_version
            .resources
            .iter()
            .find(|r| r.id == policy.resource_id)
        else {
            return Err(format!("{here}: unknown resource `{}`", policy.resource_id));
        };
        let writable = policy.permission == Some(Permission::Rw);
        let data = &resource.resource_data_container;
        let (mount, setting) = if let Some(d) = &data.local_device_resource_data {
            (
                Mount {
                    source: d.source_path.clone().into(),
                    destination: d.source_path.clone().into(),
                    writable,
                    device: true,
                },
                d.group_owner_setting.as_ref(),
            )
        } else if let Some(v) = &data.local_volume_resource_data {
            (
                Mount {
                    source: v.source_path.clone().into(),
                    destination: v.destination_path.clone().into(),
                    writable,
                    device: false,
                },
                v.group_owner_setting.as_ref(),
            )
        } else if let Some(m) = data
            .s3_machine_learning_model_resource_data
            .as_ref()
            .or(data
                .sage_maker_machine_learning_model_resource_data
                .as_ref())
        {
            let source = model(&resource.id).canonicalize().map_err(|e| {
                format!(
                    "{here}: model `{}` is not on the core ({e}): a deployment brings it by \
                     its entry in Artifacts",
                    resource.id
                )
            })?;
            let group_owner = m.owner_setting.as_ref().map(|o| GroupOwnerSetting {
                auto_add_group_owner: false,
                group_owner: Some(o.group_owner.clone()),
            });
            if let Some(gid) = owner(group_owner.as_ref(), "")
                .map_err(|e| format!("{here}: resource `{}`: {e}", resource.id))?
                && !out.groups.contains(&gid)
            {
                out.groups.push(gid);
            }
            out.mounts.push(Mount {
                source,
                destination: m.destination_path.clone().into(),
                // Models are read-only, whatever the policy says.
                writable: false,
                device: false,
            });
            continue;
        } else {
            return Err(format!(
                "{here}: resource `{}` is a secret, which is not bound into functions",
                resource.id
            ));
        };
        let source = mount.source.display().to_string();
        let meta = std::fs::metadata(&mount.source)
            .map_err(|e| format!("{here}: resource `{}`: {source}: {e}", resource.id))?;
        if mount.device == meta.is_dir() {
            return Err(format!(
                "{here}: resource `{}`: {source} is {}",
                resource.id,
                if mount.device {
                    "a directory, not a device"
                } else {
                    "not a directory"
                }
            ));
        }
        if let Some(gid) = owner(setting, &source)
            .map_err(|e| format!("{here}: resource `{}`: {e}", resource.id))?
            && !out.groups.contains(&gid)
        {
            out.groups.push(gid);
        }
        out.mounts.push(mount);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_volumes_with_their_permission_and_owner_group() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("shared");
        std::fs::create_dir(&volume).unwrap();
        let mut g = crate::function::test_group();
        g.resource_definition_version = serde_json::from_value(serde_json::json!({ "Resources": [
            { "Id": "vol", "Name": "vol", "ResourceDataContainer": { "LocalVolumeResourceData": {
                "SourcePath": volume, "DestinationPath": "/data",
                "GroupOwnerSetting": { "AutoAddGroupOwner": true } } } },
            { "Id": "dev", "Name": "dev", "ResourceDataContainer": { "LocalDeviceResourceData": {
                "SourcePath": "/dev/null" } } },
            { "Id": "model", "Name": "model", "ResourceDataContainer": {
                "S3MachineLearningModelResourceData": { "S3Uri": "s3://b/m.zip", "DestinationPath": "/m" } } },
        ]}))
        .unwrap();
        let policy = |id: &str, p: Option<Permission>| ResourceAccessPolicy {
            resource_id: id.into(),
            permission: p,
        };
        let models = dir.path().join("models");
        let model = |id: &str| models.join(id);
        let got = grants(
            &g,
            &[policy("vol", Some(Permission::Rw)), policy("dev", None)],
            "F",
            &model,
        )
        .unwrap();
        let gid = std::fs::metadata(&volume).unwrap().gid();
        assert_eq!(got.groups, [gid]);
        assert_eq!(
            got.mounts,
            [
                Mount {
                    source: volume.clone(),
                    destination: "/data".into(),
                    writable: true,
                    device: false
                },
                Mount {
                    source: "/dev/null".into(),
                    destination: "/dev/null".into(),
                    writable: false,
                    device: true
                },
            ]
        );
        // A model not downloaded cannot be granted.
        let e = grants(&g, &[policy("model", None)], "F", &model).unwrap_err();
        assert!(e.contains("model `model` is not on the core"), "{e}");
        // A model: the directory its entry resolves to, read-only even if rw.
        let tree = dir.path().join("store/0123");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::create_dir_all(&models).unwrap();
        std::os::unix::fs::symlink(&tree, models.join("model")).unwrap();
        let got = grants(&g, &[policy("model", Some(Permission::Rw))], "F", &model).unwrap();
        assert_eq!(
            got.mounts,
            [Mount {
                source: tree.canonicalize().unwrap(),
                destination: "/m".into(),
                writable: false,
                device: false
            }]
        );
        std::fs::remove_dir(&volume).unwrap();
        let e = grants(&g, &[policy("vol", None)], "F", &model).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
    }
}
