//! Diagnostics: what Terraform shows the user, with the attribute path
//! when a problem belongs to one attribute.

use crate::tfplugin::tfplugin6 as pb;
use pb::attribute_path::step::Selector;
use pb::diagnostic::Severity;

pub type Diagnostics = Vec<pb::Diagnostic>;

/// One step of an attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Attr(String),
    Key(String),
}

pub fn path(steps: &[Step]) -> pb::AttributePath {
    pb::AttributePath {
        steps: steps
            .iter()
            .map(|s| pb::attribute_path::Step {
                selector: Some(match s {
                    Step::Attr(a) => Selector::AttributeName(a.clone()),
                    Step::Key(k) => Selector::ElementKeyString(k.clone()),
                }),
            })
            .collect(),
    }
}

pub fn attr_path(name: &str) -> pb::AttributePath {
    path(&[Step::Attr(name.to_owned())])
}

pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> pb::Diagnostic {
    pb::Diagnostic {
        severity: Severity::Error as i32,
        summary: summary.into(),
        detail: detail.into(),
        attribute: None,
    }
}

pub fn warning(summary: impl Into<String>, detail: impl Into<String>) -> pb::Diagnostic {
    pb::Diagnostic {
        severity: Severity::Warning as i32,
        ..error(summary, detail)
    }
}

pub fn error_at(
    at: pb::AttributePath,
    summary: impl Into<String>,
    detail: impl Into<String>,
) -> pb::Diagnostic {
    pb::Diagnostic {
        attribute: Some(at),
        ..error(summary, detail)
    }
}

pub fn has_errors(diags: &Diagnostics) -> bool {
    diags.iter().any(|d| d.severity == Severity::Error as i32)
}

/// The Terraform attribute path of a spec field path from
/// `domain::validate_spec` or the API's 422 `fields` (`spec.config.work_mem`).
pub fn spec_field_path(field: &str) -> pb::AttributePath {
    let field = field.strip_prefix("spec.").unwrap_or(field);
    let steps: Vec<Step> = if let Some(param) = field.strip_prefix("config.") {
        vec![Step::Attr("config".into()), Step::Key(param.to_owned())]
    } else if field.starts_with("extensions") {
        vec![Step::Attr("extensions".into())]
    } else {
        let attr = match field {
            "postgresVersion" => "postgres_version",
            "resources.cpu" => "cpu",
            "resources.memory" => "memory",
            "storage" => "storage",
            "name" | "metadata.name" => "name",
            "superuserAccess" => "superuser_access",
            "backup.schedule" => "backup_schedule",
            "backup.retention" => "backup_retention",
            "restore.from" | "restore" => "restore_from",
            "restore.at" => "restore_at",
            "restore.lsn" => "restore_lsn",
            _ => return pb::AttributePath { steps: vec![] },
        };
        vec![Step::Attr(attr.into())]
    };
    path(&steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_paths_become_attribute_paths() {
        assert_eq!(
            spec_field_path("spec.config.work_mem"),
            path(&[Step::Attr("config".into()), Step::Key("work_mem".into())])
        );
        assert_eq!(
            spec_field_path("spec.extensions[1].name"),
            attr_path("extensions")
        );
        assert_eq!(spec_field_path("spec.resources.cpu"), attr_path("cpu"));
        assert_eq!(
            spec_field_path("spec.postgresVersion"),
            attr_path("postgres_version")
        );
    }
}
