//! Data-plane reports through the state machine.

use axum::http::StatusCode;
use domain::{Activity, ReportKind, StatusReport};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{test_app, TestApp};

pub async fn report(t: &TestApp, id: &str, generation: i64, kind: &str) {
    let kind: ReportKind = serde_json::from_value(json!(kind)).unwrap();
    let report = StatusReport {
        error: (kind == ReportKind::Failed).then(|| "disk full".to_owned()),
        ..StatusReport::new(Uuid::parse_str(id).unwrap(), generation, kind)
    };
    reconciler::status::apply_report(&t.state, &report)
        .await
        .unwrap();
}

async fn create(t: &TestApp) -> String {
    let (_, body) = t
        .call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    body["id"].as_str().unwrap().to_owned()
}

#[sqlx::test(migrations = false)]
async fn reports_move_the_state_and_are_recorded(pool: PgPool) {
    let t = test_app(pool).await;
    let id = create(&t).await;
    report(&t, &id, 1, "Created").await;
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["state"], "Up");
    assert_eq!(inst["observedGeneration"], 1);
    report(&t, &id, 1, "Failed").await;
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["state"], "Error");
    assert_eq!(inst["error"], "disk full");

    let (_, history) = t
        .call("GET", "/api/v1/instances/orders/history", None)
        .await;
    let steps: Vec<String> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}:{}→{}",
                h["event"].as_str().unwrap(),
                h["from"],
                h["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "Create:null→Submitted",
            "Created:\"Submitted\"→Up",
            "Failed:\"Up\"→Error"
        ]
    );
    assert_eq!(history["items"][2]["detail"], "disk full");
    assert_eq!(history["items"][1]["actor"], "data-plane:local");
}

#[sqlx::test(migrations = false)]
async fn a_report_for_an_older_generation_never_completes_a_newer_change(pool: PgPool) {
    let t = test_app(pool).await;
    let id = create(&t).await;
    report(&t, &id, 1, "Created").await;
    t.call(
        "PUT",
        "/api/v1/instances/orders",
        Some(json!({"spec": {"config": {"work_mem": "8MB"}}})),
    )
    .await;
    t.call(
        "PUT",
        "/api/v1/instances/orders",
        Some(json!({"spec": {"config": {"work_mem": "9MB"}}})),
    )
    .await;
    report(&t, &id, 2, "Updated").await;
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(
        inst["state"], "Configuring",
        "generation 3 is still pending"
    );
    assert_eq!(inst["observedGeneration"], 1);
    // Redelivered twice: harmless.
    report(&t, &id, 3, "Updated").await;
    report(&t, &id, 3, "Updated").await;
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["state"], "Up");
    assert_eq!(inst["observedGeneration"], 3);
}

#[sqlx::test(migrations = false)]
async fn overdue_instances_get_their_event_again(pool: PgPool) {
    let t = test_app(pool).await;
    create(&t).await;
    assert_eq!(t.queued_events().await.len(), 1);
    let n = reconciler::resend::resend_overdue(&t.state, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(n, 0, "not overdue yet");
    let n = reconciler::resend::resend_overdue(&t.state, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let events = t.queued_events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["kind"], "Create");
    assert_eq!(events[1]["generation"], 1);
}

#[sqlx::test(migrations = false)]
async fn a_silent_data_plane_fails_the_instance_after_bounded_resends_and_a_late_report_settles_it(
    pool: PgPool,
) {
    let t = test_app(pool).await;
    let id = create(&t).await;
    let resend = || reconciler::resend::resend_overdue(&t.state, std::time::Duration::ZERO);
    for _ in 0..reconciler::resend::MAX_RESENDS {
        assert_eq!(resend().await.unwrap(), 1);
    }
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(
        inst["state"], "Submitted",
        "still waiting after the re-sends"
    );
    resend().await.unwrap();
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["state"], "Error", "{inst}");
    let error = inst["error"].as_str().unwrap();
    assert!(
        error.contains("has not reported on Create (generation 1) after 3 re-sends"),
        "{error}"
    );
    assert_eq!(
        t.queued_events().await.len(),
        1 + reconciler::resend::MAX_RESENDS as usize,
        "no more re-sends once failed"
    );
    assert_eq!(resend().await.unwrap(), 0);
    let (_, history) = t
        .call("GET", "/api/v1/instances/orders/history", None)
        .await;
    let last = history["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "control-plane");
    assert_eq!(last["event"], "Failed");

    // The data plane comes back and reports: the instance settles.
    report(&t, &id, 1, "Created").await;
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["state"], "Up");
    assert!(inst["error"].is_null(), "{inst}");
}

#[sqlx::test(migrations = false)]
async fn a_redelivered_report_records_nothing_and_a_note_is_recorded(pool: PgPool) {
    let t = test_app(pool).await;
    let id = create(&t).await;
    report(&t, &id, 1, "Created").await;
    report(&t, &id, 1, "Created").await;
    let recovered = StatusReport {
        note: Some("crashed: killed by signal 9 (SIGKILL); restarted in 0.2 s".into()),
        ..StatusReport::new(Uuid::parse_str(&id).unwrap(), 1, ReportKind::Recovered)
    };
    reconciler::status::apply_report(&t.state, &recovered)
        .await
        .unwrap();
    let (_, history) = t
        .call("GET", "/api/v1/instances/orders/history", None)
        .await;
    let steps: Vec<String> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{} {}", h["event"].as_str().unwrap(), h["detail"]))
        .collect();
    assert_eq!(
        steps,
        [
            "Create null",
            "Created null",
            "Recovered \"crashed: killed by signal 9 (SIGKILL); restarted in 0.2 s\""
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn unparseable_status_messages_are_dead_lettered(pool: PgPool) {
    let t = test_app(pool).await;
    let mut conn = t.state.pool.acquire().await.unwrap();
    t.state
        .queues
        .send_json(&mut conn, queue::STATUS_QUEUE, &json!({"hello": "world"}))
        .await
        .unwrap();
    let msgs = t
        .state
        .queues
        .read(queue::STATUS_QUEUE, std::time::Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(msgs.len(), 1);
    let outcome = reconciler::status::handle(&t.state, &msgs[0]).await;
    match outcome {
        reconciler::status::Outcome::DeadLetter(reason) => {
            assert!(reason.contains("unparseable status report"), "{reason}")
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

#[sqlx::test(migrations = false)]
async fn activity_samples_are_kept_newest_first_with_rates_and_go_with_the_instance(pool: PgPool) {
    let t = test_app(pool).await;
    let id = create(&t).await;
    report(&t, &id, 1, "Created").await;
    let instance_id = Uuid::parse_str(&id).unwrap();
    let sample = |connections: i64, transactions: i64| StatusReport {
        activity: Some(Activity {
            connections,
            transactions,
            database_bytes: 7_500_000 + transactions,
        }),
        ..StatusReport::new(instance_id, 1, ReportKind::Observed)
    };
    let total = reconciler::store::ACTIVITY_SAMPLES + 5;
    for i in 0..total {
        reconciler::status::apply_report(&t.state, &sample(i % 4, i * 10))
            .await
            .unwrap();
    }
    let (status, body) = t
        .call("GET", "/api/v1/instances/orders/activity", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len() as i64, reconciler::store::ACTIVITY_SAMPLES);
    // The oldest five are gone; the kept ones are oldest first.
    assert_eq!(items[0]["transactions"], 50);
    assert_eq!(items.last().unwrap()["transactions"], (total - 1) * 10);
    assert!(items[0]["transactionsPerSecond"].is_null(), "{}", items[0]);
    assert!(items[1]["transactionsPerSecond"].as_f64().unwrap() > 0.0);

    // A counter that went backwards (statistics reset) has no rate.
    reconciler::status::apply_report(&t.state, &sample(1, 3))
        .await
        .unwrap();
    let (_, body) = t
        .call("GET", "/api/v1/instances/orders/activity", None)
        .await;
    let last = body["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["transactions"], 3);
    assert!(last["transactionsPerSecond"].is_null(), "{last}");

    // Another organisation cannot see them.
    let globex = t.token_for("globex").await;
    let (status, _) = t
        .call_as(&globex, "GET", "/api/v1/instances/orders/activity", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deleted, the instance keeps no samples.
    t.call("DELETE", "/api/v1/instances/orders", None).await;
    report(&t, &id, 2, "Deleted").await;
    let left: i64 =
        sqlx::query_scalar("select count(*) from instance_activity where instance_id = $1")
            .bind(instance_id)
            .fetch_one(&t.state.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[sqlx::test(migrations = false)]
async fn a_re_observation_that_finds_the_same_server_moves_only_its_time(pool: PgPool) {
    let t = test_app(pool).await;
    let id = create(&t).await;
    report(&t, &id, 1, "Created").await;
    let instance_id = Uuid::parse_str(&id).unwrap();
    let observe = |work_mem: &str| StatusReport {
        observed: Some(domain::ObservedSpec {
            postgres_version: "15".into(),
            config: [("work_mem".to_owned(), work_mem.to_owned())].into(),
            running: true,
            ..domain::ObservedSpec::default()
        }),
        ..StatusReport::new(instance_id, 1, ReportKind::Observed)
    };
    let times = || async {
        sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>(
            "select updated_at, observed_at from instances where id = $1",
        )
        .bind(instance_id)
        .fetch_one(&t.state.pool)
        .await
        .unwrap()
    };
    reconciler::status::apply_report(&t.state, &observe("4MB"))
        .await
        .unwrap();
    let (updated, observed) = times().await;
    reconciler::status::apply_report(&t.state, &observe("4MB"))
        .await
        .unwrap();
    let (same_updated, later_observed) = times().await;
    assert_eq!(same_updated, updated, "nothing a reader sees changed");
    assert!(later_observed > observed, "the observation's time moves");
    reconciler::status::apply_report(&t.state, &observe("64MB"))
        .await
        .unwrap();
    let (changed, _) = times().await;
    assert!(changed > updated, "a changed observation is news");
}

#[sqlx::test(migrations = false)]
async fn a_deleted_instance_leaves_no_password_behind(pool: PgPool) {
    let t = test_app(pool.clone()).await;
    let id = create(&t).await;
    report(&t, &id, 1, "Created").await;
    let uuid = Uuid::parse_str(&id).unwrap();
    let queues = queue::Queues::new(pool.clone()).await;
    queues.put_secret(uuid, "hunter2").await.unwrap();
    let roles = [("app".to_owned(), "s3cret".to_owned())]
        .into_iter()
        .collect();
    queues.put_role_secrets(uuid, &roles).await.unwrap();
    let stored = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!(
                "select count(*) from {table} where instance_id = $1"
            ))
            .bind(uuid)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        (
            stored("instance_secrets").await,
            stored("role_secrets").await
        ),
        (1, 1)
    );
    let (status, _) = t.call("DELETE", "/api/v1/instances/orders", None).await;
    assert!(status.is_success(), "{status}");
    report(&t, &id, 2, "Deleted").await;
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["state"], "Deleted", "{inst}");
    assert_eq!(
        (
            stored("instance_secrets").await,
            stored("role_secrets").await
        ),
        (0, 0)
    );
}
