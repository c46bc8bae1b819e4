//! Starting, stopping and finding the postmaster. The server is spawned
//! directly (no `pg_ctl`), detached in its own process group so it outlives
//! pgplane; a later pgplane adopts it through `postmaster.pid`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_postgres::Client;

use crate::error::{blocking, Error, Result};
use crate::sql::quote_literal;
use crate::template::{ADMIN_ROLE, PGPLANE_CONF};
use crate::Agent;

const POLL: Duration = Duration::from_millis(10);
const START_DEADLINE: Duration = Duration::from_secs(30);
const FAST_STOP_DEADLINE: Duration = Duration::from_secs(60);
const IMMEDIATE_STOP_DEADLINE: Duration = Duration::from_secs(10);
/// The most one connection attempt of [`Agent::start_connected`] takes.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

impl Agent {
    /// Starts the server unless it already runs, and waits until it answers.
    pub async fn start(&self) -> Result<()> {
        self.start_connected().await.map(drop)
    }

    /// Stops the server with a fast shutdown (SIGINT); falls back to an
    /// immediate shutdown (SIGQUIT) after 60 s. A no-op when not running.
    pub async fn stop(&self) -> Result<()> {
        let agent = self.clone();
        blocking("stop", move || agent.stop_blocking()).await
    }

    /// [`Agent::stop`] for synchronous contexts such as `Drop`.
    pub fn stop_blocking(&self) -> Result<()> {
        let Some(pid) = self.running_pid() else {
            return Ok(());
        };
        let _span =
            tracing::info_span!("stop", data_dir = %self.layout.data_dir.display(), pid).entered();
        for (signal, deadline) in [
            (Signal::SIGINT, FAST_STOP_DEADLINE),
            (Signal::SIGQUIT, IMMEDIATE_STOP_DEADLINE),
        ] {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) => {}
                Err(Errno::ESRCH) => return Ok(()),
                Err(e) => {
                    return Err(Error::Stop {
                        data_dir: self.layout.data_dir.clone(),
                        pid,
                        message: format!("sending {signal}: {e}"),
                    })
                }
            }
            let until = Instant::now() + deadline;
            while Instant::now() < until {
                if !process_alive(pid) {
                    tracing::info!(%signal, "stopped");
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
            tracing::warn!(%signal, ?deadline, "postmaster still running");
        }
        Err(Error::Stop {
            data_dir: self.layout.data_dir.clone(),
            pid,
            message: "still running after fast and immediate shutdown".to_owned(),
        })
    }

    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Whether a postmaster for this data directory is alive (it may still be
    /// starting up).
    pub async fn is_running(&self) -> Result<bool> {
        Ok(self.running_pid().is_some())
    }

    /// Starts the server if needed and returns an admin connection to it.
    /// A running postmaster is adopted; one that goes away while we wait for
    /// it (it was shutting down) is replaced. A server this call spawned that
    /// does not answer within the deadline is killed: the agent never leaves
    /// behind a server it gave up on.
    pub(crate) async fn start_connected(&self) -> Result<Client> {
        Ok(self
            .connected(true)
            .await?
            .expect("a server this call may start is connected or an error"))
    }

    /// An admin connection to the server if it runs; `None` when it does
    /// not, or when it stops while this waits for it. Never starts one: an
    /// observation must not bring back a server that supervision has to
    /// decide about (a primary that died is failed over, not restarted).
    pub(crate) async fn connect_running(&self) -> Result<Option<Client>> {
        self.connected(false).await
    }

    /// [`Agent::start_connected`]; with `may_start` false, `None` instead
    /// of starting a server that is not running.
    async fn connected(&self, may_start: bool) -> Result<Option<Client>> {
        let started = Instant::now();
        let mut spawned: Option<(i32, Arc<Mutex<Option<ExitStatus>>>)> = None;
        let mut legacy = self.is_legacy();
        loop {
            if spawned.is_none() {
                match self.running_pid() {
                    Some(pid) => tracing::trace!(pid, "waiting for the running postmaster"),
                    None if !may_start => return Ok(None),
                    None => spawned = Some(self.spawn_postmaster()?),
                }
            }
            let attempt = async {
                match legacy {
                    true => self.try_connect_as(crate::upgrade::LEGACY_ADMIN_ROLE).await,
                    false => self.try_connect().await,
                }
            };
            // The connect timeout covers the socket only: a hung server (a
            // stopped postmaster) takes the connection into its backlog and
            // never answers, so the whole attempt is bounded.
            let connected = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
            };
            match connected {
                Ok(client) if legacy => {
                    self.upgrade_legacy(&client).await?;
                    legacy = false;
                }
                Ok(client) => {
                    tracing::debug!(elapsed = ?started.elapsed(), "server ready");
                    return Ok(Some(client));
                }
                Err(e) => {
                    let status = spawned
                        .as_ref()
                        .and_then(|(_, c)| *c.lock().unwrap_or_else(|e| e.into_inner()));
                    if let Some(status) = status {
                        return Err(self.start_error(format!("postgres {}", describe_exit(status))));
                    }
                    if started.elapsed() > START_DEADLINE {
                        if let Some((pid, _)) = &spawned {
                            self.kill_abandoned(*pid);
                        }
                        return Err(self.start_error(format!(
                            "not accepting connections after {} s (last error: {e}); stopped it",
                            START_DEADLINE.as_secs()
                        )));
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills a postmaster this agent spawned and gave up on: an immediate
    /// shutdown, then SIGKILL.
    fn kill_abandoned(&self, pid: i32) {
        tracing::warn!(pid, "killing a postmaster that did not become ready");
        for signal in [Signal::SIGQUIT, Signal::SIGKILL] {
            if kill(Pid::from_raw(pid), signal).is_err() {
                return;
            }
            let until = Instant::now() + IMMEDIATE_STOP_DEADLINE;
            while Instant::now() < until {
                if !process_alive(pid) {
                    return;
                }
                std::thread::sleep(POLL);
            }
        }
    }

    /// How the postmaster this process last spawned for this data directory
    /// ended, if it has (taken: a second call returns `None`).
    pub fn take_exit(&self) -> Option<ExitStatus> {
        // A postmaster this process spawned is reaped by its reaper thread
        // a moment after it dies; wait for that moment (bounded).
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let mut exits = EXITS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(status) = exits.remove(&self.layout.data_dir) {
                return Some(status);
            }
            drop(exits);
            let spawned = SPAWNED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&self.layout.data_dir);
            if !spawned || Instant::now() > until || self.running_pid().is_some() {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Postgres's own words for why it stopped or would not start: the last
    /// `FATAL` or `PANIC` line of the server log, without its prefix.
    pub fn last_fatal(&self) -> Option<String> {
        last_fatal_line(&log_tail(&self.layout.log_file, 200))
    }

    /// The postmaster's pid from `postmaster.pid`, if that process is alive.
    pub(crate) fn running_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.layout.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        (pid > 0 && process_alive(pid)).then_some(pid)
    }

    /// Spawns `postgres -D data_dir`, detached, with stdout and stderr going
    /// to the log file. Returns its pid and a cell that a reaper thread fills
    /// when the process exits.
    fn spawn_postmaster(&self) -> Result<(i32, Arc<Mutex<Option<ExitStatus>>>)> {
        let layout = &self.layout;
        layout.check_socket_path()?;
        self.run_as
            .check_traversable(&layout.data_dir, &layout.data_dir)?;
        if !layout.socket_dir.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&layout.socket_dir)
                .map_err(Error::io(
                    "creating the socket directory",
                    &layout.socket_dir,
                ))?;
        }
        self.run_as.chown(&layout.socket_dir)?;
        self.write_pgplane_conf(&layout.data_dir)?;
        self.prepare_archiving()?;
        self.prepare_standby_signal()?;
        let log_dir = layout.log_file.parent().unwrap_or(Path::new("/"));
        if !log_dir.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(log_dir)
                .map_err(Error::io("creating the log directory", log_dir))?;
            self.run_as.chown(log_dir)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&layout.log_file)
            .map_err(Error::io("opening the server log", &layout.log_file))?;
        self.run_as.chown(&layout.log_file)?;
        let stderr = log
            .try_clone()
            .map_err(Error::io("duplicating", &layout.log_file))?;
        let postgres = self.bins.postgres();
        let mut command = match &self.memory_limit {
            Some(limit) => limit.command(&self.run_as, &postgres)?,
            None => self.run_as.command(&postgres),
        };
        let mut child = command
            .arg("-D")
            .arg(&layout.data_dir)
            .args(self.archive_options())
            .args(self.replication_options())
            .envs(self.archive_env())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(Error::io("spawning", &postgres))?;
        tracing::info!(pid = child.id(), data_dir = %layout.data_dir.display(), "postmaster spawned");
        // Reap the child when it exits, so a stopped server never lingers as
        // a zombie that still looks alive.
        let exited = Arc::new(Mutex::new(None));
        let cell = Arc::clone(&exited);
        let pid = child.id() as i32;
        let data_dir = layout.data_dir.clone();
        EXITS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&data_dir);
        SPAWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(data_dir.clone());
        std::thread::Builder::new()
            .name(format!("reap-postmaster-{pid}"))
            .spawn(move || {
                if let Ok(status) = child.wait() {
                    *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    EXITS
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(data_dir.clone(), status);
                }
                SPAWNED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&data_dir);
            })
            .map_err(|e| Error::Task {
                op: "spawning the postmaster reaper",
                message: e.to_string(),
            })?;
        Ok((pid, exited))
    }

    pub(crate) fn start_error(&self, message: String) -> Error {
        let log_tail = log_tail(&self.layout.log_file, 20);
        tracing::warn!(data_dir = %self.layout.data_dir.display(), %message, %log_tail, "Postgres did not start");
        Error::Start {
            data_dir: self.layout.data_dir.clone(),
            message,
            fatal: self.last_fatal(),
            log_tail,
        }
    }

    /// The settings pgplane owns, rewritten before every start so the port
    /// and socket follow the instance config.
    pub(crate) fn write_pgplane_conf(&self, data_dir: &Path) -> Result<()> {
        let c = &self.config;
        let text = format!(
            "# Managed by pgplane; rewritten before every start. Do not edit.\n\
             # The server log is Postgres' stderr, in log/postgres.log.\n\
             port = {port}\n\
             listen_addresses = {listen}\n\
             unix_socket_directories = {socket}\n\
             unix_socket_permissions = 0700\n\
             password_encryption = 'scram-sha-256'\n\
             logging_collector = off\n\
             log_destination = 'stderr'\n",
            port = c.port,
            listen = quote_literal(&c.listen_address),
            socket = quote_literal(&self.layout.socket_dir.to_string_lossy()),
        );
        let path = data_dir.join(PGPLANE_CONF);
        std::fs::write(&path, text).map_err(Error::io("writing", &path))?;
        self.run_as.chown(&path)?;
        // Who may log in as pgplane's role over the socket: this process's
        // OS user and, when the instance archives, pgBackRest running as the
        // server's own OS user (whose backups it takes); nobody else.
        let mut ident = format!(
            "# Managed by pgplane; rewritten before every start. Do not edit.\n\
             # MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n\
             pgplane    \"{}\"  {ADMIN_ROLE}\n",
            self.admin_os_user.replace('"', "")
        );
        if (self.archiving.is_some() || self.replicating)
            && self.run_as.name() != self.admin_os_user
        {
            ident.push_str(&format!(
                "pgplane    \"{}\"  {ADMIN_ROLE}\n",
                self.run_as.name().replace('"', "")
            ));
        }
        let path = data_dir.join("pg_ident.conf");
        std::fs::write(&path, ident).map_err(Error::io("writing", &path))?;
        self.run_as.chown(&path)?;
        self.allow_local_replication(data_dir)
    }

    /// Adds the replication line of [`crate::template::PG_HBA`] to a data
    /// directory made from an older template.
    fn allow_local_replication(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join("pg_hba.conf");
        let hba = match std::fs::read_to_string(&path) {
            Ok(hba) => hba,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("reading", &path)(e)),
        };
        if hba
            .lines()
            .any(|l| l.trim() == crate::template::LOCAL_REPLICATION)
        {
            return Ok(());
        }
        let text = format!(
            "{}\n{}\n",
            hba.trim_end(),
            crate::template::LOCAL_REPLICATION
        );
        std::fs::write(&path, text).map_err(Error::io("writing", &path))?;
        self.run_as.chown(&path)
    }
}

/// How postmasters this process spawned ended, by data directory.
static EXITS: Mutex<BTreeMap<PathBuf, ExitStatus>> = Mutex::new(BTreeMap::new());
/// Data directories whose postmaster this process spawned and has not
/// reaped yet.
static SPAWNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// `killed by signal 9 (SIGKILL)`, `exited with status 1`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {sig} ({s})"),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => "ended".to_owned(),
    }
}

/// The last `FATAL:` or `PANIC:` message in `log`, without the line's prefix.
fn last_fatal_line(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        ["PANIC:", "FATAL:"]
            .iter()
            .find_map(|tag| line.find(tag).map(|at| line[at..].trim().to_owned()))
    })
}

/// Alive and not a zombie. A pid the kernel reuses for something that is not
/// Postgres does not count.
pub(crate) fn process_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    if matches!(state, Some('Z' | 'X')) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("postgres"),
        // No procfs: trust kill(2).
        Err(_) => true,
    }
}

/// The last `lines` lines of a file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_fatal_line_is_postgres_s_own_words() {
        let log = "2026-12-01 LOG:  starting PostgreSQL 15\n\
                   2026-12-01 FATAL:  could not access file \"nope\": No such file or directory\n\
                   2026-12-01 LOG:  database system is shut down\n";
        assert_eq!(
            last_fatal_line(log).as_deref(),
            Some("FATAL:  could not access file \"nope\": No such file or directory")
        );
        assert_eq!(last_fatal_line("LOG: fine\n"), None);
    }

    #[test]
    fn exits_are_described_in_words() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
    }
}
