//! What the instance actually runs, reported as a [`domain::ObservedSpec`].

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use domain::quantity::normalize_setting;
use domain::restart::effective_config;
use domain::{Activity, ArchiveStatus, InstanceSpec, ObservedSpec};
use tokio_postgres::Client;

use crate::converge::pending_restart;
use crate::error::{blocking, Result};
use crate::Agent;

impl Agent {
    /// Observes the instance: version, installed extensions, the current
    /// values of the parameters the spec declares, and pending restarts.
    /// Never starts a stopped server.
    pub async fn observe(&self, spec: &InstanceSpec) -> Result<ObservedSpec> {
        match self.connect_running().await? {
            Some(client) => self.observe_with(&client, spec).await,
            None => self.observe_stopped().await,
        }
    }

    /// What is observed of a server that does not run.
    async fn observe_stopped(&self) -> Result<ObservedSpec> {
        let bins = self.bins.clone();
        Ok(ObservedSpec {
            postgres_version: blocking("reading the Postgres version", move || bins.version())
                .await?,
            running: false,
            ..ObservedSpec::default()
        })
    }

    /// Observes the instance as [`Agent::observe`] does and, while it runs,
    /// samples what it is doing (one connection for both).
    pub async fn sample(&self, spec: &InstanceSpec) -> Result<(ObservedSpec, Option<Activity>)> {
        let Some(client) = self.connect_running().await? else {
            return Ok((self.observe_stopped().await?, None));
        };
        let observed = self.observe_with(&client, spec).await?;
        let activity = activity(&client)
            .await
            .map_err(|e| self.sql_error("sampling activity", e))?;
        Ok((observed, Some(activity)))
    }

    /// Observes the instance as [`Agent::observe`] does, with the running
    /// server's start time (`pg_postmaster_start_time()`; `None` while it is
    /// stopped, so a changed time means the server restarted).
    pub async fn observe_started(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(ObservedSpec, Option<DateTime<Utc>>)> {
        let Some(client) = self.connect_running().await? else {
            return Ok((self.observe_stopped().await?, None));
        };
        let observed = self.observe_with(&client, spec).await?;
        let micros: i64 = client
            .query_one(
                "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("reading the start time", e))?
            .get(0);
        Ok((observed, Utc.timestamp_micros(micros).single()))
    }

    pub(crate) async fn observe_with(
        &self,
        client: &Client,
        spec: &InstanceSpec,
    ) -> Result<ObservedSpec> {
        let err = |e| self.sql_error("observing", e);
        let version: i32 = client
            .query_one(
                "SELECT current_setting('server_version_num')::int / 10000",
                &[],
            )
            .await
            .map_err(err)?
            .get(0);
        let extension_versions = crate::converge::installed_extensions(client)
            .await
            .map_err(err)?;
        let extensions = extension_versions.keys().cloned().collect();
        let desired = effective_config(spec);
        let names: Vec<&str> = desired.keys().map(String::as_str).collect();
        let rows = client
            .query(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1)",
                &[&names],
            )
            .await
            .map_err(err)?;
        let config: BTreeMap<String, String> = rows
            .iter()
            .map(|r| {
                let (name, current): (String, String) = (r.get(0), r.get(1));
                let value = match desired.get(&name) {
                    Some(wanted) if same_setting(&name, wanted, &current) => wanted.clone(),
                    _ => current,
                };
                (name, value)
            })
            .collect();
        let (roles, databases) = self.observe_inside(client, spec).await?;
        Ok(ObservedSpec {
            members: None,
            roles,
            databases,
            postgres_version: version.to_string(),
            extensions,
            extension_versions,
            config,
            running: true,
            pending_restart: pending_restart(client).await.map_err(err)?,
            superuser_access: Some(client_role_is_superuser(client).await.map_err(err)?),
            archive: match self.archiving() {
                Some(_) => Some(archive_status(client).await.map_err(err)?),
                None => None,
            },
        })
    }
}

/// Client connections, transactions so far and database sizes. The agent's
/// own connection is not a client's.
async fn activity(client: &Client) -> Result<Activity, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()),
                    (SELECT coalesce(sum(xact_commit + xact_rollback), 0)::int8 FROM pg_stat_database),
                    (SELECT coalesce(sum(pg_database_size(oid)), 0)::int8 FROM pg_database
                     WHERE datallowconn AND NOT datistemplate)",
            &[],
        )
        .await?;
    Ok(Activity {
        connections: row.get(0),
        transactions: row.get(1),
        database_bytes: row.get(2),
    })
}

/// `pg_stat_archiver`, the running `archive_mode`, and archiving settings
/// written into the configuration files (which the postmaster's own
/// options override).
async fn archive_status(client: &Client) -> Result<ArchiveStatus, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('archive_mode'), archived_count, failed_count,
                    last_archived_wal, extract(epoch FROM last_archived_time)::float8,
                    last_failed_wal, extract(epoch FROM last_failed_time)::float8
             FROM pg_stat_archiver",
            &[],
        )
        .await?;
    let time = |i: usize| -> Option<DateTime<Utc>> {
        let secs: Option<f64> = row.get(i);
        Utc.timestamp_millis_opt((secs? * 1000.0) as i64).single()
    };
    let overridden = client
        .query(
            "SELECT name, setting, regexp_replace(sourcefile, '.*/', '') FROM pg_file_settings
             WHERE name IN ('archive_mode', 'archive_command', 'archive_library')
             ORDER BY seqno",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let (name, setting, file): (String, Option<String>, Option<String>) =
                (r.get(0), r.get(1), r.get(2));
            format!(
                "{name} = {} in {}",
                setting.unwrap_or_default(),
                file.unwrap_or_default()
            )
        })
        .collect();
    Ok(ArchiveStatus {
        mode: row.get(0),
        overridden,
        archived_count: row.get(1),
        failed_count: row.get(2),
        last_archived_wal: row.get(3),
        last_archived_at: time(4),
        last_failed_wal: row.get(5),
        last_failed_at: time(6),
    })
}

/// `pg_roles.rolsuper` of the client role.
pub(crate) async fn client_role_is_superuser(
    client: &Client,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&crate::USER_ROLE],
        )
        .await?;
    Ok(row.get(0))
}

/// Whether two spellings of a parameter value mean the same (`16MB` and
/// `16384kB`; `a, b` and `a,b` for lists).
fn same_setting(name: &str, a: &str, b: &str) -> bool {
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(|s| s.trim().trim_matches('"').to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    normalize_setting(name, a) == normalize_setting(name, b)
        || (a.contains(',') && list(a) == list(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_setting_ignores_spelling() {
        assert!(same_setting("work_mem", "16MB", "16384kB"));
        assert!(!same_setting("work_mem", "16MB", "64MB"));
        assert!(same_setting("shared_preload_libraries", "a, b", "a,b"));
        assert!(same_setting("jit", "true", "on"));
    }
}
