use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::support::test_app;

#[sqlx::test(migrations = false)]
async fn create_enqueues_the_full_spec_in_the_same_transaction(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {"extensions": [{"name": "hstore"}], "config": {"work_mem": "16MB"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"], "Submitted");
    assert_eq!(body["generation"], 1);
    assert_eq!(body["org"], "acme");
    let events = t.queued_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "Create");
    assert_eq!(events[0]["generation"], 1);
    assert_eq!(events[0]["spec"]["config"]["work_mem"], "16MB");
    assert_eq!(events[0]["spec"]["extensions"][0]["name"], "hstore");
    assert!(events[0].get("password").is_none());
}

#[sqlx::test(migrations = false)]
async fn invalid_input_is_422_with_field_paths(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "Bad_Name", "spec": {"storage": "10GB", "config": {"port": "5433", "work_mem": "lots"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "invalid");
    let paths: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "name",
            "spec.storage",
            "spec.config.port",
            "spec.config.work_mem"
        ]
    );
    assert!(t.queued_events().await.is_empty(), "nothing enqueued");

    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "a", "spec": {"replica": 2}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `replica`"),
        "{body}"
    );
}

#[sqlx::test(migrations = false)]
async fn tokens_are_checked_and_scoped_to_one_org(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, _) = t
        .call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = t.call_as("", "GET", "/api/v1/instances", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = t
        .call_as("pgp_wrong", "GET", "/api/v1/instances", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, created) = t
        .call("POST", "/api/v1/tokens", Some(json!({"org": "globex"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let other = created["token"].as_str().unwrap();
    let (status, body) = t
        .call_as(other, "GET", "/api/v1/instances/orders", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        !body.to_string().contains("acme"),
        "no leak of the other org: {body}"
    );
    let (status, list) = t.call_as(other, "GET", "/api/v1/instances", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // The same name is free in another organisation.
    let (status, _) = t
        .call_as(
            other,
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // A non-admin token cannot mint tokens.
    let (status, _) = t
        .call_as(
            other,
            "POST",
            "/api/v1/tokens",
            Some(json!({"org": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrations = false)]
async fn illegal_transitions_are_409_and_change_nothing(pool: PgPool) {
    let t = test_app(pool).await;
    t.call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    let (status, body) = t
        .call("POST", "/api/v1/instances/orders/restart", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "illegal_transition");
    assert_eq!(
        body["message"],
        "cannot Restart an instance that is Submitted: instance has not been created yet"
    );
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["generation"], 1, "unchanged");
    assert_eq!(t.queued_events().await.len(), 1, "nothing more enqueued");

    let (status, dup) = t
        .call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        dup["message"].as_str().unwrap().contains("already exists"),
        "{dup}"
    );
}

#[sqlx::test(migrations = false)]
async fn updates_predict_restarts_and_no_op_updates_enqueue_nothing(pool: PgPool) {
    let t = test_app(pool).await;
    t.call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    let id = t.call("GET", "/api/v1/instances/orders", None).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::reports::report(&t, &id, 1, "Created").await;

    let (status, body) = t
        .call(
            "PUT",
            "/api/v1/instances/orders",
            Some(json!({"spec": {"config": {"work_mem": "16MB"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "Configuring");
    assert_eq!(body["generation"], 2);
    crate::reports::report(&t, &id, 2, "Updated").await;

    let (_, body) = t
        .call(
            "PUT",
            "/api/v1/instances/orders",
            Some(json!({"spec": {"config": {"work_mem": "16384kB"}}})),
        )
        .await;
    assert_eq!(
        body["generation"], 2,
        "same value in other units is no change"
    );
    assert_eq!(t.queued_events().await.len(), 2);

    let (_, body) = t
        .call(
            "PUT",
            "/api/v1/instances/orders",
            Some(json!({"spec": {"config": {"work_mem": "16MB"}, "extensions": [{"name": "pg_stat_statements"}]}})),
        )
        .await;
    assert_eq!(body["state"], "Restarting");
    assert!(body["restartReasons"][0]
        .as_str()
        .unwrap()
        .contains("shared_preload_libraries"));
    let events = t.queued_events().await;
    assert_eq!(events.last().unwrap()["restartPredicted"], true);

    let (status, body) = t
        .call(
            "PUT",
            "/api/v1/instances/orders",
            Some(json!({"spec": {}, "expectedGeneration": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["message"].as_str().unwrap().contains("generation 3"),
        "{body}"
    );
}

#[sqlx::test(migrations = false)]
async fn deleted_instances_answer_deleted(pool: PgPool) {
    let t = test_app(pool).await;
    t.call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    let id = t.call("GET", "/api/v1/instances/orders", None).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = t.call("DELETE", "/api/v1/instances/orders", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "Deleting");
    crate::reports::report(&t, &id, 2, "Deleted").await;
    let (_, body) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(body["state"], "Deleted");
    for (method, uri) in [
        ("PUT", "/api/v1/instances/orders"),
        ("POST", "/api/v1/instances/orders/start"),
        ("DELETE", "/api/v1/instances/orders"),
        ("GET", "/api/v1/instances/orders/credentials"),
    ] {
        let body = (method == "PUT").then(|| json!({"spec": {}}));
        let (status, resp) = t.call(method, uri, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {uri}");
        assert_eq!(resp["code"], "deleted", "{method} {uri}: {resp}");
        assert_eq!(resp["message"], "instance \"orders\" is deleted");
    }
    // The name is free again.
    let (status, _) = t
        .call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[sqlx::test(migrations = false)]
async fn unavailable_extensions_are_rejected_listing_what_is(pool: PgPool) {
    let t = test_app(pool).await;
    t.state
        .queues
        .register_data_plane("local", &["citext".into(), "hstore".into()])
        .await
        .unwrap();
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {"extensions": [{"name": "hstore"}, {"name": "postgis"}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["fields"][0]["path"], "spec.extensions[1].name");
    assert_eq!(
        body["fields"][0]["message"],
        "extension \"postgis\" is not available on data plane \"local\"; available: citext, hstore"
    );
}

#[sqlx::test(migrations = false)]
async fn a_dead_database_is_503_not_a_hang(pool: PgPool) {
    let t = test_app(pool).await;
    // Nothing listens on port 1: every query fails to connect, as when the
    // state Postgres is gone.
    let dead = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy("postgres://postgres:x@127.0.0.1:1/postgres")
        .unwrap();
    let state = reconciler::AppState::new(dead, "local").await;
    let app = reconciler::app(state);
    let dead_app = crate::support::TestApp {
        state: t.state.clone(),
        app,
        token: t.token.clone(),
    };
    let (status, body) = dead_app
        .call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "unavailable");
    // Nothing was written through the live database either.
    let (_, list) = t.call("GET", "/api/v1/instances", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[sqlx::test(migrations = false)]
async fn an_expired_token_is_refused_and_its_console_session_ends(pool: PgPool) {
    let t = test_app(pool).await;
    let mut conn = t.state.pool.acquire().await.unwrap();
    let new = reconciler::auth::NewToken {
        org: "acme",
        admin: false,
        description: None,
        name: Some("short"),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    };
    let (id, token) = reconciler::auth::create_named_token(&mut conn, &new)
        .await
        .unwrap();
    let (status, _) = t.call_as(&token, "GET", "/api/v1/instances", None).await;
    assert_eq!(status, StatusCode::OK);
    sqlx::query("update tokens set expires_at = now() - interval '1 second' where id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    let (status, _) = t.call_as(&token, "GET", "/api/v1/instances", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Listed as expired; a past expiry is refused on create, naming it.
    let (_, list) = t.call("GET", "/api/v1/tokens", None).await;
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "short")
        .unwrap()
        .clone();
    assert_eq!(listed["expired"], true, "{listed}");
    assert!(listed.get("token").is_none() && listed.get("hash").is_none());
    let (status, body) = t
        .call(
            "POST",
            "/api/v1/tokens",
            Some(json!({"org": "acme", "expiresAt": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("expiresAt"), "{body}");
}
