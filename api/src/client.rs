//! The typed client of the control-plane API.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::*;
use crate::vocabulary::ErrorCode;
use crate::API_PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control plane answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: ErrorCode,
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
    /// The endpoint is not a URL the client can send to.
    #[error("invalid endpoint {endpoint:?}: {detail}")]
    InvalidEndpoint { endpoint: String, detail: String },
    /// Something answered that is not the control plane: its body is not
    /// pgplane's JSON.
    #[error("the server at {endpoint} answered HTTP {status} with {content_type}{}: is this a pgplane control plane?", first_line.as_ref().map(|l| format!(" ({l:?})")).unwrap_or_default())]
    NotPgplane {
        endpoint: String,
        status: u16,
        content_type: String,
        /// The body's first line, shortened, unless it is markup.
        first_line: Option<String>,
    },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// The innermost error's text, e.g. "relative URL without a base".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A client bound to one endpoint and one bearer token (one organisation).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: String,
    /// Sent as [`crate::OWNER_HEADER`] when set.
    acting_owner: Option<String>,
    /// Sends [`crate::OVERRIDE_OWNER_HEADER`].
    override_owner: bool,
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
    /// `endpoint` is a URL; `host:port` alone means `http://host:port`.
    pub fn new(endpoint: &str, token: &str) -> Client {
        let endpoint = endpoint.trim().trim_end_matches('/');
        let endpoint = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        Client {
            http: reqwest::Client::builder()
                .user_agent(concat!("pgplane-client/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("reqwest client builds with static settings"),
            endpoint,
            token: token.to_owned(),
            acting_owner: None,
            override_owner: false,
        }
    }

    /// Acts as the client owner `owner` (`api` or `terraform`): instances
    /// another client owns are refused unless [`Client::overriding_owner`].
    pub fn acting_as(mut self, owner: &str) -> Client {
        self.acting_owner = Some(owner.to_owned());
        self
    }

    /// Changes instances another client owns (their owner's next run may
    /// put them back).
    pub fn overriding_owner(mut self, yes: bool) -> Client {
        self.override_owner = yes;
        self
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
        if let Some(owner) = &self.acting_owner {
            req = req.header(crate::OWNER_HEADER, owner);
        }
        if self.override_owner {
            req = req.header(crate::OVERRIDE_OWNER_HEADER, "true");
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let (resp, status, content_type) = self.send(req).await?;
        let bytes = self.read_body(resp).await?;
        if status.is_success() {
            let body: &[u8] = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                b"null"
            } else {
                &bytes
            };
            return serde_json::from_slice(body).map_err(|e| {
                if content_type.as_deref() == Some("application/json") {
                    ClientError::Protocol {
                        endpoint: self.endpoint.clone(),
                        detail: format!("{e} in response to {path}"),
                    }
                } else {
                    self.not_pgplane(status, content_type, &bytes)
                }
            });
        }
        Err(self.error_response(status, content_type, &bytes))
    }

    /// Sends a request: the response, its status and its content type
    /// (lower-case, without parameters).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, StatusCode, Option<String>), ClientError> {
        let resp = req.send().await.map_err(|source| {
            if source.is_builder() {
                ClientError::InvalidEndpoint {
                    endpoint: self.endpoint.clone(),
                    detail: root_cause(&source),
                }
            } else {
                ClientError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    source,
                }
            }
        })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
        Ok((resp, status, content_type))
    }

    async fn read_body(&self, resp: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        resp.bytes()
            .await
            .map(Vec::from)
            .map_err(|source| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                source,
            })
    }

    /// An error response: the API's error body, or something else answering.
    fn error_response(
        &self,
        status: StatusCode,
        content_type: Option<String>,
        bytes: &[u8],
    ) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(err) => ClientError::Api {
                status: status.as_u16(),
                code: err.code,
                message: err.message,
                fields: err.fields,
            },
            Err(_) => self.not_pgplane(status, content_type, bytes),
        }
    }

    /// Opens `GET /api/v1/events`: the organisation's instance changes as
    /// they happen, first those since `since` (the server looks a few
    /// seconds further back, so some may be older). A control plane without
    /// the stream answers 404 ([`ClientError::is_not_found`]).
    pub async fn instance_events(
        &self,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<crate::events::EventStream, ClientError> {
        let url = format!("{}{API_PREFIX}/events", self.endpoint);
        let mut req = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(t) = since {
            req = req.query(&[("since", t.to_rfc3339())]);
        }
        let (resp, status, content_type) = self.send(req).await?;
        if status.is_success() && content_type.as_deref() == Some("text/event-stream") {
            return Ok(crate::events::EventStream::new(resp, self.endpoint.clone()));
        }
        let bytes = self.read_body(resp).await?;
        if status.is_success() {
            return Err(self.not_pgplane(status, content_type, &bytes));
        }
        Err(self.error_response(status, content_type, &bytes))
    }

    fn not_pgplane(
        &self,
        status: StatusCode,
        content_type: Option<String>,
        body: &[u8],
    ) -> ClientError {
        const SHORT: usize = 80;
        let content_type = content_type.unwrap_or_else(|| "no content type".to_owned());
        let markup = content_type.contains("html") || content_type.contains("xml");
        let first_line = String::from_utf8_lossy(body)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .filter(|_| !markup)
            .map(|l| match l.char_indices().nth(SHORT) {
                Some((end, _)) => format!("{}…", &l[..end]),
                None => l.to_owned(),
            });
        ClientError::NotPgplane {
            endpoint: self.endpoint.clone(),
            status: status.as_u16(),
            content_type,
            first_line,
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

    /// Asks for a full backup now (202; the history shows its outcome).
    pub async fn request_backup(&self, name: &str) -> Result<Instance, ClientError> {
        self.call::<(), _>(Method::POST, &format!("/instances/{name}/backups"), None)
            .await
    }

    /// Asks for a switchover to `to` (`member-N`), or to the most advanced
    /// standby (202; the history shows its outcome).
    pub async fn request_switchover(
        &self,
        name: &str,
        to: Option<&str>,
    ) -> Result<Instance, ClientError> {
        let body = crate::Switchover {
            to: to.map(str::to_owned),
        };
        self.call(
            Method::POST,
            &format!("/instances/{name}/switchover"),
            Some(&body),
        )
        .await
    }

    /// The newest `tail` lines of the server's log, or those shipped after
    /// the cursor `after`.
    pub async fn logs(
        &self,
        name: &str,
        tail: u32,
        after: Option<i64>,
    ) -> Result<LogLines, ClientError> {
        let after = after.map(|a| format!("&after={a}")).unwrap_or_default();
        self.call::<(), _>(
            Method::GET,
            &format!("/instances/{name}/logs?tail={tail}{after}"),
            None,
        )
        .await
    }

    pub async fn backups(&self, name: &str) -> Result<BackupList, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/instances/{name}/backups"), None)
            .await
    }

    pub async fn status(&self) -> Result<ServerStatus, ClientError> {
        self.call::<(), _>(Method::GET, "/status", None).await
    }

    pub async fn activity(&self, name: &str) -> Result<ActivityList, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/instances/{name}/activity"), None)
            .await
    }

    pub async fn credentials(&self, name: &str) -> Result<Credentials, ClientError> {
        self.credentials_for(name, None).await
    }

    /// The credentials of a role the instance's spec declares (`None`: the
    /// client role's).
    pub async fn credentials_for(
        &self,
        name: &str,
        role: Option<&str>,
    ) -> Result<Credentials, ClientError> {
        if let Some(role) = role {
            let path = format!("/instances/{name}/credentials?role={}", query_escape(role));
            return self.call::<(), _>(Method::GET, &path, None).await;
        }
        self.call::<(), _>(Method::GET, &format!("/instances/{name}/credentials"), None)
            .await
    }

    pub async fn create_token(&self, req: &CreateToken) -> Result<TokenCreated, ClientError> {
        self.call(Method::POST, "/tokens", Some(req)).await
    }

    pub async fn list_tokens(&self) -> Result<TokenList, ClientError> {
        self.call::<(), _>(Method::GET, "/tokens", None).await
    }

    /// Revokes a token by id, or by name within `org` (the caller's
    /// organisation when `None`).
    pub async fn revoke_token(
        &self,
        token: &str,
        org: Option<&str>,
    ) -> Result<TokenInfo, ClientError> {
        let path = match org {
            Some(org) => format!("/tokens/{token}?org={org}"),
            None => format!("/tokens/{token}"),
        };
        self.call::<(), _>(Method::DELETE, &path, None).await
    }
}

impl Client {
    pub async fn drift(&self) -> Result<DriftReport, ClientError> {
        self.call::<(), _>(Method::GET, "/drift", None).await
    }

    /// The extension catalog of `data_plane` (the default data plane for
    /// `None`).
    pub async fn extensions(
        &self,
        data_plane: Option<&str>,
    ) -> Result<ExtensionCatalog, ClientError> {
        let path = match data_plane {
            Some(d) => format!("/extensions?dataPlane={}", query_escape(d)),
            None => "/extensions".to_owned(),
        };
        self.call::<(), _>(Method::GET, &path, None).await
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

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_escape("eu-west_1.a~"), "eu-west_1.a~");
        assert_eq!(query_escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn host_and_port_mean_http() {
        assert_eq!(
            Client::new("127.0.0.1:8080/", "t").endpoint(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            Client::new("https://cp.example", "t").endpoint(),
            "https://cp.example"
        );
    }

    #[test]
    fn another_server_is_named_with_at_most_a_short_first_line() {
        let client = Client::new("http://127.0.0.1:9", "t");
        let plain = client.not_pgplane(
            StatusCode::NOT_FOUND,
            Some("text/plain".to_owned()),
            b"\n404 page not found\nsecond line",
        );
        assert_eq!(
            plain.to_string(),
            "the server at http://127.0.0.1:9 answered HTTP 404 with text/plain \
             (\"404 page not found\"): is this a pgplane control plane?"
        );
        let long = "x".repeat(200);
        let ClientError::NotPgplane { first_line, .. } =
            client.not_pgplane(StatusCode::OK, None, long.as_bytes())
        else {
            panic!("not NotPgplane");
        };
        assert_eq!(first_line.unwrap().chars().count(), 81);
        let html = client.not_pgplane(
            StatusCode::NOT_FOUND,
            Some("text/html".to_owned()),
            b"<!DOCTYPE html><html></html>",
        );
        assert!(!html.to_string().contains('<'), "{html}");
    }
}
