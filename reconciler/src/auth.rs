//! Bearer tokens scoped to one organisation. Only a SHA-256 hash of each
//! token is stored; the token itself is shown once, when created.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// Who is calling: the organisation their token belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org: String,
    pub admin: bool,
    pub token_id: Uuid,
    /// The token's name, when it has one (the history's actor).
    pub token_name: Option<String>,
    /// Set when a GitOps source acts: its owner name (`git:<source>`) and
    /// the actor written to history (`git:<source>@<sha>`).
    pub source: Option<SourceActor>,
    /// The client owner acting when no source acts (`api`, or `terraform`
    /// from the [`api::OWNER_HEADER`]).
    pub client_owner: &'static str,
    /// Whether the caller asked to change instances another client owns
    /// ([`api::OVERRIDE_OWNER_HEADER`]).
    pub override_owner: bool,
}

#[derive(Debug, Clone)]
pub struct SourceActor {
    pub owner: String,
    pub actor: String,
}

impl Caller {
    /// A caller holding a token of `org`.
    pub fn token(org: &str, token_id: Uuid, admin: bool) -> Caller {
        Caller {
            org: org.to_owned(),
            admin,
            token_id,
            token_name: None,
            source: None,
            client_owner: api::CLIENT_OWNERS[0],
            override_owner: false,
        }
    }

    /// Who acts: the source's `git:NAME`, or the client owner.
    pub fn acting_owner(&self) -> &str {
        match &self.source {
            Some(s) => &s.owner,
            None => self.client_owner,
        }
    }

    /// The actor name written to instance history.
    pub fn actor(&self) -> String {
        match &self.source {
            Some(s) => s.actor.clone(),
            None => match &self.token_name {
                Some(name) => format!("token:{name}"),
                None => format!("token:{}", &self.token_id.simple().to_string()[..8]),
            },
        }
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn generate_token() -> String {
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("pgp_{random}")
}

/// Creates a token for `org` (creating the organisation if needed) and
/// returns the plaintext token, which is not stored.
pub async fn create_token(
    conn: &mut PgConnection,
    org: &str,
    admin: bool,
    description: Option<&str>,
) -> Result<String, ApiError> {
    let new = NewToken {
        org,
        admin,
        description,
        name: None,
        expires_at: None,
    };
    Ok(create_named_token(conn, &new).await?.1)
}

/// A token to create.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    pub org: &'a str,
    pub admin: bool,
    pub description: Option<&'a str>,
    /// Unique within the organisation; the history's actor.
    pub name: Option<&'a str>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates a token (and its organisation, if new); returns its id and the
/// token itself, which is shown once and stored only as a hash.
pub async fn create_named_token(
    conn: &mut PgConnection,
    new: &NewToken<'_>,
) -> Result<(Uuid, String), ApiError> {
    domain::name::check_dns1123_label(new.org)
        .map_err(|e| ApiError::invalid("org", e.to_string()))?;
    if let Some(name) = new.name {
        domain::name::check_dns1123_label(name)
            .map_err(|e| ApiError::invalid("name", e.to_string()))?;
    }
    sqlx::query("insert into orgs (name) values ($1) on conflict do nothing")
        .bind(new.org)
        .execute(&mut *conn)
        .await?;
    let token = generate_token();
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "insert into tokens (id, org, hash, admin, description, name, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(new.org)
    .bind(hash_token(&token))
    .bind(new.admin)
    .bind(new.description)
    .bind(new.name)
    .bind(new.expires_at)
    .execute(&mut *conn)
    .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("tokens_org_name") => {
            Err(ApiError::Conflict(format!(
                "organisation {:?} already has a token named {:?}",
                new.org,
                new.name.unwrap_or_default()
            )))
        }
        other => other.map(|_| (id, token)).map_err(ApiError::from),
    }
}

/// Whether `token` is a valid token (used by `pgplane up` to re-use the one
/// in `pgplane.env`).
pub async fn token_is_valid(conn: &mut PgConnection, token: &str) -> Result<bool, ApiError> {
    let found: Option<Uuid> = sqlx::query_scalar(
        "select id from tokens where hash = $1 and (expires_at is null or expires_at > now())",
    )
    .bind(hash_token(token))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}

/// The caller a token stands for, if it is a valid token.
pub async fn authenticate(pool: &sqlx::PgPool, token: &str) -> Result<Option<Caller>, ApiError> {
    let row: Option<(Uuid, String, bool, Option<String>)> = sqlx::query_as(
        "select id, org, admin, name from tokens
         where hash = $1 and (expires_at is null or expires_at > now())",
    )
    .bind(hash_token(token))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(token_id, org, admin, name)| Caller {
        token_name: name,
        ..Caller::token(&org, token_id, admin)
    }))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized)?
            .trim();
        let mut caller = authenticate(&state.pool, token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let header = |name: &str| {
            parts.headers.get(name).map(|v| {
                v.to_str()
                    .map(str::trim)
                    .map_err(|_| ApiError::invalid(name, "must be plain text"))
            })
        };
        if let Some(owner) = header(api::OWNER_HEADER).transpose()? {
            caller.client_owner = api::CLIENT_OWNERS
                .into_iter()
                .find(|o| o.eq_ignore_ascii_case(owner))
                .ok_or_else(|| {
                    ApiError::invalid(
                        api::OWNER_HEADER,
                        format!(
                            "{owner:?} is not a client owner; one of {}",
                            api::CLIENT_OWNERS.join(", ")
                        ),
                    )
                })?;
        }
        if let Some(value) = header(api::OVERRIDE_OWNER_HEADER).transpose()? {
            caller.override_owner = match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ApiError::invalid(
                        api::OVERRIDE_OWNER_HEADER,
                        format!("{value:?} is not a boolean; use true or false"),
                    ))
                }
            };
        }
        Ok(caller)
    }
}
