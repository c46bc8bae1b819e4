//! ARCHITECTURE.md's invariants, stated as absences, checked from `cargo metadata`.

use std::collections::BTreeMap;
use std::process::Command;

fn direct_dependencies() -> BTreeMap<String, Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null()) // normal dependencies only
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

fn users_of(deps: &BTreeMap<String, Vec<String>>, krate: &str) -> Vec<String> {
    deps.iter()
        .filter(|(_, d)| d.iter().any(|n| n == krate))
        .map(|(p, _)| p.clone())
        .collect()
}

#[test]
fn domain_depends_on_no_io_crate() {
    let deps = direct_dependencies();
    // chrono for time values, croner for cron schedules and humantime for
    // the duration grammar: all pure (callers pass the current time in).
    let allowed = [
        "serde",
        "serde_json",
        "thiserror",
        "uuid",
        "utoipa",
        "chrono",
        "croner",
        "humantime",
    ];
    for d in &deps["domain"] {
        assert!(
            allowed.contains(&d.as_str()),
            "domain must not depend on {d}"
        );
    }
}

#[test]
fn only_the_control_plane_and_the_queue_talk_sql() {
    let deps = direct_dependencies();
    assert_eq!(users_of(&deps, "sqlx"), ["queue", "reconciler"]);
    assert_eq!(users_of(&deps, "pgmq"), ["queue"]);
}

#[test]
fn only_the_control_plane_serves_http() {
    let deps = direct_dependencies();
    assert_eq!(users_of(&deps, "axum"), ["reconciler"]);
    assert_eq!(users_of(&deps, "reqwest"), ["api"]);
}

#[test]
fn only_the_agent_talks_to_instances() {
    let deps = direct_dependencies();
    // The benchmark harness connects to instances as a user would.
    assert_eq!(users_of(&deps, "tokio-postgres"), ["agent", "bench"]);
}

#[test]
fn only_gitops_uses_git() {
    let deps = direct_dependencies();
    assert_eq!(users_of(&deps, "git2"), ["gitops"]);
}

#[test]
fn only_the_provider_speaks_grpc_and_it_uses_the_api_client() {
    let deps = direct_dependencies();
    assert_eq!(users_of(&deps, "tonic"), ["provider"]);
    assert!(deps["provider"].contains(&"api".to_owned()));
    for forbidden in ["reconciler", "sqlx", "queue", "conductor"] {
        assert!(
            !deps["provider"].contains(&forbidden.to_owned()),
            "provider depends on {forbidden}"
        );
    }
}

#[test]
fn only_the_kubernetes_crates_use_kube() {
    let deps = direct_dependencies();
    // kubetest is test support: it drives a real cluster for the tests,
    // and the benchmarks drive it to measure the Kubernetes data plane.
    assert_eq!(
        users_of(&deps, "kube"),
        ["bench", "crd", "kuberuntime", "kubetest", "operator"]
    );
}

#[test]
fn the_data_plane_does_not_depend_on_the_control_plane() {
    let deps = direct_dependencies();
    for krate in ["conductor", "agent", "queue"] {
        assert!(
            !deps[krate].contains(&"reconciler".to_owned()),
            "{krate} depends on reconciler"
        );
    }
}
