//! The typed client of the control-plane API.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::*;
use crate::API_PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control plane answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        fields: Vec<domain::FieldError>,
    },
    #[error("cannot reach the pgplane control plane at {endpoint}: {source}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected response from {endpoint}: {detail}")]
    Protocol { endpoint: String, detail: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// A client bound to one endpoint and one bearer token (one organisation).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("token", &"***")
            .finish()
    }
}

impl Client {
    pub fn new(endpoint: &str, token: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .user_agent(concat!("pgplane-client/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("reqwest client builds with static settings"),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let url = format!("{}{API_PREFIX}{path}", self.endpoint);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        if status.is_success() {
            let body: &[u8] = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                b"null"
            } else {
                &bytes
            };
            return serde_json::from_slice(body).map_err(|e| ClientError::Protocol {
                endpoint: self.endpoint.clone(),
                detail: format!("{e} in response to {path}"),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(err) => Err(ClientError::Api {
                status: status.as_u16(),
                code: err.code,
                message: err.message,
                fields: err.fields,
            }),
            Err(_) => Err(ClientError::Api {
                status: status.as_u16(),
                code: "http".to_owned(),
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                fields: Vec::new(),
            }),
        }
    }

    pub async fn create_instance(&self, req: &CreateInstance) -> Result<Instance, ClientError> {
        self.call(Method::POST, "/instances", Some(req)).await
    }

    /// By name, or by id (a UUID).
    pub async fn get_instance(&self, name_or_id: &str) -> Result<Instance, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/instances/{name_or_id}"), None)
            .await
    }

    pub async fn list_instances(&self, state: Option<&str>) -> Result<InstanceList, ClientError> {
        let path = match state {
            Some(s) => format!("/instances?state={s}"),
            None => "/instances".to_owned(),
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn update_instance(
        &self,
        name: &str,
        req: &UpdateInstance,
    ) -> Result<Instance, ClientError> {
        self.call(Method::PUT, &format!("/instances/{name}"), Some(req))
            .await
    }

    /// `action` is one of `restart`, `stop`, `start`.
    pub async fn instance_action(&self, name: &str, action: &str) -> Result<Instance, ClientError> {
        self.call::<(), _>(Method::POST, &format!("/instances/{name}/{action}"), None)
            .await
    }

    pub async fn delete_instance(&self, name: &str) -> Result<Instance, ClientError> {
        self.call::<(), _>(Method::DELETE, &format!("/instances/{name}"), None)
            .await
    }

    pub async fn history(&self, name: &str) -> Result<History, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/instances/{name}/history"), None)
            .await
    }

    pub async fn credentials(&self, name: &str) -> Result<Credentials, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/instances/{name}/credentials"), None)
            .await
    }

    pub async fn create_token(&self, req: &CreateToken) -> Result<TokenCreated, ClientError> {
        self.call(Method::POST, "/tokens", Some(req)).await
    }
}

impl Client {
    pub async fn drift(&self) -> Result<DriftReport, ClientError> {
        self.call::<(), _>(Method::GET, "/drift", None).await
    }
}

impl Client {
    pub async fn create_source(&self, req: &CreateSource) -> Result<Source, ClientError> {
        self.call(Method::POST, "/sources", Some(req)).await
    }

    pub async fn list_sources(&self) -> Result<SourceList, ClientError> {
        self.call::<(), _>(Method::GET, "/sources", None).await
    }

    pub async fn source_status(&self, name: &str) -> Result<SourceStatus, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/sources/{name}"), None)
            .await
    }

    /// Syncs now and returns what the sync did.
    pub async fn sync_source(&self, name: &str) -> Result<SyncRecord, ClientError> {
        self.call::<(), _>(Method::POST, &format!("/sources/{name}/sync"), None)
            .await
    }

    pub async fn delete_source(&self, name: &str) -> Result<Source, ClientError> {
        self.call::<(), _>(Method::DELETE, &format!("/sources/{name}"), None)
            .await
    }
}
