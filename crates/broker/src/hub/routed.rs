//! The hub's routed mode: the router's table copy, device targets
//! delivered here, the rest forwarded, counts and traces reported.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use verdant_group::routes::{Kind, RouteIndex, Table};

use super::{Hub, REPORT_EVERY, Routing};
use crate::message::Message;
use crate::request::{Forward, ToLink, Traced};

/// What one route of the router's table carried here since the last
/// report to the router.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RouteCount {
    /// Messages routed by it.
    messages: u64,
    /// Their payload bytes.
    bytes: u64,
}

impl Hub {
    /// Routed mode: the table comes from the router, and messages with
    /// targets beyond the devices go to it through `link`.
    pub fn routed(&mut self, link: mpsc::UnboundedSender<ToLink>) {
        self.routing = Routing::Routed {
            table: None,
            link,
            counts: Vec::new(),
            no_route: HashMap::new(),
            last_report: std::time::Instant::now(),
            unreported: false,
            tracing: false,
            scratch: Vec::new(),
        };
    }

    pub fn is_routed(&self) -> bool {
        matches!(self.routing, Routing::Routed { .. })
    }

    /// Starts or stops tracing routed messages to the router.
    pub fn set_tracing(&mut self, on: bool) {
        if let Routing::Routed { tracing, .. } = &mut self.routing {
            *tracing = on;
        }
    }

    /// Takes the router's new table; messages from now on use it.
    pub fn set_table(&mut self, new: Arc<Table>) {
        self.report(true);
        if let Routing::Routed { table, counts, .. } = &mut self.routing {
            tracing::info!(
                version = new.version(),
                routes = new.routes().len(),
                "subscription table from the router"
            );
            *counts = vec![RouteCount::default(); new.routes().len()];
            *table = Some(new);
        }
    }

    /// Sends the routes' counts to the router, at most once a second
    /// unless `now`.
    pub(super) fn report(&mut self, now: bool) {
        let Routing::Routed {
            table: Some(table),
            link,
            counts,
            no_route,
            last_report,
            unreported,
            ..
        } = &mut self.routing
        else {
            return;
        };
        if !*unreported || (!now && last_report.elapsed() < REPORT_EVERY) {
            return;
        }
        *last_report = std::time::Instant::now();
        *unreported = false;
        let routes: Vec<(String, u64, u64)> = counts
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| c.messages > 0)
            .map(|(i, c)| {
                let RouteCount { messages, bytes } = std::mem::take(c);
                (table.route(RouteIndex(i)).id.clone(), messages, bytes)
            })
            .collect();
        let dropped: Vec<(String, u64)> =
            no_route.drain().map(|(s, n)| (s.to_string(), n)).collect();
        if !routes.is_empty() || !dropped.is_empty() {
            let _ = link.send(ToLink::Counts {
                routes,
                no_route: dropped,
            });
        }
    }

    /// Whether counts wait to be reported to the router.
    pub(super) fn unreported(&self) -> bool {
        matches!(
            self.routing,
            Routing::Routed {
                unreported: true,
                ..
            }
        )
    }

    /// Routes a device's message. Local mode: as [`Hub::publish`]. Routed
    /// mode: the table's device targets get it here, and what else it
    /// must reach is returned, to go to the router once this batch is
    /// committed. Retained messages are not kept in routed mode (a
    /// retained message would reach later subscribers the table never
    /// allowed, and Greengrass v1 had none).
    pub fn publish_from(
        &mut self,
        message: &Message,
        source: Option<&Arc<str>>,
    ) -> Option<Forward> {
        let Routing::Routed {
            table,
            counts,
            no_route,
            scratch,
            unreported,
            tracing,
            link,
            ..
        } = &mut self.routing
        else {
            self.publish(message);
            return None;
        };
        self.counters.published += 1;
        let Some(source) = source else {
            self.counters.no_route += 1;
            tracing::debug!(topic = %verdant_common::telemetry::bounded(&message.topic), "message from a client that is no device: discarded");
            return None;
        };
        let message = Message {
            retain: false,
            ..message.clone()
        };
        let forward = |table_version| Forward {
            message: message.clone(),
            source: source.clone(),
            table_version,
            reply: None,
        };
        let Some(table) = table else {
            return Some(forward(0));
        };
        table.matching(source, &message.topic, scratch);
        *unreported = true;
        let mut things: Vec<String> = Vec::new();
        let mut beyond = false;
        for i in scratch.iter() {
            let route = table.route(*i);
            counts[i.0].messages += 1;
            counts[i.0].bytes += message.payload.len() as u64;
            if Kind::of(&route.target) == Kind::Thing {
                let name = route.target.rsplit_once("thing/").map_or("", |(_, n)| n);
                if !things.iter().any(|t| t == name) {
                    things.push(name.to_string());
                }
            } else {
                beyond = true;
            }
        }
        let out = beyond.then(|| forward(table.version()));
        // The router traces what it routes; the devices' part, or a
        // message without a route, is traced here.
        if *tracing && (!things.is_empty() || scratch.is_empty()) {
            let outcome = if scratch.is_empty() {
                "no route"
            } else {
                "routed"
            };
            let _ = link.send(ToLink::Trace(Traced::new(
                source,
                &message,
                things.clone(),
                outcome,
            )));
        }
        if scratch.is_empty() {
            self.counters.no_route += 1;
            *no_route.entry(source.clone()).or_default() += 1;
            tracing::debug!(source = %source, topic = %verdant_common::telemetry::bounded(&message.topic), "no route: message discarded");
        }
        if !things.is_empty() {
            self.fan_out(&message, Some(&things));
        }
        self.report(false);
        out
    }

    /// Delivers a message the router routed to the devices `things`.
    pub fn deliver_to(&mut self, things: &[String], message: &Message) {
        self.fan_out(message, Some(things));
    }

    /// Hands a message to the router's link (after its batch committed).
    pub(super) fn forward(&mut self, f: Forward, durable: bool) {
        if let Routing::Routed { link, .. } = &self.routing {
            match f.reply {
                Some(reply) if !durable => {
                    let _ = reply.send(false);
                }
                _ => {
                    let _ = link.send(ToLink::Forward(f));
                }
            }
        }
    }
}
