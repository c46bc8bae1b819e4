//! Manifests get the same configuration checks as the API (`pgplane plan`
//! and a source's sync both parse with `parse_manifests`): values as
//! PostgreSQL 15 reads them, rules across parameters, and a key written
//! twice, each error at its line and column.

use gitops::{parse_manifests, ParseOptions};

use crate::support::manifest;

fn errors(spec: &str) -> Vec<String> {
    let files = [("instances/a.yaml", manifest("orders", spec))];
    let options = ParseOptions {
        default_org: "acme".into(),
    };
    match parse_manifests(&files, &options) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn config_values_and_combinations_are_checked_at_their_lines() {
    let errs = errors(
        "config:\n  shared_buffers: 4TB\n  wal_level: minimal\n  huge_pages: \"on\"\n  work_mem: 16mb\n",
    );
    assert_eq!(
        errs,
        [
            "instances/a.yaml:7:5: spec.config.shared_buffers: must be at most 80% of resources.memory 1Gi (819MB): shared buffers count against the instance's memory limit, and connections, work_mem and maintenance need the rest (got 4TB)",
            "instances/a.yaml:8:5: spec.config.wal_level: wal_level = minimal cannot be archived, and every instance's WAL is archived for its backups: use replica (the default) or logical",
            "instances/a.yaml:9:5: spec.config.huge_pages: huge_pages = on needs huge pages reserved on the host, which pgplane's data planes do not do, so the server would not start; use try (the default) or off",
            "instances/a.yaml:10:5: spec.config.work_mem: \"16mb\" has an invalid unit \"mb\": use B, kB, MB, GB or TB (case-sensitive); did you mean \"16MB\"?",
        ]
    );
}

#[test]
fn a_parameter_written_twice_is_refused_at_the_second() {
    let errs = errors("config:\n  work_mem: 1MB\n  max_connections: 50\n  work_mem: 2MB\n");
    assert_eq!(
        errs,
        ["instances/a.yaml:9:5: spec.config.work_mem: duplicate key \"work_mem\""]
    );
    let errs = errors("config:\n  work_mem: 1MB\n  WORK_MEM: 2MB\n");
    assert_eq!(
        errs,
        ["instances/a.yaml:7:5: spec.config.work_mem: \"WORK_MEM\" and \"work_mem\" name the same parameter (names are case-insensitive): set it once"]
    );
}

#[test]
fn valid_settings_in_any_spelling_postgres_takes_pass() {
    let errs = errors(
        "resources: {memory: 4Gi}\nconfig:\n  shared_buffers: 1GB\n  wal_level: hot_standby\n  synchronous_commit: \"true\"\n  jit: \"of\"\n  max_connections: 0x40\n  statement_timeout: 1.5min\n",
    );
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn backup_policy_and_restore_are_declared_and_checked_at_their_lines() {
    let files = [(
        "instances/a.yaml",
        manifest(
            "orders",
            "backup:\n  schedule: \"30 2 * * *\"\n  retention: 3\nrestore:\n  from: legacy\n  at: \"2026-12-01T10:00:00Z\"\n",
        ),
    )];
    let options = ParseOptions {
        default_org: "acme".into(),
    };
    let set = parse_manifests(&files, &options).expect("valid");
    let spec = &set.instances.values().next().unwrap().spec;
    assert_eq!(spec.backup.schedule, "30 2 * * *");
    assert_eq!(spec.backup.retention, domain::Retention::Count(3));
    assert_eq!(spec.restore.as_ref().unwrap().from, "legacy");

    let errs = errors(
        "backup:\n  schedule: every night\n  retention: \"0d\"\nrestore:\n  from: legacy\n  at: yesterday\n",
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains("spec.backup.retention") && errs[0].contains("at least one"),
        "{errs:?}"
    );
    let all = errs.join("\n");
    assert!(all.contains("instances/a.yaml:"), "{all}");
}
