//! One instance: desired and observed spec, drift, connection, history and
//! timeline, and the actions (restart, stop, start, delete) through
//! [`crate::commands::execute`], as the API runs them.

use api::{DriftStatus, HistoryEntry, InstanceDrift};
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use domain::{InstanceSpec, ObservedSpec, State};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, badge, csrf_field, timestamp};
use super::session::{Protected, Session};
use super::{activity, timeline, Result};
use crate::commands::{self, Command};
use crate::error::ApiError;
use crate::store::{self, InstanceRow};
use crate::AppState;

/// Everything the page shows, read in one go.
struct View {
    row: InstanceRow,
    history: Vec<HistoryEntry>,
    activity: Vec<api::ActivitySample>,
    drift: InstanceDrift,
    now: DateTime<Utc>,
}

async fn read(state: &AppState, session: &Session, name: &str) -> Result<View> {
    let mut conn = state.pool.acquire().await.map_err(ApiError::from)?;
    let row = store::find_instance(&mut conn, &session.caller.org, name, false).await?;
    let history = store::history(&mut conn, row.id).await?;
    let activity = store::activity(&mut conn, row.id).await?;
    let now: DateTime<Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&mut *conn)
        .await
        .map_err(ApiError::from)?;
    let drift = crate::drift::instance_drift(row.clone(), now);
    Ok(View {
        row,
        history,
        activity,
        drift,
        now,
    })
}

/// What the page adds for one response: a refusal, or a revealed password.
#[derive(Default)]
struct Extra {
    refusal: Option<String>,
    credentials: Option<api::Credentials>,
}

pub async fn page(
    AxumState(state): AxumState<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Markup> {
    let view = read(&state, &session, &name).await?;
    Ok(render(&session, &view, Extra::default()))
}

#[derive(Deserialize)]
pub struct ActionForm {
    /// The name typed to confirm a delete.
    #[serde(default)]
    confirm: String,
    /// Change an instance another client owns ("Change it here anyway").
    #[serde(default)]
    override_owner: bool,
}

/// Whether the console may change `row` when told to override its owner:
/// another client's instance (Terraform's), never a source's.
pub(super) fn overridable(row: &InstanceRow) -> bool {
    row.owner != "api" && api::CLIENT_OWNERS.contains(&row.owner.as_str())
}

/// Who may change an instance here: only instances owned by `api`; the
/// others are changed where they are declared.
pub(super) fn managed_elsewhere(row: &InstanceRow) -> Option<String> {
    match row.owner.as_str() {
        "api" => None,
        "terraform" => Some(
            "This instance is managed by Terraform: change it in its Terraform configuration."
                .to_owned(),
        ),
        owner => match owner.strip_prefix("git:") {
            Some(source) => Some(format!(
                "This instance is managed by the GitOps source {source:?} ({owner}): change its manifest in that repository."
            )),
            None => Some(format!("This instance is managed by {owner}.")),
        },
    }
}

pub async fn act(
    AxumState(state): AxumState<AppState>,
    Path((name, action)): Path<(String, String)>,
    signed: Protected<ActionForm>,
) -> Result<Response> {
    let Protected { session, form } = signed;
    let command = match action.as_str() {
        "restart" => Command::Restart,
        "stop" => Command::Stop,
        "start" => Command::Start,
        "delete" => Command::Delete,
        _ => return Err(ApiError::NotFoundWhat("page", action).into()),
    };
    let view = read(&state, &session, &name).await?;
    let refuse = |message: String| {
        let status = StatusCode::CONFLICT;
        let extra = Extra {
            refusal: Some(message),
            ..Extra::default()
        };
        Ok((status, render(&session, &view, extra)).into_response())
    };
    if let Some(note) = managed_elsewhere(&view.row) {
        if !(form.override_owner && overridable(&view.row)) {
            return refuse(format!("Not changed here. {note}"));
        }
    }
    let caller = crate::auth::Caller {
        override_owner: form.override_owner,
        ..session.caller.clone()
    };
    if matches!(command, Command::Delete) && form.confirm.trim() != view.row.name {
        return refuse(format!(
            "Type the instance's name, {:?}, to confirm the delete.",
            view.row.name
        ));
    }
    // By id: the page names one instance even if the name is reused.
    match commands::execute(&state, &caller, &view.row.id.to_string(), command).await {
        Ok(_) => Ok(Redirect::to(&format!("/instances/{}", view.row.id)).into_response()),
        Err(
            e @ (ApiError::Transition(_)
            | ApiError::Conflict(_)
            | ApiError::OwnedElsewhere { .. }
            | ApiError::Deleted { .. }
            | ApiError::Invalid(_)),
        ) => refuse(e.to_string()),
        Err(e) => Err(e.into()),
    }
}

pub async fn reveal_credentials(
    AxumState(state): AxumState<AppState>,
    Path(name): Path<String>,
    signed: Protected<ActionForm>,
) -> Result<Response> {
    let session = signed.session;
    let view = read(&state, &session, &name).await?;
    let row = &view.row;
    let password = match (row.state(), &row.connection) {
        (State::Deleted, _) | (_, None) => None,
        _ => state
            .queues
            .get_secret(row.id)
            .await
            .map_err(ApiError::from)?
            .map(|stored| state.keyring.open(&stored))
            .transpose()
            .map_err(ApiError::from)?,
    };
    let credentials = match (&row.connection, password) {
        (Some(info), Some(password)) => crate::http::credentials(info.0.clone(), password),
        _ => {
            let extra = Extra {
                refusal: Some(format!(
                    "Instance {:?} has no credentials yet (state {}); wait until it is Up.",
                    row.name,
                    row.state()
                )),
                ..Extra::default()
            };
            return Ok((StatusCode::CONFLICT, render(&session, &view, extra)).into_response());
        }
    };
    tracing::info!(instance_id = %row.id, actor = %session.caller.actor(), "credentials revealed in the console");
    let extra = Extra {
        credentials: Some(credentials),
        ..Extra::default()
    };
    Ok(render(&session, &view, extra).into_response())
}

fn render(session: &Session, view: &View, extra: Extra) -> Markup {
    let row = &view.row;
    let state = row.state();
    let elsewhere = managed_elsewhere(row);
    layout::page(
        session,
        &row.name,
        html! {
            div #instance data-id=(row.id) data-name=(row.name) data-since=(view.now.to_rfc3339()) {
                h1 { (row.name) " " (badge(state)) }
                p #live-note .note hidden { "This instance changed. " a href={ "/instances/" (row.id) } { "Reload for the details" } }
                @if let Some(r) = &extra.refusal {
                    div.error role="alert" #refusal { p { strong { "Refused: " } (r) } }
                }
                dl.facts {
                    dt { "Owner" } dd #owner { (row.owner) }
                    dt { "Generation" } dd { (row.generation) " (observed " (row.observed_generation) ")" }
                    dt { "Data plane" } dd { (row.data_plane) }
                    dt { "Created" } dd { (timestamp(row.created_at)) }
                    dt { "Updated" } dd { (timestamp(row.updated_at)) }
                    @if let Some(e) = &row.error {
                        dt { "Error" } dd.error #error { (e) }
                    }
                    @if !row.restart_reasons.0.is_empty() {
                        dt { "Restart" } dd #restart { "This change restarts Postgres: " (row.restart_reasons.0.join("; ")) }
                    }
                }
                @if let Some(note) = &elsewhere {
                    @if overridable(row) && state != State::Deleted {
                        p.note #managed-elsewhere { (note) }
                        details #override {
                            summary { "Change it here anyway" }
                            p.note { "Its owner's next run may put back what you change here." }
                            (actions(session, row, true))
                        }
                    } @else {
                        p.note #read-only { (note) " It is read-only here." }
                    }
                } @else if state != State::Deleted {
                    (actions(session, row, false))
                }
                section aria-labelledby="h-connection" {
                    h2 #h-connection { "Connection" }
                    (connection(session, row, extra.credentials.as_ref()))
                }
                div.columns {
                    section aria-labelledby="h-desired" {
                        h2 #h-desired { "Desired spec" }
                        (desired(&row.spec.0))
                    }
                    section aria-labelledby="h-observed" {
                        h2 #h-observed { "Observed" }
                        @match &row.observed {
                            Some(o) => (observed(&o.0, row.observed_at)),
                            None => p.muted { "The data plane has not reported yet." },
                        }
                    }
                }
                section aria-labelledby="h-drift" {
                    h2 #h-drift { "Drift" }
                    (drift(&view.drift))
                }
                section aria-labelledby="h-activity" {
                    h2 #h-activity { "Activity" }
                    (activity::render(&view.activity))
                }
                section aria-labelledby="h-timeline" {
                    h2 #h-timeline { "Timeline" }
                    (timeline::render(&view.history, view.now))
                }
                section aria-labelledby="h-history" {
                    h2 #h-history { "History" }
                    (history(&view.history))
                }
            }
        },
    )
}

/// The action buttons; with `override_owner`, each one overrides the
/// instance's owner.
fn actions(session: &Session, row: &InstanceRow, override_owner: bool) -> Markup {
    let overriding = html! {
        @if override_owner {
            input type="hidden" name="override_owner" value="true";
        }
    };
    let action = |name: &str, label: &str| {
        html! {
            form.inline method="post" action={ "/instances/" (row.id) "/" (name) } {
                (csrf_field(session))
                (overriding)
                button type="submit" id={ "action-" (name) } { (label) }
            }
        }
    };
    let edit = if override_owner {
        format!("/instances/{}/edit?override_owner=true", row.id)
    } else {
        format!("/instances/{}/edit", row.id)
    };
    html! {
        section.actions aria-labelledby="h-actions" {
            h2 #h-actions { "Actions" }
            div.buttons {
                a.button.secondary href=(edit) #action-edit { "Edit" }
                (action("restart", "Restart"))
                (action("stop", "Stop"))
                (action("start", "Start"))
            }
            form.delete method="post" action={ "/instances/" (row.id) "/delete" } {
                (csrf_field(session))
                (overriding)
                label for="confirm" { "Type " code { (row.name) } " to delete this instance and its data" }
                input #confirm type="text" name="confirm" autocomplete="off" data-expect=(row.name);
                button.danger type="submit" #action-delete { "Delete" }
            }
        }
    }
}

fn connection(session: &Session, row: &InstanceRow, revealed: Option<&api::Credentials>) -> Markup {
    let Some(info) = &row.connection else {
        return html! { p.muted { "No connection yet: the instance has not been created on its data plane." } };
    };
    let info = &info.0;
    let uri_without_password = format!(
        "postgres://{}@{}:{}/{}",
        info.user, info.host, info.port, info.database
    );
    html! {
        dl.facts #connection {
            dt { "Host" } dd { code { (info.host) } }
            dt { "Port" } dd { code { (info.port) } }
            dt { "Database" } dd { code { (info.database) } }
            dt { "User" } dd { code { (info.user) } }
            @if let Some(c) = revealed {
                dt { "Password" } dd { code #password { (c.password) } }
                dt { "Connection string" } dd {
                    code #uri { (c.uri) }
                    " " button.copy type="button" data-copy="uri" hidden { "Copy" }
                }
            } @else {
                dt { "Connection string" } dd {
                    code #uri { (uri_without_password) }
                    " " button.copy type="button" data-copy="uri" hidden { "Copy" }
                }
            }
        }
        @if revealed.is_none() && row.state() != State::Deleted {
            form.inline method="post" action={ "/instances/" (row.id) "/credentials" } {
                (csrf_field(session))
                button.secondary type="submit" #reveal { "Reveal password" }
            }
        }
    }
}

fn desired(spec: &InstanceSpec) -> Markup {
    let extensions: Vec<&str> = spec.extension_names().collect();
    html! {
        dl.facts #desired {
            dt { "PostgreSQL" } dd { (spec.postgres_version) }
            dt { "CPU" } dd { (spec.resources.cpu) }
            dt { "Memory" } dd { (spec.resources.memory) }
            dt { "Storage" } dd { (spec.storage) }
            dt { "Replicas" } dd { (spec.replicas) }
            dt { "Running" } dd { @if spec.stopped { "no (stopped)" } @else { "yes" } }
            dt { "Superuser access" } dd { @if spec.superuser_access { "yes" } @else { "no" } }
            dt { "Extensions" } dd { @if extensions.is_empty() { (layout::none()) } @else { (extensions.join(", ")) } }
        }
        (config_table("desired-config", spec.config.iter()))
    }
}

fn observed(o: &ObservedSpec, at: Option<DateTime<Utc>>) -> Markup {
    html! {
        dl.facts #observed {
            dt { "PostgreSQL" } dd { (o.postgres_version) }
            dt { "Running" } dd { @if o.running { "yes" } @else { "no" } }
            dt { "Extensions" } dd { @if o.extensions.is_empty() { (layout::none()) } @else { (o.extensions.join(", ")) } }
            @if let Some(s) = o.superuser_access {
                dt { "Superuser access" } dd { @if s { "yes" } @else { "no" } }
            }
            @if !o.pending_restart.is_empty() {
                dt { "Pending restart" } dd { (o.pending_restart.join(", ")) }
            }
            @if let Some(t) = at { dt { "Observed at" } dd { (timestamp(t)) } }
        }
        (config_table("observed-config", o.config.iter()))
    }
}

fn config_table<'a>(id: &str, config: impl Iterator<Item = (&'a String, &'a String)>) -> Markup {
    let config: Vec<_> = config.collect();
    html! {
        @if !config.is_empty() {
            table.config id=(id) {
                caption { "Configuration" }
                thead { tr { th scope="col" { "Parameter" } th scope="col" { "Value" } } }
                tbody {
                    @for (k, v) in config { tr { td { code { (k) } } td { code { (v) } } } }
                }
            }
        }
    }
}

fn drift(d: &InstanceDrift) -> Markup {
    html! {
        @match d.status {
            DriftStatus::InSync => p #drift-status { "In sync: the data plane runs what is declared." },
            DriftStatus::Converging => p #drift-status { "Converging: the data plane has not reported on generation " (d.generation) " yet." },
            DriftStatus::Unobserved => p #drift-status { "Not observed yet." },
            DriftStatus::Drifted => {
                p #drift-status .error { "Drifted: " (d.fields.len()) " field(s) differ from what is declared." }
                table #drift {
                    thead { tr { th scope="col" { "Field" } th scope="col" { "Declared" } th scope="col" { "Observed" } } }
                    tbody {
                        @for f in &d.fields {
                            tr {
                                td { code { (f.path) } }
                                td { (f.declared.as_deref().unwrap_or("unset")) }
                                td { (f.observed.as_deref().unwrap_or("unset")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn history(entries: &[HistoryEntry]) -> Markup {
    html! {
        table.history #history {
            thead {
                tr {
                    th scope="col" { "When" }
                    th scope="col" { "Event" }
                    th scope="col" { "From" }
                    th scope="col" { "To" }
                    th scope="col" { "Generation" }
                    th scope="col" { "By" }
                    th scope="col" { "Detail" }
                }
            }
            tbody {
                @for h in entries.iter().rev() {
                    tr {
                        td { (timestamp(h.at)) }
                        td { (h.event) }
                        td { @match h.from { Some(s) => (s.as_str()), None => (layout::none()) } }
                        td { (h.to.as_str()) }
                        td { (h.generation) }
                        td { (h.actor) }
                        td { @match &h.detail { Some(d) => (d), None => (layout::none()) } }
                    }
                }
            }
        }
    }
}
