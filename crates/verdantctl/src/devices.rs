//! The group's devices and the certificates revoked on this core
//! (`config/certs/revoked.json`), on the root's files: the broker and the
//! discovery API read the revocations when the file changes, so the core
//! need not be asked.

use std::path::Path;

use serde::Serialize;
use verdant_common::pki;
use verdant_group::Group;
use verdant_group::revoked::{Revocation, Revocations};

use crate::group::layout;
use crate::output;

#[derive(Serialize)]
struct DeviceView {
    thing_name: String,
    certificate_id: String,
    /// Seconds since the epoch, when the certificate is on the core.
    not_after: Option<i64>,
    revoked: bool,
    in_group: bool,
}

/// Runs `f` holding an exclusive lock beside `file` (`<file>.lock`), so
/// that two commands changing it at once do not lose one's change.
pub fn locked<T>(file: &Path, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let mut name = file.as_os_str().to_owned();
    name.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| format!("cannot lock {}: {e}", file.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", file.display()))?;
    let result = f();
    let _ = lock.unlock();
    result
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub fn list(root: &Path, json: bool) -> Result<(), String> {
    let layout = layout(root)?;
    let group = Group::load(&layout.current_group()).map_err(|e| e.to_string())?;
    let revoked = Revocations::load(&layout.revocations()).map_err(|e| e.to_string())?;
    let devices = layout.certs_dir().join("devices");
    let mut views: Vec<DeviceView> = group
        .device_definition_version
        .devices
        .iter()
        .map(|d| {
            let not_after = pki::read(&devices.join(format!("{}.pem", d.thing_name())))
                .and_then(|pem| pki::inspect_pem(&pem))
                .ok()
                .and_then(|c| c.into_iter().next())
                .filter(|c| c.id == d.certificate_id())
                .map(|c| c.not_after);
            DeviceView {
                thing_name: d.thing_name().into(),
                certificate_id: d.certificate_id().into(),
                not_after,
                revoked: revoked.contains(d.certificate_id()),
                in_group: true,
            }
        })
        .collect();
    for r in &revoked.revoked {
        if !views.iter().any(|v| v.certificate_id == r.certificate_id) {
            views.push(DeviceView {
                thing_name: r.thing_name.clone(),
                certificate_id: r.certificate_id.clone(),
                not_after: None,
                revoked: true,
                in_group: false,
            });
        }
    }
    if json {
        output::json(&views);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let expiry = v.not_after.map_or_else(
                || "-".to_string(),
                |t| format!("{} days", (t - now()).div_euclid(86_400)),
            );
            let state = match (v.revoked, v.in_group) {
                (true, true) => "revoked (still in the group)",
                (true, false) => "revoked",
                (false, _) => "allowed",
            };
            vec![
                v.thing_name.clone(),
                v.certificate_id
                    .get(..12)
                    .unwrap_or(&v.certificate_id)
                    .into(),
                expiry,
                state.into(),
            ]
        })
        .collect();
    output::table(&["THING", "CERTIFICATE", "EXPIRES IN", "STATE"], &rows);
    Ok(())
}

pub fn revoke(root: &Path, which: &str, json: bool) -> Result<(), String> {
    let layout = layout(root)?;
    let group = Group::load(&layout.current_group()).ok();
    let by_thing = group.as_ref().and_then(|g| g.thing(which)).map(|t| {
        (
            t.thing_name().to_string(),
            t.certificate_id().to_ascii_lowercase(),
        )
    });
    let is_id = which.len() == 64 && which.bytes().all(|b| b.is_ascii_hexdigit());
    let (thing_name, certificate_id) = match by_thing {
        Some(found) => found,
        None if is_id => {
            let id = which.to_ascii_lowercase();
            let thing = group
                .as_ref()
                .and_then(|g| {
                    g.device_definition_version
                        .devices
                        .iter()
                        .chain(&g.core_definition_version.cores)
                        .find(|t| t.certificate_id().eq_ignore_ascii_case(&id))
                })
                .map(|t| t.thing_name().to_string())
                .unwrap_or_default();
            (thing, id)
        }
        None => {
            return Err(format!(
                "`{which}` is neither a thing of the deployed group nor a certificate id (64 hex digits)"
            ));
        }
    };
    if let Some(g) = &group
        && g.core()
            .certificate_id()
            .eq_ignore_ascii_case(&certificate_id)
    {
        return Err("that is the core's own certificate; it cannot be revoked here".into());
    }
    let file = layout.revocations();
    let already = locked(&file, || {
        let mut list = Revocations::load(&file).map_err(|e| e.to_string())?;
        if list.contains(&certificate_id) {
            return Ok(true);
        }
        list.revoked.push(Revocation {
            certificate_id: certificate_id.clone(),
            thing_name: thing_name.clone(),
            revoked_at: now(),
        });
        pki::replace(&file, &list.to_json(), 0o644).map_err(|e| e.to_string())?;
        Ok(false)
    })?;
    if json {
        output::json(&serde_json::json!({
            "thing_name": thing_name, "certificate_id": certificate_id,
            "already_revoked": already, "file": file,
        }));
        return Ok(());
    }
    let whose = if thing_name.is_empty() {
        String::new()
    } else {
        format!(" of {thing_name}")
    };
    if already {
        println!("certificate {certificate_id}{whose} was revoked already");
    } else {
        println!(
            "revoked certificate {certificate_id}{whose} ({}): the broker and the discovery API \
             refuse it within a second and its connections are closed",
            file.display()
        );
        if !thing_name.is_empty() {
            println!("It stays in the group until a deployment takes it out.");
        }
    }
    Ok(())
}
