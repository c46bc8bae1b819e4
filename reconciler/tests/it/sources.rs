//! GitOps syncs against a real git repository and a real database.

use std::path::Path;
use std::process::Command;

use api::{CreateSource, DriftMode};
use reconciler::auth::Caller;
use reconciler::SourcePolicy;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::test_app_with;

pub fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn manifest(name: &str, work_mem: &str) -> String {
    format!("apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: {name}\nspec:\n  config:\n    work_mem: {work_mem}\n")
}

pub fn commit(repo: &Path, files: &[(&str, Option<String>)], message: &str) {
    for (f, content) in files {
        match content {
            Some(c) => std::fs::write(repo.join(f), c).unwrap(),
            None => std::fs::remove_file(repo.join(f)).unwrap(),
        }
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
}

/// Source `prod` on the repository at `repo`, synced hourly unless asked.
pub fn prod_source(repo: &Path, prune: bool, adopt: bool) -> CreateSource {
    CreateSource {
        name: "prod".into(),
        url: repo.to_str().unwrap().into(),
        branch: "main".into(),
        path: String::new(),
        interval_seconds: 3600,
        prune,
        drift: DriftMode::Report,
        adopt,
        webhook_secret: None,
        verify: true,
    }
}

pub async fn events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from pgmq.q_dp_local")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn one_changed_manifest_enqueues_exactly_one_event(pool: PgPool) {
    // Local repositories (and a closed local port below): allowed explicitly.
    let t = test_app_with(pool.clone(), SourcePolicy::allow_all()).await;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    let files: Vec<(String, Option<String>)> = (0..20)
        .map(|i| {
            (
                format!("db{i}.yaml"),
                Some(manifest(&format!("db{i}"), "4MB")),
            )
        })
        .collect();
    let refs: Vec<(&str, Option<String>)> =
        files.iter().map(|(f, c)| (f.as_str(), c.clone())).collect();
    commit(repo.path(), &refs, "twenty instances");

    let caller = Caller::token("acme", Uuid::nil(), true);
    let req = prod_source(repo.path(), true, false);
    reconciler::sources::create(&t.state, &caller, req)
        .await
        .unwrap();
    let first = reconciler::sources::sync(&t.state, "acme", "prod")
        .await
        .unwrap();
    assert_eq!(first.outcome, "applied");
    assert_eq!(first.results.len(), 20);
    assert_eq!(events(&pool).await, 20);

    // Same commit again: nothing.
    let again = reconciler::sources::sync(&t.state, "acme", "prod")
        .await
        .unwrap();
    assert_eq!(again.outcome, "unchanged");
    assert_eq!(
        events(&pool).await,
        20,
        "unchanged manifests enqueue nothing"
    );

    // One manifest changes: exactly one event.
    commit(
        repo.path(),
        &[("db7.yaml", Some(manifest("db7", "8MB")))],
        "db7 more memory",
    );
    let one = reconciler::sources::sync(&t.state, "acme", "prod")
        .await
        .unwrap();
    assert_eq!(one.outcome, "applied");
    assert_eq!(one.results.len(), 1);
    assert_eq!(one.results[0].name, "db7");
    assert_eq!(events(&pool).await, 21);

    // Deleting everything at once is refused, even with prune.
    let all: Vec<(&str, Option<String>)> = files.iter().map(|(f, _)| (f.as_str(), None)).collect();
    commit(repo.path(), &[("keep.txt", Some("x".into()))], "keep");
    commit(repo.path(), &all, "remove all");
    let refused = reconciler::sources::sync(&t.state, "acme", "prod")
        .await
        .unwrap();
    assert_eq!(refused.outcome, "refused");
    assert!(
        refused.errors[0].contains("refusing to delete all 20"),
        "{:?}",
        refused.errors
    );
    assert_eq!(events(&pool).await, 21, "nothing deleted");
}

#[sqlx::test(migrations = false)]
async fn an_unreachable_remote_or_vanished_path_changes_nothing(pool: PgPool) {
    // Local repositories (and a closed local port below): allowed explicitly.
    let t = test_app_with(pool.clone(), SourcePolicy::allow_all()).await;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(repo.path().join("instances")).unwrap();
    commit(
        repo.path(),
        &[("instances/a.yaml", Some(manifest("a", "4MB")))],
        "a",
    );
    let caller = Caller::token("acme", Uuid::nil(), true);
    let mut req = CreateSource {
        path: "instances".into(),
        ..prod_source(repo.path(), true, false)
    };
    reconciler::sources::create(&t.state, &caller, req.clone())
        .await
        .unwrap();
    assert_eq!(
        reconciler::sources::sync(&t.state, "acme", "prod")
            .await
            .unwrap()
            .outcome,
        "applied"
    );
    let good = reconciler::sources::find(&t.state, "acme", "prod")
        .await
        .unwrap()
        .last_good_commit;

    // The directory vanishes in a new commit: nothing is deleted.
    commit(
        repo.path(),
        &[("instances/a.yaml", None), ("other.txt", Some("x".into()))],
        "move away",
    );
    let vanished = reconciler::sources::sync(&t.state, "acme", "prod")
        .await
        .unwrap();
    assert_eq!(vanished.outcome, "fetch-failed");
    assert!(
        vanished.errors[0].contains("does not exist"),
        "{:?}",
        vanished.errors
    );
    assert_eq!(events(&pool).await, 1);
    assert_eq!(
        reconciler::sources::find(&t.state, "acme", "prod")
            .await
            .unwrap()
            .last_good_commit,
        good
    );

    // A remote that cannot be reached is refused when added, naming the
    // URL and nothing of why; registered without the check, its syncs
    // change nothing either.
    req.name = "gone".into();
    req.url = "http://127.0.0.1:1/nothing.git".into();
    let refused = reconciler::sources::create(&t.state, &caller, req.clone())
        .await
        .unwrap_err();
    let reconciler::error::ApiError::Invalid(errors) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(errors.0[0].path, "url", "{errors:?}");
    assert!(
        errors.0[0]
            .message
            .starts_with(reconciler::sources::FETCH_FAILED)
            && !errors.0[0].message.contains("refused"),
        "{errors:?}"
    );
    req.verify = false;
    reconciler::sources::create(&t.state, &caller, req)
        .await
        .unwrap();
    let unreachable = reconciler::sources::sync(&t.state, "acme", "gone")
        .await
        .unwrap();
    assert_eq!(unreachable.outcome, "fetch-failed");
    assert_eq!(unreachable.errors, [reconciler::sources::FETCH_FAILED]);
    let (_, list) = t.call("GET", "/api/v1/instances", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn adopting_an_instance_records_who_took_it_over(pool: PgPool) {
    let t = test_app_with(pool.clone(), SourcePolicy::allow_all()).await;
    let (status, _) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(serde_json::json!({"name": "billing", "spec": {"config": {"work_mem": "4MB"}}})),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::CREATED);
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    commit(
        repo.path(),
        &[("billing.yaml", Some(manifest("billing", "8MB")))],
        "billing in git",
    );
    let caller = Caller::token("acme", Uuid::nil(), true);
    let req = prod_source(repo.path(), false, true);
    reconciler::sources::create(&t.state, &caller, req)
        .await
        .unwrap();
    let sync = reconciler::sources::sync(&t.state, "acme", "prod")
        .await
        .unwrap();
    assert_eq!(sync.outcome, "applied", "{sync:?}");
    let (_, inst) = t.call("GET", "/api/v1/instances/billing", None).await;
    assert_eq!(inst["owner"], "git:prod");
    let (_, history) = t
        .call("GET", "/api/v1/instances/billing/history", None)
        .await;
    let owner: Vec<&serde_json::Value> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == "Owner")
        .collect();
    assert_eq!(owner.len(), 1, "{history}");
    assert_eq!(owner[0]["detail"], "owner: api → git:prod (adopted)");
    assert!(
        owner[0]["actor"].as_str().unwrap().starts_with("git:prod@"),
        "{}",
        owner[0]
    );

    // Synced again: already adopted, nothing more recorded.
    commit(
        repo.path(),
        &[("billing.yaml", Some(manifest("billing", "16MB")))],
        "more memory",
    );
    reconciler::sources::sync(&t.state, "acme", "prod")
        .await
        .unwrap();
    let (_, history) = t
        .call("GET", "/api/v1/instances/billing/history", None)
        .await;
    let owners = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == "Owner")
        .count();
    assert_eq!(owners, 1);
}
