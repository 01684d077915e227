//! The subscription table compiled for matching: which targets a message
//! from a source on a topic reaches (docs/routing.md). The router owns the
//! table; the broker keeps a copy the router hands it, so both match with
//! this one implementation.
//!
//! Per source, the subjects form a trie over topic levels, so a message is
//! matched in time proportional to its topic's depth and the routes it
//! matches, not to the size of the table.

use std::collections::HashMap;

use crate::model::Group;

/// What a subscription's Source or Target names, told apart by its form
/// alone (the group was validated, so every name is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `cloud`.
    Cloud,
    /// `GGShadowService`.
    Shadow,
    /// A core or device thing ARN.
    Thing,
    /// A function ARN.
    Function,
    /// A connector ARN.
    Connector,
}

impl Kind {
    pub fn of(name: &str) -> Kind {
        match name {
            "cloud" => Kind::Cloud,
            "GGShadowService" => Kind::Shadow,
            _ if name.contains(":iot:") => Kind::Thing,
            _ if name.contains(":lambda:") => Kind::Function,
            _ => Kind::Connector,
        }
    }
}

/// One subscription of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub id: String,
    pub source: String,
    pub subject: String,
    pub target: String,
}

/// Index of a route in its [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteIndex(pub usize);

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Routes whose subject ends here with `#`.
    hash: Vec<RouteIndex>,
    /// Routes whose subject ends exactly here.
    end: Vec<RouteIndex>,
}

impl Node {
    fn insert(&mut self, subject: &str, route: RouteIndex) {
        let mut node = self;
        for level in subject.split('/') {
            node = match level {
                "#" => {
                    node.hash.push(route);
                    return;
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                _ => node.children.entry(level.into()).or_default(),
            };
        }
        node.end.push(route);
    }

    /// Pushes the routes matching the remaining `levels` of a topic.
    /// `dollar` is true at the root of a `$` topic, where a wildcard does
    /// not match (MQTT-4.7.2-1).
    fn collect(
        &self,
        mut levels: std::str::Split<'_, char>,
        dollar: bool,
        out: &mut Vec<RouteIndex>,
    ) {
        // `#` also matches the parent level ("a/#" matches "a").
        if !dollar {
            out.extend_from_slice(&self.hash);
        }
        let Some(level) = levels.next() else {
            out.extend_from_slice(&self.end);
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

/// The compiled table of one group version.
#[derive(Debug, Default)]
pub struct Table {
    version: u64,
    routes: Vec<Route>,
    by_source: HashMap<String, Node>,
    /// Things whose shadows the core keeps in sync with the cloud
    /// (`SyncShadow: true`), by thing name, sorted.
    synced: Vec<String>,
}

impl Table {
    /// Compiles `routes` (validated: names known, subjects valid filters).
    pub fn new(version: u64, routes: Vec<Route>) -> Table {
        let mut by_source: HashMap<String, Node> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            by_source
                .entry(r.source.clone())
                .or_default()
                .insert(&r.subject, RouteIndex(i));
        }
        Table {
            version,
            routes,
            by_source,
            synced: Vec::new(),
        }
    }

    /// The same table with `things` (names) marked `SyncShadow`.
    pub fn with_synced(mut self, mut things: Vec<String>) -> Table {
        things.sort();
        things.dedup();
        self.synced = things;
        self
    }

    /// The things whose shadows are synced with the cloud, sorted.
    pub fn synced(&self) -> &[String] {
        &self.synced
    }

    /// Whether the shadows of `thing` are synced with the cloud.
    pub fn is_synced(&self, thing: &str) -> bool {
        self.synced
            .binary_search_by(|t| t.as_str().cmp(thing))
            .is_ok()
    }

    /// The table of a deployed group.
    pub fn from_group(version: u64, group: &Group) -> Table {
        let routes = group
            .subscription_definition_version
            .subscriptions
            .iter()
            .map(|s| Route {
                id: s.id.clone(),
                source: s.source.clone(),
                subject: s.subject.clone(),
                target: s.target.clone(),
            })
            .collect();
        let synced = group
            .core_definition_version
            .cores
            .iter()
            .chain(&group.device_definition_version.devices)
            .filter(|t| t.sync_shadow)
            .map(|t| t.thing_name().to_string())
            .collect();
        Table::new(version, routes).with_synced(synced)
    }

    /// Which deployment this table came from; the broker tells the router
    /// which version it routed a message's device targets with.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn route(&self, index: RouteIndex) -> &Route {
        &self.routes[index.0]
    }

    /// Replaces `out` with the routes a message from `source` on `topic`
    /// takes, in table order, each once.
    pub fn matching(&self, source: &str, topic: &str, out: &mut Vec<RouteIndex>) {
        out.clear();
        if let Some(root) = self.by_source.get(source) {
            root.collect(topic.split('/'), topic.starts_with('$'), out);
            if out.len() > 1 {
                out.sort_unstable();
                out.dedup();
            }
        }
    }

    /// Whether `source` has any route at all (a source with none is
    /// dropped without looking at the topic).
    pub fn has_source(&self, source: &str) -> bool {
        self.by_source.contains_key(source)
    }
}

/// Which side of the shadow protocol a shadow topic is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowSide {
    /// `get`, `update` or `delete`: a request to a shadow service.
    Request,
    /// `.../accepted`, `.../rejected` or `update/documents`: a shadow
    /// service's answer (`update/delta` is neither: it is for devices).
    Response,
}

/// The thing of a shadow topic
/// (`$aws/things/<thing>/shadow[/name/<name>]/...`) and its side; `None`
/// for any other topic.
pub fn shadow_topic(topic: &str) -> Option<(&str, ShadowSide)> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing, rest) = rest.split_once("/shadow/")?;
    if thing.is_empty() || thing.contains('/') {
        return None;
    }
    let rest = match rest.strip_prefix("name/") {
        Some(named) => named.split_once('/').filter(|(n, _)| !n.is_empty())?.1,
        None => rest,
    };
    let side = match rest.split_once('/') {
        None if matches!(rest, "get" | "update" | "delete") => ShadowSide::Request,
        Some(("get" | "update" | "delete", "accepted" | "rejected") | ("update", "documents")) => {
            ShadowSide::Response
        }
        _ => return None,
    };
    Some((thing, side))
}

/// The plain reading of a subscription's subject, for tests and fuzzing:
/// whether `subject` matches `topic`, level by level.
pub fn subject_matches(subject: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (subject.starts_with('+') || subject.starts_with('#')) {
        return false;
    }
    let s: Vec<&str> = subject.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    for (i, level) in s.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" if i < t.len() => {}
            _ if i < t.len() && t[i] == *level => {}
            _ => return false,
        }
    }
    s.len() == t.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, source: &str, subject: &str, target: &str) -> Route {
        Route {
            id: id.into(),
            source: source.into(),
            subject: subject.into(),
            target: target.into(),
        }
    }

    fn ids(table: &Table, source: &str, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        table.matching(source, topic, &mut out);
        out.iter().map(|i| table.route(*i).id.clone()).collect()
    }

    #[test]
    fn shadow_topics_by_side() {
        use ShadowSide::{Request, Response};
        for (topic, want) in [
            ("$aws/things/t1/shadow/update", Some(("t1", Request))),
            ("$aws/things/t1/shadow/name/cfg/get", Some(("t1", Request))),
            ("$aws/things/t1/shadow/get/accepted", Some(("t1", Response))),
            (
                "$aws/things/t1/shadow/update/documents",
                Some(("t1", Response)),
            ),
            (
                "$aws/things/t1/shadow/name/cfg/delete/rejected",
                Some(("t1", Response)),
            ),
            ("$aws/things/t1/shadow/update/delta", None),
            ("$aws/things/t1/shadow/name//update", None),
            ("$aws/things//shadow/update", None),
            ("$aws/things/t1/shadow/other", None),
            ("dev/t1/shadow/update", None),
        ] {
            assert_eq!(shadow_topic(topic), want, "{topic}");
        }
        let t = Table::new(1, Vec::new()).with_synced(vec!["b".into(), "a".into(), "b".into()]);
        assert_eq!(t.synced(), ["a", "b"]);
        assert!(t.is_synced("a") && !t.is_synced("c"));
    }

    #[test]
    fn matches_by_source_and_subject_with_wildcards() {
        let t = Table::new(
            1,
            vec![
                route("a", "dev", "x/+/z", "cloud"),
                route("b", "dev", "x/#", "other"),
                route("c", "dev", "#", "all"),
                route("d", "cloud", "x/y/z", "dev"),
                route("e", "dev", "x", "exact"),
                route("f", "dev", "$aws/things/dev/shadow/#", "GGShadowService"),
                route("g", "dev", "+/things/#", "never-dollar"),
            ],
        );
        assert_eq!(ids(&t, "dev", "x/y/z"), ["a", "b", "c"]);
        assert_eq!(ids(&t, "dev", "x"), ["b", "c", "e"]);
        assert_eq!(ids(&t, "dev", "x/y"), ["b", "c"]);
        assert_eq!(ids(&t, "other", "x/y/z"), Vec::<String>::new());
        assert_eq!(ids(&t, "dev", "$aws/things/dev/shadow/update"), ["f"]);
        assert_eq!(ids(&t, "dev", "a//b"), ["c"]);
        assert!(t.has_source("cloud") && !t.has_source("nobody"));
    }

    #[test]
    fn kinds_by_form() {
        assert_eq!(Kind::of("cloud"), Kind::Cloud);
        assert_eq!(Kind::of("GGShadowService"), Kind::Shadow);
        assert_eq!(Kind::of("arn:aws:iot:r:1:thing/x"), Kind::Thing);
        assert_eq!(Kind::of("arn:aws:lambda:r:1:function:f:1"), Kind::Function);
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        fn level() -> impl Strategy<Value = String> {
            prop::sample::select(vec!["a", "b", "", "$x", "$aws", "ä"]).prop_map(String::from)
        }

        fn topic() -> impl Strategy<Value = String> {
            prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
        }

        fn subject() -> impl Strategy<Value = String> {
            (
                prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+".to_string())], 0..4),
                any::<bool>(),
            )
                .prop_map(|(mut l, hash)| {
                    // No levels at all is no filter: that case is "#".
                    if hash || l.is_empty() {
                        l.push("#".into());
                    }
                    l.join("/")
                })
        }

        proptest! {
            // CI runs 2000 cases; PROPTEST_CASES=1000000 for the long run
            // docs/benchmarks.md records.
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
            ))]
            #[test]
            fn table_agrees_with_the_plain_reading(
                subs in prop::collection::vec((0..3u8, subject(), 0..3u8), 0..20),
                source in 0..3u8,
                topic in topic(),
            ) {
                let routes: Vec<Route> = subs
                    .iter()
                    .enumerate()
                    .map(|(i, (s, subj, t))| route(&i.to_string(), &s.to_string(), subj, &t.to_string()))
                    .collect();
                let table = Table::new(1, routes.clone());
                let mut got = Vec::new();
                table.matching(&source.to_string(), &topic, &mut got);
                let want: Vec<RouteIndex> = routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.source == source.to_string() && subject_matches(&r.subject, &topic))
                    .map(|(i, _)| RouteIndex(i))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
