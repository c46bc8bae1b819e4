//! The desired≠actual loop: an instance whose data plane owes a report for
//! too long gets its desired spec sent again. Handlers are idempotent, so a
//! duplicate costs nothing; a lost message costs one resend interval. After
//! [`MAX_RESENDS`] re-sends without a report the instance fails with why, so
//! no transitional state lasts forever; a report that arrives later still
//! settles it (reports are facts).

use std::time::Duration;

use domain::EventKind;
use tokio_util::sync::CancellationToken;

use crate::commands::enqueue;
use crate::error::Result;
use crate::store::{self, InstanceRow};
use crate::AppState;

pub async fn run(state: AppState, every: Duration, overdue: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match resend_overdue(&state, overdue).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "re-sent desired spec for overdue instances"),
            Err(e) => tracing::warn!(error = %e, "desired≠actual loop failed; will retry"),
        }
    }
}

/// Re-sends events for instances in a transitional state whose last event
/// is older than `overdue`. Returns how many were re-sent.
pub async fn resend_overdue(state: &AppState, overdue: Duration) -> Result<usize> {
    let mut tx = state.pool.begin().await?;
    let rows: Vec<(InstanceRow, String, i32)> = sqlx::query_as::<_, InstanceRowWithEvent>(&format!(
        "select {}, last_event, resends
         from instances
         where state in ('Submitted', 'Configuring', 'Restarting', 'Stopping', 'Starting', 'Deleting')
           and observed_generation < generation
           and last_event_at < now() - make_interval(secs => $1)
         order by last_event_at limit 500
         for update skip locked",
        store::COLUMNS
    ))
    .bind(overdue.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| (r.row, r.last_event, r.resends))
    .collect();
    for (row, last_event, resends) in &rows {
        if *resends >= MAX_RESENDS {
            fail_overdue(&mut tx, row, last_event, *resends, overdue).await?;
            continue;
        }
        // A check constraint keeps the column to EventKind names.
        let Some(kind) = EventKind::parse(last_event) else {
            tracing::error!(instance = %row.id, %last_event, "unknown last event; not re-sent");
            continue;
        };
        let restart = !row.restart_reasons.0.is_empty();
        enqueue(state, &mut tx, row, kind, restart).await?;
        sqlx::query(
            "update instances set last_event_at = now(), resends = resends + 1 where id = $1",
        )
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Re-sends of one generation's event before the instance fails.
pub const MAX_RESENDS: i32 = 3;

/// The data plane never answered: the instance goes to `Error` with why.
async fn fail_overdue(
    tx: &mut sqlx::PgConnection,
    row: &InstanceRow,
    last_event: &str,
    resends: i32,
    overdue: Duration,
) -> Result<()> {
    let current = row.state();
    let Ok(next) = domain::transition(current, domain::Event::Failed, Default::default()) else {
        return Ok(());
    };
    let reason = format!(
        "data plane {:?} has not reported on {last_event} (generation {}) after {resends} re-sends \
         over {} s; it may be down. The instance settles as soon as it reports",
        row.data_plane,
        row.generation,
        (i64::from(resends) + 1) * overdue.as_secs() as i64
    );
    tracing::warn!(instance_id = %row.id, %reason, "failing an overdue instance");
    sqlx::query(
        "update instances set state = $2, error = $3, updated_at = now(), last_event_at = now()
         where id = $1",
    )
    .bind(row.id)
    .bind(next.as_str())
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    store::record_history(
        tx,
        store::HistoryRecord {
            instance_id: row.id,
            from: Some(current),
            event: domain::Event::Failed.as_str(),
            to: next,
            generation: row.generation,
            actor: "control-plane",
            detail: Some(&reason),
        },
    )
    .await
}

struct InstanceRowWithEvent {
    row: InstanceRow,
    last_event: String,
    resends: i32,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for InstanceRowWithEvent {
    fn from_row(r: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(InstanceRowWithEvent {
            row: InstanceRow::from_row(r)?,
            last_event: r.try_get("last_event")?,
            resends: r.try_get("resends")?,
        })
    }
}
