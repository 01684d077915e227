//! Secrets kept on the core, over `verdant.secrets.v1.Secrets`: metadata
//! only, and values in from stdin (never from an argument, so they are not
//! in shell history or `ps`).

use std::io::Read;
use std::path::Path;

use clap::Subcommand;
use serde::Serialize;
use verdant_proto::secrets::v1 as pb;
use verdant_proto::secrets::v1::secrets_client::SecretsClient;

use crate::{dial, output, status_error};

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Every secret: labels, versions, sizes, who may read it (the default).
    List,
    /// One secret's metadata.
    Show { arn: String },
    /// Put a value, read from stdin, under a label as a new version.
    Put {
        /// The secret's ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>).
        arn: String,
        #[arg(long, default_value = "AWSCURRENT")]
        label: String,
        /// Hand it out as `SecretBinary` (bytes) rather than `SecretString`.
        #[arg(long)]
        binary: bool,
    },
    /// Delete a secret and all its values.
    Delete { arn: String },
    /// A new data key: every value sealed again under it, the old key dropped.
    RotateKey,
}

#[derive(Serialize)]
struct LabelView<'a> {
    label: &'a str,
    version_id: &'a str,
    created_ms: i64,
    size: u64,
    binary: bool,
}

#[derive(Serialize)]
struct SecretView<'a> {
    arn: &'a str,
    name: &'a str,
    labels: Vec<LabelView<'a>>,
    readers: &'a [String],
    missing_labels: &'a [String],
    last_read_ms: i64,
    last_reader: &'a str,
}

fn view(s: &pb::Secret) -> SecretView<'_> {
    SecretView {
        arn: &s.arn,
        name: &s.name,
        labels: s
            .labels
            .iter()
            .map(|l| LabelView {
                label: &l.label,
                version_id: &l.version_id,
                created_ms: l.created_ms,
                size: l.size,
                binary: l.binary,
            })
            .collect(),
        readers: &s.readers,
        missing_labels: &s.missing_labels,
        last_read_ms: s.last_read_ms,
        last_reader: &s.last_reader,
    }
}

fn print(secrets: &[pb::Secret]) {
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .flat_map(|s| {
            s.labels.iter().map(move |l| {
                vec![
                    s.name.clone(),
                    l.label.clone(),
                    l.version_id.get(..8).unwrap_or(&l.version_id).to_string(),
                    format!("{} B{}", l.size, if l.binary { " binary" } else { "" }),
                    if s.readers.is_empty() {
                        "-".into()
                    } else {
                        s.readers.join(",")
                    },
                    if s.last_read_ms == 0 {
                        "-".into()
                    } else {
                        crate::discovery::date(s.last_read_ms / 1000)
                    },
                ]
            })
        })
        .collect();
    output::table(
        &["SECRET", "LABEL", "VERSION", "SIZE", "READERS", "LAST READ"],
        &rows,
    );
}

pub async fn run(dir: &Path, command: Option<SecretsCmd>, json: bool) -> Result<(), String> {
    let mut api = SecretsClient::new(dial(dir, "secrets").await?);
    match command.unwrap_or(SecretsCmd::List) {
        SecretsCmd::List => {
            let r = api
                .list_secrets(pb::ListSecretsRequest {})
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            if json {
                let views: Vec<SecretView> = r.secrets.iter().map(view).collect();
                output::json(&serde_json::json!({ "secrets": views, "missing": r.missing }));
                return Ok(());
            }
            print(&r.secrets);
            for arn in &r.missing {
                println!("no value on this core: {arn} (verdantctl secrets put {arn} < file)");
            }
        }
        SecretsCmd::Show { arn } => {
            let r = api
                .list_secrets(pb::ListSecretsRequest {})
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            let s = r
                .secrets
                .iter()
                .find(|s| s.arn == arn || s.name == arn)
                .ok_or_else(|| format!("no secret {arn} on this core"))?;
            if json {
                output::json(&view(s));
            } else {
                print(std::slice::from_ref(s));
                for l in &s.missing_labels {
                    println!("the group asks for label {l}, which has no value here");
                }
            }
        }
        SecretsCmd::Put { arn, label, binary } => {
            let mut value = Vec::new();
            std::io::stdin()
                .read_to_end(&mut value)
                .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
            // A value typed or echoed ends with a newline that is not part of it.
            if !binary && value.ends_with(b"\n") {
                value.pop();
                if value.ends_with(b"\r") {
                    value.pop();
                }
            }
            let s = api
                .put_secret(pb::PutSecretRequest {
                    arn,
                    label,
                    value,
                    binary,
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            if json {
                output::json(&view(&s));
            } else {
                print(std::slice::from_ref(&s));
            }
        }
        SecretsCmd::RotateKey => {
            let r = api
                .rotate_data_key(pb::RotateDataKeyRequest {})
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            if json {
                output::json(
                    &serde_json::json!({ "data_key_id": r.data_key_id, "sealed": r.sealed }),
                );
            } else {
                println!(
                    "new data key {}: {} values sealed again",
                    r.data_key_id, r.sealed
                );
            }
        }
        SecretsCmd::Delete { arn } => {
            let r = api
                .delete_secret(pb::DeleteSecretRequest { arn: arn.clone() })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            if !r.deleted {
                return Err(format!("no secret {arn} on this core"));
            }
            println!("deleted {arn}");
        }
    }
    Ok(())
}
