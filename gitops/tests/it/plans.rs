//! The plan: create, update (field diff + restart), unchanged across unit
//! spellings, orphan, delete with prune, conflicts, and the prune guards.

use std::collections::BTreeMap;

use domain::{Extension, InstanceSpec, State};
use gitops::render::{render_markdown, render_table};
use gitops::{parse_manifests, plan, Action, DesiredSet, ParseOptions, PlanError, PlanOptions};

use crate::support::{instance, manifest};

const OWNER: &str = "git:prod";

fn desired(files: &[(&str, String)]) -> DesiredSet {
    parse_manifests(
        files,
        &ParseOptions {
            default_org: "acme".into(),
        },
    )
    .unwrap()
}

fn spec(config: &[(&str, &str)], exts: &[&str]) -> InstanceSpec {
    InstanceSpec {
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        extensions: exts.iter().map(|e| Extension::new(e.to_string())).collect(),
        ..Default::default()
    }
}

fn actions(p: &gitops::Plan) -> Vec<(&str, &str)> {
    p.entries
        .iter()
        .map(|e| (e.name.as_str(), e.action.label()))
        .collect()
}

#[test]
fn whether_an_instance_runs_is_declared_like_the_rest() {
    let d = desired(&[
        ("up.yaml", manifest("up", "")),
        ("down.yaml", manifest("down", "stopped: true")),
    ]);
    let mut up = instance("up", OWNER, spec(&[], &[]));
    up.spec.stopped = true;
    let mut down = instance("down", OWNER, spec(&[], &[]));
    down.spec.stopped = true;
    let p = plan(&d, &[up, down], OWNER, &PlanOptions::default()).unwrap();
    assert_eq!(actions(&p), [("down", "unchanged"), ("up", "update")]);
    let Action::Update {
        spec,
        changes,
        restart,
        ..
    } = &p.entries[1].action
    else {
        panic!("{:?}", p.entries[1]);
    };
    assert!(!spec.stopped, "declared running");
    let paths: Vec<(&str, Option<&str>, Option<&str>)> = changes
        .iter()
        .map(|c| (c.path.as_str(), c.from.as_deref(), c.to.as_deref()))
        .collect();
    assert_eq!(paths, [("stopped", Some("true"), Some("false"))]);
    assert!(restart.is_empty(), "{restart:?}");
}

#[test]
fn creates_updates_and_leaves_equal_specs_alone() {
    let d = desired(&[
        ("new.yaml", manifest("fresh", "")),
        (
            "same.yaml",
            manifest(
                "same",
                "resources: {cpu: 1000m, memory: 1024Mi}\nstorage: 10240Mi\nextensions: [{name: hstore}, {name: citext}]\nconfig:\n  work_mem: 16384kB\n  log_min_duration_statement: 1s",
            ),
        ),
        (
            "changed.yaml",
            manifest(
                "changed",
                "extensions: [{name: pg_stat_statements}]\nconfig:\n  work_mem: 32MB\n  max_connections: \"200\"",
            ),
        ),
        ("soft.yaml", manifest("soft", "config:\n  work_mem: 64MB")),
    ]);
    let same = instance(
        "same",
        OWNER,
        spec(
            &[
                ("work_mem", "16MB"),
                ("log_min_duration_statement", "1000ms"),
            ],
            &["citext", "hstore"],
        ),
    );
    let current = vec![
        same,
        instance("changed", OWNER, spec(&[("work_mem", "16MB")], &[])),
        instance("soft", OWNER, spec(&[("work_mem", "16MB")], &[])),
    ];
    let p = plan(&d, &current, OWNER, &PlanOptions::default()).unwrap();
    assert_eq!(
        actions(&p),
        [
            ("changed", "update"),
            ("fresh", "create"),
            ("same", "unchanged"),
            ("soft", "update")
        ]
    );
    let Action::Update {
        changes, restart, ..
    } = &p.entries[0].action
    else {
        panic!("{:?}", p.entries[0]);
    };
    let paths: Vec<(&str, Option<&str>, Option<&str>)> = changes
        .iter()
        .map(|c| (c.path.as_str(), c.from.as_deref(), c.to.as_deref()))
        .collect();
    assert_eq!(
        paths,
        [
            ("extensions", Some(""), Some("pg_stat_statements")),
            ("config.max_connections", None, Some("200")),
            ("config.work_mem", Some("16MB"), Some("32MB")),
        ]
    );
    assert_eq!(restart.len(), 2, "{restart:?}");
    assert!(restart[0].contains("max_connections"), "{restart:?}");
    assert!(
        restart[1].contains("shared_preload_libraries"),
        "{restart:?}"
    );
    let Action::Update { restart, .. } = &p.entries[3].action else {
        panic!()
    };
    assert!(restart.is_empty(), "work_mem reloads: {restart:?}");
    assert_eq!(
        (
            p.summary.create,
            p.summary.update,
            p.summary.restart,
            p.summary.unchanged
        ),
        (1, 2, 1, 1)
    );
    assert!(p.has_changes());

    let table = render_table(&p);
    assert!(table.starts_with("ACTION     NAME     CHANGES"), "{table}");
    assert!(
        table.contains("update     soft     config.work_mem: 16MB → 64MB"),
        "{table}"
    );
    assert!(table.ends_with(
        "Plan: 1 to create, 2 to update (1 restarting Postgres), 0 to delete, 0 orphaned, 1 unchanged.\n"
    ), "{table}");
    let md = render_markdown(&p);
    assert!(
        md.contains("| `config.work_mem` | `16MB` | `32MB` |"),
        "{md}"
    );
    assert!(md.contains("**Postgres restarts:**"), "{md}");
    assert!(!md.contains("| unchanged |"), "{md}");
}

#[test]
fn an_unchanged_revision_plans_nothing() {
    let d = desired(&[("a.yaml", manifest("a", "config:\n  shared_buffers: 128MB"))]);
    let current = vec![instance(
        "a",
        OWNER,
        spec(&[("shared_buffers", "131072kB")], &[]),
    )];
    let p = plan(&d, &current, OWNER, &PlanOptions::default()).unwrap();
    assert_eq!(actions(&p), [("a", "unchanged")]);
    assert!(!p.has_changes());
    assert!(render_markdown(&p).contains("No changes"));
}

#[test]
fn undeclared_instances_are_orphans_without_prune_and_deleted_with_it() {
    let d = desired(&[("a.yaml", manifest("kept", ""))]);
    let mut deleted = instance("long-gone", OWNER, spec(&[], &[]));
    deleted.state = State::Deleted;
    let current = vec![
        instance("kept", OWNER, spec(&[], &[])),
        instance("removed", OWNER, spec(&[], &[])),
        instance("someone-elses", "api", spec(&[], &[])),
        deleted,
    ];
    let p = plan(&d, &current, OWNER, &PlanOptions::default()).unwrap();
    assert_eq!(actions(&p), [("kept", "unchanged"), ("removed", "orphan")]);
    assert!(!p.has_changes());

    let prune = PlanOptions {
        prune: true,
        ..Default::default()
    };
    let p = plan(&d, &current, OWNER, &prune).unwrap();
    assert_eq!(actions(&p), [("kept", "unchanged"), ("removed", "delete")]);
    assert!(p.has_changes());
    assert_eq!(p.entries[1].id, Some(current[1].id));
}

#[test]
fn instances_of_another_owner_are_conflicts_naming_both() {
    let d = desired(&[
        ("a.yaml", manifest("tf-made", "")),
        ("b.yaml", manifest("api-made", "")),
    ]);
    let current = vec![
        instance("tf-made", "terraform", spec(&[], &[])),
        instance("api-made", "api", spec(&[], &[])),
    ];
    let p = plan(&d, &current, OWNER, &PlanOptions::default()).unwrap();
    assert_eq!(
        p.entries[1].action,
        Action::Conflict {
            owner: "terraform".into(),
            source: OWNER.into()
        }
    );
    assert!(p.has_conflicts() && !p.has_changes());
    assert!(render_table(&p).contains("managed by terraform, declared by git:prod"));

    let adopt = PlanOptions {
        adopt: true,
        ..Default::default()
    };
    let p = plan(&d, &current, OWNER, &adopt).unwrap();
    assert_eq!(actions(&p), [("api-made", "update"), ("tf-made", "update")]);
}

#[test]
fn prune_refuses_to_delete_everything_at_once() {
    let current: Vec<_> = (0..3)
        .map(|i| instance(&format!("db{i}"), OWNER, spec(&[], &[])))
        .collect();
    let prune = PlanOptions {
        prune: true,
        ..Default::default()
    };
    let err = plan(&DesiredSet::default(), &current, OWNER, &prune).unwrap_err();
    assert_eq!(
        err,
        PlanError::WouldDeleteAll {
            owner: OWNER.into(),
            count: 3
        }
    );
    // Without prune an empty revision only reports orphans.
    let p = plan(
        &DesiredSet::default(),
        &current,
        OWNER,
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.summary.orphan, 3);
    // Explicitly allowed, it deletes them.
    let all = PlanOptions {
        allow_delete_all: true,
        ..prune
    };
    let p = plan(&DesiredSet::default(), &current, OWNER, &all).unwrap();
    assert_eq!(p.summary.delete, 3);
}

#[test]
fn deletions_per_sync_are_capped() {
    let d = desired(&[("a.yaml", manifest("db00", ""))]);
    let current: Vec<_> = (0..15)
        .map(|i| instance(&format!("db{i:02}"), OWNER, spec(&[], &[])))
        .collect();
    let prune = PlanOptions {
        prune: true,
        ..Default::default()
    };
    let p = plan(&d, &current, OWNER, &prune).unwrap();
    assert_eq!(
        (
            p.summary.unchanged,
            p.summary.delete,
            p.summary.delete_deferred
        ),
        (1, 10, 4)
    );
    let deleted: Vec<&str> = p
        .entries
        .iter()
        .filter(|e| e.action == Action::Delete)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(deleted.first(), Some(&"db01"));
    assert_eq!(deleted.last(), Some(&"db10"));
}
