//! The HTTP API under `/api/v1`. Handlers are thin: parse, authenticate,
//! call [`crate::commands`] or the store, answer.

use api::{
    ActivityList, BackupList, CreateInstance, CreateSource, CreateToken, Credentials,
    DataPlaneSeen, DriftReport, ErrorBody, ExtensionCatalog, History, Instance, InstanceList,
    ServerStatus, Source, SourceList, SourceStatus, Switchover, SyncRecord, TokenCreated,
    TokenInfo, TokenList, UpdateInstance,
};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::OpenApi;

use crate::auth::{self, Caller};
use crate::commands::{self, Command};
use crate::error::{ApiError, Result};
use crate::store;
use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/instances",
            post(create_instance).get(list_instances),
        )
        .route(
            "/api/v1/instances/{name}",
            get(get_instance)
                .put(update_instance)
                .delete(delete_instance),
        )
        .route("/api/v1/instances/{name}/restart", post(restart_instance))
        .route("/api/v1/instances/{name}/stop", post(stop_instance))
        .route("/api/v1/instances/{name}/start", post(start_instance))
        .route("/api/v1/instances/{name}/heal", post(heal_instance))
        .route(
            "/api/v1/instances/{name}/switchover",
            post(switchover_instance),
        )
        .route("/api/v1/instances/{name}/logs", get(instance_logs))
        .route("/api/v1/instances/{name}/history", get(instance_history))
        .route(
            "/api/v1/instances/{name}/backups",
            get(instance_backups).post(backup_instance),
        )
        .route("/api/v1/instances/{name}/activity", get(instance_activity))
        .route("/api/v1/status", get(server_status))
        .route(
            "/api/v1/instances/{name}/credentials",
            get(instance_credentials),
        )
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/tokens/{token}", delete(revoke_token))
        .route("/api/v1/drift", get(drift_report))
        .route("/api/v1/extensions", get(list_extensions))
        .route("/api/v1/sources", post(create_source).get(list_sources))
        .route(
            "/api/v1/sources/{name}",
            get(source_status).delete(delete_source),
        )
        .route("/api/v1/sources/{name}/sync", post(sync_source))
        .route(
            "/api/v1/orgs/{org}/sources/{name}/webhook",
            post(source_webhook),
        )
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .merge(crate::console::router())
        .layer(axum::middleware::from_fn(nul_in_path_is_not_found))
        .with_state(state)
}

/// No name holds a NUL character (Postgres text cannot): a path with `%00`
/// names nothing, whatever the route.
async fn nul_in_path_is_not_found(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().path().contains("%00") {
        return ApiError::NotFoundWhat("path", req.uri().path().to_owned()).into_response();
    }
    next.run(req).await
}

/// The most characters a token's description may have.
const MAX_TOKEN_DESCRIPTION: usize = 200;

fn body<T>(json: std::result::Result<Json<T>, JsonRejection>) -> Result<T> {
    json.map(|Json(t)| t)
        .map_err(|rejection| ApiError::invalid("body", rejection.body_text()))
}

#[utoipa::path(post, path = "/api/v1/instances", request_body = CreateInstance,
    responses((status = 201, body = Instance),
        (status = 403, description = "the organisation has as many instances as it may have (quota_exceeded)", body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    json: std::result::Result<Json<CreateInstance>, JsonRejection>,
) -> Result<(StatusCode, Json<Instance>)> {
    let req = body(json)?;
    let created = commands::create(&state, &caller, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ListQuery {
    /// Only instances in this state (e.g. `Up`, `Deleted`).
    state: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/instances", params(ListQuery),
    responses((status = 200, body = InstanceList)), security(("bearer" = [])))]
async fn list_instances(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<InstanceList>> {
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(domain::State::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "state",
                format!("unknown state {s:?}; one of {}", all_states()),
            )
        })?),
    };
    let mut conn = state.pool.acquire().await?;
    let rows = store::list_instances(&mut conn, &caller.org, filter).await?;
    Ok(Json(InstanceList {
        items: rows.into_iter().map(|r| r.into_api()).collect(),
    }))
}

fn all_states() -> String {
    domain::State::ALL.map(|s| s.as_str()).join(", ")
}

#[utoipa::path(get, path = "/api/v1/instances/{name}", params(("name" = String, Path, description = "instance name or id")),
    responses((status = 200, body = Instance), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Instance>> {
    let mut conn = state.pool.acquire().await?;
    let row = store::find_instance(&mut conn, &caller.org, &name, false).await?;
    Ok(Json(row.into_api()))
}

#[utoipa::path(put, path = "/api/v1/instances/{name}", request_body = UpdateInstance,
    params(("name" = String, Path, description = "instance name or id")),
    responses((status = 200, body = Instance), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    json: std::result::Result<Json<UpdateInstance>, JsonRejection>,
) -> Result<Json<Instance>> {
    let req = body(json)?;
    let cmd = Command::Update {
        spec: Box::new(req.spec),
        expected_generation: req.expected_generation,
        owner: req.owner,
    };
    Ok(Json(commands::execute(&state, &caller, &name, cmd).await?))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/restart", params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn restart_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Instance>> {
    Ok(Json(
        commands::execute(&state, &caller, &name, Command::Restart).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/stop", params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn stop_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Instance>> {
    Ok(Json(
        commands::execute(&state, &caller, &name, Command::Stop).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/start", params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn start_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Instance>> {
    Ok(Json(
        commands::execute(&state, &caller, &name, Command::Start).await?,
    ))
}

/// Puts back what drifted: re-sends the declared spec of an instance whose
/// data plane reports something else (an `ALTER SYSTEM`, a dropped
/// extension, a stopped server), restarting when a drifted parameter needs
/// it. An instance in sync comes back unchanged (same generation).
#[utoipa::path(post, path = "/api/v1/instances/{name}/heal", params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn heal_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Instance>> {
    Ok(Json(commands::heal(&state, &caller, &name).await?))
}

#[utoipa::path(delete, path = "/api/v1/instances/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Instance>> {
    Ok(Json(
        commands::execute(&state, &caller, &name, Command::Delete).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/history", params(("name" = String, Path)),
    responses((status = 200, body = History)), security(("bearer" = [])))]
async fn instance_history(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<History>> {
    let mut conn = state.pool.acquire().await?;
    let row = store::find_instance(&mut conn, &caller.org, &name, false).await?;
    let items = store::history(&mut conn, row.id).await?;
    Ok(Json(History { items }))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/backups", params(("name" = String, Path)),
    responses((status = 202, body = Instance), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn backup_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Instance>)> {
    let instance = commands::request_backup(&state, &caller, &name).await?;
    Ok((StatusCode::ACCEPTED, Json(instance)))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/switchover", params(("name" = String, Path)),
    request_body(content = Switchover, description = "may be empty: the most advanced standby is promoted"),
    responses((status = 202, body = Instance), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn switchover_instance(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    raw: axum::body::Bytes,
) -> Result<(StatusCode, Json<Instance>)> {
    let req: Switchover = match raw.iter().all(u8::is_ascii_whitespace) {
        true => Switchover::default(),
        false => serde_json::from_slice(&raw)
            .map_err(|e| ApiError::invalid("body", format!("not a switchover request: {e}")))?,
    };
    let instance = commands::request_switchover(&state, &caller, &name, req.to.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(instance)))
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/backups", params(("name" = String, Path)),
    responses((status = 200, body = BackupList)), security(("bearer" = [])))]
async fn instance_backups(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<BackupList>> {
    let mut conn = state.pool.acquire().await?;
    let row = store::find_instance(&mut conn, &caller.org, &name, false).await?;
    let live = row.state() != domain::State::Deleted;
    let catalog = row.backups.map(|b| b.0).unwrap_or_default();
    Ok(Json(BackupList {
        restorable_from: catalog.restorable_from(),
        restorable_until: if live { None } else { catalog.restorable_until },
        items: catalog.backups,
        archive: row.observed.and_then(|o| o.0.archive),
    }))
}

#[utoipa::path(get, path = "/api/v1/status",
    responses((status = 200, body = ServerStatus)), security(("bearer" = [])))]
async fn server_status(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
) -> Result<Json<ServerStatus>> {
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("select name, last_seen from data_planes order by name")
            .fetch_all(&state.pool)
            .await?;
    Ok(Json(ServerStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        org: caller.org,
        admin: caller.admin,
        data_planes: rows
            .into_iter()
            .map(|(name, last_seen)| DataPlaneSeen { name, last_seen })
            .collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/activity", params(("name" = String, Path)),
    responses((status = 200, body = ActivityList)), security(("bearer" = [])))]
async fn instance_activity(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ActivityList>> {
    let mut conn = state.pool.acquire().await?;
    let row = store::find_instance(&mut conn, &caller.org, &name, false).await?;
    let items = store::activity(&mut conn, row.id).await?;
    Ok(Json(ActivityList { items }))
}

/// The most lines one request returns.
const MAX_LOG_LINES: u32 = 10_000;

#[derive(Deserialize, utoipa::IntoParams)]
struct LogsQuery {
    /// How many of the newest lines (default 100, at most 10000).
    tail: Option<u32>,
    /// Only lines shipped after this cursor (a previous answer's `cursor`).
    after: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/logs", params(("name" = String, Path), LogsQuery),
    responses((status = 200, body = api::LogLines), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
async fn instance_logs(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    q: std::result::Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::LogLines>> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let tail = q.tail.unwrap_or(100);
    if tail == 0 || tail > MAX_LOG_LINES {
        return Err(ApiError::invalid(
            "tail",
            format!("must be between 1 and {MAX_LOG_LINES}"),
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let row = store::find_instance(&mut conn, &caller.org, &name, false).await?;
    drop(conn);
    let chunks = state.queues.logs(row.id, q.after).await?;
    let cursor = chunks.last().map(|c| c.id).or(q.after);
    let mut items = std::collections::VecDeque::new();
    for chunk in chunks {
        let text = match state.keyring.open(&chunk.chunk) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(instance_id = %row.id, chunk = chunk.id, error = %e, "a log chunk cannot be opened; skipped");
                continue;
            }
        };
        for line in text.lines() {
            items.push_back(api::LogLine {
                shipped_at: chunk.at,
                line: line.to_owned(),
            });
            if items.len() > tail as usize {
                items.pop_front();
            }
        }
    }
    Ok(Json(api::LogLines {
        items: items.into(),
        cursor,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct CredentialsQuery {
    /// A role the spec declares: its credentials instead of the client
    /// role's, for the first declared database it owns (else `postgres`).
    role: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/credentials", params(("name" = String, Path), CredentialsQuery),
    responses((status = 200, body = Credentials), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
async fn instance_credentials(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<CredentialsQuery>,
) -> Result<Json<Credentials>> {
    let mut conn = state.pool.acquire().await?;
    let row = store::find_instance(&mut conn, &caller.org, &name, false).await?;
    if row.state() == domain::State::Deleted {
        return Err(ApiError::Deleted { name });
    }
    let conn_info = row.connection.as_ref().map(|c| c.0.clone());
    let stored = match &q.role {
        None => state.queues.get_secret(row.id).await?,
        Some(role) => {
            let spec = &row.spec.0;
            if !spec
                .roles
                .iter()
                .any(|r| r.name == *role && r.ensure.is_present())
            {
                let declared: Vec<&str> = spec
                    .roles
                    .iter()
                    .filter(|r| r.ensure.is_present())
                    .map(|r| r.name.as_str())
                    .collect();
                return Err(ApiError::invalid(
                    "role",
                    format!(
                        "instance {name:?} declares no role {role:?} (declared: {})",
                        if declared.is_empty() {
                            "none".to_owned()
                        } else {
                            declared.join(", ")
                        }
                    ),
                ));
            }
            state.queues.get_role_secret(row.id, role).await?
        }
    };
    let password = stored
        .map(|stored| state.keyring.open(&stored))
        .transpose()?;
    let (Some(mut info), Some(password)) = (conn_info, password) else {
        return Err(ApiError::Conflict(format!(
            "instance {name:?} has no credentials{} yet (state {}); wait until it is Up",
            q.role
                .as_deref()
                .map(|r| format!(" for role {r:?}"))
                .unwrap_or_default(),
            row.state()
        )));
    };
    if let Some(role) = q.role {
        info.database = row
            .spec
            .0
            .databases
            .iter()
            .find(|d| d.owner == role && d.ensure.is_present())
            .map_or_else(|| "postgres".to_owned(), |d| d.name.clone());
        info.user = role;
    }
    Ok(Json(credentials(info, password)))
}

/// An instance's credentials, with the URI a client connects with.
/// With standbys, the read-write and read-only URIs list every member and
/// let libpq find the primary (`target_session_attrs=read-write`) or a
/// standby (`prefer-standby`) itself, so they keep working across a
/// failover.
pub(crate) fn credentials(info: domain::ConnectionInfo, password: String) -> Credentials {
    let userinfo = format!("{}:{}", info.user, percent_encode(&password));
    let uri = format!(
        "postgres://{userinfo}@{}:{}/{}",
        info.host, info.port, info.database
    );
    let (read_write_uri, read_only_uri) = match info.members.as_slice() {
        [] | [_] => (uri.clone(), uri.clone()),
        members => {
            let hosts: Vec<String> = members
                .iter()
                .map(|m| format!("{}:{}", m.host, m.port))
                .collect();
            let base = format!(
                "postgres://{userinfo}@{}/{}",
                hosts.join(","),
                info.database
            );
            (
                format!("{base}?target_session_attrs=read-write"),
                format!("{base}?target_session_attrs=prefer-standby"),
            )
        }
    };
    Credentials {
        host: info.host,
        port: info.port,
        database: info.database,
        user: info.user,
        password,
        uri,
        read_write_uri,
        read_only_uri,
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[utoipa::path(post, path = "/api/v1/tokens", request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn create_token(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    json: std::result::Result<Json<CreateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenCreated>)> {
    if !caller.admin {
        return Err(ApiError::Forbidden("create tokens (admin only)"));
    }
    let req = body(json)?;
    if let Some(d) = &req.description {
        if d.chars().count() > MAX_TOKEN_DESCRIPTION || d.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "description",
                format!("must be at most {MAX_TOKEN_DESCRIPTION} characters, without control characters (NUL, newlines, …)"),
            ));
        }
    }
    if let Some(at) = req.expires_at {
        if at <= chrono::Utc::now() {
            return Err(ApiError::invalid("expiresAt", "must be in the future"));
        }
    }
    let mut conn = state.pool.acquire().await?;
    let new = auth::NewToken {
        org: &req.org,
        admin: req.admin,
        description: req.description.as_deref(),
        name: req.name.as_deref(),
        expires_at: req.expires_at,
    };
    let (id, token) = auth::create_named_token(&mut conn, &new).await?;
    tracing::info!(token_id = %id, org = %req.org, actor = %caller.actor(), "token created");
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            org: req.org,
            token,
            id: Some(id),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/tokens",
    responses((status = 200, body = TokenList), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_tokens(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
) -> Result<Json<TokenList>> {
    if !caller.admin {
        return Err(ApiError::Forbidden("list tokens (admin only)"));
    }
    let items = sqlx::query_as::<_, TokenRow>(&format!(
        "select {TOKEN_COLUMNS} from tokens order by org, created_at"
    ))
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(TokenRow::into_info)
    .collect();
    Ok(Json(TokenList { items }))
}

/// A listed token's columns (never its hash), for [`TokenRow`].
const TOKEN_COLUMNS: &str = "id, org, name, description, admin, created_at, expires_at, \
     coalesce(expires_at <= now(), false) as expired";

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: uuid::Uuid,
    org: String,
    name: Option<String>,
    description: Option<String>,
    admin: bool,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    expired: bool,
}

impl TokenRow {
    fn into_info(self) -> TokenInfo {
        TokenInfo {
            id: self.id,
            org: self.org,
            name: self.name,
            description: self.description,
            admin: self.admin,
            created_at: self.created_at,
            expires_at: self.expires_at,
            expired: self.expired,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct RevokeQuery {
    /// The organisation of a token named in the path (default: the
    /// caller's).
    org: Option<String>,
}

#[utoipa::path(delete, path = "/api/v1/tokens/{token}",
    params(("token" = String, Path, description = "the token's id, or its name"), RevokeQuery),
    responses((status = 200, body = TokenInfo), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn revoke_token(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(token): Path<String>,
    Query(q): Query<RevokeQuery>,
) -> Result<Json<TokenInfo>> {
    if !caller.admin {
        return Err(ApiError::Forbidden("revoke tokens (admin only)"));
    }
    let org = q.org.unwrap_or_else(|| caller.org.clone());
    let id = uuid::Uuid::parse_str(&token).ok();
    let mut tx = state.pool.begin().await?;
    let found = sqlx::query_as::<_, TokenRow>(&format!(
        "select {TOKEN_COLUMNS} from tokens where id = $1 or (org = $2 and name = $3) for update"
    ))
    .bind(id)
    .bind(&org)
    .bind(&token)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotFoundWhat("token", token.clone()))?;
    if found.id == caller.token_id {
        return Err(ApiError::Conflict(
            "this is the token of this request; revoke it with another admin token".to_owned(),
        ));
    }
    // Its console sessions go with it (the foreign key cascades).
    sqlx::query("delete from tokens where id = $1")
        .bind(found.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(token_id = %found.id, org = %found.org, actor = %caller.actor(), "token revoked");
    Ok(Json(found.into_info()))
}

#[utoipa::path(get, path = "/api/v1/drift",
    responses((status = 200, body = DriftReport)), security(("bearer" = [])))]
async fn drift_report(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
) -> Result<Json<DriftReport>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(
        crate::drift::report(&mut conn, &caller.org, chrono::Utc::now()).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
struct ExtensionsQuery {
    /// The data plane (default: the control plane's default one).
    data_plane: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/extensions", params(ExtensionsQuery),
    responses((status = 200, body = ExtensionCatalog), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_extensions(
    AxumState(state): AxumState<AppState>,
    _caller: Caller,
    Query(q): Query<ExtensionsQuery>,
) -> Result<Json<ExtensionCatalog>> {
    let mut conn = state.pool.acquire().await?;
    let data_plane = q
        .data_plane
        .unwrap_or_else(|| state.default_data_plane.clone());
    let catalog = store::data_plane_extensions(&mut conn, &data_plane).await?;
    if catalog.is_none() && data_plane != state.default_data_plane {
        let mut known = store::data_planes(&mut conn).await?;
        known.push(state.default_data_plane.clone());
        known.sort();
        known.dedup();
        return Err(ApiError::invalid(
            "dataPlane",
            format!(
                "unknown data plane {data_plane:?}; known: {}",
                known.join(", ")
            ),
        ));
    }
    let registered = catalog.is_some();
    let mut items = catalog.unwrap_or_default();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(ExtensionCatalog {
        data_plane,
        registered,
        items,
    }))
}

/// Prometheus metrics (admin tokens only: they span organisations).
async fn metrics(AxumState(state): AxumState<AppState>, caller: Caller) -> Result<String> {
    if !caller.admin {
        return Err(ApiError::Forbidden("read metrics (admin only)"));
    }
    let mut conn = state.pool.acquire().await?;
    crate::drift::metrics(&mut conn, chrono::Utc::now()).await
}

#[utoipa::path(post, path = "/api/v1/sources", request_body = CreateSource,
    responses((status = 201, body = Source), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_source(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    json: std::result::Result<Json<CreateSource>, JsonRejection>,
) -> Result<(StatusCode, Json<Source>)> {
    let req = body(json)?;
    let created = crate::sources::create(&state, &caller, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/sources", responses((status = 200, body = SourceList)), security(("bearer" = [])))]
async fn list_sources(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
) -> Result<Json<SourceList>> {
    Ok(Json(SourceList {
        items: crate::sources::list(&state, &caller.org).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/sources/{name}", params(("name" = String, Path)),
    responses((status = 200, body = SourceStatus), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn source_status(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<SourceStatus>> {
    let source = crate::sources::find(&state, &caller.org, &name).await?;
    let syncs = crate::sources::history(&state, &caller.org, &name, 50).await?;
    Ok(Json(SourceStatus {
        source: crate::sources::describe(&state, source).await?,
        syncs,
    }))
}

#[utoipa::path(delete, path = "/api/v1/sources/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Source)), security(("bearer" = [])))]
async fn delete_source(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Source>> {
    Ok(Json(
        crate::sources::delete(&state, &caller.org, &name).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/sources/{name}/sync", params(("name" = String, Path)),
    responses((status = 200, body = SyncRecord)), security(("bearer" = [])))]
async fn sync_source(
    AxumState(state): AxumState<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<SyncRecord>> {
    Ok(Json(
        crate::sources::sync(&state, &caller.org, &name).await?,
    ))
}

/// A push notification: it carries no trust (no token) and only makes the
/// control plane fetch sooner. The body must be signed with the source's
/// webhook secret (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`); an
/// unknown source answers exactly as a bad signature does. At most one
/// fetch per source every few seconds: calls in between are accepted and
/// merged into the next fetch.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/sources/{name}/webhook",
    params(("org" = String, Path), ("name" = String, Path)),
    responses((status = 202, description = "a sync is requested"), (status = 401, body = ErrorBody)))]
async fn source_webhook(
    AxumState(state): AxumState<AppState>,
    Path((org, name)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    payload: axum::body::Bytes,
) -> Result<StatusCode> {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    crate::sources::webhook::receive(&state, &org, &name, &payload, signature).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn ready(AxumState(state): AxumState<AppState>) -> Result<&'static str> {
    sqlx::query("select 1").execute(&state.pool).await?;
    Ok("ready")
}

#[derive(OpenApi)]
#[openapi(
    info(title = "pgplane", description = "Declarative managed Postgres: the control-plane API."),
    paths(create_instance, list_instances, get_instance, update_instance, restart_instance,
          stop_instance, start_instance, heal_instance, delete_instance, instance_history, instance_credentials,
          backup_instance, instance_backups, switchover_instance, instance_activity, instance_logs, server_status,
          create_token, list_tokens, revoke_token, drift_report, list_extensions, create_source, list_sources, source_status, delete_source,
          sync_source, source_webhook, crate::console::events::stream),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers and wire types.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}
