//! The data plane's extension catalog at plan time: an extension or a
//! version the data plane does not offer is refused by `terraform plan`
//! instead of first by apply. When the catalog cannot be read (control
//! plane unreachable, data plane not registered yet), nothing is refused
//! here and the control plane judges the change at apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{Client, ExtensionCatalog};
use domain::extension::check_against_catalog;
use domain::{Extension, InstanceSpec};
use tokio::sync::OnceCell;

use crate::diag::{self, Diagnostics, Step};
use crate::tfplugin::tfplugin6 as pb;
use crate::value::Value;

/// How long a plan waits for the catalog before leaving the check to apply.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One catalog per data plane (`None`: the control plane's default), read
/// at most once in the provider process's lifetime, whatever the outcome.
#[derive(Default)]
pub struct Catalogs {
    by_data_plane: Mutex<HashMap<Option<String>, Arc<CatalogCell>>>,
}

type CatalogCell = OnceCell<Option<Arc<ExtensionCatalog>>>;

impl Catalogs {
    /// The data plane's catalog, or `None` when it cannot be read or the
    /// data plane has not registered. Concurrent plans share one read.
    pub async fn get(
        &self,
        client: &Client,
        data_plane: Option<&str>,
    ) -> Option<Arc<ExtensionCatalog>> {
        let cell = self
            .by_data_plane
            .lock()
            .expect("catalog lock")
            .entry(data_plane.map(str::to_owned))
            .or_default()
            .clone();
        cell.get_or_init(|| read(client, data_plane)).await.clone()
    }
}

async fn read(client: &Client, data_plane: Option<&str>) -> Option<Arc<ExtensionCatalog>> {
    let shown = data_plane.unwrap_or("(default)");
    match tokio::time::timeout(READ_TIMEOUT, client.extensions(data_plane)).await {
        Ok(Ok(c)) if c.registered => Some(Arc::new(c)),
        Ok(Ok(c)) => {
            tracing::debug!(data_plane = %c.data_plane, "data plane not registered; extensions are checked at apply");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(data_plane = shown, error = %e, "extension catalog unreadable; extensions are checked at apply");
            None
        }
        Err(_) => {
            tracing::debug!(
                data_plane = shown,
                "extension catalog not read in time; extensions are checked at apply"
            );
            None
        }
    }
}

/// An extension as the configuration writes it, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub at: pb::AttributePath,
    pub text: String,
}

/// The extensions `config` declares that `prior` did not (the instance's
/// and each `database` block's, matched to the prior block by name): only
/// those are judged, so a version the data plane stopped offering does not
/// fail the plans of instances that already run it. Unknown values are
/// left out.
pub fn newly_declared(prior: &Value, config: &Value) -> Vec<Declared> {
    let mut out = Vec::new();
    collect(
        config.get("extensions"),
        prior.get("extensions"),
        &[Step::Attr("extensions".into())],
        &mut out,
    );
    if let Value::List(blocks) = config.get("database") {
        for (i, block) in blocks.iter().enumerate() {
            let prior_block = match (block.get("name").as_str(), prior.get("database")) {
                (Some(name), Value::List(prior_blocks)) => prior_blocks
                    .iter()
                    .find(|b| b.get("name").as_str() == Some(name)),
                _ => None,
            };
            collect(
                block.get("extensions"),
                prior_block.map_or(&Value::Null, |b| b.get("extensions")),
                &[
                    Step::Attr("database".into()),
                    Step::Index(i as i64),
                    Step::Attr("extensions".into()),
                ],
                &mut out,
            );
        }
    }
    out
}

fn collect(declared: &Value, prior: &Value, at: &[Step], out: &mut Vec<Declared>) {
    let Value::List(items) = declared else {
        return;
    };
    let before = match prior {
        Value::List(p) => p.as_slice(),
        _ => &[],
    };
    for item in items {
        let Some(text) = item.as_str() else {
            continue;
        };
        if before.contains(item) {
            continue;
        }
        // A set's element is addressed by its value.
        let mut steps = at.to_vec();
        steps.push(Step::Key(text.to_owned()));
        out.push(Declared {
            at: diag::path(&steps),
            text: text.to_owned(),
        });
    }
}

/// An error at each declared extension the catalog does not offer, or
/// offers at other versions: the text names the extension, the versions
/// there are (or the closest name).
pub fn check(declared: &[Declared], catalog: &ExtensionCatalog) -> Diagnostics {
    let mut diags = Vec::new();
    for d in declared {
        let spec = InstanceSpec {
            extensions: vec![Extension::parse(&d.text)],
            ..InstanceSpec::default()
        };
        let Err(errs) = check_against_catalog(&spec, &catalog.items, &catalog.data_plane, "spec")
        else {
            continue;
        };
        for e in errs.0 {
            diags.push(diag::error_at(
                d.at.clone(),
                format!(
                    "Extension not available on data plane {:?}",
                    catalog.data_plane
                ),
                e.message,
            ));
        }
    }
    diag::named(diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> ExtensionCatalog {
        let entry = |name: &str, versions: &[&str]| domain::AvailableExtension {
            name: name.to_owned(),
            default_version: versions.last().map(|v| v.to_string()).unwrap_or_default(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            comment: String::new(),
            requires: vec![],
            trusted: true,
            package: None,
            preload_library: None,
            preload_order: None,
            restart_required: false,
        };
        ExtensionCatalog {
            data_plane: "local".into(),
            registered: true,
            items: vec![entry("citext", &["1.6"]), entry("hstore", &["1.7", "1.8"])],
        }
    }

    fn strings(items: &[&str]) -> Value {
        Value::List(items.iter().map(|s| Value::string(*s)).collect())
    }

    fn resource(pairs: Vec<(&'static str, Value)>) -> Value {
        crate::schema::instance_resource().conform(Value::object(pairs))
    }

    #[test]
    fn unknown_names_and_versions_are_errors_at_the_extension() {
        let config = resource(vec![
            ("name", Value::string("a")),
            ("extensions", strings(&["hstore=9.9", "citext", "hstor"])),
            (
                "database",
                Value::List(vec![Value::object([
                    ("name", Value::string("app")),
                    ("extensions", strings(&["citext=1.5"])),
                ])]),
            ),
        ]);
        let diags = check(&newly_declared(&Value::Null, &config), &catalog());
        let texts: Vec<_> = diags
            .iter()
            .map(|d| {
                (
                    diag::display(d.attribute.as_ref().unwrap()),
                    d.detail.clone(),
                )
            })
            .collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts
            .iter()
            .any(|(at, detail)| at == "extensions.hstore=9.9"
                && detail.contains("version \"9.9\" of extension \"hstore\"")
                && detail.contains("available: 1.7, 1.8")));
        assert!(texts
            .iter()
            .any(|(at, detail)| at == "extensions.hstor"
                && detail.contains("did you mean \"hstore\"?")));
        assert!(texts
            .iter()
            .any(|(at, detail)| at == "database.0.extensions.citext=1.5"
                && detail.contains("available: 1.6")));
        assert!(diags
            .iter()
            .all(|d| d.summary.contains("data plane \"local\"")));
    }

    #[test]
    fn extensions_already_declared_are_not_judged_again() {
        let db = |exts: &[&str]| {
            Value::List(vec![Value::object([
                ("name", Value::string("app")),
                ("extensions", strings(exts)),
            ])])
        };
        let prior = resource(vec![
            ("name", Value::string("a")),
            ("extensions", strings(&["hstore=1.1"])),
            ("database", db(&["citext=1.0"])),
        ]);
        let config = resource(vec![
            ("name", Value::string("a")),
            ("extensions", strings(&["hstore=1.1", "hstore=1.2"])),
            ("database", db(&["citext=1.0"])),
        ]);
        let declared = newly_declared(&prior, &config);
        assert_eq!(declared.len(), 1, "{declared:?}");
        assert_eq!(declared[0].text, "hstore=1.2");
        let unknown = resource(vec![
            ("name", Value::string("a")),
            ("extensions", Value::Unknown),
        ]);
        assert!(newly_declared(&Value::Null, &unknown).is_empty());
    }
}
