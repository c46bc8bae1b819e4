//! Configuration values are checked as PostgreSQL 15 reads them, and
//! together, before anything is written: a bad config is a 422 naming each
//! parameter, and nothing is enqueued.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;

use crate::support::{test_app, TestApp};

/// Sends `body` as it is written (a `serde_json::Value` cannot hold a key
/// twice).
pub async fn call_raw(t: &TestApp, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    send(
        t.app.clone(),
        &t.token,
        method,
        uri,
        body.as_bytes().to_vec(),
    )
    .await
}

/// One request to `app` with `token` and a raw body (JSON content type).
pub async fn send(
    app: axum::Router,
    token: &str,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

fn fields(body: &Value) -> Vec<(String, String)> {
    body["fields"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or_default().to_owned(),
                f["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[sqlx::test(migrations = false)]
async fn bad_config_is_422_naming_each_parameter(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {"config": {
                "shared_buffers": "4TB",
                "wal_level": "minimal",
                "huge_pages": "on",
                "shared_preload_libraries": "does_not_exist",
                "max_connections": "many",
                "synchronous_commit": "sometimes",
            }}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid");
    let fields = fields(&body);
    let paths: Vec<&str> = fields.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.config.max_connections",
            "spec.config.shared_preload_libraries",
            "spec.config.synchronous_commit",
            "spec.config.wal_level",
            "spec.config.huge_pages",
            "spec.config.shared_buffers",
        ]
    );
    let message = |p: &str| &fields.iter().find(|(q, _)| q == p).unwrap().1;
    assert!(message("spec.config.shared_buffers").contains("at most 80% of resources.memory 1Gi"));
    assert!(message("spec.config.wal_level").contains("wal_level = minimal cannot be archived"));
    assert!(message("spec.config.huge_pages").contains("use try (the default) or off"));
    assert!(message("spec.config.shared_preload_libraries").contains("known: auth_delay"));
    assert_eq!(
        message("spec.config.synchronous_commit"),
        "expected one of: local, remote_write, remote_apply, on, off (got \"sometimes\")"
    );
    assert!(t.queued_events().await.is_empty(), "nothing enqueued");
}

#[sqlx::test(migrations = false)]
async fn out_of_range_values_name_the_range(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {"config": {"shared_buffers": "4", "work_mem": "16mb"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        fields(&body),
        [
            (
                "spec.config.shared_buffers".to_owned(),
                "must be between 128kB and 8TB - 8kB (got \"4\" = 32kB)".to_owned()
            ),
            (
                "spec.config.work_mem".to_owned(),
                "\"16mb\" has an invalid unit \"mb\": use B, kB, MB, GB or TB (case-sensitive); did you mean \"16MB\"?".to_owned()
            ),
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn updates_are_checked_like_creates(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, _) = t
        .call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = t
        .call(
            "PUT",
            "/api/v1/instances/orders",
            Some(json!({"spec": {"resources": {"memory": "512Mi"}, "config": {"shared_buffers": "512MB"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(fields(&body)[0].0, "spec.config.shared_buffers");
    assert!(
        fields(&body)[0]
            .1
            .contains("resources.memory 512Mi (409MB)"),
        "{body}"
    );
    assert_eq!(t.queued_events().await.len(), 1, "only the create");
}

#[sqlx::test(migrations = false)]
async fn a_parameter_given_twice_is_422_naming_it(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, body) = call_raw(
        &t,
        "POST",
        "/api/v1/instances",
        r#"{"name": "orders", "spec": {"config": {"work_mem": "1MB", "work_mem": "2MB"}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("spec.config") && message.contains("parameter \"work_mem\" is set twice"),
        "{body}"
    );
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {"config": {"work_mem": "1MB", "Work_Mem": "2MB"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(fields(&body)[0].0, "spec.config.work_mem");
    assert!(t.queued_events().await.is_empty());
}
