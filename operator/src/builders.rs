//! The children of a `PostgresInstance`, as pure functions of its spec (and
//! the operator's [`Settings`]). Only fields pgplane owns are set, so a
//! server-side apply of the same spec is a no-op whatever defaults the API
//! server filled in — an operator upgrade does not roll every database.
//!
//! What reaches the pod template is only what needs a restart to change:
//! image, version, resources and a hash of the restart-only parameters
//! (`pgplane.io/restart-hash`). Reload-only parameters and extensions reach
//! the agent through the ConfigMap, which it re-reads and applies with a
//! reload — they never restart the pod.

use std::collections::BTreeMap;

use crd::PostgresInstance;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Settings;

pub const POSTGRES_PORT: u16 = 5432;
/// Pod-template annotation whose change rolls the pod (a rolling restart).
pub const RESTART_HASH_ANNOTATION: &str = "pgplane.io/restart-hash";
/// Key of the password in the instance's Secret.
pub const PASSWORD_KEY: &str = "password";
pub const SUPERUSER: &str = "postgres";
/// The uid and gid of the instance image's `postgres` user (fixed in
/// examples/kubernetes/Dockerfile). As the pod's fsGroup it makes the
/// credentials file (mode 0400, owned by root) and the data volume
/// readable by the agent, which runs as that user.
pub const POSTGRES_UID: i64 = 999;
const SPEC_FILE_DIR: &str = "/etc/pgplane";
/// Where the credentials Secret is mounted (the agent follows the file).
const CREDENTIALS_DIR: &str = "/etc/pgplane-credentials";
/// Where the declared roles' Secret is mounted, one file per role. Mounted
/// whole (no `items`), so a key added later appears in the pod with the
/// kubelet's next refresh of the volume, without a restart.
pub const ROLE_PASSWORDS_DIR: &str = "/etc/pgplane-roles";

pub fn statefulset_name(pi: &PostgresInstance) -> String {
    pi.name_any()
}
pub fn service_name(pi: &PostgresInstance) -> String {
    pi.name_any()
}
pub fn secret_name(pi: &PostgresInstance) -> String {
    format!("{}-credentials", pi.name_any())
}
pub fn configmap_name(pi: &PostgresInstance) -> String {
    format!("{}-config", pi.name_any())
}
pub fn roles_secret_name(pi: &PostgresInstance) -> String {
    crd::roles_secret_name(&pi.name_any())
}

/// Labels on every child and the pod selector.
pub fn labels(pi: &PostgresInstance) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "postgres".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), pi.name_any()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::FIELD_MANAGER.to_owned(),
        ),
    ])
}

fn owner(pi: &PostgresInstance) -> OwnerReference {
    pi.controller_owner_ref(&())
        .expect("a PostgresInstance read from the API has a name and uid")
}

/// The hash of what only a restart applies: the `postmaster`-context
/// parameters of the effective configuration (which includes the
/// `shared_preload_libraries` that extensions need), and the spec's
/// `restartRequest` when it has one (absent, it changes no hash, so
/// instances from before the field existed do not roll).
pub fn restart_hash(pi: &PostgresInstance) -> String {
    let spec = domain::InstanceSpec::from(pi.spec.clone());
    let mut restart_only: BTreeMap<String, String> = domain::restart::effective_config(&spec)
        .into_iter()
        .filter(|(name, _)| domain::settings::needs_restart(name))
        .map(|(name, value)| {
            let value = domain::quantity::normalize_setting(&name, &value);
            (name, value)
        })
        .collect();
    if let Some(request) = &pi.spec.restart_request {
        // Not a parameter name (those have no '/'), so it cannot collide.
        restart_only.insert("pgplane.io/restart-request".to_owned(), request.clone());
    }
    let json = serde_json::to_vec(&restart_only).expect("a map of strings serializes");
    hex::encode(&Sha256::digest(json)[..8])
}

pub fn statefulset(pi: &PostgresInstance, settings: &Settings) -> StatefulSet {
    let labels = labels(pi);
    let spec = &pi.spec;
    let replicas = if spec.stopped { 0 } else { spec.replicas };
    let value = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": statefulset_name(pi),
            "namespace": pi.namespace(),
            "labels": labels,
            "ownerReferences": [owner(pi)],
        },
        "spec": {
            "replicas": replicas,
            "serviceName": service_name(pi),
            "selector": { "matchLabels": labels },
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": { "type": "RollingUpdate" },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": { RESTART_HASH_ANNOTATION: restart_hash(pi) },
                },
                "spec": {
                    "securityContext": {
                        "runAsUser": POSTGRES_UID,
                        "runAsGroup": POSTGRES_UID,
                        "fsGroup": POSTGRES_UID,
                        "runAsNonRoot": true,
                    },
                    "containers": [{
                        "name": "postgres",
                        "image": settings.instance_image,
                        "env": [
                            { "name": "PGPLANE_INSTANCE_NAME", "value": pi.name_any() },
                            { "name": "PGPLANE_POSTGRES_VERSION", "value": spec.postgres_version },
                            { "name": "PGPLANE_SPEC_FILE", "value": format!("{SPEC_FILE_DIR}/spec.json") },
                            { "name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata" },
                            { "name": "PGPLANE_PASSWORD_FILE", "value": format!("{CREDENTIALS_DIR}/{PASSWORD_KEY}") },
                            { "name": "PGPLANE_ROLE_PASSWORDS_DIR", "value": ROLE_PASSWORDS_DIR },
                        ],
                        "ports": [{ "name": "postgres", "containerPort": POSTGRES_PORT }],
                        "resources": {
                            "requests": { "cpu": spec.resources.cpu, "memory": spec.resources.memory },
                            "limits": { "memory": spec.resources.memory },
                        },
                        // Ready once the agent converged the spec and while
                        // Postgres answers: a client never meets a server
                        // whose role or configuration is not in place yet.
                        "readinessProbe": {
                            "httpGet": { "path": "/ready", "port": crate::pod_status::AGENT_STATUS_PORT },
                            "periodSeconds": 2,
                        },
                        "volumeMounts": [
                            { "name": "data", "mountPath": "/var/lib/postgresql/data" },
                            { "name": "spec", "mountPath": SPEC_FILE_DIR, "readOnly": true },
                            { "name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": true },
                            { "name": "role-passwords", "mountPath": ROLE_PASSWORDS_DIR, "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        { "name": "spec", "configMap": { "name": configmap_name(pi) } },
                        // A mounted Secret (not an env var) so that a recreated
                        // Secret's password reaches the agent without a restart.
                        { "name": "credentials", "secret": {
                            "secretName": secret_name(pi),
                            "items": [{ "key": PASSWORD_KEY, "path": PASSWORD_KEY }],
                            "defaultMode": 0o400,
                        } },
                        // Every key, so that roles added later need no new
                        // item (which would change the template and restart).
                        { "name": "role-passwords", "secret": {
                            "secretName": roles_secret_name(pi),
                            "defaultMode": 0o400,
                        } },
                    ],
                },
            },
            // PVCs carry no owner reference: the operator deletes them with
            // the instance, or keeps them (`--volumes-on-delete`).
            "volumeClaimTemplates": [{
                "metadata": { "name": "data", "labels": labels },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": spec.storage } },
                },
            }],
        },
    });
    serde_json::from_value(value).expect("the StatefulSet literal matches the API type")
}

pub fn service(pi: &PostgresInstance) -> Service {
    let value = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(pi),
            "namespace": pi.namespace(),
            "labels": labels(pi),
            "ownerReferences": [owner(pi)],
        },
        // Headless: the StatefulSet's governing Service, resolving to the
        // pod itself; and no cluster IP is spent per instance (a cluster's
        // service range would otherwise cap the number of instances).
        "spec": {
            "clusterIP": "None",
            "selector": labels(pi),
            "ports": [{ "name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres" }],
        },
    });
    serde_json::from_value(value).expect("the Service literal matches the API type")
}

/// The spec the agent in the pod converges to (reload-only changes land
/// here), and the resource generation it belongs to, which the agent reports
/// back once converged.
pub fn configmap(pi: &PostgresInstance) -> ConfigMap {
    let spec = domain::InstanceSpec::from(pi.spec.clone()).normalized();
    let spec_json = serde_json::to_string_pretty(&spec).expect("a spec serializes");
    let value = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(pi),
            "namespace": pi.namespace(),
            "labels": labels(pi),
            "ownerReferences": [owner(pi)],
        },
        "data": {
            "spec.json": spec_json,
            "generation": pi.metadata.generation.unwrap_or_default().to_string(),
        },
    });
    serde_json::from_value(value).expect("the ConfigMap literal matches the API type")
}

/// The credentials Secret, created once with `password` (never applied again).
pub fn secret(pi: &PostgresInstance, password: &str) -> Secret {
    let value = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(pi),
            "namespace": pi.namespace(),
            "labels": labels(pi),
            "ownerReferences": [owner(pi)],
        },
        "type": "Opaque",
        "stringData": { "username": SUPERUSER, PASSWORD_KEY: password },
    });
    serde_json::from_value(value).expect("the Secret literal matches the API type")
}

/// The present declared roles' passwords: those in `existing` kept as they
/// are (a password is never changed once generated), one from `generate`
/// for each present role without one, and those of roles no longer present
/// (removed from the spec or `ensure: absent`) left out.
pub fn role_passwords(
    pi: &PostgresInstance,
    existing: &BTreeMap<String, String>,
    mut generate: impl FnMut() -> String,
) -> BTreeMap<String, String> {
    pi.spec
        .roles
        .iter()
        .filter(|r| domain::Role::from((*r).clone()).ensure == domain::Ensure::Present)
        .map(|r| {
            let password = existing.get(&r.name).cloned().unwrap_or_else(&mut generate);
            (r.name.clone(), password)
        })
        .collect()
}

/// The declared roles' Secret with `passwords` (role → password).
pub fn roles_secret(pi: &PostgresInstance, passwords: &BTreeMap<String, String>) -> Secret {
    let value = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": roles_secret_name(pi),
            "namespace": pi.namespace(),
            "labels": labels(pi),
            "ownerReferences": [owner(pi)],
        },
        "type": "Opaque",
        "stringData": passwords,
    });
    serde_json::from_value(value).expect("the Secret literal matches the API type")
}

/// A new random password: 32 characters from an unambiguous alphabet.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The in-cluster DNS name clients connect to.
pub fn host(pi: &PostgresInstance) -> String {
    format!(
        "{}.{}.svc",
        service_name(pi),
        pi.namespace().unwrap_or_else(|| "default".to_owned())
    )
}
