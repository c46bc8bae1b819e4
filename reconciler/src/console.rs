//! The web console: server-rendered HTML pages at `/`, served by the same
//! router as the API and acting through the same functions.
//!
//! - [`session`]: sign-in with an API token → a session cookie, CSRF tokens
//!   and the same-origin check on every form post.
//! - [`instances`]: the instance list (filtered, sorted, paginated in SQL).
//! - [`instance`]: one instance (desired, observed, drift, connection,
//!   activity, history, timeline) and its actions.
//! - [`activity`]: an instance's connections, transactions per second and
//!   database size, as small charts.
//! - [`create`]: the create form, validated as the API validates.
//! - [`edit`]: the edit form, reviewed (changes, restart prediction) before
//!   it is saved as an update at the generation it was opened at.
//! - [`sources`]: GitOps sources, their health and sync history, sync now.
//! - [`drift`]: the organisation's drift overview.
//! - [`dashboard`]: fleet counts per state and activity, as pictures.
//! - [`events`]: `GET /api/v1/events`, server-sent instance changes, which the
//!   pages listen to.
//!
//! Pages are [`maud`] templates (compile-checked, escaped by default) and
//! one hand-written script, both embedded in the binary: nothing is fetched
//! at run time and there is no JavaScript build. Pages read without the
//! script; it only adds live updates and small conveniences.

pub mod activity;
pub mod create;
pub mod dashboard;
pub mod drift;
pub mod edit;
pub mod events;
pub mod instance;
pub mod instances;
pub mod layout;
pub mod limit;
pub mod session;
pub mod sources;
pub mod timeline;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

/// The console's routes and the event stream.
pub fn router() -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(home))
        .route("/login", get(session::login_page).post(session::sign_in))
        .route("/logout", post(session::sign_out))
        .route("/instances", get(instances::list_page).post(create::submit))
        .route("/instances/new", get(create::form_page))
        .route("/instances/{name}", get(instance::page))
        .route("/instances/{name}/edit", get(edit::page).post(edit::submit))
        .route(
            "/instances/{name}/credentials",
            post(instance::reveal_credentials),
        )
        .route("/instances/{name}/{action}", post(instance::act))
        .route("/dashboard", get(dashboard::page))
        .route("/drift", get(drift::page))
        .route("/sources", get(sources::list_page))
        .route("/sources/{name}", get(sources::page))
        .route("/sources/{name}/sync", post(sources::sync_now))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(stylesheet))
        .route_layer(axum::middleware::from_fn(security_headers));
    Router::new()
        .route("/api/v1/events", get(events::stream))
        .merge(pages)
        .route_layer(axum::middleware::from_fn(session::same_origin_posts))
}

async fn home(session: Option<session::Session>) -> Redirect {
    match session {
        Some(_) => Redirect::to("/instances"),
        None => Redirect::to("/login"),
    }
}

const SCRIPT: &str = include_str!("console/assets/console.js");
const STYLESHEET: &str = include_str!("console/assets/console.css");

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
}

/// Pages run only their own script and styles, are never framed, and are
/// never cached (they may show a password).
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::CACHE_CONTROL, "no-store");
    resp
}

/// Why a console request did not get its page.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No valid session: pages send the browser to the sign-in page.
    #[error("sign in first")]
    SignIn,
    /// A form post without this session's CSRF token, or from another origin.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub type Result<T, E = ConsoleError> = std::result::Result<T, E>;

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::SignIn => return Redirect::to("/login").into_response(),
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, m.to_owned()),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ConsoleError::Api(e) => {
                let message = e.to_string();
                // The API's mapping decides the status (and logs what is
                // internal); its JSON body is not used.
                (e.into_response().status(), message)
            }
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let body = layout::bare_page(
            title,
            maud::html! {
                h1 { (status.as_u16()) " " (title) }
                p.error role="alert" { (message) }
                p { a href="/instances" { "Back to instances" } }
            },
        );
        (status, body).into_response()
    }
}
