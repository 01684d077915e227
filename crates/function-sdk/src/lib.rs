//! Write functions for a Verdant core (or any Greengrass v1 core's IPC) as
//! native executables in Rust.
//!
//! A function with `Executable` naming a program in its artifact is started
//! by the lambda-runner with the environment of every function
//! (`AWS_CONTAINER_AUTHORIZATION_TOKEN`, `MY_FUNCTION_ARN`,
//! `GG_DAEMON_PORT`, ...) and speaks the core's HTTP IPC
//! (`docs/functions.md`, "Native executables"). This crate is that
//! protocol:
//!
//! ```no_run
//! use verdant_function_sdk::{Function, Outcome};
//!
//! fn main() -> Result<(), verdant_function_sdk::Error> {
//!     let f = Function::from_env()?;
//!     f.run(|f, work| {
//!         let topic = work.subject().unwrap_or_default().to_string();
//!         f.publish("relay/out", &work.payload)?;
//!         Ok(Outcome::Result(format!("relayed from {topic}").into_bytes()))
//!     })
//! }
//! ```

use std::io::Read;

use base64::Engine;

/// An ARN as one segment of a URL path: a connector's ARN has slashes.
fn segment(arn: &str) -> String {
    arn.replace('%', "%25").replace('/', "%2F")
}

const ROUTER_ARN: &str = "arn:aws:lambda:::function:GGRouter";
const SHADOW_ARN: &str = "arn:aws:lambda:::function:GGShadowService";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not set: is this running as a function of a core?")]
    Environment(&'static str),
    #[error("IPC {what}: {source}")]
    Http {
        what: &'static str,
        source: Box<ureq::Error>,
    },
    #[error("IPC {what}: {status} {body}")]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("IPC {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// One work item: an invocation of this function.
#[derive(Debug, Clone)]
pub struct Work {
    pub invocation_id: String,
    pub payload: Vec<u8>,
    /// The decoded client context (`{"custom": {"subject": topic}}` for a
    /// routed message).
    pub client_context: serde_json::Value,
}

impl Work {
    /// The topic of the message this work item is, if it is one.
    pub fn subject(&self) -> Option<&str> {
        self.client_context
            .pointer("/custom/subject")
            .and_then(serde_json::Value::as_str)
    }
}

/// What a handler gives back.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The result body.
    Result(Vec<u8>),
    /// A handled error (the caller sees `FunctionError: Handled`).
    Error(String),
}

/// Another function's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub payload: Vec<u8>,
    /// `""`, `Handled` or `Unhandled`.
    pub function_error: String,
}

/// This function's side of the core's IPC.
#[derive(Debug)]
pub struct Function {
    agent: ureq::Agent,
    base: String,
    token: String,
    arn: String,
}

fn var(name: &'static str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| Error::Environment(name))
}

fn http(what: &'static str) -> impl FnOnce(ureq::Error) -> Error {
    move |e| Error::Http {
        what,
        source: Box::new(e),
    }
}

impl Function {
    /// The function as the core started it (its environment).
    pub fn from_env() -> Result<Function, Error> {
        let port = var("GG_DAEMON_PORT").unwrap_or_else(|_| "8000".into());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Function {
            agent,
            base: format!("http://127.0.0.1:{port}/2016-11-01/functions"),
            token: var("AWS_CONTAINER_AUTHORIZATION_TOKEN")?,
            arn: var("MY_FUNCTION_ARN")?,
        })
    }

    /// This function's qualified ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    fn check(
        what: &'static str,
        mut r: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let status = r.status().as_u16();
        if status >= 400 {
            let body = r.body_mut().read_to_string().unwrap_or_default();
            return Err(Error::Status { what, status, body });
        }
        Ok(r)
    }

    fn read(
        what: &'static str,
        r: &mut ureq::http::Response<ureq::Body>,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        r.body_mut()
            .as_reader()
            .read_to_end(&mut out)
            .map_err(|source| Error::Io { what, source })?;
        Ok(out)
    }

    fn header(r: &ureq::http::Response<ureq::Body>, name: &str) -> String {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// Tells the core the function is ready (`success`) or could not start.
    pub fn initialized(&self, success: bool, response: &str) -> Result<(), Error> {
        let body = serde_json::json!({ "Success": success, "Response": response }).to_string();
        let r = self
            .agent
            .put(format!("{}/{}/initialized", self.base, segment(&self.arn)))
            .header("Authorization", &self.token)
            .send(body.as_bytes())
            .map_err(http("initialized"))?;
        Self::check("initialized", r).map(|_| ())
    }

    /// Waits for the next work item.
    pub fn work(&self) -> Result<Work, Error> {
        let r = self
            .agent
            .get(format!("{}/{}/work", self.base, segment(&self.arn)))
            .header("Authorization", &self.token)
            .call()
            .map_err(http("get work"))?;
        let mut r = Self::check("get work", r)?;
        let invocation_id = Self::header(&r, "X-Amz-InvocationId");
        let context = Self::header(&r, "X-Amz-Client-Context");
        let client_context = base64::engine::general_purpose::STANDARD
            .decode(context)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Work {
            invocation_id,
            payload: Self::read("get work", &mut r)?,
            client_context,
        })
    }

    /// Gives the outcome of work item `invocation_id`.
    pub fn finish(&self, invocation_id: &str, outcome: &Outcome) -> Result<(), Error> {
        let mut request = self
            .agent
            .post(format!("{}/{}/work", self.base, segment(&self.arn)))
            .header("Authorization", &self.token)
            .header("X-Amz-InvocationId", invocation_id);
        let body = match outcome {
            Outcome::Result(b) => b.clone(),
            Outcome::Error(message) => {
                request = request.header("X-Amz-Function-Error", "Handled");
                serde_json::json!({ "errorMessage": message })
                    .to_string()
                    .into_bytes()
            }
        };
        let r = request.send(&body[..]).map_err(http("post result"))?;
        Self::check("post result", r).map(|_| ())
    }

    /// Says it is initialized, then hands every work item to `handler`
    /// and gives its outcome, until the IPC fails.
    pub fn run(
        &self,
        mut handler: impl FnMut(&Function, &Work) -> Result<Outcome, Error>,
    ) -> Result<(), Error> {
        self.initialized(true, "")?;
        loop {
            let work = self.work()?;
            let outcome = handler(self, &work).unwrap_or_else(|e| Outcome::Error(e.to_string()));
            self.finish(&work.invocation_id, &outcome)?;
        }
    }

    fn post_work(
        &self,
        target: &str,
        payload: &[u8],
        client_context: &serde_json::Value,
        event: bool,
    ) -> Result<String, Error> {
        let context = if client_context.is_null() {
            String::new()
        } else {
            base64::engine::general_purpose::STANDARD.encode(client_context.to_string())
        };
        let r = self
            .agent
            .post(format!("{}/{}", self.base, segment(target)))
            .header("Authorization", &self.token)
            .header("X-Amz-Client-Context", context)
            .header(
                "X-Amz-Invocation-Type",
                if event { "Event" } else { "RequestResponse" },
            )
            .send(payload)
            .map_err(http("post work"))?;
        let r = Self::check("post work", r)?;
        Ok(Self::header(&r, "X-Amz-InvocationId"))
    }

    fn result(&self, target: &str, invocation_id: &str) -> Result<Answer, Error> {
        let r = self
            .agent
            .get(format!("{}/{}", self.base, segment(target)))
            .header("Authorization", &self.token)
            .header("X-Amz-InvocationId", invocation_id)
            .call()
            .map_err(http("get result"))?;
        let mut r = Self::check("get result", r)?;
        let function_error = Self::header(&r, "X-Amz-Function-Error");
        Ok(Answer {
            payload: Self::read("get result", &mut r)?,
            function_error,
        })
    }

    /// Publishes to `topic` as this function (the subscription table
    /// decides who gets it).
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), Error> {
        let context = serde_json::json!({ "custom": {
            "source": self.arn, "subject": topic, "queueFullPolicy": "" } });
        self.post_work(ROUTER_ARN, payload, &context, true)
            .map(|_| ())
    }

    /// Invokes another function and waits for its answer.
    pub fn invoke(&self, function_arn: &str, payload: &[u8]) -> Result<Answer, Error> {
        let id = self.post_work(function_arn, payload, &serde_json::Value::Null, false)?;
        self.result(function_arn, &id)
    }

    /// A shadow request (`get`, `update` or `delete`) on a thing's classic
    /// shadow: the `/accepted` or `/rejected` body.
    pub fn shadow(&self, op: &str, thing: &str, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let context = serde_json::json!({ "custom": {
            "subject": format!("$aws/things/{thing}/shadow/{op}") } });
        let id = self.post_work(SHADOW_ARN, payload, &context, false)?;
        Ok(self.result(SHADOW_ARN, &id)?.payload)
    }
}
