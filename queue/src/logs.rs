//! Server logs shipped by data planes: each re-observation stores what an
//! instance's server wrote since the last one, as one chunk of whole
//! lines, sealed to the control plane's published key like the secrets.
//! The newest [`KEPT_CHUNKS`] chunks of each instance are kept.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{sealed, sql, Queues, Result};

/// Chunks kept per instance.
pub const KEPT_CHUNKS: i64 = 200;

/// One stored chunk: its id (a cursor), when it was shipped, and its
/// sealed text.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogChunk {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub chunk: String,
}

impl Queues {
    /// Stores `text` (whole lines) as the newest chunk of the instance's
    /// log and forgets chunks beyond [`KEPT_CHUNKS`].
    pub async fn put_log(&self, instance_id: Uuid, text: &str) -> Result<()> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(sql("store a log chunk"))?;
        let key = sealed::SealingKey::for_writing(&mut tx, sealed::Store::LogChunks).await?;
        sqlx::query("insert into instance_logs (instance_id, chunk) values ($1, $2)")
            .bind(instance_id)
            .bind(key.seal(text))
            .execute(&mut *tx)
            .await
            .map_err(sql("store a log chunk"))?;
        sqlx::query(
            "delete from instance_logs where instance_id = $1 and id <= (
                 select id from instance_logs where instance_id = $1
                 order by id desc offset $2 limit 1)",
        )
        .bind(instance_id)
        .bind(KEPT_CHUNKS)
        .execute(&mut *tx)
        .await
        .map_err(sql("forget old log chunks"))?;
        tx.commit().await.map_err(sql("store a log chunk"))?;
        Ok(())
    }

    /// The instance's stored chunks after the cursor `after` (all when
    /// `None`), oldest first; still sealed.
    pub async fn logs(&self, instance_id: Uuid, after: Option<i64>) -> Result<Vec<LogChunk>> {
        sqlx::query_as(
            "select id, at, chunk from instance_logs
             where instance_id = $1 and id > coalesce($2, 0) order by id",
        )
        .bind(instance_id)
        .bind(after)
        .fetch_all(self.pool())
        .await
        .map_err(sql("read log chunks"))
    }
}
