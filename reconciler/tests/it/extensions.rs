//! The extension catalog data planes register, `GET /api/v1/extensions`,
//! and specs checked against it (names, versions).

use axum::http::StatusCode;
use domain::AvailableExtension;
use serde_json::json;
use sqlx::PgPool;

use crate::support::test_app;

fn catalog() -> Vec<AvailableExtension> {
    vec![
        AvailableExtension {
            versions: vec!["1.4".into(), "1.7".into(), "1.8".into()],
            default_version: "1.8".into(),
            trusted: true,
            package: Some("postgresql-15".into()),
            ..AvailableExtension::named("hstore")
        },
        AvailableExtension {
            versions: vec!["1.4-1".into()],
            default_version: "1.4-1".into(),
            package: Some("postgresql-15-cron".into()),
            ..AvailableExtension::named("pg_cron")
        },
    ]
}

#[sqlx::test(migrations = false)]
async fn the_catalog_a_data_plane_registered_is_served(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, body) = t.call("GET", "/api/v1/extensions", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"dataPlane": "local", "registered": false, "items": []})
    );

    t.state
        .queues
        .register_data_plane_catalog("local", &catalog())
        .await
        .unwrap();
    let (status, body) = t
        .call("GET", "/api/v1/extensions?dataPlane=local", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["registered"], true);
    assert_eq!(body["items"][1]["name"], "pg_cron");
    assert_eq!(body["items"][1]["preloadLibrary"], "pg_cron");
    assert_eq!(body["items"][1]["package"], "postgresql-15-cron");
    assert_eq!(body["items"][0]["versions"], json!(["1.4", "1.7", "1.8"]));
    assert_eq!(body["items"][0]["preloadLibrary"], json!(null));

    let (status, body) = t
        .call("GET", "/api/v1/extensions?dataPlane=mars", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"][0]["path"], "dataPlane");
    assert_eq!(
        body["fields"][0]["message"],
        "unknown data plane \"mars\"; known: local"
    );
}

#[sqlx::test(migrations = false)]
async fn a_data_plane_that_registered_names_only_is_served_by_name(pool: PgPool) {
    let t = test_app(pool).await;
    t.state
        .queues
        .register_data_plane("local", &["hstore".into(), "pg_stat_statements".into()])
        .await
        .unwrap();
    let (status, body) = t.call("GET", "/api/v1/extensions", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][1]["name"], "pg_stat_statements");
    assert_eq!(body["items"][1]["preloadLibrary"], "pg_stat_statements");
    assert_eq!(body["items"][0]["versions"], json!([]));
    // Versions are not known: any is accepted here, the data plane checks.
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "a", "spec": {"extensions": [{"name": "hstore", "version": "1.7"}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[sqlx::test(migrations = false)]
async fn unknown_extensions_and_unavailable_versions_are_refused_by_field(pool: PgPool) {
    let t = test_app(pool).await;
    t.state
        .queues
        .register_data_plane_catalog("local", &catalog())
        .await
        .unwrap();
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {"extensions": [
                {"name": "pg_crn"},
                {"name": "hstore", "version": "2.0"},
                {"name": "gone", "ensure": "absent"}
            ]}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["fields"],
        json!([
            {"path": "spec.extensions[0].name",
             "message": "extension \"pg_crn\" is not available on data plane \"local\" (did you mean \"pg_cron\"?); available: hstore, pg_cron"},
            {"path": "spec.extensions[1].version",
             "message": "version \"2.0\" of extension \"hstore\" is not available on data plane \"local\"; available: 1.4, 1.7, 1.8"}
        ])
    );
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {"extensions": [{"name": "hstore", "version": "1.7"}, {"name": "pg_cron"}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["spec"]["extensions"][0],
        json!({"name": "hstore", "version": "1.7"})
    );
    let events = t.queued_events().await;
    let spec = &events.last().unwrap()["spec"];
    assert_eq!(spec["extensions"][0]["version"], "1.7");

    // An update to another version goes through; the restart prediction
    // is the preload library's only.
    let (status, body) = t
        .call(
            "PUT",
            "/api/v1/instances/orders",
            Some(json!({"spec": {"extensions": [{"name": "hstore", "version": "bad--v"}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"][0]["path"], "spec.extensions[0].version");
}
