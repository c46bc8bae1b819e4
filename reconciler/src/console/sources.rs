//! GitOps sources: the list with each source's health, one source with its
//! instances and its sync history per commit, and "sync now", which runs
//! [`crate::sources::sync`] as `POST /api/v1/sources/{name}/sync` does.
//! Every read is scoped to the session's organisation: another
//! organisation's source is "not found", as in the API.

use std::collections::BTreeMap;

use api::{DriftStatus, InstanceDrift, Source, SyncRecord};
use axum::extract::{Path, Query, State as AxumState};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, badge, csrf_field, timestamp};
use super::session::{Protected, Session};
use super::Result;
use crate::error::ApiError;
use crate::AppState;

/// How many syncs the source page shows.
const HISTORY: i64 = 50;

/// A source's health, judged from its newest recorded sync and how long ago
/// it last synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not synced yet.
    Pending,
    Healthy,
    /// The newest revision was not applied (invalid manifests, an unsafe
    /// prune) or some instances failed to apply: what is in force is older.
    Degraded(String),
    /// The repository cannot be fetched.
    Failing(String),
    /// No sync for three intervals.
    Stale,
}

impl Health {
    pub fn of(source: &Source, last: Option<&SyncRecord>, now: DateTime<Utc>) -> Health {
        let Some(synced_at) = source.last_sync_at else {
            return Health::Pending;
        };
        let failed: Vec<&str> = last
            .map(|r| {
                r.results
                    .iter()
                    .filter(|x| x.error.is_some())
                    .map(|x| x.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let in_force = source
            .last_good_commit
            .as_deref()
            .map(|c| format!("commit {} stays in force", short(c)))
            .unwrap_or_else(|| "nothing has been applied yet".to_owned());
        match last.map(|r| &r.outcome) {
            Some(api::SyncOutcome::FetchFailed) => {
                return Health::Failing(format!("the repository cannot be fetched; {in_force}"))
            }
            Some(api::SyncOutcome::Rejected) => {
                return Health::Degraded(format!("the newest revision was rejected; {in_force}"))
            }
            Some(api::SyncOutcome::Refused) => {
                return Health::Degraded(format!(
                    "the newest revision was refused (an unsafe prune); {in_force}"
                ))
            }
            _ if !failed.is_empty() => {
                return Health::Degraded(format!("failed to apply: {}", failed.join(", ")))
            }
            _ => {}
        }
        let interval = chrono::Duration::seconds(i64::from(source.interval_seconds.max(1)));
        if now - synced_at > interval * 3 {
            return Health::Stale;
        }
        Health::Healthy
    }

    fn label(&self) -> &'static str {
        match self {
            Health::Pending => "pending",
            Health::Healthy => "healthy",
            Health::Degraded(_) => "degraded",
            Health::Failing(_) => "failing",
            Health::Stale => "stale",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Health::Degraded(r) | Health::Failing(r) => Some(r),
            Health::Pending => Some("not synced yet"),
            Health::Stale => Some("no sync for three intervals"),
            Health::Healthy => None,
        }
    }

    pub fn render(&self) -> Markup {
        html! {
            span class={ "badge health-" (self.label()) } data-role="health" title=[self.reason()] {
                (self.label())
            }
        }
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

/// The organisation's instances by owner, with their drift.
async fn drift_by_owner(
    state: &AppState,
    org: &str,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, Vec<InstanceDrift>>> {
    let mut conn = state.pool.acquire().await.map_err(ApiError::from)?;
    let report = crate::drift::report(&mut conn, org, now).await?;
    let mut by_owner: BTreeMap<String, Vec<InstanceDrift>> = BTreeMap::new();
    for item in report.items {
        by_owner.entry(item.owner.clone()).or_default().push(item);
    }
    Ok(by_owner)
}

pub async fn list_page(AxumState(state): AxumState<AppState>, session: Session) -> Result<Markup> {
    let org = &session.caller.org;
    let now = Utc::now();
    let sources = crate::sources::list(&state, org).await?;
    let drift = drift_by_owner(&state, org, now).await?;
    let mut rows = Vec::with_capacity(sources.len());
    for source in sources {
        let last = crate::sources::history(&state, org, &source.name, 1)
            .await?
            .into_iter()
            .next();
        rows.push((source, last));
    }
    Ok(layout::page(
        &session,
        "Sources",
        html! {
            h1 { "GitOps sources" }
            @if rows.is_empty() {
                p #no-sources {
                    "No sources yet. Add one with "
                    code { "pgplane source add NAME --git URL --branch main --path instances" }
                    " and its manifests become instances here."
                }
            } @else {
                table.instances #sources {
                    thead {
                        tr {
                            th scope="col" { "Name" }
                            th scope="col" { "Repository" }
                            th scope="col" { "Branch" }
                            th scope="col" { "Path" }
                            th scope="col" { "Last sync" }
                            th scope="col" { "Instances" }
                            th scope="col" { "Health" }
                        }
                    }
                    tbody {
                        @for (source, last) in &rows {
                            @let owned = drift.get(&format!("git:{}", source.name)).map(Vec::as_slice).unwrap_or(&[]);
                            @let drifted = owned.iter().filter(|i| i.status == DriftStatus::Drifted).count();
                            tr data-source=(source.name) {
                                td { a href={ "/sources/" (source.name) } { (source.name) } }
                                td { code { (source.url) } }
                                td { (source.branch) }
                                td { @if source.path.is_empty() { (layout::none()) } @else { code { (source.path) } } }
                                td data-role="last-sync" {
                                    @match last {
                                        Some(r) => {
                                            (outcome(r.outcome.as_str()))
                                            @if let Some(c) = &r.commit { " " code { (short(c)) } }
                                            " " span.muted { (layout::age(r.at, now)) " ago" }
                                        }
                                        None => @match source.last_sync_at {
                                            Some(t) => span.muted { "synced " (layout::age(t, now)) " ago" },
                                            None => span.muted { "never" },
                                        },
                                    }
                                }
                                td {
                                    (owned.len())
                                    @if drifted > 0 { " " span.badge.drifted { (drifted) " drifted" } }
                                }
                                td { (Health::of(source, last.as_ref(), now).render()) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct SourceQuery {
    /// The outcome of the sync this browser just asked for.
    #[serde(default)]
    synced: Option<String>,
}

/// The outcomes a sync records, as the API names them.
const OUTCOMES: [&str; 5] = [
    "applied",
    "unchanged",
    "rejected",
    "fetch-failed",
    "refused",
];

pub async fn page(
    AxumState(state): AxumState<AppState>,
    session: Session,
    Path(name): Path<String>,
    Query(query): Query<SourceQuery>,
) -> Result<Markup> {
    let org = &session.caller.org;
    let now = Utc::now();
    let source = crate::sources::find(&state, org, &name).await?.into_api();
    let syncs = crate::sources::history(&state, org, &name, HISTORY).await?;
    let drift = drift_by_owner(&state, org, now).await?;
    let owned = drift
        .get(&format!("git:{}", source.name))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let health = Health::of(&source, syncs.first(), now);
    let synced = query
        .synced
        .as_deref()
        .and_then(|s| OUTCOMES.iter().find(|o| **o == s));
    Ok(layout::page(
        &session,
        &source.name,
        html! {
            div #source data-name=(source.name) {
            h1 { "Source " (source.name) " " (health.render()) }
            @if let Some(reason) = health.reason() { p.note #health-reason { (reason) } }
            @if let Some(outcome) = synced {
                p.note role="status" #synced { "Synced now: " (outcome) "." }
            }
            dl.facts #source-facts {
                dt { "Repository" } dd { code { (source.url) } }
                dt { "Branch" } dd { (source.branch) }
                dt { "Path" } dd { @if source.path.is_empty() { (layout::none()) } @else { code { (source.path) } } }
                dt { "Interval" } dd { (source.interval_seconds) " s" }
                dt { "Prune" } dd { @if source.prune { "yes: instances no longer declared are deleted" } @else { "no" } }
                dt { "Drift" } dd { @match source.drift { api::DriftMode::Heal => "heal: drifted instances are put back", api::DriftMode::Report => "report" } }
                dt { "In force" } dd { @match &source.last_good_commit { Some(c) => code { (c) }, None => (layout::none()) } }
                dt { "Last seen" } dd { @match &source.last_seen_commit { Some(c) => code { (c) }, None => (layout::none()) } }
                dt { "Last sync" } dd { @match source.last_sync_at { Some(t) => (timestamp(t)), None => "never" } }
                dt { "Webhook" } dd { code { (source.webhook_path) } }
            }
            form.inline method="post" action={ "/sources/" (source.name) "/sync" } {
                (csrf_field(&session))
                button type="submit" #sync-now { "Sync now" }
            }
            section aria-labelledby="h-owned" {
                h2 #h-owned { "Instances" }
                @if owned.is_empty() {
                    p.muted { "This source manages no live instance." }
                } @else {
                    table.instances #owned {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Drift" } } }
                        tbody {
                            @for i in owned {
                                tr data-id=(i.id) data-name=(i.name) {
                                    td { a href={ "/instances/" (i.id) } { (i.name) } }
                                    td { (badge(i.state)) }
                                    td { (drift_cell(i)) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="h-syncs" {
                h2 #h-syncs { "Sync history" }
                @if syncs.is_empty() {
                    p.muted { "No sync recorded yet." }
                } @else {
                    table.history #syncs {
                        thead {
                            tr {
                                th scope="col" { "When" }
                                th scope="col" { "Commit" }
                                th scope="col" { "Author" }
                                th scope="col" { "Message" }
                                th scope="col" { "Outcome" }
                                th scope="col" { "Instances and errors" }
                            }
                        }
                        tbody {
                            @for r in &syncs { (sync_row(r)) }
                        }
                    }
                }
            }
            }
        },
    ))
}

fn outcome(outcome: &str) -> Markup {
    html! { span class={ "badge outcome-" (outcome) } data-role="outcome" { (outcome) } }
}

fn drift_cell(i: &InstanceDrift) -> Markup {
    html! {
        @match i.status {
            DriftStatus::Drifted => span.badge.drifted title=(i.fields.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")) { "drifted" },
            DriftStatus::InSync => span.muted { "in sync" },
            DriftStatus::Converging => span.muted { "converging" },
            DriftStatus::Unobserved => span.muted { "not observed" },
        }
    }
}

fn sync_row(r: &SyncRecord) -> Markup {
    html! {
        tr.sync data-outcome=(r.outcome) {
            td { (timestamp(r.at)) }
            td { @match &r.commit { Some(c) => code title=(c) { (short(c)) }, None => (layout::none()) } }
            td { @match &r.author { Some(a) => (a), None => (layout::none()) } }
            td { @match &r.message { Some(m) => (m), None => (layout::none()) } }
            td { (outcome(r.outcome.as_str())) }
            td {
                @if !r.errors.is_empty() {
                    ul.sync-errors {
                        @for e in &r.errors { li.error { code { (e) } } }
                    }
                }
                @if !r.results.is_empty() {
                    ul.sync-results {
                        @for x in &r.results {
                            li data-instance=(x.name) {
                                strong { (x.name) } ": " (x.action)
                                @if let Some(d) = &x.detail { " — " (d) }
                                @if x.restart { " " span.badge.restart { "restarts" } }
                                @if let Some(e) = &x.error { br; span.error { (e) } }
                            }
                        }
                    }
                }
                @if r.errors.is_empty() && r.results.is_empty() { span.muted { "no change" } }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct SyncForm {}

pub async fn sync_now(
    AxumState(state): AxumState<AppState>,
    Path(name): Path<String>,
    signed: Protected<SyncForm>,
) -> Result<Response> {
    let org = &signed.session.caller.org;
    let record = crate::sources::sync(&state, org, &name).await?;
    tracing::info!(%org, source = %name, outcome = %record.outcome, actor = %signed.session.caller.actor(), "sync requested in the console");
    Ok(Redirect::to(&format!("/sources/{name}?synced={}", record.outcome)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(last_sync: Option<DateTime<Utc>>) -> Source {
        Source {
            name: "prod".into(),
            org: "acme".into(),
            url: "https://example.com/r.git".into(),
            branch: "main".into(),
            path: "instances".into(),
            interval_seconds: 60,
            prune: false,
            drift: api::DriftMode::Report,
            adopt: false,
            webhook_path: String::new(),
            webhook_secret: None,
            last_good_commit: Some("0123456789abcdef".into()),
            last_seen_commit: None,
            last_sync_at: last_sync,
            last_outcome: None,
            last_error: None,
        }
    }

    fn record(outcome: &str, error: Option<&str>) -> SyncRecord {
        SyncRecord {
            commit: Some("fedcba9876543210".into()),
            author: None,
            message: None,
            commit_time: None,
            outcome: outcome.into(),
            errors: vec![],
            results: vec![api::SyncResult {
                name: "orders".into(),
                action: api::SyncAction::Update,
                detail: None,
                restart: false,
                error: error.map(str::to_owned),
            }],
            at: Utc::now(),
        }
    }

    #[test]
    fn health_follows_the_newest_sync_and_its_age() {
        let now = Utc::now();
        let recent = Some(now - chrono::Duration::seconds(30));
        assert_eq!(Health::of(&source(None), None, now), Health::Pending);
        assert_eq!(
            Health::of(&source(recent), Some(&record("applied", None)), now),
            Health::Healthy
        );
        let rejected = Health::of(&source(recent), Some(&record("rejected", None)), now);
        assert_eq!(
            rejected,
            Health::Degraded(
                "the newest revision was rejected; commit 01234567 stays in force".into()
            )
        );
        assert!(matches!(
            Health::of(&source(recent), Some(&record("fetch-failed", None)), now),
            Health::Failing(_)
        ));
        assert_eq!(
            Health::of(&source(recent), Some(&record("applied", Some("boom"))), now),
            Health::Degraded("failed to apply: orders".into())
        );
        let old = Some(now - chrono::Duration::seconds(181));
        assert_eq!(
            Health::of(&source(old), Some(&record("unchanged", None)), now),
            Health::Stale
        );
    }
}
