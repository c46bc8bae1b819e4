//! The control plane's error type and its HTTP mapping.

use api::ErrorBody;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{State, TransitionError, ValidationErrors};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {0}")]
    Invalid(ValidationErrors),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A webhook call not signed with its source's secret, or for a source
    /// that does not exist: the two are indistinguishable on purpose.
    #[error("missing or invalid X-Hub-Signature-256 webhook signature")]
    WebhookSignature,
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    /// The organisation has as many live instances as it may have.
    #[error("organisation {org:?} has {limit} instances, the most it may have; delete one first (the limit is the control plane's --max-instances-per-org)")]
    QuotaExceeded { org: String, limit: u32 },
    #[error("instance {0:?} not found")]
    NotFound(String),
    #[error("{0} {1:?} not found")]
    NotFoundWhat(&'static str, String),
    #[error("instance {name:?} is deleted")]
    Deleted { name: String },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("{0}")]
    Conflict(String),
    /// The instance is managed by another owner (a GitOps source, or
    /// another client without the override).
    #[error("{message}")]
    OwnedElsewhere { owner: String, message: String },
    #[error("the control-plane database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn invalid(path: &str, message: impl Into<String>) -> ApiError {
        let mut errs = ValidationErrors::default();
        errs.push(path, message);
        ApiError::Invalid(errs)
    }

    pub fn deleted_or(state: State, name: &str, err: TransitionError) -> ApiError {
        if state == State::Deleted {
            ApiError::Deleted {
                name: name.to_owned(),
            }
        } else {
            ApiError::Transition(err)
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => ApiError::Unavailable(e),
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) =>
            {
                ApiError::Unavailable(e)
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                match unique_conflict(db.constraint()) {
                    Some(what) => ApiError::Conflict(what.to_owned()),
                    None => ApiError::Internal(Box::new(e)),
                }
            }
            // Postgres text cannot hold NUL: `invalid byte sequence` for a
            // text parameter (22021), `unsupported Unicode escape sequence`
            // for `\u0000` in jsonb (22P05). Inputs are checked before they
            // reach SQL; this catches any that is not.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021") | Some("22P05")) =>
            {
                ApiError::invalid("body", "text must not contain NUL characters (\\u0000)")
            }
            _ => ApiError::Internal(Box::new(e)),
        }
    }
}

/// What a unique violation of `constraint` means to a client, for the
/// constraints a client's request can violate; any other is a bug.
fn unique_conflict(constraint: Option<&str>) -> Option<&'static str> {
    match constraint? {
        "instances_live_name" => Some("an instance with this name already exists"),
        "sources_pkey" => Some("a source with this name already exists in this organisation"),
        "tokens_org_name" => Some("a token with this name already exists in this organisation"),
        _ => None,
    }
}

impl From<queue::Error> for ApiError {
    fn from(e: queue::Error) -> Self {
        match e {
            queue::Error::Sql { source, .. } => ApiError::from(source),
            queue::Error::InvalidDataPlane(dp) => {
                ApiError::invalid("dataPlane", format!("invalid data plane name {dp:?}"))
            }
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::Unauthorized | ApiError::WebhookSignature => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::QuotaExceeded { .. } => (StatusCode::FORBIDDEN, "quota_exceeded"),
            ApiError::NotFound(_) | ApiError::NotFoundWhat(..) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::Deleted { .. } => (StatusCode::CONFLICT, "deleted"),
            ApiError::Transition(_) => (StatusCode::CONFLICT, "illegal_transition"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::OwnedElsewhere { .. } => (StatusCode::CONFLICT, "owned_elsewhere"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        match &self {
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            ApiError::Unavailable(e) => tracing::warn!(error = %e, "database unavailable"),
            _ => {}
        }
        let fields = match &self {
            ApiError::Invalid(errs) => errs.0.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            code: api::ErrorCode::from(code),
            message: self.to_string(),
            fields,
        };
        (status, Json(body)).into_response()
    }
}
