//! Applies data-plane reports from the status queue through the state
//! machine.
//!
//! A report is for one generation. A report for an older generation than the
//! instance's current one never completes the newer change (it only refreshes
//! the observation), which makes redelivered and reordered messages harmless.

use std::time::Duration;

use domain::{settle_report, Standing, State, StatusReport};
use queue::{Message, STATUS_QUEUE};
use sqlx::types::Json;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use crate::error::ApiError;
use crate::store::{self, HistoryRecord};
use crate::AppState;

/// How a handled message leaves the queue.
#[derive(Debug)]
pub enum Outcome {
    Ack,
    DeadLetter(String),
    /// Leave it for redelivery after the visibility timeout.
    Retry,
}

const VISIBILITY: Duration = Duration::from_secs(30);
const BATCH: i32 = 100;
const MAX_DELIVERIES: i32 = 5;

pub async fn run(state: AppState, cancel: CancellationToken) {
    let mut wakeup = loop {
        match state.queues.listen(STATUS_QUEUE).await {
            Ok(w) => break w,
            Err(e) => {
                tracing::warn!(error = %e, "status consumer cannot listen; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    while !cancel.is_cancelled() {
        let batch = match state.queues.read(STATUS_QUEUE, VISIBILITY, BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reading the status queue failed");
                Vec::new()
            }
        };
        let empty = batch.is_empty();
        // Reports of different instances are applied concurrently (each locks
        // its own row); one instance's reports stay in order.
        let mut per_instance: std::collections::BTreeMap<String, Vec<Message<serde_json::Value>>> =
            Default::default();
        for msg in batch {
            let key = msg
                .message
                .get("instanceId")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            per_instance.entry(key).or_default().push(msg);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (_, msgs) in per_instance {
            let state = state.clone();
            tasks.spawn(async move {
                for msg in msgs {
                    let outcome = handle(&state, &msg).await;
                    settle(&state, &msg, outcome).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        if empty {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wakeup.wait(Duration::from_secs(1)) => {}
            }
        }
    }
}

async fn settle(state: &AppState, msg: &Message<serde_json::Value>, outcome: Outcome) {
    let result = match outcome {
        Outcome::Ack => state.queues.delete(STATUS_QUEUE, msg.msg_id).await,
        Outcome::DeadLetter(reason) => state.queues.dead_letter(STATUS_QUEUE, msg, &reason).await,
        Outcome::Retry => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, msg_id = msg.msg_id, "settling a status message failed; it will be redelivered");
    }
}

#[instrument(skip_all, fields(msg_id = msg.msg_id))]
pub async fn handle(state: &AppState, msg: &Message<serde_json::Value>) -> Outcome {
    let report: StatusReport = match serde_json::from_value(msg.message.clone()) {
        Ok(r) => r,
        Err(e) => return Outcome::DeadLetter(format!("unparseable status report: {e}")),
    };
    if msg.read_ct > MAX_DELIVERIES {
        return Outcome::DeadLetter(format!(
            "delivered {} times without being applied",
            msg.read_ct
        ));
    }
    match apply_report(state, &report).await {
        Ok(()) => Outcome::Ack,
        Err(e @ (ApiError::Unavailable(_) | ApiError::Internal(_))) => {
            tracing::warn!(error = %e, instance_id = %report.instance_id, "applying report failed; will retry");
            Outcome::Retry
        }
        Err(e) => {
            tracing::warn!(error = %e, instance_id = %report.instance_id, "report not applied");
            Outcome::Ack
        }
    }
}

/// Applies one report in one transaction.
pub async fn apply_report(state: &AppState, report: &StatusReport) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    let Some(row) = store::find_by_id(&mut tx, report.instance_id).await? else {
        tracing::info!(instance_id = %report.instance_id, "report for an unknown instance ignored");
        return Ok(());
    };
    let current = row.state();
    if current == State::Deleted {
        return Ok(());
    }
    let observed = report.observed.as_ref().map(Json);
    let connection = report.connection.as_ref().map(Json);
    let standing = Standing {
        state: current,
        generation: row.generation,
        observed_generation: row.observed_generation,
    };
    let has_news = report.note.is_some()
        || (report.error.is_some() && report.error != row.error)
        || report.prediction_note.is_some();
    let settled = settle_report(standing, report.kind, report.generation, has_news);
    let generation = settled.generation;
    let event = report.kind.event();
    let next = settled.next;
    let applied_generation = settled.observed_generation;
    let error = match next {
        Some(State::Error) => report.error.clone(),
        Some(_) => None,
        None => row.error.clone(),
    };
    // A deleted instance runs nothing and has nowhere to connect to.
    let gone = next == Some(State::Deleted);
    // `updated_at` (what the event stream follows) moves only when
    // something a reader can see changed: a periodic re-observation that
    // finds the same server writes its time and nothing else. The row is
    // locked, so comparing with it here is exact.
    let visible = has_news
        || settled.record
        || matches!(
            report.kind,
            domain::ReportKind::Backup | domain::ReportKind::SwitchedOver
        )
        || gone
        || next.is_some_and(|n| n != current)
        || applied_generation != row.observed_generation
        || error != row.error
        || differs(
            report.observed.as_ref(),
            row.observed.as_ref().map(|j| &j.0),
        )
        || differs(
            report.connection.as_ref(),
            row.connection.as_ref().map(|j| &j.0),
        )
        || differs(report.backups.as_ref(), row.backups.as_ref().map(|j| &j.0));
    sqlx::query(
        "update instances set state = $2,
                observed = case when $7 then null else coalesce($3, observed) end,
                observed_at = case when $3 is null then observed_at else now() end,
                observed_generation = $4,
                resends = case when $4 > observed_generation then 0 else resends end,
                connection = case when $7 then null else coalesce($5, connection) end,
                backups = coalesce($8, backups),
                error = $6,
                updated_at = case when $9 then now() else updated_at end
         where id = $1",
    )
    .bind(row.id)
    .bind(next.unwrap_or(current).as_str())
    .bind(observed)
    .bind(applied_generation)
    .bind(connection)
    .bind(&error)
    .bind(gone)
    .bind(report.backups.as_ref().map(Json))
    .bind(visible)
    .execute(&mut *tx)
    .await?;
    match (&report.activity, gone) {
        (Some(activity), false) => store::record_activity(&mut tx, row.id, activity).await?,
        (_, true) => {
            sqlx::query("delete from instance_activity where instance_id = $1")
                .bind(row.id)
                .execute(&mut *tx)
                .await?;
        }
        (None, false) => {}
    }
    // A backup or a switchover moves no state; the history says how it went.
    let outcome = match (report.kind, &report.error, &report.note) {
        (domain::ReportKind::Backup, Some(e), _) => Some(("BackupFailed", e.as_str())),
        (domain::ReportKind::Backup, None, n) => {
            Some(("BackedUp", n.as_deref().unwrap_or("full backup taken")))
        }
        (domain::ReportKind::SwitchedOver, Some(e), _) => Some(("SwitchoverFailed", e.as_str())),
        (domain::ReportKind::SwitchedOver, None, n) => {
            Some(("SwitchedOver", n.as_deref().unwrap_or("switched over")))
        }
        _ => None,
    };
    if let Some((event, detail)) = outcome {
        store::record_history(
            &mut tx,
            HistoryRecord {
                instance_id: row.id,
                from: Some(current),
                event,
                to: current,
                generation: row.generation,
                actor: &format!("data-plane:{}", row.data_plane),
                detail: Some(detail),
            },
        )
        .await?;
    }

    if let (Some(ev), Some(to), true) = (event, next, settled.record) {
        let detail = [&report.error, &report.note, &report.prediction_note]
            .into_iter()
            .flatten()
            .next()
            .cloned();
        store::record_history(
            &mut tx,
            HistoryRecord {
                instance_id: row.id,
                from: Some(current),
                event: ev.as_str(),
                to,
                generation,
                actor: &format!("data-plane:{}", row.data_plane),
                detail: detail.as_deref(),
            },
        )
        .await?;
        if to == State::Deleted {
            queue::Queues::forget_secrets(&mut tx, row.id).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Whether a report brings a value (`new`) other than the stored one.
fn differs<T: PartialEq>(new: Option<&T>, old: Option<&T>) -> bool {
    new.is_some_and(|n| Some(n) != old)
}
