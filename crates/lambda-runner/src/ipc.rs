//! The function IPC endpoint: HTTP on loopback at `ggDaemonPort`, as
//! Greengrass v1's (docs/functions.md, "What it can do"). The caller is the instance its
//! `Authorization` token was given to; it can publish (as its own ARN, so
//! the subscription table decides where that goes), call the shadow
//! service, invoke functions, take its own work and give its results.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use base64::Engine;
use tokio::sync::{mpsc, oneshot};
use verdant_link::ToRouter;
use verdant_proto::router::v1 as pb;

use crate::work::{FunctionId, InstanceId, Outcome, Pending, Refused, Runner};

pub const ROUTER_ARN: &str = "arn:aws:lambda:::function:GGRouter";
pub const SHADOW_ARN: &str = "arn:aws:lambda:::function:GGShadowService";
pub const SECRETS_ARN: &str = "arn:aws:lambda:::function:GGSecretManager:1";

const INVOCATION_ID: &str = "X-Amz-InvocationId";
const CLIENT_CONTEXT: &str = "X-Amz-Client-Context";
const INVOCATION_TYPE: &str = "X-Amz-Invocation-Type";
const FUNCTION_ERROR: &str = "X-Amz-Function-Error";

/// Topic bytes at most in a function's publish (MQTT's limit).
const MAX_TOPIC: usize = 65_535;

#[derive(Clone)]
pub struct Ipc {
    pub runner: Arc<Mutex<Runner>>,
    /// What functions publish goes up the router link.
    pub up: mpsc::UnboundedSender<ToRouter>,
    pub shadow_socket: PathBuf,
    /// `get_secret_value` asks verdant-secrets, saying who the caller is.
    pub secrets_socket: PathBuf,
    /// This endpoint's address (the other end of every caller's socket).
    pub local: std::net::SocketAddr,
}

pub fn router(ipc: Ipc) -> axum::Router {
    axum::Router::new()
        .route(
            "/2016-11-01/functions/{arn}",
            post(post_work).get(get_work_result),
        )
        .route(
            "/2016-11-01/functions/{arn}/work",
            post(post_work_result).get(get_work),
        )
        .route("/2016-11-01/functions/{arn}/initialized", put(initialized))
        .with_state(ipc)
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    (status, body).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// 202 with the invocation id.
fn accepted(id: &str) -> Response {
    let mut r = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(INVOCATION_ID, v);
    }
    r
}

impl Ipc {
    fn lock(&self) -> std::sync::MutexGuard<'_, Runner> {
        self.runner.lock().expect("runner lock")
    }

    /// The instance whose token the request carries, and its function's
    /// ARN, if the caller's socket belongs to the user that instance runs
    /// as (the core's own user when the core cannot change users).
    fn caller(
        &self,
        headers: &HeaderMap,
        peer: std::net::SocketAddr,
    ) -> Option<(FunctionId, InstanceId, String)> {
        let token = header(headers, "Authorization");
        let (f, i, arn, uid) = {
            let runner = self.lock();
            let (f, i) = runner.caller(token)?;
            let spec = runner.spec(f)?;
            (f, i, spec.arn.clone(), spec.uid)
        };
        let euid = nix::unistd::geteuid();
        let want = if euid.is_root() { uid } else { euid.as_raw() };
        match crate::peer::uid(peer, self.local) {
            Some(got) if got == want => Some((f, i, arn)),
            got => {
                tracing::warn!(
                    function = %arn,
                    caller_uid = ?got,
                    want,
                    "a function's token presented from another user's socket: refused"
                );
                None
            }
        }
    }
}

/// 401 for a request without a token of ours.
fn stranger() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unknown Authorization token: only the core's function processes may call",
    )
}

/// The calling instance, checked (`Ipc::caller`); a request without one
/// is answered 401 before its handler runs.
struct Caller {
    function: FunctionId,
    instance: InstanceId,
    arn: String,
}

impl axum::extract::FromRequestParts<Ipc> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        ipc: &Ipc,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(stranger)?;
        let (function, instance, arn) = ipc.caller(&parts.headers, peer).ok_or_else(stranger)?;
        Ok(Caller {
            function,
            instance,
            arn,
        })
    }
}

/// The `custom` object of a base64 JSON client context.
fn custom(client_context: &str) -> serde_json::Value {
    base64::engine::general_purpose::STANDARD
        .decode(client_context)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("custom").cloned())
        .unwrap_or_default()
}

async fn post_work(
    State(ipc): State<Ipc>,
    caller: Caller,
    Path(arn): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = caller.arn;
    let client_context = header(&headers, CLIENT_CONTEXT).to_string();
    let reply = header(&headers, INVOCATION_TYPE) != "Event";
    match arn.as_str() {
        ROUTER_ARN => publish(&ipc, caller, &client_context, body).await,
        SHADOW_ARN => {
            let subject = custom(&client_context)["subject"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let outcome = shadow_call(&ipc, subject, body).await;
            accepted(&ipc.lock().done(outcome))
        }
        SECRETS_ARN => {
            let outcome = secrets_call(&ipc, caller.clone(), body).await;
            // Only this function may fetch it: it may hold a secret's value.
            accepted(&ipc.lock().done_for(outcome, caller))
        }
        target => {
            let submitted = ipc.lock().submit(target, body, client_context, reply);
            match submitted {
                Ok(id) => accepted(&id),
                Err(e @ Refused::NotFound(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
                Err(e @ Refused::Unavailable { .. }) => {
                    error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
                }
                Err(e @ Refused::Full(_)) => error(StatusCode::TOO_MANY_REQUESTS, &e.to_string()),
            }
        }
    }
}

/// `iot-data.publish`: up the router link with the caller's ARN as source.
/// `AllOrError` waits until the router took it, and fails if it refused.
async fn publish(ipc: &Ipc, caller: String, client_context: &str, payload: Bytes) -> Response {
    let custom = custom(client_context);
    let topic = custom["subject"].as_str().unwrap_or("");
    if topic.is_empty() || topic.len() > MAX_TOPIC || topic.contains(['+', '#', '\0']) {
        return error(
            StatusCode::BAD_REQUEST,
            "publish needs a topic (custom.subject) without wildcards, at most 65535 bytes",
        );
    }
    let all_or_error = custom["queueFullPolicy"].as_str() == Some("AllOrError");
    let (tx, rx) = oneshot::channel();
    let message = pb::Message {
        source: caller,
        topic: topic.to_string(),
        payload,
        qos: u32::from(all_or_error),
        all_or_error,
        ..pb::Message::default()
    };
    let outcome = all_or_error.then_some(tx);
    if ipc.up.send(ToRouter { message, outcome }).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the lambda-runner is stopping",
        );
    }
    if all_or_error && !matches!(rx.await, Ok(true)) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the message was refused: a queue on its way is full (AllOrError)",
        );
    }
    let id = ipc.lock().invocation_id();
    accepted(&id)
}

/// A shadow call through the shadow service's `Call`; a failure is a
/// `{"code","message"}` body, which greengrasssdk raises as `ShadowError`.
async fn shadow_call(ipc: &Ipc, topic: String, payload: Bytes) -> Outcome {
    use verdant_proto::shadow::v1 as spb;
    let failed = |message: String| Outcome {
        payload: Bytes::from(serde_json::json!({ "code": 503, "message": message }).to_string()),
        error: "",
    };
    let channel = match verdant_common::uds::connect(&ipc.shadow_socket).await {
        Ok(c) => c,
        Err(e) => return failed(format!("the shadow service is unreachable: {e}")),
    };
    let call = spb::shadow_client::ShadowClient::new(channel)
        .call(spb::CallRequest {
            topic,
            payload: payload.to_vec(),
        })
        .await;
    match call {
        Ok(r) => Outcome {
            payload: Bytes::from(r.into_inner().payload),
            error: "",
        },
        Err(s) => failed(s.message().to_string()),
    }
}

/// `get_secret_value`: verdant-secrets answers for the caller this
/// endpoint authenticated (its socket's instance), never for what the
/// request says; the body is the SDK's (the value, or `{Status, Message}`).
async fn secrets_call(ipc: &Ipc, caller: String, request: Bytes) -> Outcome {
    use verdant_proto::secrets::v1 as spb;
    let failed = |message: String| Outcome {
        payload: Bytes::from(serde_json::json!({ "Status": 503, "Message": message }).to_string()),
        error: "",
    };
    let channel = match verdant_common::uds::connect(&ipc.secrets_socket).await {
        Ok(c) => c,
        Err(e) => return failed(format!("the secrets service is unreachable: {e}")),
    };
    let call = spb::secrets_client::SecretsClient::new(channel)
        .get_secret_value(spb::GetSecretValueRequest {
            function_arn: caller,
            request: request.to_vec(),
        })
        .await;
    match call {
        Ok(r) => Outcome {
            payload: Bytes::from(r.into_inner().body),
            error: "",
        },
        Err(s) => failed(s.message().to_string()),
    }
}

/// Any calling instance may fetch a result by its invocation id, but a
/// result kept for one function (a secret's value) only that function.
async fn get_work_result(
    State(ipc): State<Ipc>,
    caller: Caller,
    Path(_arn): Path<String>,
    headers: HeaderMap,
) -> Response {
    let id = header(&headers, INVOCATION_ID).to_string();
    let pending = ipc.lock().result_for(&id, Some(&caller.arn));
    let outcome = match pending {
        None => return error(StatusCode::NOT_FOUND, "no such invocation"),
        Some(Pending::Ready(o)) => o,
        Some(Pending::Later(rx)) => match rx.await {
            Ok(o) => o,
            Err(_) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the lambda-runner is stopping",
                );
            }
        },
    };
    // The header is there even when empty: greengrasssdk's shadow calls
    // check that it is "" (COMPAT §1.2).
    let mut r = outcome.payload.into_response();
    r.headers_mut()
        .insert(FUNCTION_ERROR, HeaderValue::from_static(outcome.error));
    r
}

async fn get_work(State(ipc): State<Ipc>, caller: Caller, Path(arn): Path<String>) -> Response {
    let (f, i, caller) = (caller.function, caller.instance, caller.arn);
    if caller != arn {
        return error(StatusCode::FORBIDDEN, "a function takes only its own work");
    }
    let pending = ipc.lock().take_work(f, i);
    let item = match pending {
        None => return error(StatusCode::GONE, "this instance was stopped"),
        Some(Pending::Ready(item)) => item,
        Some(Pending::Later(rx)) => match rx.await {
            Ok(item) => item,
            Err(_) => return error(StatusCode::GONE, "this instance was stopped"),
        },
    };
    let mut r = item.payload.into_response();
    for (name, value) in [
        (INVOCATION_ID, item.id),
        (CLIENT_CONTEXT, item.client_context),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

async fn post_work_result(
    State(ipc): State<Ipc>,
    caller: Caller,
    Path(arn): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (f, i, caller) = (caller.function, caller.instance, caller.arn);
    if caller != arn {
        return error(
            StatusCode::FORBIDDEN,
            "a function gives only its own results",
        );
    }
    let error_kind = match header(&headers, FUNCTION_ERROR) {
        "" => "",
        "Unhandled" => "Unhandled",
        _ => "Handled",
    };
    let id = header(&headers, INVOCATION_ID).to_string();
    let outcome = Outcome {
        payload: body,
        error: error_kind,
    };
    if ipc.lock().finish(f, i, &id, outcome) {
        StatusCode::ACCEPTED.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "no such invocation in progress here (did it time out?)",
        )
    }
}

async fn initialized(caller: Caller, Path(_arn): Path<String>, body: Bytes) -> Response {
    let caller = caller.arn;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if v["Success"].as_bool() == Some(true) {
        tracing::info!(function = %caller, "function initialized");
    } else {
        tracing::error!(
            function = %caller,
            response = %v["Response"].as_str().unwrap_or(""),
            "function failed to initialize"
        );
    }
    StatusCode::ACCEPTED.into_response()
}
