//! Converging a running instance to a spec: configuration through
//! `ALTER SYSTEM` + reload, a restart when Postgres says one is pending, then
//! extensions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use domain::restart::effective_config;
use domain::{InstanceSpec, ObservedSpec};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::sql::{check_parameter_name, quote_ident, quote_literal};
use crate::Agent;

const RELOAD_DEADLINE: Duration = Duration::from_secs(10);
const RELOAD_POLL: Duration = Duration::from_millis(2);

/// What [`Agent::converge`] did and what it saw afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvergeOutcome {
    /// Whether the server was restarted (pending restart or forced).
    pub restarted: bool,
    /// The parameters `pg_settings.pending_restart` named before restarting.
    pub pending_restart_before: Vec<String>,
    pub observed: ObservedSpec,
}

impl Agent {
    /// Converges the instance to `spec`:
    /// 1. `spec.stopped`: stop, and report it stopped.
    /// 2. Start if needed; refuse extensions the server does not have.
    /// 3. `ALTER SYSTEM SET` the effective config (user parameters plus the
    ///    preload libraries of its extensions), `RESET` what is no longer
    ///    wanted, reload and wait until the reload took effect.
    /// 4. Restart when `pg_settings.pending_restart` names anything, or when
    ///    `force_restart`.
    /// 5. `CREATE EXTENSION` the wanted ones, `DROP EXTENSION` the others.
    #[tracing::instrument(skip_all, fields(data_dir = %self.layout.data_dir.display(), force_restart = force_restart))]
    pub async fn converge(
        &self,
        spec: &InstanceSpec,
        force_restart: bool,
    ) -> Result<ConvergeOutcome> {
        if spec.stopped {
            self.stop().await?;
            return Ok(ConvergeOutcome {
                restarted: false,
                pending_restart_before: Vec::new(),
                observed: self.observe(spec).await?,
            });
        }
        let desired = effective_config(spec);
        check_parameters(&desired)?;
        let client = self.start_connected().await?;
        self.check_extensions_available(&client, spec).await?;
        if self.apply_config(&client, &desired).await? {
            self.reload(&client).await?;
        }
        let pending = pending_restart(&client)
            .await
            .map_err(|e| self.sql_error("reading pending_restart", e))?;
        let restarted = force_restart || !pending.is_empty();
        let client = if restarted {
            tracing::info!(?pending, force_restart, "restarting");
            drop(client);
            self.stop().await?;
            self.start_connected().await?
        } else {
            client
        };
        self.converge_extensions(&client, spec).await?;
        Ok(ConvergeOutcome {
            restarted,
            pending_restart_before: pending,
            observed: self.observe_with(&client, spec).await?,
        })
    }

    async fn check_extensions_available(&self, client: &Client, spec: &InstanceSpec) -> Result<()> {
        let rows = client
            .query(
                "SELECT name FROM pg_available_extensions ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("listing available extensions", e))?;
        let available: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        match spec
            .extension_names()
            .find(|n| !available.iter().any(|a| a == n))
        {
            Some(name) => Err(Error::ExtensionUnavailable {
                name: name.to_owned(),
                available,
            }),
            None => Ok(()),
        }
    }

    /// `ALTER SYSTEM SET` what differs from `postgresql.auto.conf`, `RESET`
    /// what is there but no longer desired. Returns whether anything changed.
    async fn apply_config(
        &self,
        client: &Client,
        desired: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let rows = client
            .query(
                "SELECT lower(name), setting FROM pg_file_settings \
                 WHERE sourcefile LIKE '%/postgresql.auto.conf' AND name IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("reading postgresql.auto.conf", e))?;
        let current: BTreeMap<String, Option<String>> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut changed = false;
        for (name, value) in desired {
            if current
                .get(name)
                .is_some_and(|v| v.as_deref() == Some(value))
            {
                continue;
            }
            tracing::info!(name, value, "ALTER SYSTEM SET");
            let sql = format!("ALTER SYSTEM SET {name} = {}", quote_literal(value));
            client
                .batch_execute(&sql)
                .await
                .map_err(|source| Error::ConfigRejected {
                    data_dir: self.layout.data_dir.clone(),
                    name: name.clone(),
                    value: value.clone(),
                    source,
                })?;
            changed = true;
        }
        for name in current.keys().filter(|n| !desired.contains_key(*n)) {
            if check_parameter_name(name).is_err() {
                continue;
            }
            tracing::info!(name, "ALTER SYSTEM RESET");
            client
                .batch_execute(&format!("ALTER SYSTEM RESET {name}"))
                .await
                .map_err(|e| self.sql_error("ALTER SYSTEM RESET", e))?;
            changed = true;
        }
        Ok(changed)
    }

    /// `pg_reload_conf()`, then waits until this session has re-read the
    /// configuration. The postmaster forwards SIGHUP to backends only after
    /// reloading itself, so from then on new connections see the new values
    /// and `pending_restart` is accurate.
    async fn reload(&self, client: &Client) -> Result<()> {
        let err = |e| self.sql_error("reloading the configuration", e);
        let load_time = "SELECT pg_conf_load_time()::text";
        let before: String = client.query_one(load_time, &[]).await.map_err(err)?.get(0);
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(err)?;
        let started = Instant::now();
        loop {
            let now: String = client.query_one(load_time, &[]).await.map_err(err)?.get(0);
            if now != before {
                return Ok(());
            }
            if started.elapsed() > RELOAD_DEADLINE {
                return Err(Error::Timeout {
                    data_dir: self.layout.data_dir.clone(),
                    op: "waiting for the configuration reload",
                    seconds: RELOAD_DEADLINE.as_secs(),
                });
            }
            tokio::time::sleep(RELOAD_POLL).await;
        }
    }

    /// `CREATE EXTENSION` what the spec wants, `DROP EXTENSION` the rest,
    /// keeping `plpgsql` and whatever the wanted extensions depend on.
    async fn converge_extensions(&self, client: &Client, spec: &InstanceSpec) -> Result<()> {
        for name in spec.extension_names() {
            let sql = format!(
                "CREATE EXTENSION IF NOT EXISTS {} CASCADE",
                quote_ident(name)
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(|source| Error::Extension {
                    data_dir: self.layout.data_dir.clone(),
                    op: "creating",
                    name: name.to_owned(),
                    source,
                })?;
        }
        let wanted: Vec<&str> = spec.extension_names().collect();
        let rows = client
            .query(
                "WITH RECURSIVE keep(oid) AS ( \
                   SELECT oid FROM pg_extension WHERE extname = ANY($1) OR extname = 'plpgsql' \
                   UNION \
                   SELECT d.refobjid FROM pg_depend d JOIN keep k ON d.objid = k.oid \
                   WHERE d.classid = 'pg_extension'::regclass \
                     AND d.refclassid = 'pg_extension'::regclass) \
                 SELECT extname FROM pg_extension WHERE oid NOT IN (SELECT oid FROM keep) \
                 ORDER BY extname",
                &[&wanted],
            )
            .await
            .map_err(|e| self.sql_error("listing extensions to drop", e))?;
        let unwanted: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
        if unwanted.is_empty() {
            return Ok(());
        }
        tracing::info!(?unwanted, "DROP EXTENSION");
        let list: Vec<String> = unwanted.iter().map(|n| quote_ident(n)).collect();
        client
            .batch_execute(&format!("DROP EXTENSION {}", list.join(", ")))
            .await
            .map_err(|source| Error::Extension {
                data_dir: self.layout.data_dir.clone(),
                op: "dropping",
                name: unwanted.into_iter().collect::<Vec<_>>().join(", "),
                source,
            })
    }
}

fn check_parameters(desired: &BTreeMap<String, String>) -> Result<()> {
    for name in desired.keys() {
        check_parameter_name(name)?;
        if domain::settings::is_reserved(name) {
            return Err(Error::ReservedParameter { name: name.clone() });
        }
    }
    Ok(())
}

/// `pg_settings.pending_restart`, made current first: reading
/// `pg_file_settings` re-evaluates the files in this session, which sets (or
/// clears) the flag for every postmaster parameter whose file value differs
/// from the running one, without waiting for any signal.
pub(crate) async fn pending_restart(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    client
        .batch_execute("SELECT count(*) FROM pg_file_settings")
        .await?;
    let rows = client
        .query(
            "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
