//! Console sessions.
//!
//! Signing in with an API token opens a session: a random 256-bit id in an
//! HttpOnly, SameSite=Strict cookie (Secure behind TLS), of which the
//! `console_sessions` table keeps only the SHA-256 hash, the organisation
//! and the token it acts as. A session ends at sign-out, after
//! [`SESSION_LIFETIME`], or with its token. The token itself is read once,
//! from the sign-in form's body, and kept nowhere.
//!
//! Every form that changes something carries the session's CSRF token, an
//! HMAC of the session id (so it is tied to the session, reveals nothing of
//! the id, and needs no storage); [`Protected`] checks it before the handler
//! runs. Independently, [`same_origin_posts`] refuses any POST whose
//! `Origin` (or `Sec-Fetch-Site`) says it came from another site.
//!
//! Sign-in attempts are rate-limited per client address and in all
//! ([`super::limit`]): over the limit, 429 with `Retry-After`, before the
//! token is looked up.

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use maud::html;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

use super::{layout, ConsoleError, Result};
use crate::auth::{self, Caller};
use crate::AppState;

/// How long a session lasts after sign-in.
pub const SESSION_LIFETIME: chrono::Duration = chrono::Duration::hours(12);

pub const COOKIE: &str = "pgplane_session";

/// A signed-in browser: who it acts as, and its CSRF token.
#[derive(Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
    id_hash: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("org", &self.caller.org)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn csrf_token(session_id: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(session_id.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"pgplane console csrf");
    hex::encode(mac.finalize().into_bytes())
}

fn session_id_from(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn lookup(state: &AppState, session_id: &str) -> Result<Option<Session>> {
    // A session ends with its token: revoked (the row cascades) or expired.
    /// org, token id, admin, token name, session expiry.
    type Row = (String, Uuid, bool, Option<String>, DateTime<Utc>);
    let row: Option<Row> = sqlx::query_as(
        "select s.org, s.token_id, t.admin, t.name, s.expires_at
         from console_sessions s join tokens t on t.id = s.token_id
         where s.id_hash = $1 and s.expires_at > now()
           and (t.expires_at is null or t.expires_at > now())",
    )
    .bind(auth::hash_token(session_id))
    .fetch_optional(&state.pool)
    .await
    .map_err(crate::ApiError::from)?;
    Ok(
        row.map(|(org, token_id, admin, token_name, expires_at)| Session {
            caller: Caller {
                token_name,
                ..Caller::token(&org, token_id, admin)
            },
            csrf: csrf_token(session_id),
            expires_at,
            id_hash: auth::hash_token(session_id),
        }),
    )
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let id = session_id_from(&parts.headers).ok_or(ConsoleError::SignIn)?;
        lookup(state, id).await?.ok_or(ConsoleError::SignIn)
    }
}

impl OptionalFromRequestParts<AppState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>> {
        match session_id_from(&parts.headers) {
            None => Ok(None),
            Some(id) => lookup(state, id).await,
        }
    }
}

/// A form post from a signed-in browser, whose `csrf` field matched the
/// session's token. Refused with 403 (and nothing run) otherwise.
pub struct Protected<T> {
    pub session: Session,
    pub form: T,
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// The most bytes a console form may have.
const MAX_FORM: usize = 64 * 1024;

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Protected<T> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let session =
            <Session as FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| ConsoleError::BadRequest("the form is too large".into()))?;
        let field: CsrfField = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ConsoleError::BadRequest(format!("unreadable form: {e}")))?;
        if !constant_time_eq(field.csrf.as_bytes(), session.csrf.as_bytes()) {
            return Err(ConsoleError::Forbidden(
                "this form is not from this session (missing or stale CSRF token); reload the page and try again",
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ConsoleError::BadRequest(format!("unreadable form: {e}")))?;
        Ok(Protected { session, form })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses (403) a POST that a browser says came from another site: an
/// `Origin` whose host is not the request's, or `Sec-Fetch-Site:
/// cross-site`. Clients that send neither (curl, the CLI) are not browsers
/// acting for someone else, and still need a token or a CSRF token.
pub async fn same_origin_posts(req: Request, next: axum::middleware::Next) -> Response {
    if req.method() == axum::http::Method::POST && !same_origin(req.headers()) {
        return ConsoleError::Forbidden("cross-origin form posts are refused").into_response();
    }
    next.run(req).await
}

fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site") == Some("cross-site") {
        return false;
    }
    let Some(origin) = text("origin") else {
        return true;
    };
    let host = text("x-forwarded-host").or_else(|| text("host"));
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Whether the browser reached us over TLS (directly or through a proxy
/// that says so): the cookie is then `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    text("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || text("forwarded").is_some_and(|f| f.to_ascii_lowercase().contains("proto=https"))
}

fn cookie(headers: &HeaderMap, value: &str, max_age: i64) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie text is ASCII")
}

pub async fn login_page(session: Option<Session>) -> Response {
    if session.is_some() {
        return Redirect::to("/instances").into_response();
    }
    sign_in_form(None).into_response()
}

fn sign_in_form(error: Option<&str>) -> maud::Markup {
    layout::bare_page(
        "Sign in",
        html! {
            h1 { "Sign in to pgplane" }
            form.card method="post" action="/login" {
                @if let Some(e) = error {
                    p.error role="alert" id="signin-error" { (e) }
                }
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required
                    aria-describedby="token-help";
                p.help #token-help {
                    "An organisation's API token (pgplane token create, or PGPLANE_TOKEN in pgplane.env). "
                    "It is used once to open a session and is not kept."
                }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
}

pub async fn sign_in(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    axum::Form(form): axum::Form<SignInForm>,
) -> Result<Response> {
    let client = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err(wait) = state
        .sign_in_limiter
        .attempt(client, std::time::Instant::now())
    {
        let seconds = super::limit::retry_after_seconds(wait);
        tracing::warn!(client = ?client, "console sign-in refused: too many attempts");
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            sign_in_form(Some(&format!(
                "Too many sign-in attempts; try again in {seconds} s."
            ))),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(resp);
    }
    let Some(caller) = auth::authenticate(&state.pool, form.token.trim()).await? else {
        return Ok((
            StatusCode::UNAUTHORIZED,
            sign_in_form(Some("That token is not valid.")),
        )
            .into_response());
    };
    let session_id = hex::encode(rand::thread_rng().gen::<[u8; 32]>());
    let mut tx = state.pool.begin().await.map_err(crate::ApiError::from)?;
    // Expired sessions go, and so does the one this browser held before.
    let previous = session_id_from(&headers).map(auth::hash_token);
    sqlx::query("delete from console_sessions where expires_at <= now() or id_hash = $1")
        .bind(previous)
        .execute(&mut *tx)
        .await
        .map_err(crate::ApiError::from)?;
    sqlx::query(
        "insert into console_sessions (id_hash, org, token_id, expires_at)
         values ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(auth::hash_token(&session_id))
    .bind(&caller.org)
    .bind(caller.token_id)
    .bind(SESSION_LIFETIME.num_seconds() as f64)
    .execute(&mut *tx)
    .await
    .map_err(crate::ApiError::from)?;
    tx.commit().await.map_err(crate::ApiError::from)?;
    tracing::info!(org = %caller.org, actor = %caller.actor(), "console session opened");
    let mut resp = Redirect::to("/instances").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&headers, &session_id, SESSION_LIFETIME.num_seconds()),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct SignOutForm {}

pub async fn sign_out(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    signed: Protected<SignOutForm>,
) -> Result<Response> {
    sqlx::query("delete from console_sessions where id_hash = $1")
        .bind(&signed.session.id_hash)
        .execute(&state.pool)
        .await
        .map_err(crate::ApiError::from)?;
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&headers, "", 0));
    Ok(resp)
}
