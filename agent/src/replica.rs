//! Streaming replication between the members of one instance: building a
//! standby from its primary (`pg_basebackup`), promoting it, fencing a
//! primary that must stop accepting writes, and bringing an old primary
//! back as a standby of the new one (`pg_rewind`, or a fresh copy when its
//! history cannot be rewound).
//!
//! Members of one instance run as the same OS user on the same machine, so
//! a standby streams over its primary's unix socket as [`ADMIN_ROLE`],
//! authenticated by the kernel (`peer`): no replication password exists.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use domain::{MemberRole, ObservedMember};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_postgres::Client;

use crate::create::remove_dir_if_exists;
use crate::error::{blocking, Error, Result};
use crate::process::process_alive;
use crate::template::ADMIN_ROLE;
use crate::{Agent, INSTANCE_MARKER};

/// Where a standby streams from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The primary's unix socket directory.
    pub socket_dir: PathBuf,
    pub port: u16,
    /// The physical replication slot the primary keeps for this standby.
    pub slot: String,
    /// The standby's name as the primary sees it (`application_name`).
    pub member: String,
}

/// What one member reports about its own replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationPosition {
    pub in_recovery: bool,
    pub timeline: Option<u32>,
    /// The current WAL position (primary) or the last replayed (standby).
    pub lsn: Option<String>,
    /// The last position a standby received; its replay position when it
    /// has received nothing since it started.
    pub received_lsn: Option<String>,
}

/// A standby as its primary sees it (`pg_stat_replication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    pub member: String,
    pub state: String,
    pub lag_bytes: Option<u64>,
}

const STANDBY_SIGNAL: &str = "standby.signal";
const PROMOTE_WAIT_SECONDS: i32 = 60;

impl Agent {
    /// Runs the server as a standby of `upstream` (`None`: as a primary).
    pub fn with_upstream(mut self, upstream: Option<Upstream>) -> Agent {
        self.upstream = upstream;
        self
    }

    /// Lets the instance's own OS user log in as [`ADMIN_ROLE`] over the
    /// socket, as its standbys' WAL receivers, `pg_basebackup` and
    /// `pg_rewind` do.
    pub fn with_replication(mut self, replicating: bool) -> Agent {
        self.replicating = replicating;
        self
    }

    pub fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }

    /// Whether the data directory was completely made (its marker written).
    pub fn is_created(&self) -> bool {
        self.layout.marker.is_file()
    }

    /// The postmaster options of a standby: where it streams from. They are
    /// command-line options, so no configuration file can change them.
    /// Every server logs hint bits, so that a primary that is replaced can
    /// later be rewound into a standby of its successor.
    pub(crate) fn replication_options(&self) -> Vec<String> {
        let mut options = vec!["-c".to_owned(), "wal_log_hints=on".to_owned()];
        if let Some(up) = &self.upstream {
            let conninfo = format!(
                "host={} port={} user={ADMIN_ROLE} application_name={}",
                conninfo_value(&up.socket_dir.to_string_lossy()),
                up.port,
                conninfo_value(&up.member)
            );
            options.extend([
                "-c".to_owned(),
                format!("primary_conninfo={conninfo}"),
                "-c".to_owned(),
                format!("primary_slot_name={}", up.slot),
            ]);
        }
        options
    }

    /// A standby starts in standby mode (`standby.signal`); a primary's
    /// file is left to the server, which removes it when promoted.
    pub(crate) fn prepare_standby_signal(&self) -> Result<()> {
        if self.upstream.is_none() {
            return Ok(());
        }
        let path = self.layout.data_dir.join(STANDBY_SIGNAL);
        if !path.exists() {
            std::fs::write(&path, "").map_err(Error::io("writing", &path))?;
            self.run_as.chown(&path)?;
        }
        Ok(())
    }

    /// Builds this member's data directory as a copy of `primary`'s
    /// (`pg_basebackup` over the primary's socket, WAL streamed, through
    /// this member's slot), and starts it as a standby. Idempotent: a
    /// complete member is only started; a half-built one is built again.
    pub async fn create_standby(&self, primary: &Agent) -> Result<()> {
        let up = self.upstream.clone().ok_or(Error::Replication {
            op: "building a standby",
            message: "the member has no primary to copy".to_owned(),
        })?;
        let layout = &self.layout;
        if !layout.marker.is_file() {
            let started = Instant::now();
            layout.check_socket_path()?;
            primary.ensure_slot(&up.slot).await?;
            let agent = self.clone();
            let primary_socket = primary.layout.socket_dir.clone();
            let port = primary.config.port;
            blocking("building a standby", move || {
                agent.base_backup(&primary_socket, port)
            })
            .await?;
            tracing::info!(data_dir = %layout.data_dir.display(), elapsed = ?started.elapsed(), "standby copied from its primary");
        }
        self.start().await
    }

    fn base_backup(&self, primary_socket: &Path, port: u16) -> Result<()> {
        let layout = &self.layout;
        if layout.data_dir.exists() {
            self.stop_blocking()?;
            remove_dir_if_exists(&layout.data_dir)?;
        }
        remove_dir_if_exists(&layout.tmp_dir)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&layout.tmp_dir)
            .map_err(Error::io("creating", &layout.tmp_dir))?;
        self.run_as.chown(&layout.tmp_dir)?;
        let program = self.bins.bindir.join("pg_basebackup");
        let mut command = self.run_as.command(&program);
        command
            .arg("--pgdata")
            .arg(&layout.tmp_dir)
            .arg("--host")
            .arg(primary_socket)
            .args(["--port", &port.to_string(), "--username", ADMIN_ROLE])
            .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"]);
        if let Some(up) = &self.upstream {
            command.args(["--slot", &up.slot]);
        }
        run_tool(&program, command, "pg_basebackup")?;
        // The primary's log and markers are its own.
        let log = layout.tmp_dir.join("log");
        remove_dir_if_exists(&log)?;
        for file in [STANDBY_SIGNAL, "postmaster.opts"] {
            let _ = std::fs::remove_file(layout.tmp_dir.join(file));
        }
        self.write_pgplane_conf(&layout.tmp_dir)?;
        std::fs::rename(&layout.tmp_dir, &layout.data_dir).map_err(Error::io(
            "renaming the new data directory into place at",
            &layout.data_dir,
        ))?;
        std::fs::write(&layout.marker, "created by pgplane\n")
            .map_err(Error::io("writing", &layout.marker))?;
        Ok(())
    }

    /// Makes the primary keep exactly the slots in `slots` among pgplane's
    /// (named `pgplane_…`): missing ones are created (reserving WAL now),
    /// ones of members that are gone are dropped.
    pub async fn ensure_slots(&self, slots: &[String]) -> Result<()> {
        let client = self.start_connected().await?;
        let err = |e| self.sql_error("managing replication slots", e);
        let existing: Vec<(String, bool)> = client
            .query(
                "SELECT slot_name::text, active FROM pg_replication_slots \
                 WHERE slot_type = 'physical' AND slot_name LIKE 'pgplane\\_%'",
                &[],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for slot in slots {
            if !existing.iter().any(|(s, _)| s == slot) {
                client
                    .execute(
                        "SELECT pg_create_physical_replication_slot($1, true)",
                        &[slot],
                    )
                    .await
                    .map_err(err)?;
            }
        }
        for (slot, active) in existing {
            if !slots.contains(&slot) {
                if active {
                    client
                        .execute(
                            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                             WHERE slot_name = $1 AND active_pid IS NOT NULL",
                            &[&slot],
                        )
                        .await
                        .map_err(err)?;
                }
                client
                    .execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                         WHERE slot_name = $1 AND NOT active",
                        &[&slot],
                    )
                    .await
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    /// Promotes this standby, waits until it accepts writes, and
    /// checkpoints.
    pub async fn promote(&self) -> Result<()> {
        let client = self.start_connected().await?;
        let promoted: bool = client
            .query_one(
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_promote(true, $1) ELSE true END",
                &[&PROMOTE_WAIT_SECONDS],
            )
            .await
            .map_err(|e| self.sql_error("promoting", e))?
            .get(0);
        if !promoted {
            return Err(Error::Timeout {
                op: "promoting",
                data_dir: self.layout.data_dir.clone(),
                seconds: PROMOTE_WAIT_SECONDS as u64,
            });
        }
        // The control file names the new timeline only after a checkpoint;
        // until then `pg_rewind` would take the old primary for one on the
        // same history and leave it diverged.
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| self.sql_error("checkpointing after promotion", e))
    }

    /// Where this stopped server's last checkpoint is, when it was shut
    /// down cleanly (`pg_controldata`); `None` when it was not (crashed,
    /// killed, or still running).
    pub async fn shutdown_checkpoint(&self) -> Result<Option<domain::Lsn>> {
        let agent = self.clone();
        blocking("reading the control file", move || {
            let program = agent.bins.bindir.join("pg_controldata");
            let out = agent
                .run_as
                .command(&program)
                .arg("-D")
                .arg(&agent.layout.data_dir)
                .env("LC_ALL", "C")
                .stdin(Stdio::null())
                .output()
                .map_err(Error::io("running", &program))?;
            if !out.status.success() {
                return Err(Error::Replication {
                    op: "reading the control file",
                    message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            Ok(parse_control_data(&String::from_utf8_lossy(&out.stdout)))
        })
        .await
    }

    /// Waits until this standby has received WAL past `lsn`; `false` when
    /// it has not within `timeout`.
    pub async fn wait_received(&self, lsn: domain::Lsn, timeout: Duration) -> Result<bool> {
        let until = Instant::now() + timeout;
        loop {
            let received = self
                .replication_position()
                .await?
                .and_then(|p| p.received_lsn)
                .and_then(|l| domain::Lsn::parse(&l).ok());
            if received.is_some_and(|r| r > lsn) {
                return Ok(true);
            }
            if Instant::now() > until {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the server answers a query within `timeout` (a hung server,
    /// e.g. a stopped process, does not).
    pub async fn answers(&self, timeout: Duration) -> bool {
        let probe = async {
            let client = self.try_connect().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(_)))
    }

    /// Kills the server and every process it started (its process group,
    /// and its cgroup when it has one) at once: a fenced primary accepts no
    /// write after this returns, even one its hung postmaster's backends
    /// were about to commit.
    pub async fn fence(&self) -> Result<()> {
        let agent = self.clone();
        blocking("fencing", move || {
            let Some(pid) = agent.running_pid() else {
                return Ok(());
            };
            tracing::warn!(pid, data_dir = %agent.layout.data_dir.display(), "fencing: killing the server");
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            if let Some(limit) = &agent.memory_limit {
                for p in limit.pids() {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            let until = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) {
                if Instant::now() > until {
                    return Err(Error::Stop {
                        data_dir: agent.layout.data_dir.clone(),
                        pid,
                        message: "still alive 10 s after SIGKILL".to_owned(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
        .await
    }

    /// Brings this stopped member back as a standby of `primary`: its
    /// history is rewound to where the two diverged (`pg_rewind`, which
    /// first finishes crash recovery of a server that was killed), or,
    /// when that fails, it is copied afresh. Returns how it rejoined.
    pub async fn rejoin(&self, primary: &Agent) -> Result<&'static str> {
        self.stop().await?;
        let agent = self.clone();
        let source = format!(
            "host={} port={} user={ADMIN_ROLE} dbname=postgres",
            conninfo_value(&primary.layout.socket_dir.to_string_lossy()),
            primary.config.port
        );
        let rewound = match self.layout.marker.is_file() {
            true => blocking("rewinding", move || agent.rewind(&source)).await,
            false => Err(Error::Replication {
                op: "rewinding",
                message: "the data directory is incomplete".to_owned(),
            }),
        };
        let how = match rewound {
            Ok(()) => "rewound",
            Err(e) => {
                tracing::warn!(error = %e, data_dir = %self.layout.data_dir.display(), "rewind failed; copying the primary afresh");
                let _ = std::fs::remove_file(&self.layout.marker);
                self.create_standby(primary).await?;
                return Ok("copied afresh");
            }
        };
        if let Some(up) = &self.upstream {
            primary.ensure_slot(&up.slot).await?;
        }
        self.start().await?;
        Ok(how)
    }

    fn rewind(&self, source: &str) -> Result<()> {
        self.write_pgplane_conf(&self.layout.data_dir)?;
        let program = self.bins.bindir.join("pg_rewind");
        let mut command = self.run_as.command(&program);
        command
            .arg("--target-pgdata")
            .arg(&self.layout.data_dir)
            .arg(format!("--source-server={source}"));
        run_tool(&program, command, "pg_rewind")?;
        remove_dir_if_exists(&self.layout.data_dir.join("log"))?;
        let _ = std::fs::remove_file(self.layout.data_dir.join("postmaster.opts"));
        // pg_rewind copies the source's files, the marker among them.
        let marker = self.layout.data_dir.join(INSTANCE_MARKER);
        std::fs::write(&marker, "created by pgplane\n").map_err(Error::io("writing", &marker))
    }

    /// Creates `slot` on this primary unless it exists.
    pub async fn ensure_slot(&self, slot: &str) -> Result<()> {
        let client = self.start_connected().await?;
        client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true) \
                 WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .map_err(|e| self.sql_error("creating a replication slot", e))?;
        Ok(())
    }

    /// Gives this standby its primary's configuration (`ALTER SYSTEM` does
    /// not replicate: the file is copied), starts it when it is stopped, and
    /// reloads or restarts it as the change needs. Returns whether it was
    /// restarted.
    pub async fn follow_config(&self, primary: &Agent) -> Result<bool> {
        let from = primary.layout.data_dir.join(crate::converge::AUTO_CONF);
        let to = self.layout.data_dir.join(crate::converge::AUTO_CONF);
        let text = std::fs::read_to_string(&from).map_err(Error::io("reading", &from))?;
        let same = std::fs::read_to_string(&to).is_ok_and(|t| t == text);
        if !same {
            let tmp = to.with_extension("conf.pgplane-new");
            std::fs::write(&tmp, &text).map_err(Error::io("writing", &tmp))?;
            self.run_as.chown(&tmp)?;
            std::fs::rename(&tmp, &to).map_err(Error::io("renaming", &tmp))?;
        }
        let was_running = self.running_pid().is_some();
        let client = self.start_connected().await?;
        if same || !was_running {
            return Ok(false);
        }
        self.reload(&client).await?;
        self.check_reloaded(&client).await?;
        let pending = crate::converge::pending_restart(&client)
            .await
            .map_err(|e| self.sql_error("reading pending_restart", e))?;
        if pending.is_empty() {
            return Ok(false);
        }
        tracing::info!(?pending, data_dir = %self.layout.data_dir.display(), "restarting a standby for its primary's configuration");
        drop(client);
        self.restart().await?;
        Ok(true)
    }

    /// Where this member's WAL is (never starts a stopped server).
    pub async fn replication_position(&self) -> Result<Option<ReplicationPosition>> {
        bounded("reading the replication position", async {
            let Some(client) = self.connect_running().await? else {
                return Ok(None);
            };
            self.position_of(&client).await.map(Some)
        })
        .await
    }

    async fn position_of(&self, client: &Client) -> Result<ReplicationPosition> {
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), \
                   CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text \
                        ELSE pg_current_wal_lsn()::text END, \
                   CASE WHEN pg_is_in_recovery() \
                        THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text \
                        ELSE pg_current_wal_lsn()::text END, \
                   CASE WHEN pg_is_in_recovery() \
                        THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
                                      (pg_control_checkpoint()).timeline_id) \
                        ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("reading the replication position", e))?;
        let timeline: Option<i32> = row.get(3);
        Ok(ReplicationPosition {
            in_recovery: row.get(0),
            lsn: row.get(1),
            received_lsn: row.get(2),
            timeline: timeline.and_then(|t| u32::try_from(t).ok()),
        })
    }

    /// The standbys connected to this primary.
    pub async fn downstreams(&self) -> Result<Vec<Downstream>> {
        bounded("reading pg_stat_replication", async {
            let Some(client) = self.connect_running().await? else {
                return Ok(Vec::new());
            };
            self.downstreams_of(&client).await
        })
        .await
    }

    async fn downstreams_of(&self, client: &Client) -> Result<Vec<Downstream>> {
        let rows = client
            .query(
                "SELECT application_name, state, \
                   pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8 \
                 FROM pg_stat_replication WHERE NOT pg_is_in_recovery()",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("reading pg_stat_replication", e))?;
        Ok(rows
            .iter()
            .map(|r| Downstream {
                member: r.get(0),
                state: r.get(1),
                lag_bytes: r
                    .get::<_, Option<i64>>(2)
                    .and_then(|n| u64::try_from(n).ok()),
            })
            .collect())
    }

    /// This member as the instance's status shows it.
    pub async fn observe_member(
        &self,
        name: &str,
        role: MemberRole,
        seen_by_primary: Option<&Downstream>,
    ) -> ObservedMember {
        let position = self.replication_position().await.ok().flatten();
        ObservedMember {
            name: name.to_owned(),
            role,
            running: position.is_some(),
            timeline: position.as_ref().and_then(|p| p.timeline),
            lsn: position.and_then(|p| p.lsn),
            lag_bytes: seen_by_primary.and_then(|d| d.lag_bytes),
            state: seen_by_primary.map(|d| d.state.clone()),
        }
    }
}

/// How long a probe of a member's replication state may take. A server
/// that hangs (stopped by a signal, stuck on I/O) accepts connections into
/// the kernel's backlog and never answers; whoever probes it must go on.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `probe`, or an error once [`PROBE_TIMEOUT`] passed.
async fn bounded<T>(op: &'static str, probe: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Replication {
                op,
                message: format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
            })
        })
}

/// The latest checkpoint of a control file `pg_controldata` printed, when
/// the cluster was shut down cleanly.
fn parse_control_data(text: &str) -> Option<domain::Lsn> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix(':'))
            .map(str::trim)
    };
    if field("Database cluster state") != Some("shut down") {
        return None;
    }
    domain::Lsn::parse(field("Latest checkpoint location")?).ok()
}

/// `'value'` as libpq's connection strings quote it.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Runs a PostgreSQL client tool; its error is its stderr.
fn run_tool(program: &Path, mut command: Command, op: &'static str) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .map_err(Error::io("running", program))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Replication {
        op,
        message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_data_names_the_checkpoint_of_a_clean_shutdown_only() {
        let clean = "pg_control version number:            1300\n\
                     Database cluster state:               shut down\n\
                     Latest checkpoint location:           0/3000028\n";
        assert_eq!(parse_control_data(clean), Some(domain::Lsn(0x0300_0028)));
        let crashed = clean.replace("shut down", "in production");
        assert_eq!(parse_control_data(&crashed), None);
        let standby = clean.replace("shut down", "shut down in recovery");
        assert_eq!(parse_control_data(&standby), None);
        assert_eq!(parse_control_data(""), None);
    }
}
