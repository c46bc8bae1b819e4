//! `pgplane plan -f DIR` from the outside: exit codes like
//! `terraform plan -detailed-exitcode`, every manifest error at once.

use crate::support::*;

fn manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

#[test]
fn plan_exit_codes_and_errors() {
    let dir = scratch_dir();
    let d = dir.path().to_str().unwrap();
    let no_token = [
        ("PGPLANE_TOKEN", ""),
        ("PGPLANE_ENDPOINT", "http://127.0.0.1:1"),
    ];
    let plan = |args: &[&str]| {
        let mut all = vec!["plan"];
        all.extend_from_slice(args);
        std::process::Command::new(pgplane_bin())
            .args(&all)
            .env_remove("PGPLANE_TOKEN")
            .envs(no_token[1..].iter().copied())
            .output()
            .unwrap()
    };
    let o = plan(&["-f", d]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    std::fs::write(
        dir.path().join("orders.yaml"),
        manifest(
            "orders",
            "  extensions:\n    - name: hstore\n  config:\n    work_mem: 16MB\n",
        ),
    )
    .unwrap();
    let o = plan(&["-f", d, "-o", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(json.to_string().contains("orders"), "{json}");

    std::fs::write(
        dir.path().join("bad.yaml"),
        manifest("Bad_Name", "  config:\n    port: \"5433\"\n  replica: 2\n"),
    )
    .unwrap();
    let o = plan(&["-f", d]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bad.yaml:4"),
        "name error with its line: {err}"
    );
    assert!(err.contains("spec.config.port"), "{err}");
    assert!(err.contains("replica"), "{err}");
}

/// The lines of `text` that reject a manifest for its organisation.
fn foreign_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("metadata.org:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn plan_rejects_another_organisations_manifest_as_a_sync_does() {
    let e = Embedded::start();
    let env = e.env();
    let work = e.path("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("orders.yaml"),
        manifest("orders", "  replicas: 1\n"),
    )
    .unwrap();
    std::fs::write(
        work.join("billing.yaml"),
        "apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: billing\n  org: globex\nspec:\n  replicas: 1\n",
    )
    .unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "orders and globex's billing"]);
    let url = format!("file://{}", work.display());
    ok(
        &["source", "add", "prod", "--git", &url, "--branch", "main"],
        &env,
    );

    // The sync rejects the revision whole, naming the manifest.
    let o = run(&["source", "sync", "prod", "-o", "json"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let synced: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(synced["outcome"], "rejected", "{synced}");
    let sync_errors: Vec<String> = synced["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sync_errors,
        ["billing.yaml:1: metadata.org: \"globex\" is not this source's organisation \"default\""]
    );
    assert_eq!(
        json(&["instance", "list"], &env)["items"],
        serde_json::json!([])
    );

    // The dry run of the same directory says the same and plans nothing.
    let o = run(&["plan", "-f", work.to_str().unwrap()], &env);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let lines = foreign_lines(&stderr(&o));
    assert_eq!(lines.len(), 1, "{}", stderr(&o));
    assert!(lines[0].ends_with(&sync_errors[0]), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("orders"),
        "nothing is planned: {}",
        stdout(&o)
    );

    // Read from the repository, file paths match too: the very lines.
    let cache = e.path("cache");
    let o = run(
        &[
            "plan",
            "--git",
            &url,
            "--ref",
            "main",
            "--source",
            "prod",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(foreign_lines(&stderr(&o)), sync_errors, "{}", stderr(&o));
}

#[test]
fn plan_as_a_source_that_prunes_plans_its_deletions_as_its_sync_makes_them() {
    let e = Embedded::start();
    let env = e.env();
    let work = e.path("work");
    std::fs::create_dir_all(&work).unwrap();
    for name in ["orders", "billing"] {
        std::fs::write(
            work.join(format!("{name}.yaml")),
            manifest(name, "  replicas: 1\n"),
        )
        .unwrap();
    }
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "orders and billing"]);
    let url = format!("file://{}", work.display());
    ok(
        &[
            "source", "add", "prod", "--git", &url, "--branch", "main", "--prune",
        ],
        &env,
    );
    let o = run(&["source", "sync", "prod", "-o", "json"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    git(&work, &["rm", "-q", "billing.yaml"]);
    git(&work, &["commit", "-qm", "billing goes"]);

    // Without --prune, the dry run plans what the pruning source's sync does.
    let o = run(&["plan", "-f", work.to_str().unwrap()], &env);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("Source \"prod\" prunes"),
        "{}",
        stderr(&o)
    );
    let planned = stdout(&o);
    assert!(
        planned
            .lines()
            .any(|l| l.starts_with("delete") && l.contains("billing")),
        "{planned}"
    );
    let o = run(&["source", "sync", "prod", "-o", "json"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let synced: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let actions: Vec<(String, String)> = synced["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(actions, [("delete".to_owned(), "billing".to_owned())]);
}
