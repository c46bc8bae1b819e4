//! Drift reports: every instance's declared spec against what its data plane
//! last observed, and the Prometheus gauges derived from them.

use std::collections::BTreeMap;
use std::fmt::Write;

use api::{DriftReport, DriftStatus, InstanceDrift};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::error::Result;
use crate::store::{self, InstanceRow};

/// The drift of one instance at `now`.
pub fn instance_drift(row: InstanceRow, now: DateTime<Utc>) -> InstanceDrift {
    let state = row.state();
    let (status, fields) = match &row.observed {
        None => (DriftStatus::Unobserved, Vec::new()),
        Some(_) if state.is_transitional() || row.observed_generation < row.generation => {
            (DriftStatus::Converging, Vec::new())
        }
        Some(observed) => {
            let fields = domain::drift(&row.spec.0, &observed.0);
            let status = if fields.is_empty() {
                DriftStatus::InSync
            } else {
                DriftStatus::Drifted
            };
            (status, fields)
        }
    };
    InstanceDrift {
        id: row.id,
        name: row.name,
        owner: row.owner,
        state,
        status,
        generation: row.generation,
        observed_generation: row.observed_generation,
        observed_at: row.observed_at,
        observation_age_seconds: row.observed_at.map(|t| (now - t).num_seconds().max(0)),
        fields,
    }
}

/// What healing a drifted instance means: the restart its drifted fields
/// need to be put back (empty: a reload will do), and a line naming each
/// field, observed → declared.
pub fn heal_plan(item: &InstanceDrift) -> (Vec<String>, String) {
    let restart = item
        .fields
        .iter()
        .filter(|f| {
            f.path == "pendingRestart"
                || f.path
                    .strip_prefix("config.")
                    .is_some_and(domain::settings::needs_restart)
        })
        .map(|f| format!("{} drifted and only takes effect after a restart", f.path))
        .collect();
    let detail = item
        .fields
        .iter()
        .map(|f| {
            format!(
                "{}: observed {} → declared {}",
                f.path,
                f.observed.as_deref().unwrap_or("unset"),
                f.declared.as_deref().unwrap_or("unset")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    (restart, detail)
}

/// The drift report of an organisation's live instances.
pub async fn report(conn: &mut PgConnection, org: &str, now: DateTime<Utc>) -> Result<DriftReport> {
    let rows = store::list_instances(conn, org, None).await?;
    let items: Vec<InstanceDrift> = rows.into_iter().map(|r| instance_drift(r, now)).collect();
    let drifted = items
        .iter()
        .filter(|i| i.status == DriftStatus::Drifted)
        .count();
    Ok(DriftReport { items, drifted })
}

/// Prometheus text exposition: instances per state and drifted instances
/// per source, for every organisation.
pub async fn metrics(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<String> {
    let states: Vec<(String, String, i64)> = sqlx::query_as(
        "select org, state, count(*) from instances where state <> 'Deleted' group by org, state order by org, state",
    )
    .fetch_all(&mut *conn)
    .await?;
    let orgs: Vec<String> = sqlx::query_scalar("select name from orgs order by name")
        .fetch_all(&mut *conn)
        .await?;
    let mut drifted: BTreeMap<(String, String), usize> = BTreeMap::new();
    for org in &orgs {
        for item in report(conn, org, now).await?.items {
            let n = drifted
                .entry((org.clone(), item.owner.clone()))
                .or_default();
            if item.status == DriftStatus::Drifted {
                *n += 1;
            }
        }
    }
    let mut out = String::new();
    out.push_str(
        "# HELP pgplane_instances Live instances by state.\n# TYPE pgplane_instances gauge\n",
    );
    for (org, state, n) in states {
        let _ = writeln!(
            out,
            "pgplane_instances{{org=\"{org}\",state=\"{state}\"}} {n}"
        );
    }
    out.push_str("# HELP pgplane_drifted_instances Instances whose observed spec differs from their source's declaration.\n# TYPE pgplane_drifted_instances gauge\n");
    for ((org, source), n) in drifted {
        let _ = writeln!(
            out,
            "pgplane_drifted_instances{{org=\"{org}\",source=\"{}\"}} {n}",
            source.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
    backup_metrics(conn, &mut out).await?;
    Ok(out)
}

/// Per live instance: its backups and its WAL archive.
async fn backup_metrics(conn: &mut PgConnection, out: &mut String) -> Result<()> {
    type Row = (
        String,
        String,
        Option<Json<domain::ObservedSpec>>,
        Option<Json<domain::BackupCatalog>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select org, name, observed, backups from instances
         where state <> 'Deleted' order by org, name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let gauges: [(&str, &str); 6] = [
        ("pgplane_backups", "Full backups kept."),
        (
            "pgplane_backup_last_success_timestamp_seconds",
            "When the newest backup finished.",
        ),
        (
            "pgplane_restorable_from_timestamp_seconds",
            "The earliest point a restore can reach.",
        ),
        (
            "pgplane_wal_archive_failing",
            "1 when the newest attempt to archive WAL failed.",
        ),
        (
            "pgplane_wal_archive_failures",
            "WAL segments that failed to archive since the server started (pg_stat_archiver).",
        ),
        (
            "pgplane_wal_last_archived_timestamp_seconds",
            "When the newest WAL segment was archived.",
        ),
    ];
    for (name, help) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (org, instance, observed, backups) in &rows {
            let archive = observed.as_ref().and_then(|o| o.0.archive.as_ref());
            let catalog = backups.as_ref().map(|b| &b.0);
            let value: Option<f64> = match name {
                "pgplane_backups" => catalog.map(|c| c.backups.len() as f64),
                "pgplane_backup_last_success_timestamp_seconds" => catalog
                    .and_then(|c| c.backups.iter().rfind(|b| b.status == "ok"))
                    .map(|b| b.stopped_at.timestamp() as f64),
                "pgplane_restorable_from_timestamp_seconds" => catalog
                    .and_then(|c| c.restorable_from())
                    .map(|t| t.timestamp() as f64),
                "pgplane_wal_archive_failing" => archive.map(|a| f64::from(u8::from(a.failing()))),
                "pgplane_wal_archive_failures" => archive.map(|a| a.failed_count as f64),
                _ => archive
                    .and_then(|a| a.last_archived_at)
                    .map(|t| t.timestamp() as f64),
            };
            if let Some(v) = value {
                let _ = writeln!(out, "{name}{{org=\"{org}\",instance=\"{instance}\"}} {v}");
            }
        }
    }
    Ok(())
}
