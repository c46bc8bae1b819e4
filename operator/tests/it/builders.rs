//! Snapshot tests of the children built from a spec. The snapshots live in
//! `tests/it/snapshots/`; run with `PGPLANE_UPDATE_SNAPSHOTS=1` to rewrite.

use std::path::Path;

use crd::PostgresInstance;
use operator::builders;
use operator::Settings;
use serde::Serialize;

pub fn instance(spec: serde_json::Value) -> PostgresInstance {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "pgplane.io/v1",
        "kind": "PostgresInstance",
        "metadata": { "name": "orders", "namespace": "shop", "uid": "0000-1111", "generation": 1 },
        "spec": spec,
    }))
    .unwrap()
}

fn assert_snapshot(name: &str, value: &impl Serialize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots")
        .join(format!("{name}.yaml"));
    let actual = serde_yaml::to_string(value).unwrap();
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        if std::env::var_os("PGPLANE_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &actual).unwrap();
        } else {
            panic!(
                "snapshot {} differs (PGPLANE_UPDATE_SNAPSHOTS=1 rewrites):\n{actual}",
                path.display()
            );
        }
    }
}

fn sample() -> PostgresInstance {
    instance(serde_json::json!({
        "postgresVersion": "15",
        "resources": { "cpu": "2", "memory": "4Gi" },
        "storage": "20Gi",
        "extensions": [{ "name": "pg_stat_statements" }, { "name": "hstore" }],
        "config": { "work_mem": "16MB", "max_connections": "200" },
    }))
}

#[test]
fn statefulset_snapshot() {
    assert_snapshot(
        "statefulset",
        &builders::statefulset(&sample(), &Settings::default()),
    );
}

#[test]
fn service_configmap_secret_snapshots() {
    assert_snapshot("service", &builders::service(&sample()));
    assert_snapshot("configmap", &builders::configmap(&sample()));
    assert_snapshot(
        "secret",
        &builders::secret(&sample(), "not-a-real-password"),
    );
}

#[test]
fn reload_only_changes_keep_the_pod_template() {
    let before = sample();
    let mut after = sample();
    after.spec.config.insert("work_mem".into(), "64MB".into());
    after
        .spec
        .config
        .insert("log_min_duration_statement".into(), "1s".into());
    let s = Settings::default();
    assert_eq!(
        builders::statefulset(&before, &s).spec.template,
        builders::statefulset(&after, &s).spec.template
    );
    assert_ne!(builders::configmap(&before), builders::configmap(&after));
}

#[test]
fn restart_only_changes_change_the_restart_hash() {
    let before = sample();
    let mut preload = sample();
    preload
        .spec
        .config
        .insert("shared_preload_libraries".into(), "auto_explain".into());
    let mut connections = sample();
    connections
        .spec
        .config
        .insert("max_connections".into(), "300".into());
    let mut new_preload_extension = instance(serde_json::json!({}));
    new_preload_extension.spec.extensions = vec![crd::ExtensionRef {
        name: "pg_cron".into(),
        version: None,
        ensure: None,
    }];
    let h = builders::restart_hash;
    assert_ne!(h(&before), h(&preload));
    assert_ne!(h(&before), h(&connections));
    assert_ne!(
        h(&instance(serde_json::json!({}))),
        h(&new_preload_extension)
    );
    // The same spec always gives the same template (an operator restart or
    // upgrade does not roll the pod).
    assert_eq!(h(&before), h(&sample()));
}

#[test]
fn stopped_scales_to_zero_and_keeps_the_volume_template() {
    let mut pi = sample();
    pi.spec.stopped = true;
    let sts = builders::statefulset(&pi, &Settings::default());
    assert_eq!(sts.spec.replicas, Some(0));
    assert_eq!(sts.spec.volume_claim_templates.unwrap().len(), 1);
}

#[test]
fn passwords_are_random_and_long() {
    let a = builders::generate_password();
    assert_eq!(a.len(), 32);
    assert_ne!(a, builders::generate_password());
}

#[test]
fn backoff_is_jittered_exponential_and_capped() {
    use operator::reconcile::{backoff, ERROR_BACKOFF_BASE, ERROR_BACKOFF_MAX};
    assert_eq!(backoff(1, 0.5), ERROR_BACKOFF_BASE);
    assert_eq!(backoff(2, 0.5), ERROR_BACKOFF_BASE * 2);
    assert!(backoff(1, 0.0) < backoff(1, 1.0));
    assert_eq!(backoff(40, 0.5), ERROR_BACKOFF_MAX);
}

fn with_roles(roles: serde_json::Value) -> PostgresInstance {
    let mut pi = sample();
    pi.spec.roles = serde_json::from_value(roles).unwrap();
    pi
}

#[test]
fn role_passwords_are_generated_once_and_follow_the_present_roles() {
    let pi = with_roles(serde_json::json!([{ "name": "app" }, { "name": "reporting" }]));
    let mut n = 0;
    let mut generate = || {
        n += 1;
        format!("generated-{n}")
    };
    let first = builders::role_passwords(&pi, &Default::default(), &mut generate);
    assert_eq!(
        first,
        [("app", "generated-1"), ("reporting", "generated-2")]
            .map(|(r, p)| (r.to_owned(), p.to_owned()))
            .into()
    );
    // Stored passwords stay; only a new role gets one.
    let pi = with_roles(serde_json::json!([
        { "name": "app" }, { "name": "reporting" }, { "name": "etl" },
    ]));
    let second = builders::role_passwords(&pi, &first, &mut generate);
    assert_eq!(second["app"], "generated-1");
    assert_eq!(second["reporting"], "generated-2");
    assert_eq!(second["etl"], "generated-3");
    // Removed or declared absent: the key goes.
    let pi = with_roles(serde_json::json!([
        { "name": "app" }, { "name": "reporting", "ensure": "absent" },
    ]));
    let third = builders::role_passwords(&pi, &second, &mut generate);
    assert_eq!(third.keys().collect::<Vec<_>>(), ["app"]);
    assert_eq!(third["app"], "generated-1");
}

#[test]
fn roles_secret_snapshot() {
    let pi = with_roles(serde_json::json!([{ "name": "app" }]));
    let passwords = [("app".to_owned(), "not-a-real-password".to_owned())].into();
    assert_snapshot("roles_secret", &builders::roles_secret(&pi, &passwords));
}

#[test]
fn roles_added_later_keep_the_pod_template() {
    let s = Settings::default();
    let before = builders::statefulset(&sample(), &s);
    let after = builders::statefulset(&with_roles(serde_json::json!([{ "name": "app" }])), &s);
    assert_eq!(before.spec.template, after.spec.template);
}
