//! Canonical JSON as TUF signs it (securesystemslib's `encode_canonical`,
//! which python-tuf uses): object keys sorted by their bytes, no
//! whitespace, strings with only `"` and `\` escaped and everything else
//! (control characters and non-ASCII text too) written as it is, integers
//! only. The `olpc-cjson` crate also normalises text to Unicode NFC, which
//! securesystemslib does not, so its bytes would differ from what a
//! python-tuf repository signed for non-ASCII text.

use serde_json::Value;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("canonical JSON has no floating-point numbers ({0})")]
pub struct NotCanonical(String);

/// The canonical bytes of `value`.
pub fn encode(value: &Value) -> Result<Vec<u8>, NotCanonical> {
    let mut out = Vec::new();
    write(value, &mut out)?;
    Ok(out)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), NotCanonical> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if n.is_f64() {
                return Err(NotCanonical(n.to_string()));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(key, out);
                out.push(b':');
                write(&map[key], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sorted_no_spaces_only_quote_and_backslash_escaped() {
        let v: Value = serde_json::from_str(
            r#"{"b": [1, true, null], "a": "x\"y\\z\n\u00e9", "_type": {"z": -3, "A": "q"}}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(encode(&v).unwrap()).unwrap(),
            "{\"_type\":{\"A\":\"q\",\"z\":-3},\"a\":\"x\\\"y\\\\z\n\u{e9}\",\"b\":[1,true,null]}"
        );
        assert!(encode(&serde_json::json!({ "f": 1.5 })).is_err());
    }
}
