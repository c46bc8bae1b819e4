//! GitOps sources: registration, syncs (fetch → compile → plan → apply),
//! the sync loop and drift healing.
//!
//! The rules (issue 4): a revision is validated whole before anything is
//! applied and an invalid one applies nothing (the last good revision stays
//! in force); a failed fetch or a vanished path changes nothing; a prune
//! never deletes everything at once and is capped per sync; an instance has
//! one owner; unchanged manifests enqueue nothing; compiled revisions are
//! cached by commit and blob.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::{CreateInstance, CreateSource, DriftMode, DriftStatus, Source, SyncRecord, SyncResult};
use chrono::{DateTime, Utc};
use gitops::{Action, DesiredCache, GitCache, GitSource, ParseOptions, PlanOptions};
use sqlx::types::Json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{Caller, SourceActor};
use crate::commands::{self, Command};
use crate::error::{ApiError, Result};
use crate::{store, AppState};

/// Per-process GitOps state: where repositories are cached, compiled
/// revisions, one lock per source, and sync requests from webhooks.
pub struct GitOps {
    cache_dir: PathBuf,
    compiled: std::sync::Mutex<HashMap<String, Arc<std::sync::Mutex<DesiredCache>>>>,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    requested: std::sync::Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
}

impl GitOps {
    pub fn new(cache_dir: PathBuf) -> GitOps {
        GitOps {
            cache_dir,
            compiled: Default::default(),
            locks: Default::default(),
            requested: Default::default(),
            wake: Default::default(),
        }
    }

    /// Asks the sync loop to sync `source` now (the webhook).
    pub fn request_sync(&self, source: &str) {
        self.requested
            .lock()
            .expect("poisoned")
            .insert(source.to_owned());
        self.wake.notify_one();
    }

    fn lock(&self, source: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("poisoned")
            .entry(source.to_owned())
            .or_default()
            .clone()
    }

    fn cache(&self, source: &str, org: &str) -> Arc<std::sync::Mutex<DesiredCache>> {
        self.compiled
            .lock()
            .expect("poisoned")
            .entry(source.to_owned())
            .or_insert_with(|| {
                Arc::new(std::sync::Mutex::new(DesiredCache::new(ParseOptions {
                    default_org: org.to_owned(),
                })))
            })
            .clone()
    }
}

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
    pub webhook_secret: Option<String>,
    pub last_good_commit: Option<String>,
    pub last_seen_commit: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
}

impl SourceRow {
    pub fn owner(&self) -> String {
        format!("git:{}", self.name)
    }

    fn drift(&self) -> DriftMode {
        if self.drift_mode == "heal" {
            DriftMode::Heal
        } else {
            DriftMode::Report
        }
    }

    pub fn into_api(self) -> Source {
        Source {
            drift: self.drift(),
            webhook_secret_set: self.webhook_secret.is_some(),
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
        }
    }
}

const SOURCE_COLUMNS: &str =
    "name, org, url, branch, path, interval_seconds, prune, drift_mode, adopt, \
     webhook_secret, last_good_commit, last_seen_commit, last_sync_at";

pub async fn create(state: &AppState, caller: &Caller, req: CreateSource) -> Result<Source> {
    let mut errs = domain::ValidationErrors::default();
    if let Err(e) = domain::name::check_dns1123_label(&req.name) {
        errs.push("name", e.to_string());
    }
    if req.url.trim().is_empty() {
        errs.push("url", "a git URL or path is required");
    }
    if req.branch.trim().is_empty() {
        errs.push("branch", "a branch is required");
    }
    if !(1..=86_400).contains(&req.interval_seconds) {
        errs.push("intervalSeconds", "must be between 1 and 86400");
    }
    errs.into_result().map_err(ApiError::Invalid)?;
    let drift = match req.drift {
        DriftMode::Report => "report",
        DriftMode::Heal => "heal",
    };
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
    .bind(&req.webhook_secret)
    .fetch_one(&state.pool)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict(format!("a source named {:?} already exists", req.name)),
        other => other,
    })?;
    state.gitops.request_sync(&row.name);
    Ok(row.into_api())
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

/// For the webhook, which carries no token: by name only.
pub async fn find_any_org(state: &AppState, name: &str) -> Result<SourceRow> {
    sqlx::query_as::<_, SourceRow>(&format!(
        "select {SOURCE_COLUMNS} from sources where name = $1"
    ))
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
    Ok(rows.into_iter().map(SourceRow::into_api).collect())
}

pub async fn delete(state: &AppState, org: &str, name: &str) -> Result<Source> {
    let row = find(state, org, name).await?;
    sqlx::query("delete from sources where name = $1")
        .bind(name)
        .execute(&state.pool)
        .await?;
    Ok(row.into_api())
}

#[derive(sqlx::FromRow)]
struct SyncRow {
    commit_sha: Option<String>,
    author: Option<String>,
    message: Option<String>,
    commit_time: Option<DateTime<Utc>>,
    outcome: String,
    errors: Json<Vec<String>>,
    results: Json<Vec<SyncResult>>,
    at: DateTime<Utc>,
}

pub async fn history(state: &AppState, name: &str, limit: i64) -> Result<Vec<SyncRecord>> {
    let rows = sqlx::query_as::<_, SyncRow>(
        "select commit_sha, author, message, commit_time, outcome, errors, results, at
         from source_syncs where source = $1 order by id desc limit $2",
    )
    .bind(name)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SyncRecord {
            commit: r.commit_sha,
            author: r.author,
            message: r.message,
            commit_time: r.commit_time,
            outcome: r.outcome,
            errors: r.errors.0,
            results: r.results.0,
            at: r.at,
        })
        .collect())
}

/// Syncs one source now and records what happened.
pub async fn sync(state: &AppState, name: &str) -> Result<SyncRecord> {
    let lock = state.gitops.lock(name);
    let _guard = lock.lock().await;
    let src = find_any_org(state, name).await?;
    let record = sync_locked(state, &src).await?;
    let changed_commit = record.commit.is_some() && record.commit != src.last_seen_commit;
    if record.outcome != "unchanged" || changed_commit || src.last_sync_at.is_none() {
        save_record(state, &src.name, &record).await?;
    }
    let good = matches!(record.outcome.as_str(), "applied" | "unchanged");
    sqlx::query(
        "update sources set last_sync_at = now(),
                last_seen_commit = coalesce($2, last_seen_commit),
                last_good_commit = case when $3 then coalesce($2, last_good_commit) else last_good_commit end
         where name = $1",
    )
    .bind(&src.name)
    .bind(&record.commit)
    .bind(good)
    .execute(&state.pool)
    .await?;
    Ok(record)
}

async fn save_record(state: &AppState, source: &str, r: &SyncRecord) -> Result<()> {
    sqlx::query(
        "insert into source_syncs (source, commit_sha, author, message, commit_time, outcome, errors, results)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(source)
    .bind(&r.commit)
    .bind(&r.author)
    .bind(&r.message)
    .bind(r.commit_time)
    .bind(&r.outcome)
    .bind(Json(&r.errors))
    .bind(Json(&r.results))
    .execute(&state.pool)
    .await?;
    Ok(())
}

fn record(
    outcome: &str,
    commit: Option<&gitops::CommitInfo>,
    errors: Vec<String>,
    results: Vec<SyncResult>,
) -> SyncRecord {
    SyncRecord {
        commit: commit.map(|c| c.sha.clone()),
        author: commit.map(|c| c.author.clone()),
        message: commit.map(|c| c.message.trim().to_owned()),
        commit_time: commit.map(|c| c.time),
        outcome: outcome.to_owned(),
        errors,
        results,
        at: Utc::now(),
    }
}

async fn sync_locked(state: &AppState, src: &SourceRow) -> Result<SyncRecord> {
    // 1. Fetch and compile (blocking git2 work).
    let git_source = GitSource {
        url: src.url.clone(),
        reference: src.branch.clone(),
        path: src.path.clone(),
    };
    // One bare cache per source and repository: a source re-added with
    // another URL never mixes two repositories' refs.
    let url_hash = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(src.url.as_bytes())[..6]);
    let dir = state
        .gitops
        .cache_dir
        .join(format!("{}-{url_hash}", src.name));
    let cache = state.gitops.cache(&src.name, &src.org);
    let fetched = tokio::task::spawn_blocking(move || {
        let git = GitCache::open(&dir)?;
        let commit = git.fetch(&git_source)?;
        let compiled =
            cache
                .lock()
                .expect("poisoned")
                .compile_commit(&git, &commit.sha, &git_source.path)?;
        Ok::<_, gitops::SourceError>((commit, compiled))
    })
    .await
    .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let (commit, compiled) = match fetched {
        Ok(ok) => ok,
        // A failed or empty read never means "nothing is desired".
        Err(e) => return Ok(record("fetch-failed", None, vec![e.to_string()], vec![])),
    };

    // 2. A revision is validated whole: any error applies nothing.
    let desired = match &*compiled {
        Err(errors) => {
            let lines = errors.0.iter().map(ToString::to_string).collect();
            return Ok(record("rejected", Some(&commit), lines, vec![]));
        }
        Ok(desired) => desired,
    };
    let foreign: Vec<String> = desired
        .instances
        .values()
        .filter(|d| d.org != src.org)
        .map(|d| {
            format!(
                "{}:{}: metadata.org: {:?} is not this source's organisation {:?}",
                d.file, d.line, d.org, src.org
            )
        })
        .collect();
    if !foreign.is_empty() {
        return Ok(record("rejected", Some(&commit), foreign, vec![]));
    }

    // 3. Plan against the organisation's instances.
    let owner = src.owner();
    let mut conn = state.pool.acquire().await?;
    let current: Vec<api::Instance> = store::list_instances(&mut conn, &src.org, None)
        .await?
        .into_iter()
        .map(store::InstanceRow::into_api)
        .collect();
    drop(conn);
    let options = PlanOptions {
        prune: src.prune,
        adopt: src.adopt,
        ..PlanOptions::default()
    };
    let plan = match gitops::plan(desired, &current, &owner, &options) {
        Ok(p) => p,
        Err(e) => {
            return Ok(record(
                "refused",
                Some(&commit),
                vec![e.to_string()],
                vec![],
            ))
        }
    };

    // 4. Apply, one instance at a time; a failure of one does not stop the others.
    let caller = Caller {
        source: Some(SourceActor {
            owner: owner.clone(),
            actor: format!("{owner}@{}", &commit.sha[..commit.sha.len().min(7)]),
        }),
        ..Caller::token(&src.org, Uuid::nil(), false)
    };
    let mut results = Vec::new();
    for entry in &plan.entries {
        let result = apply_entry(state, &caller, &owner, entry).await;
        if let Some(r) = result {
            results.push(r);
        }
    }
    if src.drift() == DriftMode::Heal {
        results.extend(heal(state, &caller, &owner).await?);
    }
    let acted = results
        .iter()
        .any(|r| r.action != "orphan" && r.action != "conflict" && r.action != "delete-deferred");
    let outcome = if acted { "applied" } else { "unchanged" };
    Ok(record(outcome, Some(&commit), vec![], results))
}

async fn apply_entry(
    state: &AppState,
    caller: &Caller,
    owner: &str,
    entry: &gitops::PlanEntry,
) -> Option<SyncResult> {
    let name = entry.name.clone();
    let result =
        |action: &str, detail: Option<String>, restart: bool, outcome: Result<()>| SyncResult {
            name: name.clone(),
            action: action.to_owned(),
            detail,
            restart,
            error: outcome.err().map(|e| e.to_string()),
        };
    match &entry.action {
        Action::Unchanged => None,
        Action::Create { spec } => {
            let req = CreateInstance {
                name: entry.name.clone(),
                spec: spec.clone(),
                data_plane: None,
                owner: Some(owner.to_owned()),
            };
            let outcome = commands::create(state, caller, req).await.map(|_| ());
            Some(result("create", None, false, outcome))
        }
        Action::Update {
            spec,
            changes,
            restart,
            adopt_from,
        } => {
            let detail = changes
                .iter()
                .map(|c| format!("{}: {} → {}", c.path, c.from.as_deref().unwrap_or("unset"), c.to.as_deref().unwrap_or("unset")))
                .collect::<Vec<_>>()
                .join(", ");
            let mut outcome = Ok(());
            if adopt_from.is_some() {
                outcome = adopt(state, &caller.org, &entry.name, owner).await;
            }
            if outcome.is_ok() {
                let cmd = Command::Update {
                    spec: spec.clone(),
                    expected_generation: None,
                };
                outcome = commands::execute(state, caller, &entry.name, cmd).await.map(|_| ());
            }
            let mut detail = detail;
            if let Some(from) = adopt_from {
                detail = format!("adopted from {from}; {detail}");
            }
            if !restart.is_empty() {
                detail = format!("{detail}; restart: {}", restart.join("; "));
            }
            Some(result("update", Some(detail), !restart.is_empty(), outcome))
        }
        Action::Delete => {
            let outcome = commands::execute(state, caller, &entry.name, Command::Delete).await.map(|_| ());
            Some(result("delete", None, false, outcome))
        }
        Action::DeleteDeferred => Some(result(
            "delete-deferred",
            Some("over the deletions allowed per sync; deleted by a later sync".into()),
            false,
            Ok(()),
        )),
        Action::Orphan => Some(result(
            "orphan",
            Some("no longer declared; left alone (prune is off)".into()),
            false,
            Ok(()),
        )),
        Action::Conflict { owner: current, source } => Some(result(
            "conflict",
            Some(format!("declared by {source} but managed by {current}; left alone (add the source with --adopt to take it over)")),
            false,
            Ok(()),
        )),
    }
}

async fn adopt(state: &AppState, org: &str, name: &str, owner: &str) -> Result<()> {
    sqlx::query(
        "update instances set owner = $3 where org = $1 and name = $2 and state <> 'Deleted'",
    )
    .bind(org)
    .bind(name)
    .bind(owner)
    .execute(&state.pool)
    .await?;
    Ok(())
}

/// Re-sends the desired spec of this source's drifted instances.
async fn heal(state: &AppState, caller: &Caller, owner: &str) -> Result<Vec<SyncResult>> {
    let mut conn = state.pool.acquire().await?;
    let report = crate::drift::report(&mut conn, &caller.org, Utc::now()).await?;
    drop(conn);
    let mut out = Vec::new();
    for item in report.items {
        if item.owner != owner
            || item.status != DriftStatus::Drifted
            || item.state != domain::State::Up
        {
            continue;
        }
        let restart: Vec<String> = item
            .fields
            .iter()
            .filter(|f| {
                f.path == "pendingRestart"
                    || f.path
                        .strip_prefix("config.")
                        .is_some_and(domain::settings::needs_restart)
            })
            .map(|f| format!("{} drifted and only takes effect after a restart", f.path))
            .collect();
        let detail = item
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{}: observed {} → declared {}",
                    f.path,
                    f.observed.as_deref().unwrap_or("unset"),
                    f.declared.as_deref().unwrap_or("unset")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let restarts = !restart.is_empty();
        let outcome = commands::execute(state, caller, &item.name, Command::Heal { restart })
            .await
            .map(|_| ());
        out.push(SyncResult {
            name: item.name,
            action: "heal".into(),
            detail: Some(detail),
            restart: restarts,
            error: outcome.err().map(|e| e.to_string()),
        });
    }
    Ok(out)
}

/// Syncs every source when its interval is due or a webhook asked, until
/// `cancel`.
pub async fn run(state: AppState, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = state.gitops.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let requested: HashSet<String> =
            std::mem::take(&mut *state.gitops.requested.lock().expect("poisoned"));
        let due: Vec<String> = match sqlx::query_scalar(
            "select name from sources
             where last_sync_at is null or last_sync_at + make_interval(secs => interval_seconds) <= now()
                or name = any($1)
             order by name",
        )
        .bind(requested.into_iter().collect::<Vec<_>>())
        .fetch_all(&state.pool)
        .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "listing due sources failed");
                continue;
            }
        };
        for name in due {
            match sync(&state, &name).await {
                Ok(r) if r.outcome != "unchanged" => {
                    tracing::info!(source = %name, outcome = %r.outcome, commit = ?r.commit, "source synced")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(source = %name, error = %e, "sync failed"),
            }
        }
    }
}

/// Checks a push webhook's `X-Hub-Signature-256` (`sha256=<hex>`) against
/// the source's secret.
pub fn verify_signature(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    use hmac::{Hmac, Mac};
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}
