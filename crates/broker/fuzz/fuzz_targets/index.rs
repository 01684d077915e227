//! The subscription index against a scan of every filter: any sequence of
//! subscribes and unsubscribes (shared ones included), then a publish;
//! the index must name the clients the matcher names, each once, at the
//! highest QoS of their matching filters, and leave no node behind once
//! every subscription is gone.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rumqttc::QoS;
use verdant_broker::index::Index;
use verdant_broker::topic::{self, TopicLimits};

const LIMITS: TopicLimits = TopicLimits {
    max_bytes: 65_535,
    max_levels: 1024,
};
/// Levels filters and topics are made of: a small alphabet, so that the
/// fuzzer's inputs overlap and match.
const LEVELS: [&str; 8] = ["a", "b", "", "$s", "+", "#", "$share", "g"];

fn join(levels: &[u8]) -> String {
    let levels: Vec<&str> = levels
        .iter()
        .map(|b| LEVELS[usize::from(*b) % LEVELS.len()])
        .collect();
    levels.join("/")
}

fn qos(q: u8) -> QoS {
    match q % 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fuzz_target!(|data: (Vec<(bool, u8, Vec<u8>, u8)>, Vec<u8>)| {
    let (ops, topic) = data;
    let topic = join(&topic);
    let mut index = Index::default();
    let mut plain: HashMap<(u8, String), QoS> = HashMap::new();
    for (add, client, filter, q) in ops {
        let client = client % 8;
        let filter = join(&filter);
        if topic::validate_filter(&filter, LIMITS).is_err() {
            continue;
        }
        if add {
            // A new allocation of the id each time, as the hub's.
            index.insert(&filter, &Arc::from(client.to_string()), qos(q));
            plain.insert((client, filter), qos(q));
        } else {
            index.remove(&filter, &client.to_string());
            plain.remove(&(client, filter));
        }
    }
    if topic::validate_name(&topic, LIMITS).is_err() {
        return;
    }
    let mut want: HashMap<String, u8> = HashMap::new();
    for ((client, filter), q) in &plain {
        if topic::shared(filter).is_none() && topic::matches(filter, &topic) {
            let e = want.entry(client.to_string()).or_insert(0);
            *e = (*e).max(*q as u8);
        }
    }
    let mut matched = Vec::new();
    index.matching(&topic, &mut matched);
    let got: HashMap<String, u8> = matched
        .iter()
        .map(|(c, q)| (c.to_string(), *q as u8))
        .collect();
    assert_eq!(got.len(), matched.len(), "each client once: {matched:?}");
    assert_eq!(got, want, "topic {topic:?}");
    // Each shared subscription whose filter matches takes the message once.
    let groups: std::collections::HashSet<&str> = plain
        .keys()
        .filter_map(|(_, f)| {
            topic::shared(f)
                .filter(|(_, inner)| topic::matches(inner, &topic))
                .map(|_| f.as_str())
        })
        .collect();
    assert_eq!(
        index.matching_shares(&topic).len(),
        groups.len(),
        "topic {topic:?}"
    );
    if plain.is_empty() {
        assert!(index.is_empty(), "removed subscriptions leave no nodes");
    }
});
