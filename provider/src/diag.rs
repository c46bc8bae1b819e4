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
    Index(i64),
}

pub fn path(steps: &[Step]) -> pb::AttributePath {
    pb::AttributePath {
        steps: steps
            .iter()
            .map(|s| pb::attribute_path::Step {
                selector: Some(match s {
                    Step::Attr(a) => Selector::AttributeName(a.clone()),
                    Step::Key(k) => Selector::ElementKeyString(k.clone()),
                    Step::Index(i) => Selector::ElementKeyInt(*i),
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

/// An attribute path as the user wrote it: `cpu`, `config.max_connections`,
/// `timeouts.create`.
pub fn display(path: &pb::AttributePath) -> String {
    path.steps
        .iter()
        .filter_map(|s| match &s.selector {
            Some(Selector::AttributeName(a)) => Some(a.clone()),
            Some(Selector::ElementKeyString(k)) => Some(k.clone()),
            Some(Selector::ElementKeyInt(i)) => Some(i.to_string()),
            None => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// `diags` with each attribute's name in its summary: Terraform shows the
/// line of the configuration, which for a map or a block does not always
/// say which key or attribute is meant.
pub fn named(diags: Diagnostics) -> Diagnostics {
    diags
        .into_iter()
        .map(|mut d| {
            let name = d.attribute.as_ref().map(display).unwrap_or_default();
            if !name.is_empty() && !d.summary.contains(&name) {
                d.summary = format!("{}: {name}", d.summary);
            }
            d
        })
        .collect()
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
    } else if let Some(steps) = block_field_steps(field) {
        steps
    } else {
        let attr = match field {
            "postgresVersion" => "postgres_version",
            "resources.cpu" => "cpu",
            "resources.memory" => "memory",
            "storage" => "storage",
            "replicas" => "replicas",
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

/// `roles[1].memberOf[0]` → `role[1].member_of`, `databases[0].owner` →
/// `database[0].owner` (the blocks' attributes, in snake case).
fn block_field_steps(field: &str) -> Option<Vec<Step>> {
    let (block, rest) = [("roles[", "role"), ("databases[", "database")]
        .iter()
        .find_map(|(prefix, block)| Some((*block, field.strip_prefix(prefix)?)))?;
    let (index, rest) = rest.split_once(']')?;
    let mut steps = vec![Step::Attr(block.into()), Step::Index(index.parse().ok()?)];
    if let Some(attr) = rest.strip_prefix('.') {
        let attr = attr.split(['[', '.']).next().unwrap_or(attr);
        let snake: String = attr
            .chars()
            .flat_map(|c| match c.is_ascii_uppercase() {
                true => vec!['_', c.to_ascii_lowercase()],
                false => vec![c],
            })
            .collect();
        steps.push(Step::Attr(snake));
    }
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_fields_become_block_paths() {
        assert_eq!(
            spec_field_path("spec.roles[1].memberOf[0]"),
            path(&[
                Step::Attr("role".into()),
                Step::Index(1),
                Step::Attr("member_of".into())
            ])
        );
        assert_eq!(
            display(&spec_field_path("spec.databases[0].owner")),
            "database.0.owner"
        );
    }

    #[test]
    fn summaries_name_the_attribute() {
        let d = named(vec![
            error_at(
                path(&[
                    Step::Attr("config".into()),
                    Step::Key("max_connections".into()),
                ]),
                "Invalid instance spec",
                "expected an integer",
            ),
            error_at(attr_path("cpu"), "Invalid cpu", ""),
        ]);
        assert_eq!(
            d[0].summary,
            "Invalid instance spec: config.max_connections"
        );
        assert_eq!(d[1].summary, "Invalid cpu");
    }

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
