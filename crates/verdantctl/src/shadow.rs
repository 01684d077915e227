//! Device shadows, over `verdant.shadow.v1.Shadow`.

use std::path::Path;

use clap::Subcommand;
use verdant_proto::shadow::v1 as pb;
use verdant_proto::shadow::v1::shadow_client::ShadowClient;

use crate::{dial, status_error};

#[derive(Debug, Subcommand)]
pub enum ShadowCmd {
    /// A shadow's document (state, delta, metadata, version).
    Get {
        /// The thing whose shadow it is.
        thing: String,
        /// A named shadow (default: the classic shadow).
        #[arg(long)]
        name: Option<String>,
    },
    /// Update a shadow with a request document, e.g. '{"state":{"desired":{"on":true}}}'.
    Update {
        /// The thing whose shadow it is.
        thing: String,
        /// The update request: a JSON document with `state.desired` and/or `state.reported`.
        document: String,
        /// A named shadow (default: the classic shadow).
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a shadow.
    Delete {
        /// The thing whose shadow it is.
        thing: String,
        /// A named shadow (default: the classic shadow).
        #[arg(long)]
        name: Option<String>,
    },
    /// The named shadows of a thing.
    List {
        /// The thing whose named shadows to list.
        thing: String,
    },
    /// Every durable change from now on, one JSON line each (of one
    /// thing's shadows, or all).
    Watch {
        /// Only this thing's shadows (default: every thing's).
        thing: Option<String>,
    },
    /// Where a shadow's sync with the cloud stands (things marked `SyncShadow`).
    Sync {
        /// The thing whose shadow it is.
        thing: String,
        /// A named shadow (default: the classic shadow).
        #[arg(long)]
        name: Option<String>,
    },
}

/// Pretty JSON for people, compact for `-o json`.
fn print(payload: &[u8], json: bool) {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) if !json => println!("{}", serde_json::to_string_pretty(&v).expect("json")),
        Ok(v) => println!("{v}"),
        Err(_) => println!("{}", String::from_utf8_lossy(payload)),
    }
}

pub async fn run(dir: &Path, cmd: ShadowCmd, json: bool) -> Result<(), String> {
    let mut api = ShadowClient::new(dial(dir, "shadow").await?);
    let reply = match cmd {
        ShadowCmd::Get { thing, name } => {
            api.get_shadow(pb::GetShadowRequest {
                thing_name: thing,
                shadow_name: name.unwrap_or_default(),
            })
            .await
        }
        ShadowCmd::Update {
            thing,
            document,
            name,
        } => {
            api.update_shadow(pb::UpdateShadowRequest {
                thing_name: thing,
                shadow_name: name.unwrap_or_default(),
                payload: document.into_bytes(),
            })
            .await
        }
        ShadowCmd::Delete { thing, name } => {
            api.delete_shadow(pb::DeleteShadowRequest {
                thing_name: thing,
                shadow_name: name.unwrap_or_default(),
            })
            .await
        }
        ShadowCmd::Watch { thing } => {
            let mut stream = api
                .watch_shadows(pb::WatchShadowsRequest {
                    thing_name: thing.unwrap_or_default(),
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            while let Some(c) = stream.message().await.map_err(|e| status_error(&e))? {
                let document: serde_json::Value =
                    serde_json::from_slice(&c.document).unwrap_or_default();
                println!(
                    "{}",
                    serde_json::json!({
                        "thing": c.thing_name,
                        "shadow": c.shadow_name,
                        "deleted": c.deleted,
                        "document": document,
                    })
                );
            }
            return Ok(());
        }
        ShadowCmd::Sync { thing, name } => {
            let s = api
                .get_sync(pb::GetSyncRequest {
                    thing_name: thing,
                    shadow_name: name.unwrap_or_default(),
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            let v = serde_json::json!({
                "synced": s.synced,
                "connected": s.connected,
                "cloud_version": s.cloud_version,
                "in_sync": s.in_sync,
                "awaiting": s.awaiting,
            });
            print(v.to_string().as_bytes(), json);
            return Ok(());
        }
        ShadowCmd::List { thing } => {
            let names = api
                .list_named_shadows(pb::ListNamedShadowsRequest { thing_name: thing })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner()
                .shadow_names;
            if json {
                println!("{}", serde_json::json!(names));
            } else {
                for n in names {
                    println!("{n}");
                }
            }
            return Ok(());
        }
    };
    let reply = reply.map_err(|e| status_error(&e))?.into_inner();
    print(&reply.payload, json);
    Ok(())
}
