//! The queue protocol end to end with the simulated runtime.

use std::sync::Arc;
use std::time::Duration;

use api::CreateInstance;
use conductor::{Outcome, SimulatedRuntime};
use reconciler::commands::{self, Command};
use serde_json::json;
use sqlx::PgPool;

use crate::support::*;

#[sqlx::test(migrations = false)]
async fn create_update_delete_through_the_queues(pool: PgPool) {
    let (state, caller) = control_plane(pool).await;
    let runtime = Arc::new(SimulatedRuntime::new());
    let cancel = spawn_loops(&state, runtime.clone());
    let req = CreateInstance {
        name: "orders".into(),
        spec: Default::default(),
        data_plane: None,
        owner: None,
    };
    commands::create(&state, &caller, req).await.unwrap();
    let up = eventually("Up", Duration::from_secs(10), || async {
        let i = instance(&state, "orders").await;
        (i.state == domain::State::Up).then_some(i)
    })
    .await;
    assert_eq!(up.observed_generation, 1);
    assert!(up.connection.is_some());
    let stored = state.queues.get_secret(up.id).await.unwrap().unwrap();
    assert!(
        queue::sealed::is_sealed(&stored) && !stored.contains("simulated"),
        "sealed at rest: {stored}"
    );
    assert_eq!(
        state.keyring.open(&stored).unwrap(),
        "simulated",
        "the password went to the secret store"
    );

    let mut spec = up.spec.clone();
    spec.config.insert("work_mem".into(), "32MB".into());
    commands::execute(
        &state,
        &caller,
        "orders",
        Command::Update {
            spec: Box::new(spec),
            expected_generation: None,
            owner: None,
        },
    )
    .await
    .unwrap();
    let updated = eventually("updated", Duration::from_secs(10), || async {
        let i = instance(&state, "orders").await;
        (i.state == domain::State::Up && i.observed_generation == 2).then_some(i)
    })
    .await;
    assert_eq!(updated.observed.unwrap().config["work_mem"], "32MB");

    commands::execute(&state, &caller, "orders", Command::Delete)
        .await
        .unwrap();
    eventually("Deleted", Duration::from_secs(10), || async {
        (instance(&state, "orders").await.state == domain::State::Deleted).then_some(())
    })
    .await;
    assert!(runtime.is_empty());
    assert_eq!(
        state.queues.get_secret(up.id).await.unwrap(),
        None,
        "secret removed"
    );
    cancel.cancel();
}

#[sqlx::test(migrations = false)]
async fn an_unparseable_event_is_dead_lettered_and_the_instance_errors(pool: PgPool) {
    let (state, caller) = control_plane(pool).await;
    let req = CreateInstance {
        name: "orders".into(),
        spec: Default::default(),
        data_plane: None,
        owner: None,
    };
    let created = commands::create(&state, &caller, req).await.unwrap();
    // Replace the real event with a broken one for the same instance.
    sqlx::query("delete from pgmq.q_dp_local")
        .execute(&state.pool)
        .await
        .unwrap();
    let mut conn = state.pool.acquire().await.unwrap();
    state
        .queues
        .send_json(
            &mut conn,
            "dp_local",
            &json!({"instanceId": created.id, "generation": 1, "kind": "Explode"}),
        )
        .await
        .unwrap();
    drop(conn);

    let runtime = Arc::new(SimulatedRuntime::new());
    let cancel = spawn_loops(&state, runtime.clone());
    let failed = eventually("Error", Duration::from_secs(10), || async {
        let i = instance(&state, "orders").await;
        (i.state == domain::State::Error).then_some(i)
    })
    .await;
    let reason = failed.error.unwrap();
    assert!(reason.contains("unparseable data-plane event"), "{reason}");
    assert!(reason.contains("Explode"), "{reason}");
    // The report goes out before the message is dead-lettered.
    let (dead, why): (i64, String) =
        eventually("the dead letter", Duration::from_secs(10), || async {
            sqlx::query_as(
                "select count(*) over (), reason from dead_letters where queue = 'dp_local'",
            )
            .fetch_optional(&state.pool)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(dead, 1);
    assert_eq!(why, reason);
    let archived: i64 = sqlx::query_scalar("select count(*) from pgmq.a_dp_local")
        .fetch_one(&state.pool)
        .await
        .unwrap();
    assert_eq!(archived, 1, "archived, not retried");
    assert!(runtime.is_empty(), "nothing applied");
    cancel.cancel();
}

#[sqlx::test(migrations = false)]
async fn a_message_delivered_too_often_is_dead_lettered(pool: PgPool) {
    let (state, caller) = control_plane(pool).await;
    let req = CreateInstance {
        name: "orders".into(),
        spec: Default::default(),
        data_plane: None,
        owner: None,
    };
    commands::create(&state, &caller, req).await.unwrap();
    let settings = conductor::Settings::new("local");
    // Read it max_deliveries + 1 times without settling (as crashing consumers would).
    let mut msg = None;
    for _ in 0..=settings.max_deliveries {
        sqlx::query("update pgmq.q_dp_local set vt = now()")
            .execute(&state.pool)
            .await
            .unwrap();
        msg = state
            .queues
            .read("dp_local", Duration::from_secs(30), 1)
            .await
            .unwrap()
            .pop();
    }
    let msg = msg.unwrap();
    assert_eq!(msg.read_ct, settings.max_deliveries + 1);
    let runtime = SimulatedRuntime::new();
    let outcome = conductor::handle(&state.queues, &runtime, &settings, &msg).await;
    match outcome {
        Outcome::DeadLetter(reason) => assert!(
            reason.contains("delivered 6 times without completing"),
            "{reason}"
        ),
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert!(runtime.is_empty());
}
