//! The edit form of an instance: configuration, extensions and resources.
//!
//! Editing is two steps. "Review" checks the form as the API checks an
//! update and shows what changes and whether Postgres restarts for it
//! ([`domain::predict_restart`]); "Save" sends it through
//! [`crate::commands::execute`] with [`Command::Update`], as `PUT
//! /api/v1/instances/{name}` does. The form carries the generation it was
//! rendered at as the expected generation, so a change made meanwhile is a
//! conflict to look at rather than something silently overwritten. Every
//! other part of the spec (version, replicas, backups, where it was restored
//! from, stopped or not) is kept as it is.

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use domain::state::Change;
use domain::{
    diff_specs, predict_restart, validate_spec, Event, FieldChange, InstanceSpec, Resources,
    RestartPrediction, State,
};
use maud::{html, Markup};
use serde::Deserialize;

use super::create::{config_lines, parse_config, parse_extensions, Field, FieldErrors};
use super::instance::{managed_elsewhere, overridable};
use super::layout::{self, csrf_field};
use super::session::{Protected, Session};
use super::Result;
use crate::commands::{self, Command};
use crate::error::ApiError;
use crate::store::{self, InstanceRow};
use crate::AppState;

/// What the edit form posts; every field is text as typed.
#[derive(Debug, Clone, Deserialize)]
pub struct EditForm {
    /// The generation the form was rendered at.
    pub generation: i64,
    #[serde(default)]
    pub cpu: String,
    #[serde(default)]
    pub memory: String,
    #[serde(default)]
    pub storage: String,
    #[serde(default)]
    pub extensions: String,
    #[serde(default)]
    pub config: String,
    /// `review` (the default), `edit` (back to the form) or `save`.
    #[serde(default)]
    pub step: String,
    /// Change an instance another client owns (Terraform's).
    #[serde(default)]
    pub override_owner: bool,
}

#[derive(Deserialize)]
pub struct EditQuery {
    #[serde(default)]
    override_owner: bool,
}

impl EditForm {
    /// The form filled in with what `row` declares.
    pub fn of(row: &InstanceRow) -> EditForm {
        let spec = &row.spec.0;
        EditForm {
            generation: row.generation,
            cpu: spec.resources.cpu.clone(),
            memory: spec.resources.memory.clone(),
            storage: spec.storage.clone(),
            extensions: spec.extension_names().collect::<Vec<_>>().join(", "),
            config: config_lines(&spec.config),
            step: String::new(),
            override_owner: false,
        }
    }
}

/// The spec the form asks for: `current` with the form's fields in place of
/// its own, and what in the text is malformed.
pub fn proposed_spec(current: &InstanceSpec, form: &EditForm) -> (InstanceSpec, FieldErrors) {
    let mut errors = FieldErrors::default();
    let config = parse_config(&form.config, &mut errors);
    let spec = InstanceSpec {
        resources: Resources {
            cpu: form.cpu.trim().to_owned(),
            memory: form.memory.trim().to_owned(),
        },
        storage: form.storage.trim().to_owned(),
        extensions: parse_extensions(&form.extensions),
        config,
        ..current.clone()
    };
    (spec, errors)
}

/// What saving the form would do.
struct Review {
    changes: Vec<FieldChange>,
    restart: RestartPrediction,
}

async fn read(state: &AppState, session: &Session, name: &str) -> Result<InstanceRow> {
    let mut conn = state.pool.acquire().await.map_err(ApiError::from)?;
    Ok(store::find_instance(&mut conn, &session.caller.org, name, false).await?)
}

pub async fn page(
    AxumState(state): AxumState<AppState>,
    session: Session,
    Path(name): Path<String>,
    Query(q): Query<EditQuery>,
) -> Result<Response> {
    let row = read(&state, &session, &name).await?;
    let form = EditForm {
        override_owner: q.override_owner,
        ..EditForm::of(&row)
    };
    Ok(render(&session, &row, &form, &FieldErrors::default(), None).into_response())
}

pub async fn submit(
    AxumState(state): AxumState<AppState>,
    Path(name): Path<String>,
    signed: Protected<EditForm>,
) -> Result<Response> {
    let Protected { session, form } = signed;
    let row = read(&state, &session, &name).await?;
    let refused = |status: StatusCode, errors: FieldErrors| {
        Ok((status, render(&session, &row, &form, &errors, None)).into_response())
    };
    let form_error = |message: String| {
        let mut errors = FieldErrors::default();
        errors.push(Field::Form, message);
        errors
    };
    if let Some(note) = not_editable(&row, form.override_owner) {
        return refused(StatusCode::CONFLICT, form_error(note));
    }
    let (spec, mut errors) = proposed_spec(&row.spec.0, &form);
    if let Err(errs) = validate_spec(&spec, "spec") {
        errors.merge(FieldErrors::from_validation(&errs));
    }
    if !errors.is_empty() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    if form.generation != row.generation {
        return refused(
            StatusCode::CONFLICT,
            form_error(stale(&row, form.generation)),
        );
    }
    match form.step.as_str() {
        "edit" => refused(StatusCode::OK, FieldErrors::default()),
        "save" => save(&state, &session, &row, &form, spec).await,
        _ => {
            let review = review(&row, &spec);
            let status = match &review {
                Ok(_) => StatusCode::OK,
                Err(_) => StatusCode::CONFLICT,
            };
            let body = match review {
                Ok(review) => render(&session, &row, &form, &errors, Some(&review)),
                Err(reason) => render(&session, &row, &form, &form_error(reason), None),
            };
            Ok((status, body).into_response())
        }
    }
}

/// Why `row` cannot be edited here, if it cannot (`override_owner`: the
/// user chose to change another client's instance anyway).
fn not_editable(row: &InstanceRow, override_owner: bool) -> Option<String> {
    if let Some(note) = managed_elsewhere(row) {
        if !(override_owner && overridable(row)) {
            return Some(format!("Not changed here. {note}"));
        }
    }
    (row.state() == State::Deleted).then(|| format!("Instance {:?} is deleted.", row.name))
}

fn stale(row: &InstanceRow, rendered_at: i64) -> String {
    format!(
        "Instance {:?} changed since this form was opened (generation {rendered_at}, now {}): \
         open the edit form again to start from what it declares now.",
        row.name, row.generation
    )
}

/// The changes and the restart prediction, or the state machine's reason
/// why the update would be refused.
fn review(row: &InstanceRow, spec: &InstanceSpec) -> std::result::Result<Review, String> {
    let old = &row.spec.0;
    let new = spec.clone().normalized();
    let restart = predict_restart(old, &new);
    domain::transition(
        row.state(),
        Event::Update,
        Change {
            restart_required: restart.required(),
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(Review {
        changes: diff_specs(old, &new),
        restart,
    })
}

async fn save(
    state: &AppState,
    session: &Session,
    row: &InstanceRow,
    form: &EditForm,
    spec: InstanceSpec,
) -> Result<Response> {
    let command = Command::Update {
        spec: Box::new(spec),
        expected_generation: Some(form.generation),
        owner: None,
    };
    let refused = |status: StatusCode, errors: FieldErrors| {
        Ok((status, render(session, row, form, &errors, None)).into_response())
    };
    let caller = crate::auth::Caller {
        override_owner: form.override_owner,
        ..session.caller.clone()
    };
    // By id: the form edits one instance even if the name is reused.
    match commands::execute(state, &caller, &row.id.to_string(), command).await {
        Ok(updated) => Ok(Redirect::to(&format!("/instances/{}", updated.id)).into_response()),
        Err(ApiError::Invalid(errs)) => refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            FieldErrors::from_validation(&errs),
        ),
        Err(
            e @ (ApiError::Transition(_)
            | ApiError::Conflict(_)
            | ApiError::OwnedElsewhere { .. }
            | ApiError::Deleted { .. }),
        ) => {
            let mut errors = FieldErrors::default();
            errors.push(Field::Form, e.to_string());
            refused(StatusCode::CONFLICT, errors)
        }
        Err(e) => Err(e.into()),
    }
}

fn render(
    session: &Session,
    row: &InstanceRow,
    form: &EditForm,
    errors: &FieldErrors,
    review: Option<&Review>,
) -> Markup {
    let title = format!("Edit {}", row.name);
    let back = format!("/instances/{}", row.id);
    let action = format!("/instances/{}/edit", row.id);
    let hidden = |name: &str, value: &str| html! { input type="hidden" name=(name) value=(value); };
    layout::page(
        session,
        &title,
        html! {
            h1 { "Edit " a href=(back) { (row.name) } " " (layout::badge(row.state())) }
            @if let Some(note) = not_editable(row, form.override_owner) {
                p.note #read-only { (note) }
            } @else if let Some(review) = review {
                section.card #review aria-labelledby="h-review" {
                    h2 #h-review { "Review the change" }
                    @if review.changes.is_empty() {
                        p #no-change { "Nothing changes: the form says what the instance already declares." }
                    } @else {
                        table #changes {
                            caption { "Changes" }
                            thead { tr { th scope="col" { "Field" } th scope="col" { "Now" } th scope="col" { "After saving" } } }
                            tbody {
                                @for c in &review.changes {
                                    tr {
                                        td { code { (c.path) } }
                                        td { (c.from.as_deref().unwrap_or("unset")) }
                                        td { (c.to.as_deref().unwrap_or("unset")) }
                                    }
                                }
                            }
                        }
                        @if review.restart.required() {
                            div.error role="alert" #restart-prediction {
                                p { strong { "This change restarts Postgres: " } (review.restart.reasons.join("; ")) }
                            }
                        } @else {
                            p.note #restart-prediction { "Applied without a restart: the new settings are reloaded." }
                        }
                    }
                    form method="post" action=(action) {
                        (csrf_field(session))
                        (hidden("generation", &form.generation.to_string()))
                        (hidden("cpu", &form.cpu))
                        (hidden("memory", &form.memory))
                        (hidden("storage", &form.storage))
                        (hidden("extensions", &form.extensions))
                        (hidden("config", &form.config))
                        @if form.override_owner {
                            (hidden("override_owner", "true"))
                        }
                        div.buttons {
                            @if !review.changes.is_empty() {
                                button type="submit" name="step" value="save" #edit-save { "Save changes" }
                            }
                            button.secondary type="submit" name="step" value="edit" #edit-back { "Back to the form" }
                        }
                    }
                }
            } @else {
                (edit_form(session, row, form, errors, &action))
            }
        },
    )
}

fn edit_form(
    session: &Session,
    row: &InstanceRow,
    form: &EditForm,
    errors: &FieldErrors,
    action: &str,
) -> Markup {
    let spec = &row.spec.0;
    html! {
        form.card #edit method="post" action=(action) novalidate {
            (csrf_field(session))
            input type="hidden" name="generation" value=(form.generation);
            @if form.override_owner {
                input type="hidden" name="override_owner" value="true";
            }
            @if !errors.is_empty() {
                p.error role="alert" #form-errors { "Not saved; see the fields marked below." }
            }
            (errors.list(Field::Form))
            p.help {
                "PostgreSQL " (spec.postgres_version) ", generation " (form.generation)
                ". The version, replicas and backup settings are kept as they are."
            }
            (errors.text_input(Field::Cpu, "CPU", &form.cpu, Some("Cores, e.g. 1, 0.5 or 500m.")))
            (errors.text_input(Field::Memory, "Memory", &form.memory, Some("e.g. 512Mi, 1Gi.")))
            (errors.text_input(Field::Storage, "Storage", &form.storage, Some("e.g. 10Gi.")))
            (errors.text_input(Field::Extensions, "Extensions", &form.extensions,
                Some("Comma-separated, e.g. hstore, pg_trgm.")))
            (errors.config_input(&form.config))
            div.buttons {
                button type="submit" name="step" value="review" #edit-review { "Review changes" }
                a.button.secondary href={ "/instances/" (row.id) } { "Cancel" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proposed_spec_keeps_what_the_form_does_not_show() {
        let current: InstanceSpec = serde_json::from_value(serde_json::json!({
            "postgresVersion": "16",
            "replicas": 2,
            "superuserAccess": true,
            "stopped": true,
            "backup": {"schedule": "0 3 * * *"},
            "restore": {"from": "orders-old"},
            "config": {"work_mem": "4MB"},
        }))
        .unwrap();
        let form = EditForm {
            generation: 3,
            cpu: " 2 ".into(),
            memory: "2Gi".into(),
            storage: "20Gi".into(),
            extensions: "hstore, pg_trgm".into(),
            config: "work_mem=8MB\nshared_preload_libraries=pg_stat_statements".into(),
            step: "review".into(),
            override_owner: false,
        };
        let (spec, errors) = proposed_spec(&current, &form);
        assert!(errors.is_empty());
        assert_eq!(spec.resources.cpu, "2");
        assert_eq!(spec.config["work_mem"], "8MB");
        assert_eq!(spec.postgres_version, "16");
        assert_eq!(spec.replicas, 2);
        assert!(spec.superuser_access && spec.stopped);
        assert_eq!(spec.backup, current.backup);
        assert_eq!(spec.restore, current.restore);
        let restart = predict_restart(&current, &spec.clone().normalized());
        assert!(
            restart
                .reasons
                .iter()
                .any(|r| r.starts_with("shared_preload_libraries")),
            "{restart:?}"
        );
    }

    #[test]
    fn the_form_round_trips_the_current_spec() {
        let mut spec = InstanceSpec::default();
        spec.config.insert("work_mem".into(), "16MB".into());
        spec.config.insert("search_path".into(), "a, b".into());
        spec.extensions = parse_extensions("hstore");
        let form = EditForm {
            generation: 1,
            cpu: spec.resources.cpu.clone(),
            memory: spec.resources.memory.clone(),
            storage: spec.storage.clone(),
            extensions: "hstore".into(),
            config: config_lines(&spec.config),
            step: String::new(),
            override_owner: false,
        };
        let (again, errors) = proposed_spec(&spec, &form);
        assert!(errors.is_empty());
        assert!(diff_specs(&spec, &again).is_empty(), "{again:?}");
    }
}
