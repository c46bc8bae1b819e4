//! The create form. Its fields become an [`api::CreateInstance`] and go
//! through [`crate::commands::create`], exactly as `POST /api/v1/instances`
//! does; each error the API reports by field path is shown next to the input
//! that holds it, and the user's input is kept.

use std::collections::BTreeMap;

use api::CreateInstance;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use domain::{validate_spec, Extension, InstanceName, InstanceSpec, Resources, ValidationErrors};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout;
use super::session::{Protected, Session};
use super::Result;
use crate::error::ApiError;
use crate::AppState;

/// What the form posts; every field is text as typed.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_version")]
    pub postgres_version: String,
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Comma-separated extension names.
    #[serde(default)]
    pub extensions: String,
    /// `key=value` lines; blank lines and `#` comments are skipped.
    #[serde(default)]
    pub config: String,
}

fn default_version() -> String {
    domain::spec::DEFAULT_POSTGRES_VERSION.to_owned()
}
fn default_cpu() -> String {
    domain::spec::DEFAULT_CPU.to_owned()
}
fn default_memory() -> String {
    domain::spec::DEFAULT_MEMORY.to_owned()
}
fn default_storage() -> String {
    domain::spec::DEFAULT_STORAGE.to_owned()
}

impl Default for CreateForm {
    fn default() -> Self {
        CreateForm {
            name: String::new(),
            postgres_version: default_version(),
            cpu: default_cpu(),
            memory: default_memory(),
            storage: default_storage(),
            extensions: String::new(),
            config: String::new(),
        }
    }
}

/// The inputs of the form, by `name`/`id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Name,
    PostgresVersion,
    Cpu,
    Memory,
    Storage,
    Extensions,
    Config,
    /// Errors that belong to no input (quota, data plane, …).
    Form,
}

impl Field {
    pub fn id(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::PostgresVersion => "postgres_version",
            Field::Cpu => "cpu",
            Field::Memory => "memory",
            Field::Storage => "storage",
            Field::Extensions => "extensions",
            Field::Config => "config",
            Field::Form => "form",
        }
    }

    /// The input an API field path belongs to: `name`, `spec.postgresVersion`,
    /// `spec.resources.memory`, `spec.extensions[2].name`,
    /// `spec.config.work_mem`, …
    pub fn for_path(path: &str) -> Field {
        match path {
            "name" => Field::Name,
            "spec.postgresVersion" => Field::PostgresVersion,
            "spec.resources.cpu" => Field::Cpu,
            "spec.resources.memory" => Field::Memory,
            "spec.storage" => Field::Storage,
            p if p == "spec.extensions" || p.starts_with("spec.extensions[") => Field::Extensions,
            p if p == "spec.config" || p.starts_with("spec.config.") => Field::Config,
            _ => Field::Form,
        }
    }
}

/// Error messages per input.
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<Field, Vec<String>>);

impl FieldErrors {
    pub fn push(&mut self, field: Field, message: String) {
        self.0.entry(field).or_default().push(message);
    }

    /// Places the API's errors: a config parameter's message names it.
    pub fn from_validation(errs: &ValidationErrors) -> FieldErrors {
        let mut out = FieldErrors::default();
        for e in &errs.0 {
            let field = Field::for_path(&e.path);
            let message = match e.path.strip_prefix("spec.config.") {
                Some(param) => format!("{param}: {}", e.message),
                None if field == Field::Form => format!("{}: {}", e.path, e.message),
                None => e.message.clone(),
            };
            out.push(field, message);
        }
        out
    }

    pub fn get(&self, field: Field) -> &[String] {
        self.0.get(&field).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn merge(&mut self, other: FieldErrors) {
        for (field, messages) in other.0 {
            self.0.entry(field).or_default().extend(messages);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The messages shown under `field`'s input.
    pub fn list(&self, field: Field) -> Markup {
        let messages = self.get(field);
        html! {
            @if !messages.is_empty() {
                ul.field-error id={ "err-" (field.id()) } {
                    @for m in messages { li { (m) } }
                }
            }
        }
    }

    /// The input's `aria-describedby`: its help and its errors.
    pub fn describedby(&self, field: Field, help: bool) -> Option<String> {
        let mut ids = Vec::new();
        if help {
            ids.push(format!("help-{}", field.id()));
        }
        if !self.get(field).is_empty() {
            ids.push(format!("err-{}", field.id()));
        }
        (!ids.is_empty()).then(|| ids.join(" "))
    }

    pub fn invalid(&self, field: Field) -> Option<&'static str> {
        (!self.get(field).is_empty()).then_some("true")
    }

    /// A labelled text input with its help and errors.
    pub fn text_input(&self, field: Field, label: &str, value: &str, help: Option<&str>) -> Markup {
        html! {
            div.field {
                label for=(field.id()) { (label) }
                input id=(field.id()) name=(field.id()) type="text" value=(value)
                    aria-invalid=[self.invalid(field)] aria-describedby=[self.describedby(field, help.is_some())];
                @if let Some(h) = help { p.help id={ "help-" (field.id()) } { (h) } }
                (self.list(field))
            }
        }
    }

    /// The configuration textarea.
    pub fn config_input(&self, value: &str) -> Markup {
        html! {
            div.field {
                label for="config" { "Configuration" }
                textarea #config name="config" rows="6" spellcheck="false"
                    aria-invalid=[self.invalid(Field::Config)]
                    aria-describedby=[self.describedby(Field::Config, true)] { (value) }
                p.help #help-config { "One postgresql.conf parameter per line: key=value, e.g. work_mem=16MB." }
                (self.list(Field::Config))
            }
        }
    }
}

/// The form's text as a request, and what in it is not even well-formed
/// (a config line without `=`, a parameter given twice).
pub fn to_request(form: &CreateForm) -> (CreateInstance, FieldErrors) {
    let mut errors = FieldErrors::default();
    let config = parse_config(&form.config, &mut errors);
    let spec = InstanceSpec {
        postgres_version: form.postgres_version.trim().to_owned(),
        resources: Resources {
            cpu: form.cpu.trim().to_owned(),
            memory: form.memory.trim().to_owned(),
        },
        storage: form.storage.trim().to_owned(),
        extensions: parse_extensions(&form.extensions),
        config,
        ..InstanceSpec::default()
    };
    let request = CreateInstance {
        name: form.name.trim().to_owned(),
        spec,
        data_plane: None,
        owner: None,
    };
    (request, errors)
}

/// `key=value` lines as parameters; blank lines and `#` comments are
/// skipped, and a malformed or repeated line is an error at [`Field::Config`].
pub fn parse_config(text: &str, errors: &mut FieldErrors) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                let key = key.trim().to_owned();
                if config.contains_key(&key) {
                    errors.push(
                        Field::Config,
                        format!(
                            "line {}: parameter {key:?} is set twice; set it once",
                            i + 1
                        ),
                    );
                }
                config.insert(key, unquote(value.trim()).to_owned());
            }
            _ => errors.push(
                Field::Config,
                format!("line {}: {line:?} is not key=value", i + 1),
            ),
        }
    }
    config
}

/// Comma-separated extensions, each `name` or `name=version`.
pub fn parse_extensions(text: &str) -> Vec<Extension> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(Extension::parse)
        .collect()
}

/// Parameters as the form's `key=value` lines.
pub fn config_lines(config: &BTreeMap<String, String>) -> String {
    config.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// `'text'` as postgresql.conf writes it, or the text as it is.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value)
}

pub async fn form_page(session: Session) -> Markup {
    render(&session, &CreateForm::default(), &FieldErrors::default())
}

pub async fn submit(
    AxumState(state): AxumState<AppState>,
    signed: Protected<CreateForm>,
) -> Result<Response> {
    let Protected { session, form } = signed;
    let (request, mut errors) = to_request(&form);
    if !errors.is_empty() {
        // Not sent while the text is malformed; the rest is checked the
        // way the create command checks it, so every error shows at once.
        let mut errs = ValidationErrors::default();
        if let Err(e) = InstanceName::parse(&request.name) {
            errs.push("name", e.to_string());
        }
        if let Err(e) = validate_spec(&request.spec, "spec") {
            errs.0.extend(e.0);
        }
        for (field, messages) in FieldErrors::from_validation(&errs).0 {
            for m in messages {
                errors.push(field, m);
            }
        }
        return Ok(refused(&session, &form, errors));
    }
    match crate::commands::create(&state, &session.caller, request).await {
        Ok(created) => {
            Ok(Redirect::to(&format!("/instances?created={}", created.name)).into_response())
        }
        Err(ApiError::Invalid(errs)) => Ok(refused(
            &session,
            &form,
            FieldErrors::from_validation(&errs),
        )),
        Err(e @ ApiError::Conflict(_)) => {
            let mut errors = FieldErrors::default();
            errors.push(Field::Name, e.to_string());
            Ok((StatusCode::CONFLICT, render(&session, &form, &errors)).into_response())
        }
        Err(e @ ApiError::QuotaExceeded { .. }) => {
            let mut errors = FieldErrors::default();
            errors.push(Field::Form, e.to_string());
            Ok((StatusCode::FORBIDDEN, render(&session, &form, &errors)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

fn refused(session: &Session, form: &CreateForm, errors: FieldErrors) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        render(session, form, &errors),
    )
        .into_response()
}

fn render(session: &Session, form: &CreateForm, errors: &FieldErrors) -> Markup {
    let field_errors = |field: Field| errors.list(field);
    let describedby = |field: Field, help: bool| errors.describedby(field, help);
    let invalid = |field: Field| errors.invalid(field);
    let text_input = |field: Field, label: &str, value: &str, help: Option<&str>| {
        errors.text_input(field, label, value, help)
    };
    layout::page(
        session,
        "New instance",
        html! {
            h1 { "New instance" }
            form.card #create method="post" action="/instances" novalidate {
                (layout::csrf_field(session))
                @if !errors.is_empty() {
                    p.error role="alert" #form-errors { "The instance was not created; see the fields marked below." }
                }
                (field_errors(Field::Form))
                (text_input(Field::Name, "Name", &form.name,
                    Some("Lower-case letters, digits and '-', starting with a letter; unique in the organisation.")))
                div.field {
                    label for="postgres_version" { "PostgreSQL version" }
                    select #postgres_version name="postgres_version"
                        aria-invalid=[invalid(Field::PostgresVersion)]
                        aria-describedby=[describedby(Field::PostgresVersion, false)] {
                        @for v in domain::validate::SUPPORTED_VERSIONS {
                            option value=(v) selected[form.postgres_version == *v] { (v) }
                        }
                        @if !domain::validate::SUPPORTED_VERSIONS.contains(&form.postgres_version.as_str()) {
                            option value=(form.postgres_version) selected { (form.postgres_version) }
                        }
                    }
                    (field_errors(Field::PostgresVersion))
                }
                (text_input(Field::Cpu, "CPU", &form.cpu, Some("Cores, e.g. 1, 0.5 or 500m.")))
                (text_input(Field::Memory, "Memory", &form.memory, Some("e.g. 512Mi, 1Gi.")))
                (text_input(Field::Storage, "Storage", &form.storage, Some("e.g. 10Gi.")))
                (text_input(Field::Extensions, "Extensions", &form.extensions,
                    Some("Comma-separated, e.g. hstore, pg_trgm.")))
                (errors.config_input(&form.config))
                button type="submit" #create-submit { "Create instance" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_map_to_inputs() {
        assert_eq!(Field::for_path("name"), Field::Name);
        assert_eq!(Field::for_path("spec.config.work_mem"), Field::Config);
        assert_eq!(
            Field::for_path("spec.extensions[3].name"),
            Field::Extensions
        );
        assert_eq!(Field::for_path("spec.resources.memory"), Field::Memory);
        assert_eq!(Field::for_path("spec.storage"), Field::Storage);
        assert_eq!(
            Field::for_path("spec.postgresVersion"),
            Field::PostgresVersion
        );
        assert_eq!(Field::for_path("dataPlane"), Field::Form);
        assert_eq!(Field::for_path("spec.configuration"), Field::Form);
    }

    #[test]
    fn config_lines_become_parameters_and_malformed_lines_are_errors() {
        let form = CreateForm {
            name: " orders ".into(),
            extensions: "hstore, ,pg_trgm".into(),
            config: "work_mem = 16MB\n\n# a comment\nbad line\nwork_mem=1MB\n".into(),
            ..CreateForm::default()
        };
        let (req, errors) = to_request(&form);
        assert_eq!(req.name, "orders");
        assert_eq!(
            req.spec.extension_names().collect::<Vec<_>>(),
            ["hstore", "pg_trgm"]
        );
        assert_eq!(req.spec.config["work_mem"], "1MB");
        let config = errors.get(Field::Config);
        assert_eq!(config.len(), 2, "{config:?}");
        assert!(config[0].contains("line 4"), "{config:?}");
        assert!(config[1].contains("set twice"), "{config:?}");
    }

    #[test]
    fn the_api_errors_are_placed_by_path() {
        let mut errs = ValidationErrors::default();
        errs.push("spec.config.work_mem", "invalid value \"lots\"");
        errs.push("spec.replicas", "must be between 1 and 5");
        let placed = FieldErrors::from_validation(&errs);
        assert_eq!(
            placed.get(Field::Config),
            ["work_mem: invalid value \"lots\""]
        );
        assert_eq!(
            placed.get(Field::Form),
            ["spec.replicas: must be between 1 and 5"]
        );
    }
}
