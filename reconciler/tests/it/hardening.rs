//! Inputs Postgres cannot store or the control plane cannot route are
//! client errors, never 500: NUL characters, unknown data planes, and an
//! organisation over its instance quota.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::config_validation::{call_raw, send};
use crate::support::{test_app, test_app_on};

#[sqlx::test(migrations = false)]
async fn nul_characters_are_client_errors(pool: PgPool) {
    let t = test_app(pool).await;
    t.call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    for (method, uri) in [
        ("GET", "/api/v1/instances/%00"),
        ("GET", "/api/v1/instances/orders%00"),
        ("PUT", "/api/v1/instances/%00"),
        ("DELETE", "/api/v1/instances/a%00b"),
        ("POST", "/api/v1/instances/%00/restart"),
        ("GET", "/api/v1/instances/%00/history"),
        ("GET", "/api/v1/instances/%00/credentials"),
        ("GET", "/api/v1/sources/%00"),
    ] {
        let body = (method == "PUT").then(|| json!({"spec": {}}));
        let (status, resp) = t.call(method, uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {resp}");
        assert_eq!(resp["code"], "not_found", "{method} {uri}: {resp}");
    }
    let bodies = [
        ("/api/v1/instances", r#"{"name": "a\u0000b"}"#, "name"),
        (
            "/api/v1/instances",
            r#"{"name": "orders2", "spec": {"config": {"work_mem": "1MB\u0000"}}}"#,
            "spec.config.work_mem",
        ),
        (
            "/api/v1/instances",
            r#"{"name": "orders2", "spec": {"config": {"a\u0000b.c": "1"}}}"#,
            "spec.config.a\u{0}b.c",
        ),
        (
            "/api/v1/instances",
            r#"{"name": "orders2", "dataPlane": "lo\u0000cal"}"#,
            "dataPlane",
        ),
        (
            "/api/v1/instances",
            r#"{"name": "orders2", "owner": "api\u0000"}"#,
            "owner",
        ),
        (
            "/api/v1/tokens",
            r#"{"org": "acme", "description": "ci\u0000"}"#,
            "description",
        ),
        ("/api/v1/tokens", r#"{"org": "ac\u0000me"}"#, "org"),
        (
            "/api/v1/sources",
            r#"{"name": "s", "url": "https://10.0.0.1/x\u0000.git"}"#,
            "url",
        ),
    ];
    for (uri, body, path) in bodies {
        let (status, resp) = call_raw(&t, "POST", uri, body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{uri} {body}: {resp}"
        );
        let paths: Vec<&str> = resp["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert!(paths.contains(&path), "{uri} {body}: {resp}");
    }
}

#[sqlx::test(migrations = false)]
async fn unknown_data_planes_are_422_listing_the_known_ones(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "dataPlane": "nosuch"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"][0]["path"], "dataPlane");
    assert_eq!(
        body["fields"][0]["message"],
        "unknown data plane \"nosuch\"; known: local"
    );

    // A conductor registers its data plane (and creates its queue).
    t.state
        .queues
        .create_data_plane_queue("eu_west")
        .await
        .unwrap();
    t.state
        .queues
        .register_data_plane("eu_west", &["hstore".into()])
        .await
        .unwrap();
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "dataPlane": "other"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["fields"][0]["message"],
        "unknown data plane \"other\"; known: eu_west, local"
    );
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "dataPlane": "eu_west"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["dataPlane"], "eu_west");
}

#[sqlx::test(migrations = false)]
async fn preload_libraries_of_missing_extensions_are_refused(pool: PgPool) {
    let t = test_app(pool).await;
    t.state
        .queues
        .register_data_plane("local", &["hstore".into(), "pg_stat_statements".into()])
        .await
        .unwrap();
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {"config": {"shared_preload_libraries": "pg_stat_statements,pg_cron"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["fields"][0]["path"],
        "spec.config.shared_preload_libraries"
    );
    assert_eq!(
        body["fields"][0]["message"],
        "library \"pg_cron\" comes with extension \"pg_cron\", which is not available on data plane \"local\"; available: hstore, pg_stat_statements"
    );
}

#[sqlx::test(migrations = false)]
async fn an_organisation_over_its_quota_gets_403(pool: PgPool) {
    let mut state = reconciler::AppState::new(pool, "local").await;
    state.max_instances_per_org = 2;
    let t = test_app_on(state).await;
    for name in ["a", "b"] {
        let (status, body) = t
            .call("POST", "/api/v1/instances", Some(json!({"name": name})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = t
        .call("POST", "/api/v1/instances", Some(json!({"name": "c"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "quota_exceeded");
    assert_eq!(
        body["message"],
        "organisation \"acme\" has 2 instances, the most it may have; delete one first (the limit is the control plane's --max-instances-per-org)"
    );
    assert_eq!(t.queued_events().await.len(), 2, "nothing enqueued for c");

    // Another organisation has a quota of its own.
    let other = t.token_for("globex").await;
    let (status, _) = t
        .call_as(
            &other,
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "c"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Deleted instances do not count; deleting ones do until they are gone.
    let id = t.call("GET", "/api/v1/instances/a", None).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::reports::report(&t, &id, 1, "Created").await;
    t.call("DELETE", "/api/v1/instances/a", None).await;
    let (status, _) = t
        .call("POST", "/api/v1/instances", Some(json!({"name": "c"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a is still Deleting");
    crate::reports::report(&t, &id, 2, "Deleted").await;
    let (status, body) = t
        .call("POST", "/api/v1/instances", Some(json!({"name": "c"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[sqlx::test(migrations = false)]
async fn concurrent_creates_do_not_exceed_the_quota(pool: PgPool) {
    let mut state = reconciler::AppState::new(pool, "local").await;
    state.max_instances_per_org = 5;
    let t = test_app_on(state).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let app = t.app.clone();
        let token = t.token.clone();
        tasks.spawn(async move {
            let body = json!({"name": format!("db{i}")}).to_string().into_bytes();
            send(app, &token, "POST", "/api/v1/instances", body).await.0
        });
    }
    let mut created = 0;
    while let Some(status) = tasks.join_next().await {
        let status = status.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::FORBIDDEN,
            "{status}"
        );
        created += usize::from(status == StatusCode::CREATED);
    }
    assert_eq!(created, 5);
}

#[sqlx::test(migrations = false)]
async fn nul_reaching_sql_anyway_is_a_client_error(pool: PgPool) {
    for (sql, value) in [
        ("select $1::text", "a\u{0}b"),
        ("select $1::jsonb", "{\"a\": \"\\u0000\"}"),
    ] {
        let err = sqlx::query(sql)
            .bind(value)
            .execute(&pool)
            .await
            .unwrap_err();
        match reconciler::ApiError::from(err) {
            reconciler::ApiError::Invalid(errs) => {
                assert_eq!(errs.0[0].path, "body");
                assert!(errs.0[0].message.contains("NUL"), "{errs}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}
