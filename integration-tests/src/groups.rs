//! Pieces of group definitions for tests that deploy their own group.

/// The thing ARN of `name` in the tests' account.
pub fn arn(name: &str) -> String {
    format!("arn:aws:iot:us-east-1:123456789012:thing/{name}")
}

/// A core or device entry; `n` makes its (made-up) certificate id unique.
/// Such devices connect on the plain listener, where in routed mode the
/// client id names the device.
pub fn thing(name: &str, n: u8) -> serde_json::Value {
    serde_json::json!({
        "Id": name,
        "ThingArn": arn(name),
        "CertificateArn": format!(
            "arn:aws:iot:us-east-1:123456789012:cert/{}",
            format!("{n:02x}").repeat(32)
        ),
    })
}
