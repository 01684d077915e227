//! What verdant-secrets serves on its socket: `verdant.secrets.v1.Secrets`
//! (values in from operators, out to the lambda-runner for the functions
//! the group allows, metadata to anyone who may open the socket), health,
//! reflection and daemon info.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tonic::{Request, Response, Status};
use verdant_common::grpc::{Info, Server};
use verdant_common::paths::Layout;
use verdant_common::uds::require_owner;
use verdant_group::Group;
use verdant_proto::secrets::v1 as pb;
use verdant_proto::secrets::v1::secrets_server::{Secrets, SecretsServer};

use crate::cloud::{Cloud, FetchError};
use crate::config::SecretsConfig;
use crate::store::{CURRENT, Meta, Store, StoreError};
use crate::{SERVICE, access};

/// The server, its health still `NOT_SERVING`.
pub(crate) async fn server(api: Api) -> Server {
    let note = "secrets sealed at rest (AES-256-GCM), released to the functions the group allows";
    Server::new(Info::functional(SERVICE, note))
        .await
        .add_service(SecretsServer::new(api))
}

pub(crate) struct Api {
    pub layout: Layout,
    pub config: SecretsConfig,
    pub cloud: Cloud,
    /// One change at a time (a put reads the secret's file, then writes it).
    pub store: Arc<Mutex<Store>>,
    /// By ARN: when a function last read it, and which (since the start).
    pub reads: Mutex<HashMap<String, (i64, String)>>,
}

fn status(e: &StoreError) -> Status {
    match e {
        StoreError::NoSecret(_) | StoreError::NoLabel { .. } => Status::not_found(e.to_string()),
        StoreError::BadArn(_)
        | StoreError::BadLabel(_)
        | StoreError::BadVersion(_)
        | StoreError::TooLarge(_) => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn group_of(layout: &Layout) -> Option<Group> {
    Group::load(&layout.current_group()).ok()
}

impl Api {
    /// Asks the cloud for every value `group` names and keeps those new
    /// here (counted in `fetched`); why each that did not come did not.
    async fn fetch(&self, group: &Group, fetched: &mut u32) -> HashMap<(String, String), String> {
        let wanted = access::wanted(group);
        let mut why = HashMap::new();
        if !self.config.fetch_from_cloud || wanted.is_empty() {
            return why;
        }
        if !self.cloud.connected() {
            tracing::info!(
                values = wanted.len(),
                "the cloud connection is down: the group's secrets are those on the core"
            );
            for key in wanted {
                why.insert(key, FetchError::Offline.to_string());
            }
            return why;
        }
        let timeout = std::time::Duration::from_secs(self.config.fetch_timeout_secs);
        let answers = futures::future::join_all(
            wanted
                .iter()
                .map(|(arn, label)| self.cloud.fetch(arn, label, timeout)),
        )
        .await;
        for ((arn, label), answer) in wanted.into_iter().zip(answers) {
            let kept = answer.map_err(|e| e.to_string()).and_then(|f| {
                self.store
                    .lock()
                    .expect("store lock")
                    .put_version(
                        &arn,
                        &label,
                        &f.value,
                        f.binary,
                        Some((&f.version_id, f.created_ms)),
                    )
                    .map(|(_, changed)| changed)
                    .map_err(|e| e.to_string())
            });
            match kept {
                Ok(changed) => *fetched += u32::from(changed),
                Err(e) => {
                    tracing::warn!(secret = arn, label, "not from the cloud: {e}");
                    why.insert((arn, label), e);
                }
            }
        }
        why
    }
}

fn secret(meta: Meta, group: Option<&Group>, read: Option<&(i64, String)>) -> pb::Secret {
    let (readers, missing_labels) = match group {
        Some(g) => {
            let wanted = access::wanted_labels(g, &meta.arn).unwrap_or_default();
            let missing = wanted
                .into_iter()
                .filter(|l| !meta.labels.contains_key(l))
                .collect();
            (access::readers(g, &meta.arn), missing)
        }
        None => (Vec::new(), Vec::new()),
    };
    pb::Secret {
        labels: meta
            .labels
            .into_iter()
            .map(
                |(label, (version_id, created_ms, size, binary))| pb::Label {
                    label,
                    version_id,
                    created_ms,
                    size: size as u64,
                    binary,
                },
            )
            .collect(),
        arn: meta.arn,
        name: meta.name,
        readers,
        missing_labels,
        last_read_ms: read.map_or(0, |r| r.0),
        last_reader: read.map(|r| r.1.clone()).unwrap_or_default(),
    }
}

/// The body the Greengrass SDK parses as an error.
fn refusal(status: u16, message: &str) -> Vec<u8> {
    serde_json::json!({ "Status": status, "Message": message })
        .to_string()
        .into_bytes()
}

impl Api {
    /// `get_secret_value` for `function_arn`: the value in the SDK's shape,
    /// or an error body. Never a value in a log line.
    fn answer(&self, function_arn: &str, request: &[u8]) -> Vec<u8> {
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(request) else {
            return refusal(400, "the request is not JSON");
        };
        let Some(secret_id) = request["SecretId"].as_str().filter(|s| !s.is_empty()) else {
            return refusal(400, "SecretId is required");
        };
        let label = request["VersionStage"].as_str().unwrap_or(CURRENT);
        let not_found = || {
            refusal(
                404,
                &format!(
                    "secret {secret_id} with label {label} is not on this core, or this function \
                     has no access to it"
                ),
            )
        };
        let store = self.store.lock().expect("store lock");
        let Ok(arn) = store.resolve(secret_id) else {
            return not_found();
        };
        let allowed =
            group_of(&self.layout).is_some_and(|g| access::allowed(&g, function_arn, &arn, label));
        if !allowed {
            tracing::info!(
                function = function_arn,
                secret = arn,
                label,
                "secret refused: no access policy"
            );
            return not_found();
        }
        match store.get(&arn, label) {
            Ok(v) => {
                tracing::debug!(function = function_arn, secret = arn, label, "secret read");
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                self.reads
                    .lock()
                    .expect("reads lock")
                    .insert(arn.clone(), (at, function_arn.to_string()));
                let mut body = serde_json::json!({
                    "ARN": v.arn, "Name": v.name, "VersionId": v.version_id,
                    "VersionStages": v.stages, "CreatedDate": v.created_ms,
                });
                if v.binary {
                    body["SecretBinary"] = base64::engine::general_purpose::STANDARD
                        .encode(&v.value)
                        .into();
                } else {
                    body["SecretString"] = String::from_utf8_lossy(&v.value).into_owned().into();
                }
                body.to_string().into_bytes()
            }
            Err(StoreError::NoLabel { .. } | StoreError::NoSecret(_)) => not_found(),
            Err(e) => {
                tracing::error!("{e}");
                refusal(
                    500,
                    "the secret cannot be read on this core (see the secrets log)",
                )
            }
        }
    }
}

#[tonic::async_trait]
impl Secrets for Api {
    async fn put_secret(
        &self,
        request: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::Secret>, Status> {
        require_owner(&request)?;
        let r = request.into_inner();
        let label = if r.label.is_empty() {
            CURRENT
        } else {
            &r.label
        };
        let meta = self
            .store
            .lock()
            .expect("store lock")
            .put(&r.arn, label, &r.value, r.binary)
            .map_err(|e| status(&e))?;
        tracing::info!(secret = r.arn, label, size = r.value.len(), "secret put");
        let reads = self.reads.lock().expect("reads lock");
        Ok(Response::new(secret(
            meta,
            group_of(&self.layout).as_ref(),
            reads.get(&r.arn),
        )))
    }

    async fn list_secrets(
        &self,
        _: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let metas = self
            .store
            .lock()
            .expect("store lock")
            .list()
            .map_err(|e| status(&e))?;
        let group = group_of(&self.layout);
        let missing = group
            .as_ref()
            .map(|g| {
                access::named(g)
                    .into_iter()
                    .filter(|arn| !metas.iter().any(|m| &m.arn == arn))
                    .collect()
            })
            .unwrap_or_default();
        let reads = self.reads.lock().expect("reads lock");
        let secrets = metas
            .into_iter()
            .map(|m| {
                let read = reads.get(&m.arn);
                secret(m, group.as_ref(), read)
            })
            .collect();
        Ok(Response::new(pb::ListSecretsResponse { secrets, missing }))
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        require_owner(&request)?;
        let arn = request.into_inner().arn;
        let deleted = self
            .store
            .lock()
            .expect("store lock")
            .delete(&arn)
            .map_err(|e| status(&e))?;
        if deleted {
            tracing::info!(secret = arn, "secret deleted");
        }
        Ok(Response::new(pb::DeleteSecretResponse { deleted }))
    }

    async fn check_group(
        &self,
        request: Request<pb::CheckGroupRequest>,
    ) -> Result<Response<pb::CheckGroupResponse>, Status> {
        require_owner(&request)?;
        let r = request.into_inner();
        // A group that does not parse is the ota-agent's to report.
        let Ok(group) = Group::parse(&r.group_json) else {
            return Ok(Response::new(pb::CheckGroupResponse::default()));
        };
        let mut reply = pb::CheckGroupResponse::default();
        let mut why: HashMap<(String, String), String> = HashMap::new();
        if r.deploying {
            why = self.fetch(&group, &mut reply.fetched).await;
            // A new data key for a deployment that changes secrets: the
            // values (fetched ones new) or what the group names.
            let before = group_of(&self.layout).map_or_else(Vec::new, |g| access::wanted(&g));
            if reply.fetched > 0 || before != access::wanted(&group) {
                let mut store = self.store.lock().expect("store lock");
                let sealed = store.rotate_data_key().map_err(|e| status(&e))?;
                reply.data_key_id = store.data_key_id().to_string();
                tracing::info!(
                    data_key = reply.data_key_id,
                    sealed,
                    "the deployment changes secrets: a new data key, every value sealed again"
                );
            }
        }
        let metas = self
            .store
            .lock()
            .expect("store lock")
            .list()
            .map_err(|e| status(&e))?;
        let has = |arn: &str, label: &str| {
            metas
                .iter()
                .any(|m| m.arn == arn && m.labels.contains_key(label))
        };
        reply.problems = access::missing(&group, has, |arn, label| {
            why.get(&(arn.to_string(), label.to_string())).cloned()
        })
        .into_iter()
        .map(|(path, message)| pb::Problem { path, message })
        .collect();
        Ok(Response::new(reply))
    }

    async fn rotate_data_key(
        &self,
        request: Request<pb::RotateDataKeyRequest>,
    ) -> Result<Response<pb::RotateDataKeyResponse>, Status> {
        require_owner(&request)?;
        let mut store = self.store.lock().expect("store lock");
        let sealed = store.rotate_data_key().map_err(|e| status(&e))?;
        let data_key_id = store.data_key_id().to_string();
        tracing::info!(
            data_key = data_key_id,
            sealed,
            "new data key; every value sealed again"
        );
        Ok(Response::new(pb::RotateDataKeyResponse {
            data_key_id,
            sealed: u32::try_from(sealed).unwrap_or(u32::MAX),
        }))
    }

    async fn get_secret_value(
        &self,
        request: Request<pb::GetSecretValueRequest>,
    ) -> Result<Response<pb::GetSecretValueResponse>, Status> {
        require_owner(&request)?;
        let r = request.into_inner();
        Ok(Response::new(pb::GetSecretValueResponse {
            body: self.answer(&r.function_arn, &r.request),
        }))
    }
}
