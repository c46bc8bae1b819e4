//! Continuous WAL archiving, base backups and restores, through pgBackRest.
//!
//! Each instance is one pgBackRest stanza in its data plane's repository
//! (`REPO/archive/STANZA`, `REPO/backup/STANZA`, each 0700 and owned by the
//! instance's OS user; `REPO`, `REPO/archive` and `REPO/backup` are 0711, so
//! no instance can list or read another's backups). The archiving settings
//! are given to the postmaster on its command line, so no configuration
//! file — not even one a superuser writes with `ALTER SYSTEM` — can switch
//! them off; such an attempt is observed and shown as drift.
//!
//! pgBackRest runs as the instance's OS user for everything that writes the
//! stanza (archive-push, stanza-create, backup, expire), and as this process
//! for what only reads it (info, and the restore of one instance's backups
//! into another's new data directory, which may be of a deleted instance).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use domain::{BackupCatalog, BackupInfo, Lsn, RestoreTarget, Retention};

use crate::error::{blocking, Error, Result};
use crate::secret::Secret;
use crate::template::ADMIN_ROLE;
use crate::Agent;

/// Where restored WAL waits inside a new data directory until recovery
/// has read it.
const RESTORE_WAL_DIR: &str = "pgplane-restore-wal";
/// The most a restore's recovery may take.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(3600);
/// How long a backup waits for another backup of the same instance.
const BACKUP_LOCK_WAIT: Duration = Duration::from_secs(1800);
/// How long a WAL segment may take to reach the repository when asked for.
const ARCHIVE_DEADLINE: Duration = Duration::from_secs(60);
/// Settings a restore leaves in `postgresql.auto.conf`, removed once the
/// new instance has been promoted.
const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_action",
    "recovery_target_timeline",
    "archive_mode",
];

/// Where a data plane keeps WAL and backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repository {
    /// A directory on this machine (another disk, ideally).
    Directory(PathBuf),
    /// A bucket of an S3-compatible object store.
    S3(S3Repository),
}

/// An S3-compatible bucket. The credentials reach pgBackRest through its
/// environment only: never a file, a command line, a log or a message.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Repository {
    /// Host name or address of the endpoint (HTTPS).
    pub host: String,
    pub port: u16,
    pub bucket: String,
    pub region: String,
    /// The prefix inside the bucket, e.g. `/pgplane`.
    pub path: String,
    /// Whether the endpoint's TLS certificate is verified.
    pub verify_tls: bool,
    pub key: Secret,
    pub key_secret: Secret,
}

impl std::fmt::Debug for S3Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Repository")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path", &self.path)
            .field("verify_tls", &self.verify_tls)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// pgBackRest's options for the repository (credentials excepted).
    fn options(&self) -> Vec<String> {
        match self {
            Repository::Directory(dir) => vec![format!("--repo1-path={}", dir.display())],
            Repository::S3(s3) => vec![
                "--repo1-type=s3".to_owned(),
                format!("--repo1-path={}", s3.path),
                format!("--repo1-s3-bucket={}", s3.bucket),
                format!("--repo1-s3-endpoint={}", s3.host),
                format!("--repo1-storage-port={}", s3.port),
                format!("--repo1-s3-region={}", s3.region),
                "--repo1-s3-uri-style=path".to_owned(),
                format!(
                    "--repo1-storage-verify-tls={}",
                    if s3.verify_tls { "y" } else { "n" }
                ),
            ],
        }
    }

    /// The same, as lines of a configuration file.
    fn config_lines(&self) -> String {
        self.options()
            .iter()
            .map(|o| format!("{}\n", o.trim_start_matches("--")))
            .collect()
    }

    /// The credentials, as pgBackRest's environment.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Repository::Directory(_) => Vec::new(),
            Repository::S3(s3) => vec![
                ("PGBACKREST_REPO1_S3_KEY", s3.key.expose().to_owned()),
                (
                    "PGBACKREST_REPO1_S3_KEY_SECRET",
                    s3.key_secret.expose().to_owned(),
                ),
            ],
        }
    }

    /// Whether every instance's OS user holds credentials that reach every
    /// instance's backups (an object store), rather than only its own stanza.
    pub fn is_shared_credential(&self) -> bool {
        matches!(self, Repository::S3(_))
    }

    fn directory(&self) -> Option<&Path> {
        match self {
            Repository::Directory(d) => Some(d),
            Repository::S3(_) => None,
        }
    }
}

/// How one instance archives and where its backups go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archiving {
    /// The `pgbackrest` program.
    pub pgbackrest: PathBuf,
    pub repository: Repository,
    /// The instance's stanza (its directory name, stable for its life).
    pub stanza: String,
    pub retention: Retention,
}

impl Archiving {
    /// `pgbackrest` from `PATH`, or why there is none.
    pub fn find_pgbackrest() -> Result<PathBuf> {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join("pgbackrest"))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Backup {
                op: "finding pgbackrest",
                message: "pgbackrest is not on PATH; install it (scripts/setup.sh does)".into(),
            })
    }

    /// The stanza's directories, in a directory repository.
    fn stanza_dirs(&self) -> Vec<PathBuf> {
        match self.repository.directory() {
            Some(repo) => vec![
                repo.join("archive").join(&self.stanza),
                repo.join("backup").join(&self.stanza),
            ],
            None => Vec::new(),
        }
    }
}

/// Creates a directory repository's shared directories: 0711, so
/// instances can reach their own stanza and list nothing.
pub fn prepare_repository(repository: &Repository) -> Result<()> {
    let Some(repository) = repository.directory() else {
        return Ok(());
    };
    for dir in [
        repository.to_path_buf(),
        repository.join("archive"),
        repository.join("backup"),
    ] {
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(Error::io("setting permissions of", &dir))?;
    }
    Ok(())
}

/// Hands a deleted instance's stanza to this process's user (0700): its OS
/// user is gone, and the next user created may get the same uid, which must
/// not inherit another instance's backups. Restores read it as this process.
pub fn seal_stanza(repository: &Repository, stanza: &str) -> Result<()> {
    let Some(repository) = repository.directory() else {
        return Ok(());
    };
    let me = nix::unistd::getuid().as_raw();
    let group = nix::unistd::getgid().as_raw();
    for dir in [
        repository.join("archive").join(stanza),
        repository.join("backup").join(stanza),
    ] {
        if !dir.is_dir() {
            continue;
        }
        std::os::unix::fs::lchown(&dir, Some(me), Some(group))
            .map_err(Error::io("changing the owner of", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io("setting permissions of", &dir))?;
    }
    Ok(())
}

/// Removes a stanza's backups and archive (its instance is gone and its
/// retention has passed).
pub fn remove_stanza(pgbackrest: &Path, repository: &Repository, stanza: &str) -> Result<()> {
    let Some(repository) = repository.directory() else {
        // An object store: pgBackRest removes the stanza (stopped first).
        let lock = std::env::temp_dir().join("pgplane-pgbackrest-lock");
        let mut base = repository.options();
        base.push(format!("--stanza={stanza}"));
        base.push(format!("--lock-path={}", lock.display()));
        base.push("--log-level-console=off".to_owned());
        base.push("--log-level-stderr=warn".to_owned());
        base.push(format!(
            "--pg1-path={}",
            std::env::temp_dir()
                .join(format!("pgplane-gone-{stanza}"))
                .display()
        ));
        for command in [
            vec!["stop"],
            vec!["--force", "stanza-delete"],
            vec!["start"],
        ] {
            let mut args = base.clone();
            args.extend(command.into_iter().map(str::to_owned));
            let mut cmd = Command::new(pgbackrest);
            cmd.envs(repository.env());
            run_blocking(
                pgbackrest,
                cmd,
                &args,
                "removing the backups of a deleted instance",
            )?;
        }
        return Ok(());
    };
    for dir in [
        repository.join("archive").join(stanza),
        repository.join("backup").join(stanza),
    ] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing", &dir)(e)),
        }
    }
    Ok(())
}

/// The backups of `stanza`, read as this process (which may read every
/// stanza). An unknown stanza has none.
pub async fn catalog_of(
    pgbackrest: &Path,
    repository: &Repository,
    stanza: &str,
) -> Result<BackupCatalog> {
    let mut args = repository.options();
    args.extend([
        format!("--stanza={stanza}"),
        "--log-level-console=off".to_owned(),
        "--log-level-stderr=error".to_owned(),
        "--output=json".to_owned(),
        "info".to_owned(),
    ]);
    let mut cmd = Command::new(pgbackrest);
    cmd.envs(repository.env());
    let out = run(pgbackrest, cmd, args, "reading the backup catalog").await?;
    parse_info(&out)
}

fn parse_info(json: &str) -> Result<BackupCatalog> {
    let bad = |m: String| Error::Backup {
        op: "reading the backup catalog",
        message: m,
    };
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| bad(format!("pgbackrest info printed no JSON: {e}")))?;
    let stanza = v
        .get(0)
        .ok_or_else(|| bad("pgbackrest info printed no stanza".into()))?;
    let time = |t: &serde_json::Value| -> Result<DateTime<Utc>> {
        let secs = t.as_i64().ok_or_else(|| bad(format!("not a time: {t}")))?;
        Utc.timestamp_opt(secs, 0)
            .single()
            .ok_or_else(|| bad(format!("not a time: {secs}")))
    };
    let lsn = |l: &serde_json::Value| -> Result<Lsn> {
        Lsn::parse(l.as_str().unwrap_or_default()).map_err(bad)
    };
    let mut backups = Vec::new();
    for b in stanza["backup"].as_array().into_iter().flatten() {
        backups.push(BackupInfo {
            id: b["label"].as_str().unwrap_or_default().to_owned(),
            kind: b["type"].as_str().unwrap_or_default().to_owned(),
            started_at: time(&b["timestamp"]["start"])?,
            stopped_at: time(&b["timestamp"]["stop"])?,
            start_lsn: lsn(&b["lsn"]["start"])?,
            stop_lsn: lsn(&b["lsn"]["stop"])?,
            size_bytes: b["info"]["size"].as_u64().unwrap_or(0),
            repository_bytes: b["info"]["repository"]["size"].as_u64().unwrap_or(0),
            status: match b["error"].as_bool() {
                Some(true) => "error",
                _ => "ok",
            }
            .to_owned(),
        });
    }
    backups.sort_by_key(|b| b.stopped_at);
    Ok(BackupCatalog {
        backups,
        restorable_until: None,
    })
}

/// Runs pgBackRest and returns its stdout, or its error line.
async fn run(
    program: &Path,
    command: Command,
    args: Vec<String>,
    op: &'static str,
) -> Result<String> {
    let program = program.to_path_buf();
    blocking(op, move || run_blocking(&program, command, &args, op)).await
}

impl Agent {
    /// Archives WAL and keeps backups as `archiving` says.
    pub fn with_archiving(mut self, archiving: Option<Archiving>) -> Agent {
        self.archiving = archiving;
        self
    }

    pub fn archiving(&self) -> Option<&Archiving> {
        self.archiving.as_ref()
    }

    fn pgbackrest_conf(&self) -> PathBuf {
        self.layout.backup_dir.join("pgbackrest.conf")
    }

    /// The postmaster options that archive every WAL segment to the
    /// stanza. Empty when the instance does not archive.
    pub(crate) fn archive_options(&self) -> Vec<String> {
        let Some(a) = &self.archiving else {
            return Vec::new();
        };
        vec![
            "-c".to_owned(),
            "archive_mode=on".to_owned(),
            "-c".to_owned(),
            format!(
                "archive_command={} --config={} --stanza={} archive-push %p",
                a.pgbackrest.display(),
                self.pgbackrest_conf().display(),
                a.stanza
            ),
        ]
    }

    /// The postmaster's environment for archiving (the repository's
    /// credentials, for `archive_command`).
    pub(crate) fn archive_env(&self) -> Vec<(&'static str, String)> {
        self.archiving
            .as_ref()
            .map(|a| a.repository.env())
            .unwrap_or_default()
    }

    /// Writes the instance's pgBackRest configuration (its own 0700
    /// directory) and makes its stanza's directories. Cheap; done before
    /// every start and every backup, so retention follows the spec.
    pub(crate) fn prepare_archiving(&self) -> Result<()> {
        let Some(a) = &self.archiving else {
            return Ok(());
        };
        let dir = &self.layout.backup_dir;
        let private_dir = |d: &Path, always_chown: bool| -> Result<()> {
            let created = !d.is_dir();
            if created {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(d)
                    .map_err(Error::io("creating", d))?;
            }
            if created || always_chown {
                self.run_as.chown(d)?;
            }
            Ok(())
        };
        private_dir(dir, true)?;
        private_dir(&dir.join("lock"), true)?;
        prepare_repository(&a.repository)?;
        for d in a.stanza_dirs() {
            private_dir(&d, false)?;
        }
        let (kind, n) = match a.retention {
            Retention::Count(n) => ("count", n),
            Retention::Days(n) => ("time", n),
        };
        let text = format!(
            "# Managed by pgplane; rewritten before every start and backup.\n\
             [global]\n\
             {repo}\
             repo1-retention-full-type={kind}\n\
             repo1-retention-full={n}\n\
             lock-path={lock}\n\
             log-level-file=off\n\
             log-level-console=off\n\
             log-level-stderr=warn\n\
             start-fast=y\n\
             compress-type=lz4\n\
             archive-timeout={archive_timeout}\n\
             \n\
             [{stanza}]\n\
             pg1-path={data}\n\
             pg1-port={port}\n\
             pg1-socket-path={socket}\n\
             pg1-user={ADMIN_ROLE}\n",
            repo = a.repository.config_lines(),
            lock = dir.join("lock").display(),
            archive_timeout = ARCHIVE_DEADLINE.as_secs(),
            stanza = a.stanza,
            data = self.layout.data_dir.display(),
            port = self.config.port,
            socket = self.layout.socket_dir.display(),
        );
        let path = self.pgbackrest_conf();
        std::fs::write(&path, text).map_err(Error::io("writing", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::io("setting permissions of", &path))?;
        self.run_as.chown(&path)
    }

    /// Runs pgBackRest on this instance's stanza as its OS user.
    async fn pgbackrest(&self, args: &[&str], op: &'static str) -> Result<String> {
        let a = self.archiving.as_ref().ok_or(Error::Backup {
            op,
            message: "this instance does not archive".into(),
        })?;
        let agent = self.clone();
        blocking("preparing the backup configuration", move || {
            agent.prepare_archiving()
        })
        .await?;
        let mut all = vec![
            format!("--config={}", self.pgbackrest_conf().display()),
            format!("--stanza={}", a.stanza),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let mut cmd = self.run_as.command(&a.pgbackrest);
        cmd.envs(a.repository.env());
        run(&a.pgbackrest, cmd, all, op).await
    }

    /// Creates the instance's stanza (idempotent). `online`: read the
    /// cluster through the running server; otherwise from its files.
    pub async fn create_stanza(&self, online: bool) -> Result<()> {
        let mut args = vec!["stanza-create"];
        if !online {
            args.insert(0, "--no-online");
        }
        self.pgbackrest(&args, "creating the backup stanza")
            .await
            .map(drop)
    }

    /// Takes a full backup, then expires what retention no longer keeps.
    #[tracing::instrument(skip_all, fields(data_dir = %self.layout.data_dir.display()))]
    pub async fn backup_full(&self) -> Result<()> {
        let started = Instant::now();
        // A backup still running (left by a pgplane that was killed) holds
        // the stanza's lock: wait for it rather than fail.
        let until = Instant::now() + BACKUP_LOCK_WAIT;
        loop {
            let attempt = async {
                if !self.stanza_exists() {
                    self.create_stanza(true).await?;
                }
                self.pgbackrest(&["--type=full", "backup"], "backing up")
                    .await
            };
            match attempt.await {
                Err(Error::Backup { message, .. })
                    if message.contains("[050]") && Instant::now() < until =>
                {
                    tracing::info!(%message, "another backup of this instance runs; waiting for it");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        tracing::info!(elapsed = ?started.elapsed(), "full backup taken");
        Ok(())
    }

    /// Whether the stanza is known not to exist yet: a directory
    /// repository without it (an object store's is not looked for).
    fn stanza_missing(&self) -> bool {
        self.archiving
            .as_ref()
            .is_some_and(|a| !a.stanza_dirs().is_empty())
            && !self.stanza_exists()
    }

    /// Whether the stanza was created (known only for a directory
    /// repository; an object store's is created again, idempotently).
    fn stanza_exists(&self) -> bool {
        let Some(a) = &self.archiving else {
            return false;
        };
        let dirs = a.stanza_dirs();
        !dirs.is_empty()
            && dirs[0].join("archive.info").is_file()
            && dirs[1].join("backup.info").is_file()
    }

    /// This instance's backups.
    pub async fn backup_catalog(&self) -> Result<BackupCatalog> {
        let a = self.archiving.as_ref().ok_or(Error::Backup {
            op: "reading the backup catalog",
            message: "this instance does not archive".into(),
        })?;
        catalog_of(&a.pgbackrest, &a.repository, &a.stanza).await
    }

    /// Makes everything committed so far restorable: commits a transaction
    /// (so a point in time up to now has a commit to stop at), switches to a
    /// new WAL segment and waits until the finished one is archived.
    /// Returns the time of that commit, or `None` when the instance has no
    /// stanza yet (before its first backup nothing is archived, and nothing
    /// could be restored from the archive).
    pub async fn archive_now(&self) -> Result<Option<DateTime<Utc>>> {
        if self.stanza_missing() {
            return Ok(None);
        }
        let client = self.start_connected().await?;
        let err = |e| self.sql_error("archiving the current WAL", e);
        client
            .batch_execute("SELECT pg_current_xact_id()")
            .await
            .map_err(err)?;
        let row = client
            .query_one(
                "SELECT extract(epoch FROM clock_timestamp())::float8, \
                        pg_walfile_name(pg_switch_wal())",
                &[],
            )
            .await
            .map_err(err)?;
        let (at, segment): (f64, String) = (row.get(0), row.get(1));
        let until = Instant::now() + ARCHIVE_DEADLINE;
        loop {
            let archived: Option<String> = client
                .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
                .await
                .map_err(err)?
                .get(0);
            if archived.is_some_and(|a| a.get(..24) >= Some(segment.as_str())) {
                break;
            }
            if Instant::now() > until {
                return Err(Error::Backup {
                    op: "archiving the current WAL",
                    message: format!(
                        "WAL segment {segment} was not archived within {} s; see the instance's archive status",
                        ARCHIVE_DEADLINE.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some(
            Utc.timestamp_millis_opt((at * 1000.0) as i64)
                .single()
                .unwrap_or_else(Utc::now),
        ))
    }

    /// Creates this instance from the backups of stanza `source` (in this
    /// instance's repository), recovered to `target`, and leaves it running
    /// and promoted with the `postgres` role's password set. Idempotent like
    /// [`Agent::create`]. The source is only read.
    #[tracing::instrument(skip_all, fields(data_dir = %self.layout.data_dir.display(), source))]
    pub async fn create_from_backup(
        &self,
        source: &str,
        target: RestoreTarget,
        password: &Secret,
    ) -> Result<()> {
        let layout = &self.layout;
        if layout.marker.is_file() {
            return Ok(());
        }
        let started = Instant::now();
        layout.check_socket_path()?;
        let a = self.archiving.clone().ok_or(Error::Backup {
            op: "restoring",
            message: "this data plane has no backup repository".into(),
        })?;
        self.run_as
            .check_traversable(&layout.tmp_dir, &layout.data_dir)?;
        let catalog = catalog_of(&a.pgbackrest, &a.repository, source).await?;
        let set = choose_backup(&catalog, &target).ok_or_else(|| Error::Backup {
            op: "restoring",
            message: format!("no backup of {source} ends before the restore target"),
        })?;
        let agent = self.clone();
        let source = source.to_owned();
        blocking("restoring the backup", move || {
            agent.restore_files(&a, &source, &set, target)
        })
        .await?;
        tracing::info!(elapsed = ?started.elapsed(), "backup restored; recovering");
        self.create_stanza(false).await?;
        let client = self.start_connected().await?;
        self.wait_promoted(&client).await?;
        tracing::info!(elapsed = ?started.elapsed(), "recovered and promoted");
        for setting in RECOVERY_SETTINGS {
            client
                .batch_execute(&format!("ALTER SYSTEM RESET {setting}"))
                .await
                .map_err(|e| self.sql_error("removing the recovery settings", e))?;
        }
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(|e| self.sql_error("removing the recovery settings", e))?;
        let wal = layout.data_dir.join(RESTORE_WAL_DIR);
        std::fs::remove_dir_all(&wal).map_err(Error::io("removing", &wal))?;
        let set_password = format!(
            "ALTER ROLE {} PASSWORD {}",
            crate::USER_ROLE,
            crate::sql::quote_literal(&password.scram_verifier())
        );
        client
            .batch_execute(&set_password)
            .await
            .map_err(|e| self.sql_error("setting the postgres password", e))?;
        std::fs::write(&layout.marker, "created by pgplane from a backup\n")
            .map_err(Error::io("writing", &layout.marker))?;
        tracing::info!(elapsed = ?started.elapsed(), "instance restored");
        Ok(())
    }

    /// Restores backup `set` of `source` into the temporary directory, with
    /// the WAL recovery will need copied beside it, and renames it into place.
    fn restore_files(
        &self,
        a: &Archiving,
        source: &str,
        set: &BackupInfo,
        target: RestoreTarget,
    ) -> Result<()> {
        let layout = &self.layout;
        if layout.data_dir.exists() {
            tracing::warn!(data_dir = %layout.data_dir.display(), "removing a half-restored instance");
            self.stop_blocking()?;
            std::fs::remove_dir_all(&layout.data_dir)
                .map_err(Error::io("removing", &layout.data_dir))?;
        }
        if layout.tmp_dir.exists() {
            std::fs::remove_dir_all(&layout.tmp_dir)
                .map_err(Error::io("removing", &layout.tmp_dir))?;
        }
        if let Some(parent) = layout.data_dir.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&layout.tmp_dir)
            .map_err(Error::io("creating", &layout.tmp_dir))?;
        self.prepare_archiving()?;
        let root_lock = layout.backup_dir.join("restore-lock");
        let wal_dir = layout.data_dir.join(RESTORE_WAL_DIR);
        let mut args = a.repository.options();
        args.extend([
            format!("--stanza={source}"),
            format!("--pg1-path={}", layout.tmp_dir.display()),
            format!("--lock-path={}", root_lock.display()),
            "--log-level-console=off".to_owned(),
            "--log-level-stderr=warn".to_owned(),
            format!("--set={}", set.id),
            format!(
                "--recovery-option=restore_command=cp \"{}/%f\" \"%p\"",
                wal_dir.display()
            ),
        ]);
        match target {
            RestoreTarget::Latest => args.push("--type=default".to_owned()),
            RestoreTarget::Time(t) => {
                args.push("--type=time".to_owned());
                args.push(format!("--target={}", t.format("%Y-%m-%d %H:%M:%S%.6f+00")));
                args.push("--target-action=promote".to_owned());
            }
            RestoreTarget::Lsn(lsn) => {
                args.push("--type=lsn".to_owned());
                args.push(format!("--target={lsn}"));
                args.push("--target-action=promote".to_owned());
            }
        }
        args.push("restore".to_owned());
        let mut cmd = Command::new(&a.pgbackrest);
        cmd.envs(a.repository.env());
        run_blocking(&a.pgbackrest, cmd, &args, "restoring")?;
        let tmp_wal = layout.tmp_dir.join(RESTORE_WAL_DIR);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp_wal)
            .map_err(Error::io("creating", &tmp_wal))?;
        let copied = fetch_wal(a, source, set, &layout.tmp_dir, &root_lock, &tmp_wal)?;
        tracing::info!(segments = copied, "WAL for recovery copied");
        for leftover in [crate::INSTANCE_MARKER, "postmaster.pid", "postmaster.opts"] {
            let _ = std::fs::remove_file(layout.tmp_dir.join(leftover));
        }
        chown_tree(&layout.tmp_dir, &self.run_as)?;
        self.write_pgplane_conf(&layout.tmp_dir)?;
        if !crate::create::is_loopback(&self.config.listen_address) {
            self.allow_remote_clients(&layout.tmp_dir)?;
        }
        std::fs::rename(&layout.tmp_dir, &layout.data_dir).map_err(Error::io(
            "renaming the restored data directory into place at",
            &layout.data_dir,
        ))
    }

    /// Waits until recovery has finished and the server accepts writes.
    async fn wait_promoted(&self, client: &tokio_postgres::Client) -> Result<()> {
        let until = Instant::now() + RECOVERY_DEADLINE;
        loop {
            let in_recovery: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(|e| self.sql_error("waiting for recovery", e))?
                .get(0);
            if !in_recovery {
                return Ok(());
            }
            if self.running_pid().is_none() {
                return Err(self.start_error("recovery stopped the server".to_owned()));
            }
            if Instant::now() > until {
                return Err(Error::Timeout {
                    data_dir: self.layout.data_dir.clone(),
                    op: "recovering from the backup",
                    seconds: RECOVERY_DEADLINE.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn run_blocking(
    program: &Path,
    mut command: Command,
    args: &[String],
    op: &'static str,
) -> Result<String> {
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io("running", program))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ERROR") || l.starts_with("      "))
        .map(str::trim)
        .collect();
    Err(Error::Backup {
        op,
        message: if message.is_empty() {
            stderr.trim().to_owned()
        } else {
            message.join(" ")
        },
    })
}

/// The backup a restore to `target` starts from: the newest that completed
/// before it.
fn choose_backup(catalog: &BackupCatalog, target: &RestoreTarget) -> Option<BackupInfo> {
    catalog
        .backups
        .iter()
        .filter(|b| b.status == "ok")
        .filter(|b| match target {
            RestoreTarget::Latest => true,
            RestoreTarget::Time(t) => b.stopped_at <= *t,
            RestoreTarget::Lsn(l) => b.stop_lsn <= *l,
        })
        .max_by_key(|b| b.stopped_at)
        .cloned()
}

/// Copies every WAL segment of `source` from the backup's start on (and
/// every timeline history file) into `dir`, decompressed, as recovery
/// will ask for them. Returns how many.
fn fetch_wal(
    a: &Archiving,
    source: &str,
    set: &BackupInfo,
    pg_data: &Path,
    lock: &Path,
    dir: &Path,
) -> Result<usize> {
    let first = wal_position(set.start_lsn);
    let common = |extra: &[String]| -> Vec<String> {
        let mut args = a.repository.options();
        args.extend([
            format!("--stanza={source}"),
            format!("--pg1-path={}", pg_data.display()),
            format!("--lock-path={}", lock.display()),
            "--log-level-console=off".to_owned(),
            "--log-level-stderr=warn".to_owned(),
        ]);
        args.extend(extra.iter().cloned());
        args
    };
    let mut cmd = Command::new(&a.pgbackrest);
    cmd.envs(a.repository.env());
    let mut ls = a.repository.options();
    ls.extend([
        "--log-level-console=off".to_owned(),
        "--log-level-stderr=warn".to_owned(),
        "--recurse".to_owned(),
        "--output=json".to_owned(),
        "repo-ls".to_owned(),
        format!("archive/{source}"),
    ]);
    let listing = run_blocking(&a.pgbackrest, cmd, &ls, "listing the WAL archive")?;
    let files: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&listing)
        .map_err(|e| Error::Backup {
            op: "listing the WAL archive",
            message: format!("pgbackrest repo-ls printed no JSON: {e}"),
        })?;
    let mut names = Vec::new();
    for (path, meta) in &files {
        if meta["type"] != "file" {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.ends_with(".history") {
            names.push(name.to_owned());
        } else if let Some(base) = name.get(..24) {
            if base.bytes().all(|b| b.is_ascii_hexdigit())
                && name.as_bytes().get(24) == Some(&b'-')
                && base[8..] >= first[..]
            {
                names.push(base.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    for name in &names {
        let mut cmd = Command::new(&a.pgbackrest);
        cmd.envs(a.repository.env());
        run_blocking(
            &a.pgbackrest,
            cmd,
            &common(&[
                "archive-get".to_owned(),
                name.clone(),
                dir.join(name).display().to_string(),
            ]),
            "copying WAL for recovery",
        )?;
    }
    Ok(names.len())
}

/// The log and segment part of a WAL file name (`00000000000000A3`) that
/// holds `lsn`, with 16 MiB segments.
fn wal_position(lsn: Lsn) -> String {
    let segment = lsn.0 / (16 * 1024 * 1024);
    format!("{:08X}{:08X}", segment >> 8, segment & 0xff)
}

fn chown_tree(dir: &Path, run_as: &crate::RunAs) -> Result<()> {
    run_as.chown(dir)?;
    for entry in std::fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(Error::io("reading", &path))?
            .is_dir()
        {
            chown_tree(&path, run_as)?;
        } else {
            run_as.chown(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_position_names_the_segment_of_an_lsn() {
        assert_eq!(
            wal_position(Lsn::parse("0/2000028").unwrap()),
            "0000000000000002"
        );
        assert_eq!(
            wal_position(Lsn::parse("1/A3000000").unwrap()),
            "00000001000000A3"
        );
    }

    #[test]
    fn info_json_becomes_a_catalog() {
        let json = r#"[{"archive":[],"backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000002"},"error":false,"info":{"delta":22992374,"repository":{"delta":4521931,"size":4521931},"size":22992374},"label":"20261201-230350F","lsn":{"start":"0/2000028","stop":"0/2000100"},"prior":null,"timestamp":{"start":1796166230,"stop":1796166233},"type":"full"}],"name":"s1","status":{"code":0,"message":"ok"}}]"#;
        let c = parse_info(json).unwrap();
        assert_eq!(c.backups.len(), 1);
        let b = &c.backups[0];
        assert_eq!(b.id, "20261201-230350F");
        assert_eq!(b.kind, "full");
        assert_eq!(b.stop_lsn.to_string(), "0/2000100");
        assert_eq!(b.size_bytes, 22992374);
        assert_eq!(b.repository_bytes, 4521931);
        assert_eq!(domain::backup::stamp(b.stopped_at), "2026-12-01T23:03:53Z");
        assert!(parse_info("[]").is_err());
    }
}
