//! The broker's clients, over `verdant.broker.v1.Broker`.

use std::path::Path;

use serde::Serialize;
use verdant_proto::broker::v1 as pb;
use verdant_proto::broker::v1::broker_client::BrokerClient;

use crate::{dial, output, status_error};

#[derive(Serialize)]
struct ClientView<'a> {
    client_id: &'a str,
    thing_name: &'a str,
    connected: bool,
    listener: &'a str,
    peer_address: &'a str,
    clean_session: bool,
    subscriptions: Vec<String>,
    queued: u32,
    certificate_subject: &'a str,
}

pub async fn clients(dir: &Path, json: bool) -> Result<(), String> {
    let mut api = BrokerClient::new(dial(dir, "broker").await?);
    let resp = api
        .list_clients(pb::ListClientsRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    let views: Vec<ClientView> = resp
        .clients
        .iter()
        .map(|c| ClientView {
            client_id: &c.client_id,
            thing_name: &c.thing_name,
            connected: c.connected,
            listener: &c.listener,
            peer_address: &c.peer_address,
            clean_session: c.clean_session,
            subscriptions: c
                .subscriptions
                .iter()
                .map(|s| format!("{} (QoS {})", s.filter, s.qos))
                .collect(),
            queued: c.queued,
            certificate_subject: &c.certificate_subject,
        })
        .collect();
    if json {
        output::json(&views);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.client_id.to_string(),
                if v.thing_name.is_empty() {
                    "-".into()
                } else {
                    v.thing_name.to_string()
                },
                if v.connected {
                    "connected".into()
                } else {
                    "away (persistent)".into()
                },
                if v.connected {
                    format!("{} {}", v.listener, v.peer_address)
                } else {
                    "-".into()
                },
                v.queued.to_string(),
                v.subscriptions.join(", "),
            ]
        })
        .collect();
    output::table(
        &[
            "CLIENT",
            "THING",
            "STATE",
            "FROM",
            "QUEUED",
            "SUBSCRIPTIONS",
        ],
        &rows,
    );
    if let Some(c) = resp.counters {
        println!(
            "\npublished {}  delivered {}  dropped: QoS 0 {}, queue full {}",
            c.published, c.delivered, c.dropped_qos0, c.dropped_queue_full
        );
    }
    Ok(())
}

pub async fn disconnect(dir: &Path, client_id: String) -> Result<(), String> {
    let mut api = BrokerClient::new(dial(dir, "broker").await?);
    let done = api
        .disconnect_client(pb::DisconnectClientRequest {
            client_id: client_id.clone(),
        })
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    if done.disconnected {
        println!("disconnected {client_id}");
        Ok(())
    } else {
        Err(format!("{client_id} is not connected"))
    }
}
