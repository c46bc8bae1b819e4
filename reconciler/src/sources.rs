//! GitOps sources: registration, syncs (fetch → compile → plan → apply),
//! the sync loop and drift healing. The plan step is
//! [`gitops::plan_sync`], which `pgplane plan` runs too.
//!
//! The rules: a revision is validated whole before anything is applied and
//! an invalid one applies nothing (the last good revision stays in force); a
//! failed fetch or a vanished path changes nothing; a prune never deletes
//! everything at once and is capped per sync; an instance has one owner;
//! unchanged manifests enqueue nothing; compiled revisions are cached by
//! commit and blob.
//!
//! Organisations are tenants: a source is named within its organisation
//! (tables, caches, locks, owners and webhook URLs all carry the pair), its
//! URL is checked against the operator's [`SourcePolicy`] when it is added
//! and again before every fetch, and fetch failures reach the tenant as one
//! generic message (the detail goes to the server's log).

mod registry;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{
    CreateInstance, DriftMode, DriftStatus, SyncAction, SyncOutcome, SyncRecord, SyncResult,
};
use chrono::{DateTime, Utc};
use gitops::{
    Action, Compiled, DesiredCache, GitCache, GitSource, LocationError, ParseOptions, PlanOptions,
    SourceError, SourcePolicy, SyncRejection, SyncSource,
};
use sqlx::types::Json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{Caller, SourceActor};
use crate::commands::{self, Command};
use crate::error::{ApiError, Result};
use crate::{store, AppState};
use registry::log_refused;
pub use registry::{create, delete, describe, find, list, SourceRow};

/// What a tenant reads when a fetch fails for a reason other than the
/// repository's contents: whether the remote refused the connection, timed
/// out or answered something else is for the server's log only.
pub const FETCH_FAILED: &str = "could not fetch the repository";

/// A source: its organisation and its name in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub org: String,
    pub name: String,
}

impl SourceKey {
    pub fn new(org: &str, name: &str) -> SourceKey {
        SourceKey {
            org: org.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Per-process GitOps state: where repositories are cached and what the
/// operator allows sources to point at, compiled revisions, one lock per
/// source, and sync requests (new sources, webhooks).
pub struct GitOps {
    cache_dir: PathBuf,
    policy: SourcePolicy,
    compiled: std::sync::Mutex<HashMap<SourceKey, Arc<std::sync::Mutex<DesiredCache>>>>,
    locks: std::sync::Mutex<HashMap<SourceKey, Arc<tokio::sync::Mutex<()>>>>,
    requests: std::sync::Mutex<webhook::SyncRequests>,
    wake: tokio::sync::Notify,
}

impl GitOps {
    pub fn new(cache_dir: PathBuf, policy: SourcePolicy) -> GitOps {
        GitOps {
            cache_dir,
            policy,
            compiled: Default::default(),
            locks: Default::default(),
            requests: Default::default(),
            wake: Default::default(),
        }
    }

    pub fn policy(&self) -> SourcePolicy {
        self.policy
    }

    /// The directory holding one source's caches (one per repository URL).
    pub fn source_dir(&self, key: &SourceKey) -> PathBuf {
        // Organisation and source names are DNS labels: safe path components.
        self.cache_dir.join(&key.org).join(&key.name)
    }

    /// The bare cache of one source's repository: one per source and URL,
    /// so a source re-added with another URL never mixes two repositories'
    /// refs.
    pub fn repo_dir(&self, key: &SourceKey, url: &str) -> PathBuf {
        let url_hash = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(url.as_bytes())[..6]);
        self.source_dir(key).join(url_hash)
    }

    /// Asks the sync loop to sync `key` now (a new source).
    fn request_sync(&self, key: &SourceKey) {
        self.requests
            .lock()
            .expect("poisoned")
            .request_now(key, Instant::now());
        self.wake.notify_one();
    }

    /// A signed push webhook for `key`: asks for a sync, at most one per
    /// [`webhook::PUSH_MIN_GAP`]; returns when it will run.
    pub fn push(&self, key: &SourceKey, now: Instant) -> Instant {
        let at = self.requests.lock().expect("poisoned").push(key, now);
        self.wake.notify_one();
        at
    }

    /// Sources whose requested sync is due at `now`.
    pub fn take_due(&self, now: Instant) -> Vec<SourceKey> {
        self.requests.lock().expect("poisoned").take_due(now)
    }

    fn lock(&self, key: &SourceKey) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("poisoned")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    fn cache(&self, key: &SourceKey) -> Arc<std::sync::Mutex<DesiredCache>> {
        self.compiled
            .lock()
            .expect("poisoned")
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(std::sync::Mutex::new(DesiredCache::new(ParseOptions {
                    default_org: key.org.clone(),
                })))
            })
            .clone()
    }

    /// Drops what this process keeps about a deleted source. `held` is the
    /// source's lock, held by the caller: it is dropped too unless someone
    /// else is waiting for it.
    fn forget(&self, key: &SourceKey, held: &Arc<tokio::sync::Mutex<()>>) {
        self.compiled.lock().expect("poisoned").remove(key);
        self.requests.lock().expect("poisoned").forget(key);
        let mut locks = self.locks.lock().expect("poisoned");
        // One reference in the map, one held by the caller.
        if locks
            .get(key)
            .is_some_and(|l| Arc::ptr_eq(l, held) && Arc::strong_count(l) <= 2)
        {
            locks.remove(key);
        }
    }
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

pub async fn history(
    state: &AppState,
    org: &str,
    name: &str,
    limit: i64,
) -> Result<Vec<SyncRecord>> {
    let rows = sqlx::query_as::<_, SyncRow>(
        "select commit_sha, author, message, commit_time, outcome, errors, results, at
         from source_syncs where org = $1 and source = $2 order by id desc limit $3",
    )
    .bind(org)
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
            outcome: SyncOutcome::from(r.outcome.as_str()),
            errors: r.errors.0,
            results: r.results.0,
            at: r.at,
        })
        .collect())
}

/// Syncs one source now and records what happened.
pub async fn sync(state: &AppState, org: &str, name: &str) -> Result<SyncRecord> {
    let lock = state.gitops.lock(&SourceKey::new(org, name));
    let _guard = lock.lock().await;
    let src = find(state, org, name).await?;
    let record = sync_locked(state, &src).await?;
    let changed_commit = record.commit.is_some() && record.commit != src.last_seen_commit;
    if record.outcome != SyncOutcome::Unchanged || changed_commit || src.last_sync_at.is_none() {
        save_record(state, &src, &record).await?;
    }
    let good = record.outcome.is_good();
    sqlx::query(
        "update sources set last_sync_at = now(),
                last_seen_commit = coalesce($3, last_seen_commit),
                last_good_commit = case when $4 then coalesce($3, last_good_commit) else last_good_commit end
         where org = $1 and name = $2",
    )
    .bind(&src.org)
    .bind(&src.name)
    .bind(&record.commit)
    .bind(good)
    .execute(&state.pool)
    .await?;
    Ok(record)
}

async fn save_record(state: &AppState, src: &SourceRow, r: &SyncRecord) -> Result<()> {
    sqlx::query(
        "insert into source_syncs (org, source, commit_sha, author, message, commit_time, outcome, errors, results)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&src.org)
    .bind(&src.name)
    .bind(&r.commit)
    .bind(&r.author)
    .bind(&r.message)
    .bind(r.commit_time)
    .bind(r.outcome.as_str())
    .bind(Json(&r.errors))
    .bind(Json(&r.results))
    .execute(&state.pool)
    .await?;
    Ok(())
}

fn record(
    outcome: SyncOutcome,
    commit: Option<&gitops::CommitInfo>,
    errors: Vec<String>,
    results: Vec<SyncResult>,
) -> SyncRecord {
    SyncRecord {
        commit: commit.map(|c| c.sha.clone()),
        author: commit.map(|c| c.author.clone()),
        message: commit.map(|c| c.message.trim().to_owned()),
        commit_time: commit.map(|c| c.time),
        outcome,
        errors,
        results,
        at: Utc::now(),
    }
}

/// Why a fetch produced no revision.
pub(crate) enum FetchFailure {
    /// The URL no longer passes the operator's policy.
    Refused(LocationError),
    Source(SourceError),
    CacheRoot(std::io::Error),
}

impl FetchFailure {
    /// What the tenant reads about source `name` of `org`; everything
    /// else goes to the log.
    pub(crate) fn tenant_message(&self, org: &str, name: &str) -> String {
        match self {
            FetchFailure::Refused(e) => {
                log_refused(org, name, e);
                e.to_string()
            }
            FetchFailure::Source(e) if e.is_about_contents() => e.to_string(),
            FetchFailure::Source(e) => {
                tracing::warn!(%org, source = %name, error = %e, "fetch failed");
                FETCH_FAILED.to_owned()
            }
            FetchFailure::CacheRoot(e) => {
                tracing::error!(%org, source = %name, error = %e, "preparing the git cache directory failed");
                FETCH_FAILED.to_owned()
            }
        }
    }
}

/// Fetches `source`'s ref into the bare cache `dir` (under the cache
/// root `root`), checking the URL against `policy` again right before
/// connecting: the host's addresses may have changed since the source was
/// added. Blocking (git2).
pub(crate) fn fetch_blocking(
    root: &std::path::Path,
    dir: &std::path::Path,
    policy: SourcePolicy,
    source: &GitSource,
) -> std::result::Result<(GitCache, gitops::CommitInfo), FetchFailure> {
    gitops::create_private_dir(root).map_err(FetchFailure::CacheRoot)?;
    policy.check(&source.url).map_err(FetchFailure::Refused)?;
    let git = GitCache::open(dir)
        .map_err(FetchFailure::Source)?
        .lending_credentials(policy.allow_server_credentials);
    let commit = git.fetch(source).map_err(FetchFailure::Source)?;
    Ok((git, commit))
}

/// Fetches `src`'s ref and compiles the commit (blocking git2 work, on
/// the blocking pool).
async fn fetch_compiled(
    state: &AppState,
    src: &SourceRow,
) -> Result<std::result::Result<(gitops::CommitInfo, Compiled), FetchFailure>> {
    let git_source = GitSource {
        url: src.url.clone(),
        reference: src.branch.clone(),
        path: src.path.clone(),
    };
    let root = state.gitops.cache_dir.clone();
    let dir = state.gitops.repo_dir(&src.key(), &src.url);
    let cache = state.gitops.cache(&src.key());
    let policy = state.gitops.policy();
    tokio::task::spawn_blocking(move || {
        let (git, commit) = fetch_blocking(&root, &dir, policy, &git_source)?;
        let compiled = cache
            .lock()
            .expect("poisoned")
            .compile_commit(&git, &commit.sha, &git_source.path)
            .map_err(FetchFailure::Source)?;
        Ok::<_, FetchFailure>((commit, compiled))
    })
    .await
    .map_err(|e| ApiError::Internal(Box::new(e)))
}

/// The source a sync of `src` runs as: its organisation, owner and options.
fn sync_source(src: &SourceRow) -> SyncSource {
    SyncSource {
        org: src.org.clone(),
        owner: src.owner(),
        options: PlanOptions {
            prune: src.prune,
            adopt: src.adopt,
            ..PlanOptions::default()
        },
    }
}

async fn org_instances(state: &AppState, org: &str) -> Result<Vec<api::Instance>> {
    let mut conn = state.pool.acquire().await?;
    Ok(store::list_instances(&mut conn, org, None)
        .await?
        .into_iter()
        .map(store::InstanceRow::into_api)
        .collect())
}

async fn sync_locked(state: &AppState, src: &SourceRow) -> Result<SyncRecord> {
    // 1. Fetch and compile.
    let (commit, compiled) = match fetch_compiled(state, src).await? {
        Ok(ok) => ok,
        // A failed or empty read never means "nothing is desired".
        Err(e) => {
            let message = e.tenant_message(&src.org, &src.name);
            return Ok(record(
                SyncOutcome::FetchFailed,
                None,
                vec![message],
                vec![],
            ));
        }
    };

    // 2. A revision is validated whole: any error applies nothing.
    let desired = match &*compiled {
        Err(errors) => {
            let lines = errors.0.iter().map(ToString::to_string).collect();
            return Ok(record(SyncOutcome::Rejected, Some(&commit), lines, vec![]));
        }
        Ok(desired) => desired,
    };

    // 3. Plan against the organisation's instances, as `pgplane plan` does:
    // a revision naming another organisation, or a refused plan, applies
    // nothing.
    let source = sync_source(src);
    let current = org_instances(state, &src.org).await?;
    let plan = match gitops::plan_sync(desired, &current, &source) {
        Ok(p) => p,
        Err(rejection) => {
            let outcome = match rejection {
                SyncRejection::ForeignOrg(_) => SyncOutcome::Rejected,
                SyncRejection::Refused(_) => SyncOutcome::Refused,
            };
            let lines = rejection.messages();
            return Ok(record(outcome, Some(&commit), lines, vec![]));
        }
    };

    // 4. Apply, one instance at a time; a failure of one does not stop the others.
    let owner = source.owner;
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
    let acted = results.iter().any(|r| r.action.acted());
    let outcome = if acted {
        SyncOutcome::Applied
    } else {
        SyncOutcome::Unchanged
    };
    Ok(record(outcome, Some(&commit), vec![], results))
}

async fn apply_entry(
    state: &AppState,
    caller: &Caller,
    owner: &str,
    entry: &gitops::PlanEntry,
) -> Option<SyncResult> {
    let name = entry.name.clone();
    let result = |action: SyncAction,
                  detail: Option<String>,
                  restart: bool,
                  outcome: Result<()>| SyncResult {
        name: name.clone(),
        action,
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
                // The owner comes from the caller: this source.
                owner: None,
            };
            let outcome = commands::create(state, caller, req).await.map(|_| ());
            Some(result(SyncAction::Create, None, false, outcome))
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
                outcome = commands::adopt(state, caller, &entry.name, owner).await;
            }
            let run_state = changes.iter().any(|c| c.path == "stopped");
            let run_command = if spec.stopped { Command::Stop } else { Command::Start };
            let mut detail = detail;
            if outcome.is_ok() && run_state && changes.len() == 1 {
                outcome = commands::execute(state, caller, &entry.name, run_command).await.map(|_| ());
            } else if outcome.is_ok() {
                let cmd = Command::Update {
                    spec: Box::new(spec.clone()),
                    expected_generation: None,
                    owner: None,
                };
                outcome = commands::execute(state, caller, &entry.name, cmd).await.map(|_| ());
                if run_state {
                    let then = if spec.stopped { "the stop" } else { "the start" };
                    detail = format!("{detail}; {then} follows in the next sync, once this update is done");
                }
            }
            if let Some(from) = adopt_from {
                detail = format!("adopted from {from}; {detail}");
            }
            if !restart.is_empty() {
                detail = format!("{detail}; restart: {}", restart.join("; "));
            }
            Some(result(SyncAction::Update, Some(detail), !restart.is_empty(), outcome))
        }
        Action::Delete => {
            let outcome = commands::execute(state, caller, &entry.name, Command::Delete).await.map(|_| ());
            Some(result(SyncAction::Delete, None, false, outcome))
        }
        Action::DeleteDeferred => Some(result(
            SyncAction::DeleteDeferred,
            Some("over the deletions allowed per sync; deleted by a later sync".into()),
            false,
            Ok(()),
        )),
        Action::Orphan => Some(result(
            SyncAction::Orphan,
            Some("no longer declared; left alone (prune is off)".into()),
            false,
            Ok(()),
        )),
        Action::Conflict { owner: current, source } => Some(result(
            SyncAction::Conflict,
            Some(format!("declared by {source} but managed by {current}; left alone (add the source with --adopt to take it over)")),
            false,
            Ok(()),
        )),
    }
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
        let (restart, detail) = crate::drift::heal_plan(&item);
        let restarts = !restart.is_empty();
        let outcome = commands::execute(state, caller, &item.name, Command::Heal { restart })
            .await
            .map(|_| ());
        out.push(SyncResult {
            name: item.name,
            action: SyncAction::Heal,
            detail: Some(detail),
            restart: restarts,
            error: outcome.err().map(|e| e.to_string()),
        });
    }
    Ok(out)
}

/// Syncs every source when its interval is due or a sync was requested (a
/// new source, a webhook), until `cancel`.
pub async fn run(state: AppState, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = state.gitops.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let (orgs, names): (Vec<String>, Vec<String>) = state
            .gitops
            .take_due(Instant::now())
            .into_iter()
            .map(|k| (k.org, k.name))
            .unzip();
        let due: Vec<(String, String)> = match sqlx::query_as(
            "select org, name from sources
             where last_sync_at is null or last_sync_at + make_interval(secs => interval_seconds) <= now()
                or (org, name) in (select * from unnest($1::text[], $2::text[]))
             order by org, name",
        )
        .bind(orgs)
        .bind(names)
        .fetch_all(&state.pool)
        .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "listing due sources failed");
                continue;
            }
        };
        for (org, name) in due {
            match sync(&state, &org, &name).await {
                Ok(r) if r.outcome != SyncOutcome::Unchanged => {
                    tracing::info!(%org, source = %name, outcome = %r.outcome, commit = ?r.commit, "source synced")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%org, source = %name, error = %e, "sync failed"),
            }
        }
    }
}
