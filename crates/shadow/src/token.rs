//! The `clientToken` of a request that is refused before it is read
//! whole (too large, not JSON): SDKs match replies by token, so a
//! rejection without it leaves the caller waiting for its timeout.

/// The string value of the outermost object's `clientToken` key, found by
/// walking the payload's strings and brackets without building anything.
/// Exact for valid JSON (where a key is repeated, the first string value
/// counts); for broken JSON a best effort: the key and its string value
/// must be whole and at the top level of an object the payload opens
/// with, and what comes after them does not matter. `None` when there is
/// no such key, or its value is not a string.
pub fn recover(payload: &[u8]) -> Option<String> {
    let mut i = skip_whitespace(payload, 0);
    if payload.get(i) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    while let Some(&b) = payload.get(i) {
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return None;
                }
            }
            b'"' => {
                let end = string_end(payload, i)?;
                if depth == 1
                    && let Some(value) = token_after(payload, &payload[i..=end], end + 1)
                {
                    return Some(value);
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// If `key` (a JSON string with its quotes) is `clientToken` and a string
/// value follows it from `after` on, that value.
fn token_after(payload: &[u8], key: &[u8], after: usize) -> Option<String> {
    let is_token = key == br#""clientToken""#
        || (key.contains(&b'\\')
            && serde_json::from_slice::<String>(key).is_ok_and(|k| k == "clientToken"));
    if !is_token {
        return None;
    }
    let colon = skip_whitespace(payload, after);
    if payload.get(colon) != Some(&b':') {
        return None;
    }
    let start = skip_whitespace(payload, colon + 1);
    if payload.get(start) != Some(&b'"') {
        return None;
    }
    let end = string_end(payload, start)?;
    serde_json::from_slice(&payload[start..=end]).ok()
}

/// The index of the quote closing the string opened at `start`.
fn string_end(payload: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += payload
            .get(i..)?
            .iter()
            .position(|&b| b == b'"' || b == b'\\')?;
        if payload[i] == b'"' {
            return Some(i);
        }
        i += 2;
    }
}

fn skip_whitespace(payload: &[u8], from: usize) -> usize {
    from + payload.get(from..).map_or(0, |rest| {
        rest.iter().take_while(|b| b.is_ascii_whitespace()).count()
    })
}

#[cfg(test)]
mod tests {
    use super::recover;
    use serde_json::{Value, json};

    fn of(s: &str) -> Option<String> {
        recover(s.as_bytes())
    }

    #[test]
    fn valid_json_gives_the_top_level_token_only() {
        let docs = [
            json!({"clientToken": "a"}),
            json!({"state": {"reported": {"clientToken": "inner"}}, "clientToken": "top"}),
            json!({"state": {"desired": {"x": ["{", "\"clientToken\":\"no\"", {"clientToken": "n"}]}}, "clientToken": "t\"\\{}"}),
            json!({"state": {"desired": {"clientToken": "only inside"}}}),
            json!({"note": "clientToken", "clientToken": "é 💡"}),
            json!({"clientToken": 7}),
            json!({"clientToken": null}),
            json!({}),
            json!([{"clientToken": "in an array"}]),
            json!("clientToken"),
        ];
        for doc in docs {
            let text = serde_json::to_string_pretty(&doc).unwrap();
            let expected = doc
                .get("clientToken")
                .and_then(Value::as_str)
                .map(str::to_string);
            assert_eq!(of(&text), expected, "{text}");
            assert_eq!(of(&doc.to_string()), expected, "{doc}");
        }
        assert_eq!(
            of(r#"{"client\u0054oken": "escaped"}"#).as_deref(),
            Some("escaped")
        );
    }

    #[test]
    fn broken_json_gives_a_whole_top_level_token() {
        assert_eq!(
            of(r#"{"clientToken":"t1", "state": {"desired": {oops}}"#).as_deref(),
            Some("t1")
        );
        assert_eq!(
            of(r#"{"state": {"desired": {"a": 1}}, "clientToken": "t2"} trailing"#).as_deref(),
            Some("t2")
        );
        assert_eq!(
            of(r#"{"state": {"desired": 1,,}, "clientToken": "t3""#).as_deref(),
            Some("t3")
        );
        // Not whole, not at the top, or no object to begin with: none.
        assert_eq!(of(r#"{"clientToken": "cut"#), None);
        assert_eq!(of(r#"{"state": {"clientToken": "inner""#), None);
        assert_eq!(of(r#"{"state": "unterminated, "clientToken": "t"}"#), None);
        assert_eq!(of(r#"not json "clientToken": "t""#), None);
        assert_eq!(of(""), None);
        assert_eq!(recover(b"{\"clientToken\": \"\xff\"}"), None);
    }

    #[test]
    fn any_prefix_of_a_request_is_safe() {
        let doc = r#"{"state": {"desired": {"a": [1, {"b": "x\"}"}]}}, "clientToken": "tok", "version": 3}"#;
        for end in 0..=doc.len() {
            let got = recover(&doc.as_bytes()[..end]);
            let whole = doc[..end].contains(r#""tok""#);
            assert_eq!(got.is_some(), whole, "{}", &doc[..end]);
        }
        assert_eq!(recover(b"{\"a\":\"\\"), None);
        assert_eq!(recover(b"}}}{"), None);
    }
}
