//! The schema and the code agree on the closed vocabularies: every state,
//! event kind and sync outcome the code writes is accepted, and anything
//! else is refused by the database rather than guessed at when read back.

use domain::{message::EventKind, State};
use serde_json::json;
use sqlx::PgPool;

use crate::support::test_app;

async fn set(pool: &PgPool, column: &str, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "update instances set {column} = $1 where name = 'orders'"
    ))
    .bind(value)
    .execute(pool)
    .await
    .map(|_| ())
}

#[sqlx::test(migrations = false)]
async fn the_schema_accepts_exactly_the_states_and_events_the_code_knows(pool: PgPool) {
    let t = test_app(pool.clone()).await;
    t.call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    for s in State::ALL {
        set(&pool, "state", s.as_str()).await.unwrap();
    }
    for k in EventKind::ALL {
        set(&pool, "last_event", k.as_str()).await.unwrap();
    }
    for (column, bad) in [
        ("state", "Resizing"),
        ("state", "up"),
        ("last_event", "Resize"),
    ] {
        let err = set(&pool, column, bad).await.unwrap_err();
        let constraint = err
            .as_database_error()
            .and_then(|e| e.constraint())
            .unwrap_or_default()
            .to_owned();
        assert!(constraint.ends_with("_known"), "{column}={bad}: {err}");
    }
}

#[sqlx::test(migrations = false)]
async fn sync_outcomes_outside_the_vocabulary_are_refused(pool: PgPool) {
    let _t = test_app(pool.clone()).await;
    let insert = |outcome: &'static str| {
        sqlx::query(
            "insert into source_syncs (org, source, outcome, errors, results)
             values ('acme', 'prod', $1, '[]', '[]')",
        )
        .bind(outcome)
        .execute(&pool)
    };
    for known in api::SyncOutcome::KNOWN {
        let outcome: &'static str = known;
        let r = insert(outcome).await;
        // A row may also be refused for its missing source; never for its outcome.
        if let Err(e) = r {
            let c = e
                .as_database_error()
                .and_then(|d| d.constraint())
                .unwrap_or_default();
            assert_ne!(c, "source_syncs_outcome_known", "{known}: {e}");
        }
    }
    let err = insert("succeeded").await.unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|d| d.constraint()),
        Some("source_syncs_outcome_known")
    );
}
