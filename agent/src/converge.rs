//! Converging a running instance to a spec: configuration through
//! `ALTER SYSTEM` + reload, a restart when Postgres says one is pending, then
//! extensions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use domain::restart::effective_config;
use domain::{Ensure, Extension, InstanceSpec, ObservedSpec};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::inside::RolePasswords;
use crate::sql::{check_parameter_name, quote_ident, quote_literal};
use crate::{Agent, USER_ROLE};

const RELOAD_DEADLINE: Duration = Duration::from_secs(10);
pub(crate) const AUTO_CONF: &str = "postgresql.auto.conf";
/// A copy of the last `postgresql.auto.conf` the server started with.
const STARTED_CONF: &str = "postgresql.auto.conf.pgplane-started";
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

/// When a converge restarts the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// When `pg_settings.pending_restart` names anything.
    IfPending,
    /// Always.
    Forced,
    /// Never: a pending restart is left pending.
    Deferred,
}

impl Agent {
    /// Converges the instance to `spec`:
    /// 1. `spec.stopped`: stop, and report it stopped.
    /// 2. Refuse preload libraries the server does not have; start if needed
    ///    (putting back the last configuration that started when the current
    ///    one does not); refuse extensions the server does not have.
    /// 3. `ALTER SYSTEM SET` the effective config (user parameters plus the
    ///    preload libraries of its extensions), `RESET` what is no longer
    ///    wanted, reload and wait until the reload took effect.
    /// 4. Restart when `pg_settings.pending_restart` names anything, or when
    ///    `force_restart`.
    /// 5. Extensions: create the declared ones (at their versions), update
    ///    those at another version, drop those declared absent.
    ///
    /// Steps 3–4 are one transaction: when a value is refused, a reload
    /// reports an error, or the server does not come back up, the previous
    /// `postgresql.auto.conf` is put back (pgplane owns that file) and the
    /// server runs with it again; the error says what Postgres said.
    /// 6. Declared roles and databases (see [`Agent::converge_with`]).
    pub async fn converge(
        &self,
        spec: &InstanceSpec,
        force_restart: bool,
    ) -> Result<ConvergeOutcome> {
        self.converge_with(spec, force_restart, &RolePasswords::default())
            .await
    }

    /// [`Agent::converge`], setting the declared roles' passwords from
    /// `passwords` (a role without one there keeps the password it has).
    #[tracing::instrument(skip_all, fields(data_dir = %self.layout.data_dir.display(), force_restart = force_restart))]
    pub async fn converge_with(
        &self,
        spec: &InstanceSpec,
        force_restart: bool,
        passwords: &RolePasswords,
    ) -> Result<ConvergeOutcome> {
        let restart = match force_restart {
            true => Restart::Forced,
            false => Restart::IfPending,
        };
        self.converge_inner(spec, restart, passwords).await
    }

    /// [`Agent::converge_with`] for a primary whose standbys restart first:
    /// the configuration is applied and reloaded, but when it needs a
    /// restart the server keeps running with it pending, and the steps after
    /// the restart (extensions, roles, databases) wait for a later converge
    /// of whichever member is the primary then. The outcome's
    /// `pending_restart_before` names what is pending; `restarted` is false.
    #[tracing::instrument(skip_all, fields(data_dir = %self.layout.data_dir.display()))]
    pub async fn converge_deferring_restart(
        &self,
        spec: &InstanceSpec,
        passwords: &RolePasswords,
    ) -> Result<ConvergeOutcome> {
        self.converge_inner(spec, Restart::Deferred, passwords)
            .await
    }

    async fn converge_inner(
        &self,
        spec: &InstanceSpec,
        restart: Restart,
        passwords: &RolePasswords,
    ) -> Result<ConvergeOutcome> {
        if let Some(limit) = &self.memory_limit {
            limit.apply(&self.run_as)?;
        }
        if spec.stopped {
            self.stop().await?;
            return Ok(ConvergeOutcome {
                restarted: false,
                pending_restart_before: Vec::new(),
                observed: self.observe(spec).await?,
            });
        }
        domain::inside::check_spec(spec).map_err(|e| Error::InsideRefused(e.to_string()))?;
        let desired = effective_config(spec);
        check_parameters(&desired)?;
        self.check_preload_libraries(&desired)?;
        let client = self.start_or_restore().await?;
        self.check_extensions_available(&client, spec).await?;
        self.converge_client_role(&client, spec.superuser_access)
            .await?;
        let before = self.read_auto_conf()?;
        let (client, restarted, pending) = match self
            .apply_config_and_restart(client, &desired, restart)
            .await
        {
            Ok(done) => done,
            Err(cause) => return Err(self.restore_auto_conf(before, cause).await),
        };
        if restart == Restart::Deferred && !pending.is_empty() {
            return Ok(ConvergeOutcome {
                restarted: false,
                pending_restart_before: pending,
                observed: self.observe_with(&client, spec).await?,
            });
        }
        self.remember_started_config()?;
        self.converge_extensions(&client, &spec.extensions, USER_ROLE)
            .await?;
        self.converge_inside(&client, spec, passwords).await?;
        Ok(ConvergeOutcome {
            restarted,
            pending_restart_before: pending,
            observed: self.observe_with(&client, spec).await?,
        })
    }

    /// Steps 3–4 of [`Agent::converge`].
    async fn apply_config_and_restart(
        &self,
        client: Client,
        desired: &BTreeMap<String, String>,
        restart: Restart,
    ) -> Result<(Client, bool, Vec<String>)> {
        if self.apply_config(&client, desired).await? {
            self.reload(&client).await?;
            self.check_reloaded(&client).await?;
        }
        let pending = pending_restart(&client)
            .await
            .map_err(|e| self.sql_error("reading pending_restart", e))?;
        let restarted = match restart {
            Restart::Forced => true,
            Restart::IfPending => !pending.is_empty(),
            Restart::Deferred => false,
        };
        let client = if restarted {
            tracing::info!(?pending, ?restart, "restarting");
            drop(client);
            self.stop().await?;
            self.start_connected().await?
        } else {
            client
        };
        Ok((client, restarted, pending))
    }

    /// Starts the server; when it does not start and the configuration is
    /// not the last one that started, puts that one back and starts again.
    pub async fn start_or_restore(&self) -> Result<Client> {
        let failed = match self.start_connected().await {
            Ok(client) => return Ok(client),
            Err(e @ Error::Start { .. }) => e,
            Err(e) => return Err(e),
        };
        let good = std::fs::read_to_string(self.layout.data_dir.join(STARTED_CONF)).ok();
        if good.is_none() || good != self.read_auto_conf()? {
            let Some(good) = good else { return Err(failed) };
            tracing::warn!(error = %failed, "restoring the last configuration that started");
            self.write_auto_conf(Some(&good))?;
            return self.start_connected().await;
        }
        Err(failed)
    }

    /// Puts `before` back as `postgresql.auto.conf` after `cause` and makes
    /// the server run with it; returns the error to report.
    async fn restore_auto_conf(&self, before: Option<String>, cause: Error) -> Error {
        tracing::warn!(error = %cause, "configuration change failed; restoring the previous one");
        if let Err(e) = self.write_auto_conf(before.as_deref()) {
            return Error::ConfigRollback {
                cause: Box::new(cause),
                rollback: Box::new(e),
            };
        }
        let back = match self.running_pid() {
            Some(_) => match self.try_connect().await {
                Ok(client) => self.reload(&client).await,
                Err(e) => Err(self.sql_error("connecting to reload", e)),
            },
            None => self.start_connected().await.map(drop),
        };
        match back {
            Ok(()) => Error::ConfigRestored {
                cause: Box::new(cause),
            },
            Err(e) => Error::ConfigRollback {
                cause: Box::new(cause),
                rollback: Box::new(e),
            },
        }
    }

    fn read_auto_conf(&self) -> Result<Option<String>> {
        let path = self.layout.data_dir.join(AUTO_CONF);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", &path)(e)),
        }
    }

    /// Replaces `postgresql.auto.conf` atomically (or removes it for `None`).
    fn write_auto_conf(&self, text: Option<&str>) -> Result<()> {
        let path = self.layout.data_dir.join(AUTO_CONF);
        let Some(text) = text else {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("removing", &path)(e))
                }
                _ => Ok(()),
            };
        };
        self.write_owned(&path, text)
    }

    /// Sets `name` in `postgresql.auto.conf` as ALTER SYSTEM would write it,
    /// replacing any line for it.
    fn set_in_auto_conf(&self, name: &str, value: &str) -> Result<()> {
        let text = self.read_auto_conf()?.unwrap_or_default();
        let mut out: String = text
            .lines()
            .filter(|line| {
                line.split_once('=')
                    .is_none_or(|(key, _)| !key.trim().eq_ignore_ascii_case(name))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        if value.contains(['\n', '\r', '\0']) {
            return Err(Error::ConfigInvalid {
                name: name.to_owned(),
                value: value.to_owned(),
                message: "a value must be a single line".to_owned(),
            });
        }
        // As ALTER SYSTEM writes values: quotes and backslashes doubled.
        let quoted = value.replace('\\', "\\\\").replace('\'', "''");
        out.push_str(&format!("{name} = '{quoted}'\n"));
        self.write_auto_conf(Some(&out))
    }

    /// Remembers the configuration the server runs with now, as the one to
    /// go back to when a later one does not start.
    fn remember_started_config(&self) -> Result<()> {
        match self.read_auto_conf()? {
            Some(text) => self.write_owned(&self.layout.data_dir.join(STARTED_CONF), &text),
            None => Ok(()),
        }
    }

    /// Writes a file in the data directory as the server's OS user's, 0600,
    /// through a temporary file and a rename.
    fn write_owned(&self, path: &std::path::Path, text: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let tmp = path.with_extension("pgplane-tmp");
        std::fs::write(&tmp, text).map_err(Error::io("writing", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::io("setting permissions of", &tmp))?;
        self.run_as.chown(&tmp)?;
        std::fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))
    }

    /// After a reload: the values Postgres could not use (a reload keeps
    /// the old value of a parameter whose new one is invalid).
    pub(crate) async fn check_reloaded(&self, client: &Client) -> Result<()> {
        let rows = client
            .query(
                "SELECT name, setting, error FROM pg_file_settings \
                 WHERE error IS NOT NULL AND error <> 'setting could not be applied' \
                 AND sourcefile LIKE '%/postgresql.auto.conf'",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("reading pg_file_settings", e))?;
        match rows.first() {
            None => Ok(()),
            Some(r) => Err(Error::ConfigInvalid {
                name: r.get::<_, Option<String>>(0).unwrap_or_default(),
                value: r.get::<_, Option<String>>(1).unwrap_or_default(),
                message: r.get(2),
            }),
        }
    }

    /// Refuses preload libraries whose file is not in the server's
    /// `$libdir`: a server told to preload a missing library does not start.
    fn check_preload_libraries(&self, desired: &BTreeMap<String, String>) -> Result<()> {
        let Some(list) = desired.get("shared_preload_libraries") else {
            return Ok(());
        };
        let libdir = self.bins.pkglibdir();
        for lib in list.split(',').map(|l| l.trim().trim_matches('"').trim()) {
            if lib.is_empty() {
                continue;
            }
            let file = lib.strip_prefix("$libdir/").unwrap_or(lib);
            let ok = !file.contains('/')
                && (libdir.join(file).is_file() || libdir.join(format!("{file}.so")).is_file());
            if !ok {
                return Err(Error::LibraryMissing {
                    name: lib.to_owned(),
                    libdir,
                });
            }
        }
        Ok(())
    }

    /// Makes the client role a superuser or an ordinary database owner as
    /// the spec says. Taking superuser away also takes away the predefined
    /// roles a superuser could have granted it to reach the server's files
    /// and programs; what a superuser did inside the instance stays.
    async fn converge_client_role(&self, client: &Client, superuser: bool) -> Result<()> {
        let err = |e| self.sql_error("changing the client role's privileges", e);
        if crate::observe::client_role_is_superuser(client)
            .await
            .map_err(err)?
            == superuser
        {
            return Ok(());
        }
        let sql = if superuser {
            format!("ALTER ROLE {USER_ROLE} SUPERUSER")
        } else {
            format!(
                "ALTER ROLE {USER_ROLE} NOSUPERUSER; \
                 REVOKE pg_execute_server_program, pg_read_server_files, pg_write_server_files \
                 FROM {USER_ROLE}"
            )
        };
        tracing::info!(superuser, "changing the client role");
        client.batch_execute(&sql).await.map_err(err)
    }

    /// Refuses declared extensions, and versions of them, the server cannot
    /// install (`pg_available_extension_versions`), before anything changes.
    async fn check_extensions_available(&self, client: &Client, spec: &InstanceSpec) -> Result<()> {
        let rows = client
            .query(
                "SELECT name::text, version FROM pg_available_extension_versions",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("listing available extensions", e))?;
        let mut available: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &rows {
            available.entry(r.get(0)).or_default().push(r.get(1));
        }
        for (_, ext) in spec
            .all_extensions()
            .filter(|(_, e)| e.ensure == Ensure::Present)
        {
            let Some(versions) = available.get(&ext.name) else {
                return Err(Error::ExtensionUnavailable {
                    name: ext.name.clone(),
                    available: available.keys().cloned().collect(),
                });
            };
            if let Some(v) = ext.version.as_ref().filter(|v| !versions.contains(v)) {
                let mut versions = versions.clone();
                versions.sort_by(|a, b| domain::extension::compare_versions(a, b));
                return Err(Error::ExtensionVersionUnavailable {
                    name: ext.name.clone(),
                    version: v.clone(),
                    available: versions,
                });
            }
        }
        Ok(())
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
            match client.batch_execute(&sql).await {
                Ok(()) => {}
                // PostgreSQL 15's ALTER SYSTEM knows an extension's
                // parameters only once its library is loaded, which for a
                // preloaded one is after the restart this change causes.
                // The server reads the line at that start.
                Err(e) if name.contains('.') && e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                    tracing::info!(name, "not loaded yet: written to postgresql.auto.conf");
                    self.set_in_auto_conf(name, value)?;
                }
                Err(source) => {
                    return Err(Error::ConfigRejected {
                        data_dir: self.layout.data_dir.clone(),
                        name: name.clone(),
                        value: value.clone(),
                        source,
                    })
                }
            }
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
    pub(crate) async fn reload(&self, client: &Client) -> Result<()> {
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

    /// `CREATE EXTENSION` (at the declared version) what the spec wants and
    /// is not installed, `ALTER EXTENSION … UPDATE TO` what is installed at
    /// another version than declared, `DROP EXTENSION` (never cascading) what
    /// the spec declares absent. Extensions the spec does not name are left
    /// as they are. `client` is connected to the database they go into;
    /// `grantee` may use their reviewed schemas.
    pub(crate) async fn converge_extensions(
        &self,
        client: &Client,
        extensions: &[Extension],
        grantee: &str,
    ) -> Result<()> {
        let installed = installed_extensions(client)
            .await
            .map_err(|e| self.sql_error("listing installed extensions", e))?;
        let failed = |op: &'static str, name: &str| {
            let data_dir = self.layout.data_dir.clone();
            let name = name.to_owned();
            move |source| Error::Extension {
                data_dir,
                op,
                name,
                source,
            }
        };
        for ext in extensions {
            let name = ext.name.as_str();
            let version = ext.version.as_deref();
            let change = match (ext.ensure, installed.get(name)) {
                (Ensure::Present, None) => {
                    let mut sql = format!("CREATE EXTENSION IF NOT EXISTS {}", quote_ident(name));
                    if let Some(v) = version {
                        sql.push_str(&format!(" VERSION {}", quote_literal(v)));
                    }
                    sql.push_str(" CASCADE");
                    Some(("creating", sql))
                }
                (Ensure::Present, Some(current)) => version.filter(|v| v != current).map(|v| {
                    let sql = format!(
                        "ALTER EXTENSION {} UPDATE TO {}",
                        quote_ident(name),
                        quote_literal(v)
                    );
                    ("updating", sql)
                }),
                (Ensure::Absent, Some(_)) => {
                    tracing::info!(name, "DROP EXTENSION");
                    let sql = format!("DROP EXTENSION {} RESTRICT", quote_ident(name));
                    if let Err(source) = client.batch_execute(&sql).await {
                        let dependents = source
                            .as_db_error()
                            .filter(|d| *d.code() == SqlState::DEPENDENT_OBJECTS_STILL_EXIST)
                            .and_then(|d| d.detail())
                            .map(|d| d.replace('\n', "; "));
                        return Err(match dependents {
                            Some(dependents) => Error::ExtensionInUse {
                                name: name.to_owned(),
                                dependents,
                            },
                            None => failed("dropping", name)(source),
                        });
                    }
                    continue;
                }
                (Ensure::Absent, None) => continue,
            };
            if let Some((op, sql)) = change {
                tracing::info!(name, %sql, "extension");
                client.batch_execute(&sql).await.map_err(failed(op, name))?;
            }
            self.grant_usage(client, name, grantee).await?;
        }
        Ok(())
    }
}

impl Agent {
    /// Lets `grantee` use the schemas of `extension` the reviewed table
    /// names (`GRANT USAGE`, idempotent).
    async fn grant_usage(&self, client: &Client, extension: &str, grantee: &str) -> Result<()> {
        let Some(reviewed) = domain::extension::reviewed(extension) else {
            return Ok(());
        };
        for schema in reviewed.usage_schemas {
            let sql = format!(
                "GRANT USAGE ON SCHEMA {} TO {}",
                quote_ident(schema),
                quote_ident(grantee)
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(|source| Error::Extension {
                    data_dir: self.layout.data_dir.clone(),
                    op: "granting the use of",
                    name: extension.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// `pg_extension`: name → installed version.
pub(crate) async fn installed_extensions(
    client: &Client,
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT extname::text, extversion FROM pg_extension WHERE extname <> 'plpgsql'",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn check_parameters(desired: &BTreeMap<String, String>) -> Result<()> {
    for name in desired.keys() {
        check_parameter_name(name)?;
        if domain::settings::is_reserved(name) && !domain::restart::MANAGED.contains(&name.as_str())
        {
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
