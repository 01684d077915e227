//! The discovery daemon's router link (endpoint `discovery`): while the
//! cloud connection is up, the core's connectivity goes to the cloud on
//! `verdant/things/<core thing>/connectivity` (`[core] thing_name`, the
//! core's client id towards the cloud; QoS 1, queued by the
//! router like any message for the cloud), in the shape of Greengrass's
//! `UpdateConnectivityInfo` request, each time it changes and each time
//! the cloud connection comes back. Nothing comes down but the cloud's
//! state.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, watch};
use verdant_common::paths::Layout;
use verdant_common::shutdown::CancellationToken;
use verdant_link::{Handler, Link, ToRouter, Up};
use verdant_proto::router::v1 as pb;

use crate::connectivity::Connectivity;

/// Messages the router may send before more credit is granted.
const CREDIT: u32 = 8;

/// Where the core's connectivity goes in the cloud.
pub fn topic(core: &str) -> String {
    format!("verdant/things/{core}/connectivity")
}

/// The message: `{"ThingName": …, "ConnectivityInfo": [{"Id", "HostAddress",
/// "PortNumber", "Metadata"}]}`.
pub fn payload(core: &str, connectivity: &Connectivity) -> String {
    let info: Vec<_> = connectivity
        .entries()
        .0
        .into_iter()
        .map(|e| {
            serde_json::json!({ "Id": e.id, "HostAddress": e.host_address,
                                "PortNumber": e.port_number, "Metadata": e.metadata })
        })
        .collect();
    serde_json::json!({ "ThingName": core, "ConnectivityInfo": info }).to_string()
}

/// Publishes the connectivity to the cloud when it changes (`changed` is
/// notified) or the cloud connection comes back, until `shutdown`.
pub async fn run(
    layout: Layout,
    core: String,
    connectivity: Arc<Connectivity>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<ToRouter>();
    let (cloud_tx, mut cloud) = watch::channel(false);
    let socket = layout.socket("router");
    let link_stop = shutdown.clone();
    tokio::spawn(async move {
        let link = Link {
            socket: &socket,
            endpoint: "discovery",
            credit: CREDIT,
            max_waiting: 4,
        };
        link.run(&mut Discovery { cloud: cloud_tx }, &mut up_rx, link_stop)
            .await;
    });
    let mut last: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = cloud.changed() => if r.is_err() { return },
            () = changed.notified() => {}
        }
        if !*cloud.borrow_and_update() {
            // Sent again in full when the cloud comes back.
            last = None;
            continue;
        }
        let body = payload(&core, &connectivity);
        if last.as_ref() == Some(&body) {
            continue;
        }
        let message = pb::Message {
            source: crate::SERVICE.into(),
            topic: topic(&core),
            payload: body.clone().into_bytes().into(),
            qos: 1,
            ..pb::Message::default()
        };
        if up_tx
            .send(ToRouter {
                message,
                outcome: None,
            })
            .is_err()
        {
            return;
        }
        tracing::info!(topic = topic(&core), "connectivity sent to the cloud");
        last = Some(body);
    }
}

struct Discovery {
    cloud: watch::Sender<bool>,
}

impl Handler for Discovery {
    async fn down(&mut self, kind: pb::link_down::Kind, up: &Up<'_>) -> Result<(), String> {
        match kind {
            pb::link_down::Kind::Cloud(c) => {
                self.cloud.send_replace(c.connected);
                Ok(())
            }
            pb::link_down::Kind::Messages(batch) => {
                if up.took(&batch.messages) {
                    Ok(())
                } else {
                    Err("the stream closed".into())
                }
            }
            _ => Ok(()),
        }
    }
}
