//! Registering sources: add (validated, URL checked against the
//! operator's policy, a webhook secret generated when none is given), find,
//! list and delete (with the source's git cache).

use api::{CreateSource, DriftMode, Source, WebhookSecret, MIN_SOURCE_INTERVAL_SECONDS};
use chrono::{DateTime, Utc};
use gitops::LocationError;

use std::time::Duration;

use gitops::{GitSource, SourceError};

use super::{fetch_blocking, webhook, FetchFailure, SourceKey, FETCH_FAILED};
use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::AppState;

const MAX_INTERVAL_SECONDS: i32 = 86_400;
const MAX_URL_LEN: usize = 2048;
const MAX_FIELD_LEN: usize = 1024;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceRow {
    pub name: String,
    pub org: String,
    pub url: String,
    pub branch: String,
    pub path: String,
    pub interval_seconds: i32,
    pub prune: bool,
    pub drift_mode: String,
    pub adopt: bool,
    pub last_good_commit: Option<String>,
    pub last_seen_commit: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
}

impl SourceRow {
    pub fn key(&self) -> SourceKey {
        SourceKey::new(&self.org, &self.name)
    }

    pub fn owner(&self) -> String {
        format!("git:{}", self.name)
    }

    pub(super) fn drift(&self) -> DriftMode {
        if self.drift_mode == "heal" {
            DriftMode::Heal
        } else {
            DriftMode::Report
        }
    }

    pub fn into_api(self) -> Source {
        Source {
            drift: self.drift(),
            webhook_path: webhook::path(&self.org, &self.name),
            webhook_secret: None,
            name: self.name,
            org: self.org,
            url: self.url,
            branch: self.branch,
            path: self.path,
            interval_seconds: self.interval_seconds,
            prune: self.prune,
            adopt: self.adopt,
            last_good_commit: self.last_good_commit,
            last_seen_commit: self.last_seen_commit,
            last_sync_at: self.last_sync_at,
            last_outcome: None,
            last_error: None,
        }
    }
}

const SOURCE_COLUMNS: &str =
    "name, org, url, branch, path, interval_seconds, prune, drift_mode, adopt, \
     last_good_commit, last_seen_commit, last_sync_at";

pub async fn create(state: &AppState, caller: &Caller, req: CreateSource) -> Result<Source> {
    validate(&req)?;
    check_url(state, &caller.org, &req.name, &req.url).await?;
    if req.verify {
        verify(state, &caller.org, &req).await?;
    }
    let drift = match req.drift {
        DriftMode::Report => "report",
        DriftMode::Heal => "heal",
    };
    let generated = req.webhook_secret.is_none();
    let secret = req
        .webhook_secret
        .unwrap_or_else(|| WebhookSecret(webhook::generate_secret()));
    let mut tx = state.pool.begin().await?;
    let key = queue::sealed::SealingKey::for_writing(&mut tx, queue::sealed::Store::WebhookSecrets)
        .await?;
    let row = sqlx::query_as::<_, SourceRow>(&format!(
        "insert into sources (name, org, url, branch, path, interval_seconds, prune, drift_mode, adopt, webhook_secret)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning {SOURCE_COLUMNS}"
    ))
    .bind(&req.name)
    .bind(&caller.org)
    .bind(&req.url)
    .bind(&req.branch)
    .bind(req.path.trim_matches('/'))
    .bind(req.interval_seconds)
    .bind(req.prune)
    .bind(drift)
    .bind(req.adopt)
    .bind(key.seal(&secret.0))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict(format!(
            "a source named {:?} already exists in this organisation",
            req.name
        )),
        other => other,
    })?;
    tx.commit().await?;
    state.gitops.request_sync(&row.key());
    let mut source = row.into_api();
    if generated {
        source.webhook_secret = Some(secret);
    }
    Ok(source)
}

fn validate(req: &CreateSource) -> Result<()> {
    let mut errs = domain::ValidationErrors::default();
    if let Err(e) = domain::name::check_dns1123_label(&req.name) {
        errs.push("name", e.to_string());
    }
    if req.url.trim().is_empty() {
        errs.push("url", "a git URL is required");
    } else if req.url.len() > MAX_URL_LEN {
        errs.push("url", format!("at most {MAX_URL_LEN} characters"));
    }
    if req.branch.trim().is_empty() {
        errs.push("branch", "a branch is required");
    } else if req.branch.len() > MAX_FIELD_LEN {
        errs.push("branch", format!("at most {MAX_FIELD_LEN} characters"));
    }
    if req.path.len() > MAX_FIELD_LEN {
        errs.push("path", format!("at most {MAX_FIELD_LEN} characters"));
    }
    if !(MIN_SOURCE_INTERVAL_SECONDS..=MAX_INTERVAL_SECONDS).contains(&req.interval_seconds) {
        errs.push(
            "intervalSeconds",
            format!(
                "must be between {MIN_SOURCE_INTERVAL_SECONDS} and {MAX_INTERVAL_SECONDS} seconds (a push webhook syncs sooner)"
            ),
        );
    }
    if let Some(secret) = &req.webhook_secret {
        if secret.0.is_empty() {
            errs.push(
                "webhookSecret",
                "must not be empty (leave it out to have one generated)",
            );
        } else if secret.0.len() > MAX_FIELD_LEN {
            errs.push(
                "webhookSecret",
                format!("at most {MAX_FIELD_LEN} characters"),
            );
        }
    }
    errs.into_result().map_err(ApiError::Invalid)
}

/// Checks a new source's URL against the operator's policy (resolving its
/// host off the async runtime).
async fn check_url(state: &AppState, org: &str, name: &str, url: &str) -> Result<()> {
    let policy = state.gitops.policy();
    let owned = url.to_owned();
    let checked = tokio::task::spawn_blocking(move || policy.check(&owned))
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    match checked {
        Ok(_) => Ok(()),
        Err(e) => {
            log_refused(org, name, &e);
            Err(ApiError::invalid("url", e.to_string()))
        }
    }
}

/// How long adding a source waits for its repository to answer.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Fetches the new source's branch into its cache (the first sync then
/// has it) and checks that its path exists, as `argocd repo add` checks a
/// repository: a mistyped URL, branch or path is refused at once, naming
/// the field. Why a repository cannot be read stays in the server's log,
/// as for syncs.
async fn verify(state: &AppState, org: &str, req: &CreateSource) -> Result<()> {
    let key = SourceKey::new(org, &req.name);
    let root = state.gitops.cache_dir.clone();
    let dir = state.gitops.repo_dir(&key, &req.url);
    let policy = state.gitops.policy();
    let source = GitSource {
        url: req.url.clone(),
        reference: req.branch.clone(),
        path: req.path.trim_matches('/').to_owned(),
    };
    let probe = tokio::task::spawn_blocking(move || {
        let (git, commit) = fetch_blocking(&root, &dir, policy, &source)?;
        git.list_files(&commit.sha, &source.path)
            .map_err(FetchFailure::Source)?;
        Ok::<_, FetchFailure>(())
    });
    let failure = match tokio::time::timeout(VERIFY_TIMEOUT, probe).await {
        Ok(joined) => match joined.map_err(|e| ApiError::Internal(Box::new(e)))? {
            Ok(()) => return Ok(()),
            Err(e) => e,
        },
        Err(_) => {
            tracing::warn!(%org, source = %req.name, "adding a source: the repository did not answer in time");
            return Err(ApiError::invalid(
                "url",
                format!(
                    "{FETCH_FAILED}: no answer within {} s (add it with verify off to register it anyway)",
                    VERIFY_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    let field = match &failure {
        FetchFailure::Source(SourceError::RefNotFound { .. }) => "branch",
        FetchFailure::Source(SourceError::PathNotFound { .. }) => "path",
        _ => "url",
    };
    let mut message = failure.tenant_message(org, &req.name);
    if message == FETCH_FAILED {
        message = format!(
            "{FETCH_FAILED}: check the URL and that the control plane may read it (add it with verify off to register a repository that does not exist yet)"
        );
    }
    Err(ApiError::invalid(field, message))
}

pub(super) fn log_refused(org: &str, name: &str, e: &LocationError) {
    match e {
        LocationError::NotPublic { host, detail } => {
            tracing::info!(%org, source = %name, %host, %detail, "source URL refused: not a public host")
        }
        LocationError::Invalid(_) | LocationError::LocalNotAllowed => {
            tracing::info!(%org, source = %name, error = %e, "source URL refused")
        }
    }
}

pub async fn find(state: &AppState, org: &str, name: &str) -> Result<SourceRow> {
    sqlx::query_as::<_, SourceRow>(&format!(
        "select {SOURCE_COLUMNS} from sources where org = $1 and name = $2"
    ))
    .bind(org)
    .bind(name)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::NotFoundWhat("source", name.to_owned()))
}

pub async fn list(state: &AppState, org: &str) -> Result<Vec<Source>> {
    let rows = sqlx::query_as::<_, SourceRow>(&format!(
        "select {SOURCE_COLUMNS} from sources where org = $1 order by name"
    ))
    .bind(org)
    .fetch_all(&state.pool)
    .await?;
    let mut health = last_syncs(state, org, None).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let last = health.remove(&row.name);
            with_health(row.into_api(), last)
        })
        .collect())
}

/// A source as the API shows it, with its newest sync's outcome.
pub async fn describe(state: &AppState, row: SourceRow) -> Result<Source> {
    let mut health = last_syncs(state, &row.org, Some(&row.name)).await?;
    let last = health.remove(&row.name);
    Ok(with_health(row.into_api(), last))
}

/// The newest recorded sync of a source: its outcome and errors.
#[derive(sqlx::FromRow)]
struct LastSync {
    source: String,
    outcome: String,
    errors: sqlx::types::Json<Vec<String>>,
    results: sqlx::types::Json<Vec<api::SyncResult>>,
}

/// The newest recorded sync of each of `org`'s sources (or of one).
async fn last_syncs(
    state: &AppState,
    org: &str,
    name: Option<&str>,
) -> Result<std::collections::HashMap<String, LastSync>> {
    let rows: Vec<LastSync> = sqlx::query_as(
        "select distinct on (source) source, outcome, errors, results
         from source_syncs where org = $1 and ($2::text is null or source = $2)
         order by source, id desc",
    )
    .bind(org)
    .bind(name)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.source.clone(), r)).collect())
}

fn with_health(mut source: Source, last: Option<LastSync>) -> Source {
    if let Some(last) = last {
        source.last_error = last.errors.0.into_iter().next().or_else(|| {
            last.results
                .0
                .into_iter()
                .find_map(|r| r.error.map(|e| format!("{}: {e}", r.name)))
        });
        source.last_outcome = Some(api::SyncOutcome::from(last.outcome.as_str()));
    }
    source
}

/// Deletes a source, its sync history and its git cache. Waits for a sync
/// of it in progress; its instances keep their owner `git:NAME` (re-adding
/// the source resumes managing them).
pub async fn delete(state: &AppState, org: &str, name: &str) -> Result<Source> {
    let key = SourceKey::new(org, name);
    let lock = state.gitops.lock(&key);
    let _guard = lock.lock().await;
    let row = sqlx::query_as::<_, SourceRow>(&format!(
        "delete from sources where org = $1 and name = $2 returning {SOURCE_COLUMNS}"
    ))
    .bind(org)
    .bind(name)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::NotFoundWhat("source", name.to_owned()))?;
    let dir = state.gitops.source_dir(&key);
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err((dir, e)),
        _ => Ok(()),
    })
    .await
    .map_err(|e| ApiError::Internal(Box::new(e)))?;
    if let Err((dir, e)) = removed {
        tracing::error!(%org, source = %name, dir = %dir.display(), error = %e, "removing a deleted source's git cache failed");
    }
    state.gitops.forget(&key, &lock);
    Ok(row.into_api())
}
