//! Applying manifest files as they are (what `kubectl apply -f` does), by
//! server-side apply.

use std::path::Path;

use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

/// The objects of a multi-document YAML file.
pub fn parse_file(path: &Path) -> Vec<DynamicObject> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if value.is_null() {
            continue;
        }
        objects.push(
            serde_yaml::from_value(value)
                .unwrap_or_else(|e| panic!("{}: not a Kubernetes object: {e}", path.display())),
        );
    }
    objects
}

/// Applies the objects of the YAML file at `path` for which `keep` is true,
/// in order; returns what the API server stored.
pub async fn apply_file(
    client: &Client,
    path: &Path,
    keep: impl Fn(&DynamicObject) -> bool,
) -> Vec<DynamicObject> {
    let mut applied = Vec::new();
    for object in parse_file(path).into_iter().filter(|o| keep(o)) {
        let types = object.types.clone().unwrap_or_else(|| {
            panic!(
                "{}: {} has no apiVersion/kind",
                path.display(),
                object.name_any()
            )
        });
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{}: discovering {gvk:?}: {e}", path.display()));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.namespace().as_deref().unwrap_or("default"),
                &resource,
            ),
        };
        let name = object.name_any();
        let stored = api
            .patch(
                &name,
                &PatchParams::apply("kubetest").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: applying {} {name}: {e}", path.display(), types.kind));
        applied.push(stored);
    }
    applied
}
