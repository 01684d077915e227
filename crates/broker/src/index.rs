//! Which clients subscribe to what, as a trie of filter levels: a publish
//! finds its subscribers in time proportional to its topic's depth and the
//! subscriptions it matches, not to the number of sessions.

use std::collections::HashMap;
use std::sync::Arc;

use rumqttc::QoS;

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

    fn collect<'a>(
        &'a self,
        mut levels: std::str::Split<'_, char>,
        dollar: bool,
        out: &mut HashMap<&'a Arc<str>, QoS>,
    ) {
        let mut add = |m: &'a HashMap<Arc<str>, QoS>| {
            for (c, q) in m {
                out.entry(c)
                    .and_modify(|have| {
                        if (*q as u8) > (*have as u8) {
                            *have = *q;
                        }
                    })
                    .or_insert(*q);
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
            child.collect(levels.clone(), false, out);
        }
        if !dollar && let Some(plus) = &self.plus {
            plus.collect(levels, false, out);
        }
    }
}

/// Every session's subscriptions, by filter.
#[derive(Debug, Default)]
pub struct Index {
    root: Node,
    /// Shared subscriptions: a trie of their filters whose "clients" are
    /// the groups (`$share/<name>/<filter>`), and each group's members.
    shared_root: Node,
    groups: HashMap<Arc<str>, Group>,
}

/// The members of one shared subscription, who take its messages in turn.
#[derive(Debug, Default)]
pub struct Group {
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
        let group = self.groups.entry(Arc::from(filter)).or_default();
        match group.members.iter_mut().find(|(c, _)| c == client) {
            Some(member) => member.1 = qos,
            None => group.members.push((client.clone(), qos)),
        }
        let key = self
            .groups
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
        let Some(group) = self.groups.get_mut(filter) else {
            return;
        };
        group.members.retain(|(c, _)| &**c != client);
        if group.members.is_empty() {
            self.groups.remove(filter);
            self.shared_root.remove(inner.split('/'), filter);
        }
    }

    /// The shared subscriptions whose filter matches `topic`: each sends
    /// the message to one of its members.
    pub fn matching_groups(&mut self, topic: &str) -> Vec<&mut Group> {
        if self.groups.is_empty() {
            return Vec::new();
        }
        let mut keys = HashMap::new();
        self.shared_root
            .collect(topic.split('/'), topic.starts_with('$'), &mut keys);
        let keys: Vec<Arc<str>> = keys.into_keys().cloned().collect();
        self.groups
            .iter_mut()
            .filter(|(k, _)| keys.contains(k))
            .map(|(_, g)| g)
            .collect()
    }

    /// The clients subscribed to `topic`, each once, at the highest QoS of
    /// its matching filters. A filter starting with a wildcard does not
    /// match a topic starting with `$` (MQTT-4.7.2-1).
    pub fn matching(&self, topic: &str) -> HashMap<&Arc<str>, QoS> {
        let mut out = HashMap::new();
        self.root
            .collect(topic.split('/'), topic.starts_with('$'), &mut out);
        out
    }

    /// No subscription at all (every node pruned).
    pub fn is_empty(&self) -> bool {
        self.root.is_empty() && self.shared_root.is_empty() && self.groups.is_empty()
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
            let mut plain: HashMap<(u8, String), QoS> = HashMap::new();
            let clients: Vec<Arc<str>> = (0..4).map(|i| Arc::from(i.to_string())).collect();
            for (add, c, f, q) in ops {
                let qos = match q { 0 => QoS::AtMostOnce, 1 => QoS::AtLeastOnce, _ => QoS::ExactlyOnce };
                if add {
                    index.insert(&f, &clients[c as usize], qos);
                    plain.insert((c, f), qos);
                } else {
                    index.remove(&f, &clients[c as usize]);
                    plain.remove(&(c, f));
                }
            }
            let mut want: HashMap<String, u8> = HashMap::new();
            for ((c, f), q) in &plain {
                if crate::topic::matches(f, &topic) {
                    let e = want.entry(c.to_string()).or_insert(0);
                    *e = (*e).max(*q as u8);
                }
            }
            let got: HashMap<String, u8> = index
                .matching(&topic)
                .into_iter()
                .map(|(c, q)| (c.to_string(), q as u8))
                .collect();
            prop_assert_eq!(got, want);
            if plain.is_empty() {
                prop_assert!(index.is_empty(), "removed subscriptions leave no nodes");
            }
        }
    }
}
