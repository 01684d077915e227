//! The group CA on the root's files: show it, rotate it. The discovery
//! daemon notices a rotation by itself (a new server certificate within
//! its `refresh_secs`, or at once with `verdantctl certificates rotate`).

use std::path::Path;

use clap::Subcommand;
use serde::Serialize;
use verdant_common::pki::{self, Rotation};

use crate::devices::{locked, now};
use crate::group::layout;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// The group CAs: which one signs, which are still trusted, and a
    /// rotation under way (the default).
    Show,
    /// A new group CA signs from now on. For the overlap the server
    /// certificate is also certified by the previous CA and the discovery
    /// API hands out both, so devices that have not rediscovered still
    /// connect; device certificates the previous CA signed stay valid.
    Rotate {
        /// How long the previous CA is handed out: `7d`, `12h`, `30m`, `90s`.
        #[arg(long, default_value = "7d", value_parser = duration_secs)]
        overlap: i64,
    },
}

/// `N` followed by `d`, `h`, `m` or `s`, in seconds.
fn duration_secs(text: &str) -> Result<i64, String> {
    let bad = || format!("`{text}`: a number and d, h, m or s (e.g. 7d)");
    let unit = text.chars().last().ok_or_else(bad)?;
    let number = &text[..text.len() - unit.len_utf8()];
    let scale = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(bad()),
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(bad)
}

#[derive(Serialize)]
struct CaView {
    role: &'static str,
    subject: String,
    id: String,
    not_after: i64,
}

pub fn run(root: &Path, command: Option<&CaCmd>, json: bool) -> Result<(), String> {
    let layout = layout(root)?;
    let certs = layout.certs_dir();
    let (ca_cert, ca_key) = (certs.join("group-ca.pem"), certs.join("group-ca.key"));
    if let Some(CaCmd::Rotate { overlap }) = command {
        let (new, old, rotation) = locked(&ca_cert, || {
            pki::rotate_ca(&ca_cert, &ca_key, *overlap, now()).map_err(|e| e.to_string())
        })?;
        if json {
            output::json(&serde_json::json!({
                "current": new.id, "previous": old.id, "overlap_until": rotation.overlap_until,
            }));
        } else {
            println!("new group CA {} ({})", new.subject, new.id);
            println!(
                "previous CA {} handed out with it until {} (seconds since the epoch {})",
                old.id,
                crate::discovery::date(rotation.overlap_until),
                rotation.overlap_until
            );
            println!(
                "the discovery daemon issues a server certificate from the new CA within its \
                 refresh_secs (`verdantctl certificates rotate` does it now)"
            );
        }
        return Ok(());
    }
    let cas = pki::inspect_pem(&pki::read(&ca_cert).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let rotation = Rotation::load(&ca_cert).map_err(|e| e.to_string())?;
    let overlapping = rotation.as_ref().is_some_and(|r| r.overlapping(now()));
    let views: Vec<CaView> = cas
        .into_iter()
        .enumerate()
        .map(|(i, c)| CaView {
            role: match i {
                0 => "signing",
                1 if overlapping => "previous (handed out)",
                _ => "trusted for devices",
            },
            subject: c.subject,
            id: c.id,
            not_after: c.not_after,
        })
        .collect();
    if json {
        output::json(&serde_json::json!({ "cas": views, "rotation": rotation }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.role.to_string(),
                v.id.get(..12).unwrap_or(&v.id).to_string(),
                crate::discovery::date(v.not_after),
                v.subject.clone(),
            ]
        })
        .collect();
    output::table(&["CA", "ID", "VALID UNTIL", "SUBJECT"], &rows);
    if let Some(r) = rotation.filter(|_| overlapping) {
        println!(
            "rotation under way: the previous CA is handed out until {}",
            crate::discovery::date(r.overlap_until)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_are_read_in_days_hours_minutes_or_seconds() {
        assert_eq!(duration_secs("7d"), Ok(604_800));
        assert_eq!(duration_secs("12h"), Ok(43_200));
        assert_eq!(duration_secs("30m"), Ok(1_800));
        assert_eq!(duration_secs("90s"), Ok(90));
        assert!(duration_secs("7").is_err());
        assert!(duration_secs("0d").is_err());
        assert!(duration_secs("d").is_err());
        assert!(duration_secs("7é").is_err());
        assert!(duration_secs("99999999999999999d").is_err());
    }
}
