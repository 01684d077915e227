//! A native function for the tests, written with verdant-function-sdk: for
//! each message, updates device a's shadow, asks the Python adder for a
//! sum, and publishes what it saw to native/out.

use verdant_function_sdk::{Error, Function, Outcome};

fn main() -> Result<(), Error> {
    let adder = std::env::var("ADDER_ARN").unwrap_or_default();
    let f = Function::from_env()?;
    f.run(|f, work| {
        let event: serde_json::Value = serde_json::from_slice(&work.payload).unwrap_or_default();
        if event.get("fail").is_some() {
            return Ok(Outcome::Error("asked to fail".into()));
        }
        let update = serde_json::json!({ "state": { "reported": { "native": event } } });
        let shadow: serde_json::Value =
            serde_json::from_slice(&f.shadow("update", "a", update.to_string().as_bytes())?)
                .unwrap_or_default();
        let ask = serde_json::json!({ "a": event["n"], "b": 10_000 });
        let answer = f.invoke(&adder, ask.to_string().as_bytes())?;
        let sum: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
        let out = serde_json::json!({
            "event": event,
            "subject": work.subject(),
            "shadow_version": shadow["version"],
            "sum": sum["sum"],
            "uid": nix::unistd::getuid().as_raw(),
            "function": f.arn(),
        });
        f.publish("native/out", out.to_string().as_bytes())?;
        Ok(Outcome::Result(b"{}".to_vec()))
    })
}
