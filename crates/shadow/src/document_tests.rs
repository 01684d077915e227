//! Shadow semantics against AWS IoT's documented behaviour.

use serde_json::json;

use super::*;

const LIMITS: Limits = Limits {
    max_document_bytes: 8192,
    max_in_flight_per_thing: 10,
};

fn req(v: &Value) -> Request {
    parse(v.to_string().as_bytes(), LIMITS).unwrap()
}

fn apply(current: Option<&Shadow>, v: &Value) -> Result<Updated, Rejection> {
    update(current, &req(v), 100)
}

#[test]
fn update_merges_deletes_with_null_versions_and_echoes_the_token() {
    let first = apply(
        None,
        &json!({"state": {"desired": {"color": "red", "mode": {"a": 1, "b": 2}}}, "clientToken": "t1"}),
    )
    .unwrap();
    assert_eq!(first.shadow.version, 1);
    assert_eq!(first.accepted["clientToken"], "t1");
    assert_eq!(first.accepted["version"], 1);
    assert_eq!(
        first.accepted["metadata"]["desired"]["mode"]["a"]["timestamp"],
        100
    );
    assert_eq!(first.documents["previous"], Value::Null);
    // Desired with nothing reported: all of it is the delta, at the new version.
    let delta = first.delta.unwrap();
    assert_eq!(delta["version"], 1);
    assert_eq!(delta["state"]["color"], "red");

    let second = apply(
        Some(&first.shadow),
        &json!({"state": {"reported": {"color": "red", "mode": {"a": 1, "b": 3}}, "desired": {"mode": {"b": null}}}}),
    )
    .unwrap();
    let s = &second.shadow;
    assert_eq!(s.version, 2);
    assert_eq!(
        Value::Object(s.desired.clone().unwrap()),
        json!({"color": "red", "mode": {"a": 1}})
    );
    // Desired and reported agree on every desired key: no delta.
    assert!(second.delta.is_none());
    assert_eq!(second.documents["previous"]["version"], 1);
    assert_eq!(second.documents["current"]["version"], 2);
    // A null section deletes it.
    let third = apply(Some(s), &json!({"state": {"desired": null}})).unwrap();
    assert!(third.shadow.desired.is_none() && third.shadow.desired_metadata.is_none());
}

#[test]
fn delta_is_recursive() {
    let s = apply(
        None,
        &json!({"state": {"desired": {"m": {"x": 1, "y": 2}}, "reported": {"m": {"x": 1, "y": 5}}}}),
    )
    .unwrap();
    assert_eq!(s.delta.unwrap()["state"], json!({"m": {"y": 2}}));
}

#[test]
fn rejections_with_aws_codes_and_messages() {
    let code = |r: Result<Updated, Rejection>| r.unwrap_err();
    assert_eq!(
        code(apply(None, &json!({"clientToken": "x"}))).message,
        "Missing required node: state"
    );
    assert_eq!(
        code(apply(None, &json!({"state": 1}))).message,
        "State node must be an object"
    );
    assert_eq!(
        code(apply(None, &json!({"state": {"desired": 1}}))).message,
        "Desired node must be an object"
    );
    assert_eq!(
        code(apply(None, &json!({"state": {"reported": [1]}}))).message,
        "Reported node must be an object"
    );
    assert_eq!(
        code(apply(None, &json!({"state": {"other": {}}}))).message,
        "State contains an invalid node"
    );
    let deep = json!({"state": {"desired": {"1": {"2": {"3": {"4": {"5": {"6": {"7": 1}}}}}}}}});
    assert_eq!(code(apply(None, &deep)).code, 400);
    let six = json!({"state": {"desired": {"1": {"2": {"3": {"4": {"5": {"6": 1}}}}}}}});
    assert!(apply(None, &six).is_ok());
    let v1 = apply(None, &json!({"state": {"desired": {"a": 1}}})).unwrap();
    let conflict = apply(
        Some(&v1.shadow),
        &json!({"state": {"desired": {"a": 2}}, "version": 7}),
    );
    assert_eq!(
        code(conflict),
        Rejection {
            code: 409,
            message: "Version conflict".into()
        }
    );
    assert!(
        apply(
            Some(&v1.shadow),
            &json!({"state": {"desired": {"a": 2}}, "version": 1})
        )
        .is_ok()
    );
    assert_eq!(
        code(apply(None, &json!({"state": {}, "version": "x"}))).message,
        "Invalid version"
    );

    let (r, token) = parse(b"{not json", LIMITS).unwrap_err();
    assert_eq!(
        (r.code, r.message.as_str(), token),
        (400, "Invalid JSON", None)
    );
    let (r, token) = parse(br#"{"clientToken": "t", "state": }"#, LIMITS).unwrap_err();
    assert_eq!((r.code, token.as_deref()), (400, Some("t")));
    let (r, token) = parse(&vec![b' '; 9000], LIMITS).unwrap_err();
    assert_eq!((r.code, token), (413, None));
    let big = json!({"state": {"reported": {"x": "y".repeat(9000)}}, "clientToken": "big"});
    let (r, token) = parse(big.to_string().as_bytes(), LIMITS).unwrap_err();
    assert_eq!((r.code, token.as_deref()), (413, Some("big")));
    let long = "x".repeat(65);
    let (r, token) = parse(
        json!({ "clientToken": long }).to_string().as_bytes(),
        LIMITS,
    )
    .unwrap_err();
    assert_eq!(
        (r.message.as_str(), token),
        ("Invalid clientToken", Some(long))
    );
    let (_, token) = parse(br#"{"clientToken": 5}"#, LIMITS).unwrap_err();
    assert_eq!(token, None);
    let body = rejected(&reject(404, "gone"), Some(&"tok".to_string()), 5);
    assert_eq!(
        body,
        json!({"code": 404, "message": "gone", "timestamp": 5, "clientToken": "tok"})
    );
}

#[test]
fn get_and_delete() {
    let r = req(&json!({"clientToken": "g"}));
    assert_eq!(
        get(None, "dev", &r, 1).unwrap_err().message,
        "No shadow exists with name: 'dev'"
    );
    let s = apply(
        None,
        &json!({"state": {"desired": {"on": true}, "reported": {"on": false}}}),
    )
    .unwrap()
    .shadow;
    let got = get(Some(&s), "dev", &r, 1).unwrap();
    assert_eq!(got["state"]["delta"], json!({"on": true}));
    assert_eq!(got["clientToken"], "g");
    assert_eq!(got["version"], 1);
    assert_eq!(got["metadata"]["reported"]["on"]["timestamp"], 100);
    let deleted = delete(Some(&s), "dev", &r, 2).unwrap();
    assert_eq!(
        deleted,
        json!({"version": 1, "timestamp": 2, "clientToken": "g"})
    );
    assert_eq!(Shadow::from_json(&s.to_json()).unwrap(), s);
}
