//! Drift reports: every instance's declared spec against what its data plane
//! last observed, and the Prometheus gauges derived from them.

use std::collections::BTreeMap;

use api::{DriftReport, DriftStatus, InstanceDrift};
use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::error::{ApiError, Result};
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
    let mut drifted: BTreeMap<(String, String), i64> = BTreeMap::new();
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
    let mut gauges = vec![
        Gauges {
            name: "pgplane_instances",
            help: "Live instances by state.",
            samples: states
                .into_iter()
                .map(|(org, state, n)| (vec![("org", org), ("state", state)], n))
                .collect(),
        },
        Gauges {
            name: "pgplane_drifted_instances",
            help: "Instances whose observed spec differs from their source's declaration.",
            samples: drifted
                .into_iter()
                .map(|((org, source), n)| (vec![("org", org), ("source", source)], n))
                .collect(),
        },
    ];
    let rows = live_observations(conn).await?;
    gauges.extend(backup_gauges(&rows));
    gauges.extend(member_gauges(&rows));
    encode(gauges)
}

/// The Prometheus text (format 0.0.4) of one scrape's gauges. The values are
/// read per scrape, so they are exposed by a collector of constant gauges
/// registered with a registry of this scrape's own.
fn encode(gauges: Vec<Gauges>) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(gauges)));
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(out)
}

/// A gauge's samples, each with its labels.
#[derive(Debug)]
struct Gauges {
    name: &'static str,
    /// Exposed as is (the registry's full stop is only added to the help of
    /// registered metrics, not of collected ones).
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, i64)>,
}

/// The gauges read for one scrape. Every gauge is described, samples or not.
#[derive(Debug)]
struct Scrape(Vec<Gauges>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for gauges in &self.0 {
            let mut metric =
                encoder.encode_descriptor(gauges.name, gauges.help, None, MetricType::Gauge)?;
            for (labels, value) in &gauges.samples {
                ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// `(org, name, observed, backups)` of every live instance.
type Observation = (
    String,
    String,
    Option<Json<domain::ObservedSpec>>,
    Option<Json<domain::BackupCatalog>>,
);

async fn live_observations(conn: &mut PgConnection) -> Result<Vec<Observation>> {
    Ok(sqlx::query_as(
        "select org, name, observed, backups from instances
         where state <> 'Deleted' order by org, name",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Per member of each replicated instance: whether it is the primary,
/// whether it runs, its timeline and how far behind the primary it is.
fn member_gauges(rows: &[Observation]) -> Vec<Gauges> {
    let gauges: [(&str, &str); 4] = [
        (
            "pgplane_member_primary",
            "1 for the member that accepts writes, 0 for a standby.",
        ),
        ("pgplane_member_running", "1 when the member's server runs."),
        (
            "pgplane_member_timeline",
            "The WAL timeline the member is on.",
        ),
        (
            "pgplane_member_replication_lag_bytes",
            "Bytes of WAL a standby has still to replay, as the primary sees it.",
        ),
    ];
    gauges
        .map(|(name, help)| {
            let samples = rows
                .iter()
                .flat_map(|(org, instance, observed, _)| {
                    let members = observed
                        .as_ref()
                        .and_then(|o| o.0.members.clone())
                        .unwrap_or_default();
                    members.into_iter().filter_map(move |m| {
                        let value: Option<i64> = match name {
                            "pgplane_member_primary" => {
                                Some(i64::from(m.role == domain::MemberRole::Primary))
                            }
                            "pgplane_member_running" => Some(i64::from(m.running)),
                            "pgplane_member_timeline" => m.timeline.map(i64::from),
                            _ => m
                                .lag_bytes
                                .filter(|_| m.role == domain::MemberRole::Standby)
                                .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                        };
                        let labels = vec![
                            ("org", org.clone()),
                            ("instance", instance.clone()),
                            ("member", m.name.clone()),
                        ];
                        value.map(|v| (labels, v))
                    })
                })
                .collect();
            Gauges {
                name,
                help,
                samples,
            }
        })
        .into()
}

/// Per live instance: its backups and its WAL archive.
fn backup_gauges(rows: &[Observation]) -> Vec<Gauges> {
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
    let gauges = gauges.map(|(name, help)| {
        let samples = rows
            .iter()
            .filter_map(|(org, instance, observed, backups)| {
                let archive = observed.as_ref().and_then(|o| o.0.archive.as_ref());
                let catalog = backups.as_ref().map(|b| &b.0);
                let value: Option<i64> = match name {
                    "pgplane_backups" => {
                        catalog.map(|c| i64::try_from(c.backups.len()).unwrap_or(i64::MAX))
                    }
                    "pgplane_backup_last_success_timestamp_seconds" => catalog
                        .and_then(|c| c.backups.iter().rfind(|b| b.status == "ok"))
                        .map(|b| b.stopped_at.timestamp()),
                    "pgplane_restorable_from_timestamp_seconds" => catalog
                        .and_then(|c| c.restorable_from())
                        .map(|t| t.timestamp()),
                    "pgplane_wal_archive_failing" => archive.map(|a| i64::from(a.failing())),
                    "pgplane_wal_archive_failures" => archive.map(|a| a.failed_count),
                    _ => archive
                        .and_then(|a| a.last_archived_at)
                        .map(|t| t.timestamp()),
                };
                let labels = vec![("org", org.clone()), ("instance", instance.clone())];
                value.map(|v| (labels, v))
            })
            .collect();
        Gauges {
            name,
            help,
            samples,
        }
    });
    gauges.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_described_labelled_and_escaped() {
        let text = encode(vec![
            Gauges {
                name: "pgplane_instances",
                help: "Live instances by state.",
                samples: vec![
                    (vec![("org", "acme".into()), ("state", "Running".into())], 2),
                    (vec![("org", "acme".into()), ("state", "Stopped".into())], 1),
                ],
            },
            Gauges {
                name: "pgplane_drifted_instances",
                help: "Instances whose observed spec differs from their source's declaration.",
                samples: vec![(
                    vec![("org", "acme".into()), ("source", r#"git "a\b""#.into())],
                    0,
                )],
            },
            Gauges {
                name: "pgplane_backups",
                help: "Full backups kept.",
                samples: Vec::new(),
            },
        ])
        .unwrap();
        assert_eq!(
            text,
            "# HELP pgplane_instances Live instances by state.\n\
             # TYPE pgplane_instances gauge\n\
             pgplane_instances{org=\"acme\",state=\"Running\"} 2\n\
             pgplane_instances{org=\"acme\",state=\"Stopped\"} 1\n\
             # HELP pgplane_drifted_instances Instances whose observed spec differs from their source's declaration.\n\
             # TYPE pgplane_drifted_instances gauge\n\
             pgplane_drifted_instances{org=\"acme\",source=\"git \\\"a\\\\b\\\"\"} 0\n\
             # HELP pgplane_backups Full backups kept.\n\
             # TYPE pgplane_backups gauge\n"
        );
    }
}
