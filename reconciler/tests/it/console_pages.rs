//! The console's edit form, GitOps pages, drift overview, dashboard and
//! sign-in limits, in-process through the real router and a real database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use domain::{ObservedSpec, ReportKind, StatusReport};
use reconciler::SourcePolicy;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::console::{app, form_body, send, Browser, Page};
use crate::sources::{commit, git, manifest};
use crate::support::{test_app_with, TestApp};

/// A data-plane report for `id` at `generation`, observing `config`.
async fn report(t: &TestApp, id: &str, generation: i64, kind: ReportKind, config: &[(&str, &str)]) {
    let observed = ObservedSpec {
        members: None,
        postgres_version: "15".into(),
        extensions: vec![],
        extension_versions: BTreeMap::new(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        running: true,
        pending_restart: vec![],
        superuser_access: None,
        archive: None,
        roles: None,
        databases: None,
    };
    let report = StatusReport {
        observed: Some(observed),
        ..StatusReport::new(Uuid::parse_str(id).unwrap(), generation, kind)
    };
    reconciler::status::apply_report(&t.state, &report)
        .await
        .unwrap();
}

async fn create_up(t: &TestApp, name: &str, spec: Value) -> Value {
    let (status, created) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": name, "spec": spec})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    report(t, &id, 1, ReportKind::Created, &[]).await;
    let (_, inst) = t
        .call("GET", &format!("/api/v1/instances/{id}"), None)
        .await;
    assert_eq!(inst["state"], "Up");
    inst
}

/// The text of the element with `id` up to the end of its list.
fn errors_at(page: &Page, id: &str) -> String {
    let at = page
        .body
        .find(&format!("id=\"err-{id}\""))
        .unwrap_or_else(|| panic!("no errors at {id}: {}", page.body));
    page.body[at..].split("</ul>").next().unwrap().to_owned()
}

#[sqlx::test]
async fn the_edit_form_reviews_the_restart_then_saves_at_the_generation_it_was_opened_at(
    pool: PgPool,
) {
    let t = app(pool).await;
    let inst = create_up(
        &t,
        "orders",
        json!({"config": {"work_mem": "4MB"}, "extensions": [{"name": "hstore"}],
               "backup": {"schedule": "0 3 * * *"}}),
    )
    .await;
    let id = inst["id"].as_str().unwrap().to_owned();
    let b = Browser::sign_in(&t, &t.token).await;
    let csrf = b.csrf().await;

    // The form starts from what the instance declares, at its generation.
    let page = b.get("/instances/orders/edit").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("work_mem=4MB"), "{}", page.body);
    assert!(page.body.contains("name=\"generation\" value=\"1\""));
    assert!(page.body.contains("value=\"hstore\""));
    let instance_page = b.get("/instances/orders").await;
    assert!(instance_page.body.contains("id=\"action-edit\""));

    let edit = |config: &str, memory: &str, generation: &str, step: &str| {
        let extensions = if config.contains("shared_preload_libraries") {
            "hstore, pg_stat_statements"
        } else {
            "hstore"
        };
        vec![
            ("csrf", csrf.clone()),
            ("generation", generation.to_owned()),
            ("cpu", "1".to_owned()),
            ("memory", memory.to_owned()),
            ("storage", "10Gi".to_owned()),
            ("extensions", extensions.to_owned()),
            ("config", config.to_owned()),
            ("step", step.to_owned()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let b = &b;
        let id = id.clone();
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            b.post(&format!("/instances/{id}/edit"), &fields).await
        }
    };

    // Bad values: each error at its input, the input kept, nothing sent.
    let bad = post(edit("work_mem=lots\nbad line", "lots", "1", "review")).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(
        errors_at(&bad, "config").contains("work_mem"),
        "{}",
        errors_at(&bad, "config")
    );
    assert!(errors_at(&bad, "config").contains("line 2"));
    assert!(errors_at(&bad, "memory").contains("lots"));
    assert!(bad.body.contains("work_mem=lots\nbad line"));
    assert!(bad.body.contains("value=\"lots\""));
    let bad = post(edit("work_mem=8MB", "lots", "1", "save")).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, now) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(now["generation"], 1, "nothing was saved");

    // Review: what changes and that Postgres restarts for it; nothing saved yet.
    let preload = "work_mem=8MB\nshared_preload_libraries=pg_stat_statements";
    let review = post(edit(preload, "1Gi", "1", "review")).await;
    assert_eq!(review.status, StatusCode::OK, "{}", review.body);
    assert!(
        review
            .body
            .contains("This change restarts Postgres: </strong>shared_preload_libraries changed"),
        "{}",
        review.body
    );
    assert!(review.body.contains("config.work_mem"));
    assert!(review.body.contains("id=\"edit-save\""));
    let (_, now) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(now["generation"], 1, "a review saves nothing");

    // A reload-only change says so.
    let reload = post(edit("work_mem=8MB", "1Gi", "1", "review")).await;
    assert!(
        reload.body.contains("Applied without a restart"),
        "{}",
        reload.body
    );

    // Back to the form keeps the input.
    let back = post(edit(preload, "1Gi", "1", "edit")).await;
    assert_eq!(back.status, StatusCode::OK);
    assert!(back.body.contains(preload));
    assert!(back.body.contains("id=\"edit-review\""));

    // Save: the update command, at the generation the form was opened at.
    let saved = post(edit(preload, "1Gi", "1", "save")).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(
        saved.location.as_deref(),
        Some(&*format!("/instances/{id}"))
    );
    let (_, now) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(now["generation"], 2);
    assert_eq!(now["state"], "Restarting", "{now}");
    assert_eq!(now["spec"]["config"]["work_mem"], "8MB");
    assert_eq!(now["spec"]["resources"]["memory"], "1Gi");
    assert_eq!(
        now["spec"]["extensions"],
        json!([{"name": "hstore"}, {"name": "pg_stat_statements"}])
    );
    assert_eq!(now["spec"]["backup"], inst["spec"]["backup"], "backup kept");
    assert!(now["restartReasons"][0]
        .as_str()
        .unwrap()
        .starts_with("shared_preload_libraries"));
    let history: Vec<String> =
        sqlx::query_scalar("select actor from instance_history where event = 'Update' order by id")
            .fetch_all(&t.state.pool)
            .await
            .unwrap();
    assert!(history[0].starts_with("token:"), "{history:?}");

    // The same form again (opened at generation 1) is a conflict, not an
    // overwrite.
    report(&t, &id, 2, ReportKind::Updated, &[]).await;
    let stale = post(edit("work_mem=1MB", "1Gi", "1", "save")).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert!(
        stale.body.contains("changed since this form was opened"),
        "{}",
        stale.body
    );
    let (_, now) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(now["generation"], 2);
    assert_eq!(now["spec"]["config"]["work_mem"], "8MB");

    // Without the CSRF token: refused before anything runs.
    let mut forged = edit("work_mem=1MB", "1Gi", "2", "save");
    forged.remove(0);
    assert_eq!(post(forged).await.status, StatusCode::FORBIDDEN);

    // Another organisation: not found.
    let other = t.token_for("globex").await;
    let them = Browser::sign_in(&t, &other).await;
    let their_csrf = them.csrf().await;
    assert_eq!(
        them.get("/instances/orders/edit").await.status,
        StatusCode::NOT_FOUND
    );
    let theirs = them
        .post(
            &format!("/instances/{id}/edit"),
            &[
                ("csrf", &their_csrf),
                ("generation", "2"),
                ("config", "work_mem=1MB"),
                ("step", "save"),
            ],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    // Owned by a GitOps source: read-only, and a post is refused.
    sqlx::query("update instances set owner = 'git:prod' where name = 'orders'")
        .execute(&t.state.pool)
        .await
        .unwrap();
    let page = b.get("/instances/orders/edit").await;
    assert!(page.body.contains("GitOps source"), "{}", page.body);
    assert!(!page.body.contains("id=\"edit\""));
    assert!(!b
        .get("/instances/orders")
        .await
        .body
        .contains("id=\"action-edit\""));
    let refused = post(edit("work_mem=1MB", "1Gi", "2", "save")).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let (_, now) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(now["generation"], 2);
}

#[sqlx::test]
async fn the_edit_form_keeps_where_an_instance_was_restored_from(pool: PgPool) {
    let t = app(pool).await;
    let inst = create_up(&t, "copy", json!({})).await;
    let id = inst["id"].as_str().unwrap().to_owned();
    // As if created from another instance's backups.
    sqlx::query(
        "update instances set spec = spec || '{\"restore\": {\"from\": \"orders\"}}'::jsonb where id = $1",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .execute(&t.state.pool)
    .await
    .unwrap();
    let b = Browser::sign_in(&t, &t.token).await;
    let csrf = b.csrf().await;
    let saved = b
        .post(
            &format!("/instances/{id}/edit"),
            &[
                ("csrf", &csrf),
                ("generation", "1"),
                ("cpu", "1"),
                ("memory", "1Gi"),
                ("storage", "10Gi"),
                ("config", "work_mem=16MB"),
                ("step", "save"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let (_, now) = t
        .call("GET", &format!("/api/v1/instances/{id}"), None)
        .await;
    assert_eq!(now["spec"]["restore"], json!({"from": "orders"}), "{now}");
    assert_eq!(now["spec"]["config"]["work_mem"], "16MB");
}

#[sqlx::test(migrations = false)]
async fn source_pages_show_syncs_per_commit_and_sync_now_runs_the_apis_sync(pool: PgPool) {
    let t = test_app_with(pool, SourcePolicy::allow_all()).await;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    commit(
        repo.path(),
        &[("orders.yaml", Some(manifest("orders", "16MB")))],
        "add orders",
    );
    let (status, _) = t
        .call(
            "POST",
            "/api/v1/sources",
            Some(json!({"name": "prod", "url": repo.path().to_str().unwrap(), "branch": "main"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let b = Browser::sign_in(&t, &t.token).await;
    let csrf = b.csrf().await;

    let list = b.get("/sources").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("data-source=\"prod\""), "{}", list.body);
    assert!(
        list.body.contains(">pending<"),
        "not synced yet: {}",
        list.body
    );

    // Sync now: the API's sync, recorded per commit.
    let synced = b.post("/sources/prod/sync", &[("csrf", &csrf)]).await;
    assert_eq!(synced.status, StatusCode::SEE_OTHER, "{}", synced.body);
    assert_eq!(
        synced.location.as_deref(),
        Some("/sources/prod?synced=applied")
    );
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["owner"], "git:prod");
    let page = b.get("/sources/prod?synced=applied").await;
    assert!(page.body.contains("Synced now: applied."), "{}", page.body);
    assert!(page.body.contains("add orders"));
    assert!(page.body.contains("Ada"));
    assert!(
        page.body.contains("<strong>orders</strong>: create"),
        "{}",
        page.body
    );
    assert!(page.body.contains(">healthy<"));
    assert!(
        page.body.contains("tr data-id="),
        "its instances are listed"
    );
    // An outcome that is not one is not echoed.
    let spoofed = b.get("/sources/prod?synced=hacked").await;
    assert!(!spoofed.body.contains("hacked"));

    // A bad manifest: rejected, every error with its file and line, the
    // last good commit still in force.
    commit(
        repo.path(),
        &[(
            "orders.yaml",
            Some("apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: orders\nspec:\n  config:\n    work_mem: lots\n".into()),
        )],
        "break work_mem",
    );
    let synced = b.post("/sources/prod/sync", &[("csrf", &csrf)]).await;
    assert_eq!(
        synced.location.as_deref(),
        Some("/sources/prod?synced=rejected")
    );
    let page = b.get("/sources/prod").await;
    assert!(page.body.contains("break work_mem"));
    assert!(
        page.body.contains("orders.yaml:7"),
        "file:line: {}",
        page.body
    );
    assert!(page.body.contains(">degraded<"));
    assert!(page.body.contains("the newest revision was rejected"));
    let list = b.get("/sources").await;
    assert!(list.body.contains(">degraded<"));
    assert!(list.body.contains(">rejected<"));
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(
        inst["spec"]["config"]["work_mem"], "16MB",
        "nothing applied"
    );

    // Without the CSRF token nothing syncs.
    let count = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from source_syncs")
            .fetch_one(&t.state.pool)
            .await
            .unwrap()
    };
    let before = count().await;
    assert_eq!(
        b.post("/sources/prod/sync", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(count().await, before);

    // Another organisation sees no source, and cannot sync this one.
    let other = t.token_for("globex").await;
    let them = Browser::sign_in(&t, &other).await;
    let their_csrf = them.csrf().await;
    assert_eq!(
        them.get("/sources/prod").await.status,
        StatusCode::NOT_FOUND
    );
    let their_list = them.get("/sources").await;
    assert!(!their_list.body.contains("prod"), "{}", their_list.body);
    assert!(their_list.body.contains("No sources yet"));
    let theirs = them
        .post("/sources/prod/sync", &[("csrf", &their_csrf)])
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(count().await, before);
    let their_drift = them.get("/drift").await;
    assert!(!their_drift.body.contains("orders"));
}

#[sqlx::test]
async fn the_drift_overview_lists_each_drifted_field_of_the_organisation(pool: PgPool) {
    let t = app(pool).await;
    let drifted = create_up(&t, "orders", json!({"config": {"work_mem": "16MB"}})).await;
    let in_sync = create_up(&t, "ledger", json!({"config": {"work_mem": "16MB"}})).await;
    let ledger = in_sync["id"].as_str().unwrap();
    report(&t, ledger, 1, ReportKind::Observed, &[("work_mem", "16MB")]).await;
    let id = drifted["id"].as_str().unwrap();
    report(&t, id, 1, ReportKind::Observed, &[("work_mem", "64MB")]).await;
    let (_, api_report) = t.call("GET", "/api/v1/drift", None).await;
    assert_eq!(api_report["drifted"], 1, "{api_report}");

    let b = Browser::sign_in(&t, &t.token).await;
    let page = b.get("/drift").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("id=\"count-drifted\">1<"),
        "{}",
        page.body
    );
    let table = &page.body[page.body.find("id=\"drifted\"").unwrap()..];
    let table = table.split("</table>").next().unwrap();
    assert!(table.contains("config.work_mem"));
    assert!(table.contains("16MB") && table.contains("64MB"));
    assert!(table.contains("orders") && !table.contains("ledger"));
    assert!(page.body.contains("data-owner=\"api\""));

    let other = t.token_for("globex").await;
    let them = Browser::sign_in(&t, &other).await;
    let theirs = them.get("/drift").await;
    assert!(theirs.body.contains("No instance has drifted."));
    assert!(!theirs.body.contains("orders"));
}

#[sqlx::test]
async fn the_dashboard_draws_the_fleet_and_its_activity_with_words(pool: PgPool) {
    let t = app(pool).await;
    create_up(&t, "orders", json!({})).await;
    create_up(&t, "ledger", json!({})).await;
    t.call("POST", "/api/v1/instances", Some(json!({"name": "queued"})))
        .await;
    t.call("POST", "/api/v1/instances/ledger/stop", None).await;
    let b = Browser::sign_in(&t, &t.token).await;
    let page = b.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains("3 live instances: 1 Submitted, 1 Up, 1 Stopping."),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-state=\"Up\" data-count=\"1\""));
    // Created ×3, Up ×2, Stopping ×1: six changes, all in the last hour.
    assert!(
        page.body.contains(
            "6 state changes in the last 24 hours; the busiest hour had 6 (the last hour)."
        ),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-hours-ago=\"0\" data-count=\"6\""));
    assert!(page.body.contains("<svg id=\"activity-chart\""));
    assert!(page.body.contains("role=\"img\""));

    // Another organisation's fleet is its own.
    let other = t.token_for("globex").await;
    let them = Browser::sign_in(&t, &other).await;
    let theirs = them.get("/dashboard").await;
    assert!(theirs.body.contains("No live instances."));
    assert!(theirs
        .body
        .contains("No state changes in the last 24 hours."));
}

fn sign_in_from(addr: &str, token: &str) -> Request<Body> {
    let addr: SocketAddr = addr.parse().unwrap();
    Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .extension(ConnectInfo(addr))
        .body(Body::from(form_body(&[("token", token)])))
        .unwrap()
}

#[sqlx::test]
async fn sign_in_attempts_are_limited_per_client_and_in_all(pool: PgPool) {
    let t = app(pool).await;
    let wrong = "pgp_notavalidtokennotavalidtokennotavalid0";
    for _ in 0..10 {
        let page = send(&t, sign_in_from("10.0.0.1:4000", wrong)).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let resp = tower::ServiceExt::oneshot(t.app.clone(), sign_in_from("10.0.0.1:4001", &t.token))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "even the right token waits"
    );
    // Another client is not held up.
    let page = send(&t, sign_in_from("10.0.0.2:4000", &t.token)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    // The client may try again once its bucket refills.
    let start = Instant::now();
    loop {
        let page = send(&t, sign_in_from("10.0.0.1:4002", &t.token)).await;
        if page.status == StatusCode::SEE_OTHER {
            break;
        }
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(start.elapsed() < Duration::from_secs(5), "still refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Many clients together meet the global limit.
    let mut refused = None;
    for i in 0..100u8 {
        let page = send(&t, sign_in_from(&format!("10.1.0.{i}:4000"), wrong)).await;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(i);
            break;
        }
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let refused = refused.expect("the global limit held");
    assert!(
        (30..=60).contains(&refused),
        "refused after {refused} clients"
    );
}
