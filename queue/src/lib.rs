//! The queues between the control plane and data planes (DESIGN.md §5), on
//! PGMQ inside the control-plane database.
//!
//! - one queue per data plane (`dp_<name>`) carries [`DataPlaneEvent`]s;
//! - one status queue carries [`StatusReport`]s back.
//!
//! Every send also `NOTIFY`s the queue's channel in the same transaction, so
//! consumers wake at commit instead of polling; they still poll slowly as a
//! fallback. Delivery is at-least-once: a message read and not deleted comes
//! back after its visibility timeout.
//!
//! The tables used here (`dead_letters`, `instance_secrets`, `data_planes`)
//! are created by the control plane's migrations (`reconciler/migrations`).

use std::time::Duration;

use domain::{DataPlaneEvent, StatusReport};
use pgmq::PGMQueueExt;
use serde::Serialize;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub mod logs;
pub mod sealed;

pub use pgmq::Message;

/// The queue data-plane reports travel on.
pub const STATUS_QUEUE: &str = "pgplane_status";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("queue {queue}: {operation} failed: {source}")]
    Pgmq {
        queue: String,
        operation: &'static str,
        #[source]
        source: pgmq::PgmqError,
    },
    #[error("{operation} failed: {source}")]
    Sql {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid data plane name {0:?}: use lower-case letters, digits and '_' (at most 40)")]
    InvalidDataPlane(String),
    #[error("secret store: {0}")]
    Sealing(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn sql(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Sql { operation, source }
}

/// The PGMQ queue name of a data plane.
pub fn data_plane_queue(data_plane: &str) -> Result<String> {
    let ok = !data_plane.is_empty()
        && data_plane.len() <= 40
        && data_plane
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(format!("dp_{data_plane}"))
    } else {
        Err(Error::InvalidDataPlane(data_plane.to_owned()))
    }
}

fn channel(queue: &str) -> String {
    format!("pgplane_{queue}")
}

/// Handle to the queues in one control-plane database.
#[derive(Clone)]
pub struct Queues {
    pool: PgPool,
    pgmq: PGMQueueExt,
}

impl Queues {
    pub async fn new(pool: PgPool) -> Queues {
        let pgmq = PGMQueueExt::new_with_pool(pool.clone()).await;
        Queues { pool, pgmq }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Installs PGMQ's SQL (embedded in the `pgmq` crate: no network) when it
    /// is missing, and creates the status queue. Idempotent.
    pub async fn install(&self) -> Result<()> {
        let installed: bool =
            sqlx::query_scalar("select exists(select 1 from pg_namespace where nspname = 'pgmq')")
                .fetch_one(&self.pool)
                .await
                .map_err(sql("check for the pgmq schema"))?;
        if !installed {
            // Two processes may race to install: serialise on an advisory
            // lock held by a transaction, so any early return releases it.
            let mut lock = self.pool.begin().await.map_err(sql("lock pgmq install"))?;
            sqlx::query("select pg_advisory_xact_lock(7715001)")
                .execute(&mut *lock)
                .await
                .map_err(sql("lock pgmq install"))?;
            let still_missing: bool = sqlx::query_scalar(
                "select not exists(select 1 from pg_namespace where nspname = 'pgmq')",
            )
            .fetch_one(&mut *lock)
            .await
            .map_err(sql("check for the pgmq schema"))?;
            if still_missing {
                pgmq::install::install_sql_from_embedded(&self.pool)
                    .await
                    .map_err(|source| Error::Pgmq {
                        queue: "*".into(),
                        operation: "install",
                        source,
                    })?;
            }
            lock.commit().await.map_err(sql("unlock pgmq install"))?;
        }
        self.create_queue(STATUS_QUEUE).await
    }

    pub async fn create_queue(&self, queue: &str) -> Result<()> {
        self.pgmq
            .create(queue)
            .await
            .map_err(|source| Error::Pgmq {
                queue: queue.into(),
                operation: "create",
                source,
            })?;
        Ok(())
    }

    /// Creates a data plane's event queue. Idempotent.
    pub async fn create_data_plane_queue(&self, data_plane: &str) -> Result<String> {
        let q = data_plane_queue(data_plane)?;
        // A data plane granted only the use of its queue may not create one
        // (`pgmq.create` needs the schema's CREATE privilege even when the
        // queue exists): create it only when it is missing.
        let exists: bool =
            sqlx::query_scalar("select to_regclass(format('pgmq.%I', $1)) is not null")
                .bind(format!("q_{q}"))
                .fetch_one(&self.pool)
                .await
                .map_err(sql("look for a queue"))?;
        if !exists {
            self.create_queue(&q).await?;
        }
        Ok(q)
    }

    /// Enqueues an event inside the caller's transaction, so the state change
    /// and its event commit together.
    pub async fn send_event(
        &self,
        conn: &mut PgConnection,
        data_plane: &str,
        event: &DataPlaneEvent,
    ) -> Result<i64> {
        let q = data_plane_queue(data_plane)?;
        self.send_json(conn, &q, event).await
    }

    /// Sends a report (on its own when `conn` is the pool's).
    pub async fn send_report(&self, report: &StatusReport) -> Result<i64> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(sql("acquire a connection"))?;
        self.send_json(&mut conn, STATUS_QUEUE, report).await
    }

    /// Sends any JSON message on a queue (used by tests to inject malformed
    /// messages, and by the senders above).
    pub async fn send_json<T: Serialize>(
        &self,
        conn: &mut PgConnection,
        queue: &str,
        message: &T,
    ) -> Result<i64> {
        let id = self
            .pgmq
            .send_with_cxn(queue, message, &mut *conn)
            .await
            .map_err(|source| Error::Pgmq {
                queue: queue.into(),
                operation: "send",
                source,
            })?;
        sqlx::query("select pg_notify($1, '')")
            .bind(channel(queue))
            .execute(&mut *conn)
            .await
            .map_err(sql("notify"))?;
        Ok(id)
    }

    /// Reads up to `qty` messages, hiding them for `visibility`. Messages are
    /// returned as raw JSON: parsing is the consumer's job, so a malformed
    /// message can be dead-lettered with its reason.
    pub async fn read(
        &self,
        queue: &str,
        visibility: Duration,
        qty: i32,
    ) -> Result<Vec<Message<serde_json::Value>>> {
        self.pgmq
            .read_batch_with_cxn(queue, visibility.as_secs().max(1) as i32, qty, &self.pool)
            .await
            .map_err(|source| Error::Pgmq {
                queue: queue.into(),
                operation: "read",
                source,
            })
    }

    /// Acknowledges a handled message.
    pub async fn delete(&self, queue: &str, msg_id: i64) -> Result<()> {
        self.pgmq
            .delete(queue, msg_id)
            .await
            .map_err(|source| Error::Pgmq {
                queue: queue.into(),
                operation: "delete",
                source,
            })?;
        Ok(())
    }

    /// Moves a message to the queue's archive and records why it could not
    /// be handled, in one transaction.
    pub async fn dead_letter(
        &self,
        queue: &str,
        message: &Message<serde_json::Value>,
        reason: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql("begin"))?;
        sqlx::query(
            "insert into dead_letters (queue, msg_id, read_ct, reason, message) values ($1, $2, $3, $4, $5)",
        )
        .bind(queue)
        .bind(message.msg_id)
        .bind(message.read_ct)
        .bind(reason)
        .bind(&message.message)
        .execute(&mut *tx)
        .await
        .map_err(sql("record dead letter"))?;
        self.pgmq
            .archive_with_cxn(queue, message.msg_id, &mut *tx)
            .await
            .map_err(|source| Error::Pgmq {
                queue: queue.into(),
                operation: "archive",
                source,
            })?;
        tx.commit().await.map_err(sql("commit dead letter"))?;
        tracing::warn!(
            queue,
            msg_id = message.msg_id,
            reason,
            "message dead-lettered"
        );
        Ok(())
    }

    /// A listener woken when something is sent on `queue`.
    pub async fn listen(&self, queue: &str) -> Result<Wakeup> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(sql("connect listener"))?;
        listener
            .listen(&channel(queue))
            .await
            .map_err(sql("listen"))?;
        Ok(Wakeup { listener })
    }

    /// Stores an instance's password in the secret store (never on a
    /// queue), sealed to the control plane's published key.
    pub async fn put_secret(&self, instance_id: Uuid, password: &str) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(sql("store instance secret"))?;
        let key =
            sealed::SealingKey::for_writing(&mut tx, sealed::Store::InstancePasswords).await?;
        sqlx::query(
            "insert into instance_secrets (instance_id, password) values ($1, $2)
             on conflict (instance_id) do update set password = $2, updated_at = now()",
        )
        .bind(instance_id)
        .bind(key.seal(password))
        .execute(&mut *tx)
        .await
        .map_err(sql("store instance secret"))?;
        tx.commit().await.map_err(sql("store instance secret"))?;
        Ok(())
    }

    /// Makes the stored passwords of an instance's declared roles `passwords`
    /// (role → password, each sealed like [`Queues::put_secret`]); roles
    /// not in it lose theirs. One transaction.
    pub async fn put_role_secrets(
        &self,
        instance_id: Uuid,
        passwords: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql("store role secrets"))?;
        let key = sealed::SealingKey::for_writing(&mut tx, sealed::Store::RolePasswords).await?;
        let roles: Vec<&str> = passwords.keys().map(String::as_str).collect();
        sqlx::query("delete from role_secrets where instance_id = $1 and role <> all($2)")
            .bind(instance_id)
            .bind(&roles)
            .execute(&mut *tx)
            .await
            .map_err(sql("store role secrets"))?;
        for (role, password) in passwords {
            sqlx::query(
                "insert into role_secrets (instance_id, role, password) values ($1, $2, $3)
                 on conflict (instance_id, role) do update set password = $3, updated_at = now()",
            )
            .bind(instance_id)
            .bind(role)
            .bind(key.seal(password))
            .execute(&mut *tx)
            .await
            .map_err(sql("store role secrets"))?;
        }
        tx.commit().await.map_err(sql("store role secrets"))?;
        Ok(())
    }

    /// Forgets the stored passwords of a deleted instance (its own and its
    /// roles'), inside the caller's transaction `conn`.
    pub async fn forget_secrets(conn: &mut sqlx::PgConnection, instance_id: Uuid) -> Result<()> {
        for table in ["instance_secrets", "role_secrets"] {
            sqlx::query(&format!("delete from {table} where instance_id = $1"))
                .bind(instance_id)
                .execute(&mut *conn)
                .await
                .map_err(sql("forget an instance's secrets"))?;
        }
        Ok(())
    }

    /// A declared role's password as stored: sealed.
    pub async fn get_role_secret(&self, instance_id: Uuid, role: &str) -> Result<Option<String>> {
        sqlx::query_scalar("select password from role_secrets where instance_id = $1 and role = $2")
            .bind(instance_id)
            .bind(role)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql("read role secret"))
    }

    /// An instance's password as stored: sealed (open it with the control
    /// plane's [`sealed::Keyring`]).
    pub async fn get_secret(&self, instance_id: Uuid) -> Result<Option<String>> {
        sqlx::query_scalar("select password from instance_secrets where instance_id = $1")
            .bind(instance_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql("read instance secret"))
    }

    /// Registers a data plane and the names of the extensions it can run,
    /// so the control plane can reject unavailable extensions up front.
    pub async fn register_data_plane(&self, name: &str, extensions: &[String]) -> Result<()> {
        self.register(name, extensions, None).await
    }

    /// Registers a data plane with its extension catalog (versions, preload
    /// libraries, requirements); the names are registered too.
    pub async fn register_data_plane_catalog(
        &self,
        name: &str,
        catalog: &[domain::AvailableExtension],
    ) -> Result<()> {
        let names: Vec<String> = catalog.iter().map(|e| e.name.clone()).collect();
        self.register(name, &names, Some(serde_json::json!(catalog)))
            .await
    }

    async fn register(
        &self,
        name: &str,
        extensions: &[String],
        catalog: Option<serde_json::Value>,
    ) -> Result<()> {
        sqlx::query(
            "insert into data_planes (name, extensions, catalog, last_seen) values ($1, $2, $3, now())
             on conflict (name) do update
             set extensions = $2, catalog = $3, last_seen = now()",
        )
        .bind(name)
        .bind(serde_json::json!(extensions))
        .bind(catalog)
        .execute(&self.pool)
        .await
        .map_err(sql("register data plane"))?;
        Ok(())
    }
}

/// Waits for a `NOTIFY` on a queue's channel, or a timeout (the fallback poll).
pub struct Wakeup {
    listener: PgListener,
}

impl Wakeup {
    /// Returns after a notification, or after `timeout`; a broken listener
    /// reconnects by itself (sqlx), so errors only shorten the wait.
    pub async fn wait(&mut self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.listener.recv()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "queue listener error; polling");
                tokio::time::sleep(timeout.min(Duration::from_millis(200))).await;
            }
            Err(_) => {}
        }
    }
}
