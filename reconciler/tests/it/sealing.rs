//! Rotating the sealing key while data planes write: a value sealed to the
//! old key in a transaction the rotation overlaps is re-sealed by it, and
//! every value opens with the rotated keyring alone.

use queue::sealed::{self, Keyring, SealingKey, Store};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::test_app;

#[sqlx::test(migrations = false)]
async fn a_rotation_waits_for_writers_that_sealed_to_the_old_key(pool: PgPool) {
    let t = test_app(pool.clone()).await;
    t.call("POST", "/api/v1/instances", Some(json!({"name": "orders"})))
        .await;
    let id: Uuid = sqlx::query_scalar("select id from instances where name = 'orders'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let old_ring = t.state.keyring.clone();

    // A data plane has read the current key and not yet committed.
    let mut writer = pool.begin().await.unwrap();
    let old = SealingKey::for_writing(&mut writer, Store::LogChunks)
        .await
        .unwrap();
    assert_eq!(old.id(), old_ring.current().id());
    let writer_pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut *writer)
        .await
        .unwrap();

    let new_ring = Keyring::generate();
    let both = Keyring::parse(&format!("{}{}", new_ring.to_text(), old_ring.to_text())).unwrap();
    let rotation = tokio::spawn({
        let pool = pool.clone();
        async move { sealed::rotate(&pool, &both).await }
    });
    // The rotation waits on the writer's lock.
    loop {
        let blocked: bool = sqlx::query_scalar(
            "select exists(select 1 from pg_stat_activity
                            where $1 = any(pg_blocking_pids(pid)))",
        )
        .bind(writer_pid)
        .fetch_one(&pool)
        .await
        .unwrap();
        if blocked {
            break;
        }
        assert!(
            !rotation.is_finished(),
            "the rotation did not wait for the writer"
        );
        tokio::task::yield_now().await;
    }
    sqlx::query("insert into instance_logs (instance_id, chunk) values ($1, $2)")
        .bind(id)
        .bind(old.seal("LOG:  written during the rotation"))
        .execute(&mut *writer)
        .await
        .unwrap();
    writer.commit().await.unwrap();
    let resealed = rotation.await.unwrap().unwrap();
    assert!(
        resealed.0.contains(&(Store::LogChunks, 1)),
        "the chunk committed before the rotation read the store was re-sealed: {resealed}"
    );
    assert!(resealed.to_string().contains("1 log chunk"), "{resealed}");

    // A writer after the rotation seals to the new key.
    let mut writer = pool.begin().await.unwrap();
    let key = SealingKey::for_writing(&mut writer, Store::InstancePasswords)
        .await
        .unwrap();
    assert_eq!(key.id(), new_ring.current().id());
    writer.rollback().await.unwrap();

    let chunks: Vec<String> = sqlx::query_scalar("select chunk from instance_logs")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        new_ring.open(&chunks[0]).unwrap(),
        "LOG:  written during the rotation",
        "the new key alone opens it"
    );
    let retired: i64 = sqlx::query_scalar("select count(*) from sealing_keys where id = $1")
        .bind(old.id())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(retired, 0);
}
