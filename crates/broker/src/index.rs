//! Which clients subscribe to what, as a trie of filter levels: a publish
//! finds its subscribers in time proportional to its topic's depth and the
//! subscriptions it matches, not to the number of sessions.

use std::sync::Arc;

use rumqttc::QoS;

/// The trie's maps hash a level or a client id on every publish: with
/// foldhash (seeded per process, as hashbrown's own default) rather than
/// `SipHash`. Only authenticated devices choose these keys.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Node {
    /// Boxed: a level with many children (a thousand devices' own topics)
    /// keeps a table of pointers, not of 150-byte nodes.
    children: HashMap<Box<str>, Box<Node>>,
    plus: Option<Box<Node>>,
    /// Subscribers whose filter ends here with `#`.
    hash: HashMap<Arc<str>, QoS>,
    /// Subscribers whose filter ends exactly here.
    end: HashMap<Arc<str>, QoS>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.end.is_empty()
    }

    /// The map `filter` ends in, creating the path.
    fn slot(&mut self, filter: &str) -> &mut HashMap<Arc<str>, QoS> {
        let mut node = self;
        for level in filter.split('/') {
            node = match level {
                "#" => return &mut node.hash,
                "+" => node.plus.get_or_insert_with(Box::default),
                _ => node.children.entry(level.into()).or_default(),
            };
        }
        &mut node.end
    }

    /// Removes `client` from `filter`'s slot, pruning empty nodes; true if
    /// this node is empty afterwards.
    fn remove<'a>(&mut self, mut levels: impl Iterator<Item = &'a str>, client: &str) -> bool {
        match levels.next() {
            None => {
                self.end.remove(client);
            }
            Some("#") => {
                self.hash.remove(client);
            }
            Some("+") => {
                if let Some(p) = &mut self.plus
                    && p.remove(levels, client)
                {
                    self.plus = None;
                }
            }
            Some(level) => {
                if let Some(c) = self.children.get_mut(level)
                    && c.remove(levels, client)
                {
                    self.children.remove(level);
                }
            }
        }
        self.is_empty()
    }

    /// Appends the subscribers of every filter matching the rest of the
    /// topic (`levels`) to `out`, counting in `maps` the sets it took them
    /// from: one set holds a client at most once, several may repeat it.
    fn collect(
        &self,
        mut levels: std::str::Split<'_, char>,
        dollar: bool,
        out: &mut Vec<(Arc<str>, QoS)>,
        maps: &mut usize,
    ) {
        let mut add = |m: &HashMap<Arc<str>, QoS>| {
            if !m.is_empty() {
                *maps += 1;
                out.extend(m.iter().map(|(c, q)| (c.clone(), *q)));
            }
        };
        // `#` also matches the parent level ("a/#" matches "a").
        if !dollar {
            add(&self.hash);
        }
        let Some(level) = levels.next() else {
            add(&self.end);
            return;
        };
        if let Some(child) = self.children.get(level) {
            child.collect(levels.clone(), false, out, maps);
        }
        if !dollar && let Some(plus) = &self.plus {
            plus.collect(levels, false, out, maps);
        }
    }
}

/// Every session's subscriptions, by filter.
#[derive(Debug, Default)]
pub struct Index {
    root: Node,
    /// Shared subscriptions: a trie of their filters whose "clients" are
    /// the shares (`$share/<name>/<filter>`), and each share's members.
    shared_root: Node,
    shares: HashMap<Arc<str>, Share>,
}

/// The members of one shared subscription, who take its messages in turn.
#[derive(Debug, Default)]
pub struct Share {
    pub members: Vec<(Arc<str>, QoS)>,
    /// Who is next.
    pub next: usize,
}

impl Index {
    pub fn insert(&mut self, filter: &str, client: &Arc<str>, qos: QoS) {
        let Some((_, inner)) = crate::topic::shared(filter) else {
            self.root.slot(filter).insert(client.clone(), qos);
            return;
        };
        let share = self.shares.entry(Arc::from(filter)).or_default();
        match share.members.iter_mut().find(|(c, _)| c == client) {
            Some(member) => member.1 = qos,
            None => share.members.push((client.clone(), qos)),
        }
        let key = self
            .shares
            .get_key_value(filter)
            .expect("inserted above")
            .0
            .clone();
        self.shared_root.slot(inner).insert(key, QoS::AtMostOnce);
    }

    pub fn remove(&mut self, filter: &str, client: &str) {
        let Some((_, inner)) = crate::topic::shared(filter) else {
            self.root.remove(filter.split('/'), client);
            return;
        };
        let Some(share) = self.shares.get_mut(filter) else {
            return;
        };
        share.members.retain(|(c, _)| &**c != client);
        if share.members.is_empty() {
            self.shares.remove(filter);
            self.shared_root.remove(inner.split('/'), filter);
        }
    }

    /// The shared subscriptions whose filter matches `topic`: each sends
    /// the message to one of its members. A share's filter sits in one
    /// place of the trie, so it matches once.
    pub fn matching_shares(&mut self, topic: &str) -> Vec<&mut Share> {
        if self.shares.is_empty() {
            return Vec::new();
        }
        let mut keys = Vec::new();
        self.shared_root
            .collect(topic.split('/'), topic.starts_with('$'), &mut keys, &mut 0);
        self.shares
            .iter_mut()
            .filter(|(k, _)| keys.iter().any(|(key, _)| key == *k))
            .map(|(_, share)| share)
            .collect()
    }

    /// Appends the clients subscribed to `topic` to `out`, each once, at
    /// the highest QoS of its matching filters. A filter starting with a
    /// wildcard does not match a topic starting with `$` (MQTT-4.7.2-1).
    /// Without overlapping filters (the usual case) this allocates nothing
    /// once `out` has grown.
    pub fn matching(&self, topic: &str, out: &mut Vec<(Arc<str>, QoS)>) {
        let start = out.len();
        let mut maps = 0;
        self.root
            .collect(topic.split('/'), topic.starts_with('$'), out, &mut maps);
        if maps > 1 {
            // The same client through several filters: once, at the
            // highest QoS. Its id may be in several allocations.
            out[start..].sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut merged = out.split_off(start);
            merged.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same && (later.1 as u8) > (kept.1 as u8) {
                    kept.1 = later.1;
                }
                same
            });
            out.append(&mut merged);
        }
    }

    /// No subscription at all (every node pruned).
    pub fn is_empty(&self) -> bool {
        self.root.is_empty() && self.shared_root.is_empty() && self.shares.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn level() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "", "$s", "+", "#"]).prop_map(String::from)
    }

    /// Valid filters only: `#` last.
    fn filter() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..4).prop_map(|mut l| {
            if let Some(i) = l.iter().position(|x| x == "#") {
                l.truncate(i + 1);
            }
            l.join("/")
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$s"]), 1..4)
            .prop_map(|l| l.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// Inserting and removing in any order, the index answers what a
        /// scan of every client's filters with the matcher answers.
        #[test]
        fn agrees_with_scanning_every_filter(
            ops in prop::collection::vec((any::<bool>(), 0..4u8, filter(), 0..3u8), 0..40),
            topic in topic(),
        ) {
            let mut index = Index::default();
            let mut plain: HashMap<(u8, String), QoS> = HashMap::default();
            let clients: Vec<Arc<str>> = (0..4).map(|i| Arc::from(i.to_string())).collect();
            for (add, c, f, q) in ops {
                let qos = match q { 0 => QoS::AtMostOnce, 1 => QoS::AtLeastOnce, _ => QoS::ExactlyOnce };
                if add {
                    // A new allocation of the id each time, as the hub's.
                    index.insert(&f, &Arc::from(&*clients[c as usize]), qos);
                    plain.insert((c, f), qos);
                } else {
                    index.remove(&f, &clients[c as usize]);
                    plain.remove(&(c, f));
                }
            }
            let mut want: HashMap<String, u8> = HashMap::default();
            for ((c, f), q) in &plain {
                if crate::topic::matches(f, &topic) {
                    let e = want.entry(c.to_string()).or_insert(0);
                    *e = (*e).max(*q as u8);
                }
            }
            let mut matched = vec![(Arc::from("already there"), QoS::AtMostOnce)];
            index.matching(&topic, &mut matched);
            let got: HashMap<String, u8> = matched[1..]
                .iter()
                .map(|(c, q)| (c.to_string(), *q as u8))
                .collect();
            prop_assert_eq!(got.len(), matched.len() - 1, "each client once: {:?}", matched);
            prop_assert_eq!(&*matched[0].0, "already there");
            prop_assert_eq!(got, want);
            if plain.is_empty() {
                prop_assert!(index.is_empty(), "removed subscriptions leave no nodes");
            }
        }
    }
}
