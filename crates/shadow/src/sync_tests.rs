use super::*;

fn map(v: Value) -> Map<String, Value> {
    let Value::Object(m) = v else {
        panic!("not an object: {v}")
    };
    m
}

fn sides(v: Value) -> Sides {
    let mut m = map(v);
    let mut section = |k| m.remove(k).map(map).unwrap_or_default();
    Sides {
        desired: section("desired"),
        reported: section("reported"),
    }
}

fn shadow(v: Value, version: u64) -> Shadow {
    let s = sides(v);
    Shadow {
        desired: Some(s.desired),
        reported: Some(s.reported),
        version,
        ..Shadow::default()
    }
}

fn key(thing: &str) -> Key {
    (thing.into(), String::new())
}

fn body(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap()
}

/// The token of the one request sent to the cloud.
fn sent(a: &Actions, topic: &str) -> (String, Value) {
    assert_eq!(a.cloud.len(), 1, "{a:?}");
    assert_eq!(a.cloud[0].0, topic);
    let b = body(&a.cloud[0].1);
    (b["clientToken"].as_str().unwrap().to_string(), b)
}

fn answer(sync: &mut Sync, topic: &str, v: &Value, docs: &HashMap<Key, Shadow>) -> Actions {
    sync.answer(topic, v.to_string().as_bytes(), docs)
}

#[test]
fn merge_rule_reported_local_desired_cloud_changes_beat_deletions() {
    let base = map(json!({"a": 1, "b": 1, "c": 1, "d": 1, "o": {"x": 1, "y": 1}}));
    let local = map(json!({"a": 2, "b": 1, "c": 3, "o": {"x": 2, "y": 1}, "new": true}));
    let cloud = map(json!({"a": 1, "b": 5, "c": 4, "o": {"x": 1, "y": 2}}));
    // a: local only; b: cloud only; c: both (rule); d: deleted on both;
    // o: merged key by key; new: local only.
    assert_eq!(
        merge3(&base, &local, &cloud, true),
        map(json!({"a": 2, "b": 5, "c": 3, "o": {"x": 2, "y": 2}, "new": true}))
    );
    assert_eq!(
        merge3(&base, &local, &cloud, false)["c"],
        json!(4),
        "desired: the cloud wins"
    );
    // Deleted on one side, changed on the other: the change stays.
    let changed = map(json!({"d": 2}));
    assert_eq!(
        merge3(&base, &changed, &map(json!({})), false),
        map(json!({"d": 2}))
    );
    // Deleted on one side, unchanged on the other: gone.
    assert_eq!(
        merge3(
            &map(json!({"d": 1})),
            &map(json!({"d": 1})),
            &map(json!({})),
            true
        ),
        Map::new()
    );
}

#[test]
fn whole_shadows_deleted_or_created_on_one_side() {
    let s = sides(json!({"reported": {"t": 1}}));
    // The cloud deleted it, nothing changed locally: gone.
    assert_eq!(merge_shadows(Some(&s), Some(&s), None), None);
    // Never synced, exists only locally: kept.
    assert_eq!(merge_shadows(None, Some(&s), None), Some(s.clone()));
    // Deleted locally, changed in the cloud: the cloud's change stays.
    let c = sides(json!({"reported": {"t": 1}, "desired": {"on": true}}));
    assert_eq!(
        merge_shadows(Some(&s), None, Some(&c)),
        Some(sides(json!({"desired": {"on": true}})))
    );
}

#[test]
fn diffs_carry_changes_and_nulls() {
    let from = sides(json!({"desired": {"a": 1, "o": {"x": 1, "y": 1}}, "reported": {"r": 1}}));
    let to = sides(json!({"desired": {"a": 1, "o": {"x": 2}}, "reported": {}}));
    assert_eq!(
        diff_sides(&from, &to),
        json!({"desired": {"o": {"x": 2, "y": null}}, "reported": {"r": null}})
    );
    assert_eq!(diff_sides(&to, &to), json!({}));
}

#[test]
fn first_connection_reads_the_cloud_then_sends_local_changes_up_with_the_cloud_version() {
    let mut sync = Sync::new(HashMap::new());
    let mut docs = HashMap::new();
    docs.insert(key("t"), shadow(json!({"reported": {"temp": 20}}), 7));
    // Not synced, not connected: nothing.
    assert!(sync.changed(&[key("t")], &docs).cloud.is_empty());
    assert!(sync.set_things(vec!["t".into()], &docs).cloud.is_empty());
    let a = sync.set_connected(true, &docs);
    let (token, _) = sent(&a, "$aws/things/t/shadow/get");
    // The cloud has no shadow: ours goes up whole, without a version.
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/get/rejected",
        &json!({"code": 404, "message": "No shadow exists with name: 't'", "clientToken": token}),
        &docs,
    );
    assert!(a.local.is_empty());
    let (token, b) = sent(&a, "$aws/things/t/shadow/update");
    assert_eq!(b["state"], json!({"reported": {"temp": 20}}));
    assert!(b.get("version").is_none());
    // Others' answers and our stale ones are not ours.
    let stale = json!({"version": 1, "clientToken": "verdant-sync-999"});
    assert!(
        answer(
            &mut sync,
            "$aws/things/t/shadow/update/accepted",
            &stale,
            &docs
        )
        .cloud
        .is_empty()
    );
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/update/accepted",
        &json!({"version": 1, "clientToken": token}),
        &docs,
    );
    assert_eq!(
        a.agreed,
        [(
            key("t"),
            Agreed {
                base: Some(sides(json!({"reported": {"temp": 20}}))),
                cloud_version: 1
            }
        )]
    );
    assert!(a.cloud.is_empty(), "in sync");
    // A local change goes up as a difference against cloud version 1.
    docs.insert(key("t"), shadow(json!({"reported": {"temp": 21}}), 8));
    let a = sync.changed(&[key("t")], &docs);
    let (_, b) = sent(&a, "$aws/things/t/shadow/update");
    assert_eq!(b["state"], json!({"reported": {"temp": 21}}));
    assert_eq!(b["version"], 1);
}

#[test]
fn a_cloud_change_is_read_and_applied_locally_and_a_conflict_reconciles() {
    let agreed = Agreed {
        base: Some(sides(
            json!({"desired": {"mode": "eco"}, "reported": {"temp": 20}}),
        )),
        cloud_version: 4,
    };
    let mut sync = Sync::new(HashMap::from([(key("t"), agreed)]));
    let mut docs = HashMap::new();
    docs.insert(
        key("t"),
        shadow(
            json!({"desired": {"mode": "eco"}, "reported": {"temp": 20}}),
            2,
        ),
    );
    sync.set_things(vec!["t".into()], &docs);
    let a = sync.set_connected(true, &docs);
    let (token, _) = sent(&a, "$aws/things/t/shadow/get");
    // The cloud is as agreed: nothing to do.
    let same = json!({"state": {"desired": {"mode": "eco"}, "reported": {"temp": 20}}, "version": 4, "clientToken": token});
    let a = answer(&mut sync, "$aws/things/t/shadow/get/accepted", &same, &docs);
    assert!(a.cloud.is_empty() && a.local.is_empty());
    // Our own documents do not make us read again; someone else's do.
    let mine = json!({"current": {"version": 5}, "clientToken": "verdant-sync-1"});
    assert!(
        answer(
            &mut sync,
            "$aws/things/t/shadow/update/documents",
            &mine,
            &docs
        )
        .cloud
        .is_empty()
    );
    let theirs = json!({"current": {"version": 5}, "clientToken": "app"});
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/update/documents",
        &theirs,
        &docs,
    );
    let (token, _) = sent(&a, "$aws/things/t/shadow/get");
    // Meanwhile, locally: temp 25 and mode "off"; in the cloud: temp 30 and
    // mode "boost". Reported keeps local, desired takes the cloud's.
    docs.insert(
        key("t"),
        shadow(
            json!({"desired": {"mode": "off"}, "reported": {"temp": 25}}),
            3,
        ),
    );
    assert!(
        sync.changed(&[key("t")], &docs).cloud.is_empty(),
        "a read is awaited"
    );
    let cloud = json!({"state": {"desired": {"mode": "boost"}, "reported": {"temp": 30, "fw": 2}}, "version": 6, "clientToken": token});
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/get/accepted",
        &cloud,
        &docs,
    );
    assert!(a.cloud.is_empty(), "local first");
    assert_eq!(a.local.len(), 1);
    assert_eq!(a.local[0].0, "$aws/things/t/shadow/update");
    assert_eq!(
        body(&a.local[0].1),
        json!({"state": {"desired": {"mode": "boost"}, "reported": {"fw": 2}}})
    );
    assert_eq!(a.agreed[0].1.cloud_version, 6);
    // Applied locally; what stays local goes up against version 6.
    docs.insert(
        key("t"),
        shadow(
            json!({"desired": {"mode": "boost"}, "reported": {"temp": 25, "fw": 2}}),
            4,
        ),
    );
    let a = sync.changed(&[key("t")], &docs);
    let (token, b) = sent(&a, "$aws/things/t/shadow/update");
    assert_eq!(b["state"], json!({"reported": {"temp": 25}}));
    assert_eq!(b["version"], 6);
    // A 409: read again.
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/update/rejected",
        &json!({"code": 409, "message": "Version conflict", "clientToken": token}),
        &docs,
    );
    sent(&a, "$aws/things/t/shadow/get");
}

#[test]
fn deletions_both_ways_and_named_shadows() {
    let named = ("t".to_string(), "cfg".to_string());
    let agreed = Agreed {
        base: Some(sides(json!({"reported": {"x": 1}}))),
        cloud_version: 3,
    };
    let mut sync = Sync::new(HashMap::from([(named.clone(), agreed)]));
    let mut docs = HashMap::new();
    sync.set_things(vec!["t".into()], &docs);
    let a = sync.set_connected(true, &docs);
    // The classic shadow and the named one we knew are read.
    let mut topics: Vec<&str> = a.cloud.iter().map(|(t, _)| t.as_str()).collect();
    topics.sort_unstable();
    assert_eq!(
        topics,
        [
            "$aws/things/t/shadow/get",
            "$aws/things/t/shadow/name/cfg/get"
        ]
    );
    let token = |a: &Actions, topic: &str| {
        let (_, b) = a.cloud.iter().find(|(t, _)| t == topic).unwrap();
        body(b)["clientToken"].as_str().unwrap().to_string()
    };
    let t = token(&a, "$aws/things/t/shadow/name/cfg/get");
    // Deleted locally while apart, unchanged in the cloud: deleted there.
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/name/cfg/get/accepted",
        &json!({"state": {"reported": {"x": 1}}, "version": 3, "clientToken": t}),
        &docs,
    );
    let (t, _) = sent(&a, "$aws/things/t/shadow/name/cfg/delete");
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/name/cfg/delete/accepted",
        &json!({"version": 3, "clientToken": t}),
        &docs,
    );
    assert_eq!(a.agreed, [(named.clone(), Agreed::default())]);
    // Deleted in the cloud by someone: read, and deleted locally.
    docs.insert(named.clone(), shadow(json!({"reported": {"x": 2}}), 1));
    let a = sync.changed(std::slice::from_ref(&named), &docs);
    let (t, _) = sent(&a, "$aws/things/t/shadow/name/cfg/update");
    answer(
        &mut sync,
        "$aws/things/t/shadow/name/cfg/update/accepted",
        &json!({"version": 1, "clientToken": t}),
        &docs,
    );
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/name/cfg/delete/accepted",
        &json!({"version": 1, "clientToken": "console"}),
        &docs,
    );
    let (t, _) = sent(&a, "$aws/things/t/shadow/name/cfg/get");
    let a = answer(
        &mut sync,
        "$aws/things/t/shadow/name/cfg/get/rejected",
        &json!({"code": 404, "message": "No shadow exists with name: 'cfg'", "clientToken": t}),
        &docs,
    );
    assert_eq!(
        a.local,
        [(
            "$aws/things/t/shadow/name/cfg/delete".to_string(),
            Bytes::from_static(b"{}")
        )]
    );
    // Disconnected: nothing goes up.
    sync.set_connected(false, &docs);
    assert!(
        sync.changed(std::slice::from_ref(&named), &docs)
            .cloud
            .is_empty()
    );
}
