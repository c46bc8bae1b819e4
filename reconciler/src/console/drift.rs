//! The organisation's drift overview: [`crate::drift::report`] (the report
//! `GET /api/v1/drift` answers) as counts per status and owner, and every
//! drifted instance with the fields that differ.

use std::collections::BTreeMap;

use api::{DriftReport, DriftStatus};
use axum::extract::State as AxumState;
use chrono::Utc;
use maud::{html, Markup};

use super::layout::{self, badge};
use super::session::Session;
use super::Result;
use crate::error::ApiError;
use crate::AppState;

/// Instances per drift status, and per owner how many there are and how
/// many drifted.
pub struct Summary {
    pub in_sync: usize,
    pub drifted: usize,
    pub converging: usize,
    pub unobserved: usize,
    pub by_owner: BTreeMap<String, (usize, usize)>,
}

impl Summary {
    pub fn of(report: &DriftReport) -> Summary {
        let mut s = Summary {
            in_sync: 0,
            drifted: 0,
            converging: 0,
            unobserved: 0,
            by_owner: BTreeMap::new(),
        };
        for item in &report.items {
            match item.status {
                DriftStatus::InSync => s.in_sync += 1,
                DriftStatus::Drifted => s.drifted += 1,
                DriftStatus::Converging => s.converging += 1,
                DriftStatus::Unobserved => s.unobserved += 1,
            }
            let owner = s.by_owner.entry(item.owner.clone()).or_default();
            owner.0 += 1;
            if item.status == DriftStatus::Drifted {
                owner.1 += 1;
            }
        }
        s
    }
}

pub async fn page(AxumState(state): AxumState<AppState>, session: Session) -> Result<Markup> {
    let mut conn = state.pool.acquire().await.map_err(ApiError::from)?;
    let now = Utc::now();
    let report = crate::drift::report(&mut conn, &session.caller.org, now).await?;
    let summary = Summary::of(&report);
    let drifted: Vec<_> = report
        .items
        .iter()
        .filter(|i| i.status == DriftStatus::Drifted)
        .collect();
    Ok(layout::page(
        &session,
        "Drift",
        html! {
            h1 { "Drift" }
            p.help {
                "Each live instance's declared spec against what its data plane last observed. "
                "Instances still applying a change are not judged until they report on it."
            }
            dl.facts #drift-summary {
                dt { "Drifted" } dd #count-drifted { (summary.drifted) }
                dt { "In sync" } dd #count-in-sync { (summary.in_sync) }
                dt { "Converging" } dd #count-converging { (summary.converging) }
                dt { "Not observed yet" } dd #count-unobserved { (summary.unobserved) }
            }
            section aria-labelledby="h-drifted" {
                h2 #h-drifted { "Drifted instances" }
                @if drifted.is_empty() {
                    p #no-drift { "No instance has drifted." }
                } @else {
                    table.instances #drifted {
                        thead {
                            tr {
                                th scope="col" { "Instance" }
                                th scope="col" { "Owner" }
                                th scope="col" { "State" }
                                th scope="col" { "Field" }
                                th scope="col" { "Declared" }
                                th scope="col" { "Observed" }
                                th scope="col" { "Observed at" }
                            }
                        }
                        tbody {
                            @for i in &drifted {
                                @for (n, f) in i.fields.iter().enumerate() {
                                    tr data-name=(i.name) {
                                        @if n == 0 {
                                            td rowspan=(i.fields.len()) { a href={ "/instances/" (i.id) } { (i.name) } }
                                            td rowspan=(i.fields.len()) { (owner_link(&i.owner)) }
                                            td rowspan=(i.fields.len()) { (badge(i.state)) }
                                        }
                                        td { code { (f.path) } }
                                        td { (f.declared.as_deref().unwrap_or("unset")) }
                                        td { (f.observed.as_deref().unwrap_or("unset")) }
                                        @if n == 0 {
                                            td rowspan=(i.fields.len()) {
                                                @match i.observation_age_seconds {
                                                    Some(s) => { (layout::age(now - chrono::Duration::seconds(s), now)) " ago" },
                                                    None => (layout::none()),
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="h-owners" {
                h2 #h-owners { "By owner" }
                @if summary.by_owner.is_empty() {
                    p.muted { "No live instances." }
                } @else {
                    table #owners {
                        thead { tr { th scope="col" { "Owner" } th scope="col" { "Instances" } th scope="col" { "Drifted" } } }
                        tbody {
                            @for (owner, (total, drifted)) in &summary.by_owner {
                                tr data-owner=(owner) {
                                    td { (owner_link(owner)) }
                                    td { (total) }
                                    td { (drifted) }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// A source's owner name links to the source's page.
fn owner_link(owner: &str) -> Markup {
    html! {
        @match owner.strip_prefix("git:") {
            Some(source) => a href={ "/sources/" (source) } { (owner) },
            None => (owner),
        }
    }
}
