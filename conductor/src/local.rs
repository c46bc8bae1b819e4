//! The local runtime: each instance is a real Postgres server on this
//! machine, converged by the [`agent`].
//!
//! Layout under the runtime's root:
//! - `template/`: an initdb'd data directory, copied for every new instance;
//! - `i-<12 hex of id>/`: an instance's data directory (the agent adds
//!   `.sock/` and `.tmp/` siblings);
//! - `i-<12 hex of id>.json`: what the runtime knows of the instance (port,
//!   spec, last applied generation, password), mode 0600, written atomically
//!   **before** the data directory is created, so a crash mid-create resumes
//!   with the same directory, port and password.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::{Agent, MemoryController, PostgresBinaries, RunAs, Secret, Template};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{BackupCatalog, DataPlaneEvent, EventKind, InstanceSpec, ReportKind, RestoreSource};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

mod members;

use crate::runtime::{
    report_kind, Applied, BackupDone, Observation, Runtime, RuntimeError, Supervised, Supervision,
};

#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// Where templates, data directories and state files live.
    pub root: PathBuf,
    /// The OS user Postgres runs as when pgplane runs as root.
    pub postgres_user: String,
    /// `listen_addresses` of every instance.
    pub listen_address: String,
    /// The template data directory; `root/template` when `None`.
    pub template: Option<PathBuf>,
    /// Fault injection for crash tests: pause this long after a new data
    /// directory is created and before the generation is recorded.
    pub create_pause: Option<std::time::Duration>,
    /// The first delay between restarts of a server that keeps crashing;
    /// it doubles with every crash, up to 30 s.
    pub restart_backoff: Duration,
    /// Whether each server runs in a cgroup limited to its
    /// `resources.memory` (when the kernel's memory controller is usable).
    pub enforce_memory: bool,
    /// Ports instances listen on. Below the kernel's ephemeral range
    /// (32768–60999 on Linux), so outgoing connections of other programs
    /// never take an instance's port.
    pub ports: RangeInclusive<u16>,
    /// The backup repository every instance archives its WAL and takes its
    /// backups into; `None`: instances are not backed up.
    pub backup_repository: Option<agent::Repository>,
    /// How long a primary with standbys may not answer before a standby
    /// replaces it (a primary whose server is gone is replaced at once).
    pub failover_timeout: Duration,
}

/// The default [`LocalSettings::failover_timeout`].
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Generates a password for every role `spec` declares present that has
/// none yet; returns whether any was generated (the state must then be
/// saved before the role is created, so a crash keeps the password).
fn generate_role_passwords(state: &mut InstanceState, spec: &InstanceSpec) -> bool {
    let mut generated = false;
    for role in spec.roles.iter().filter(|r| r.ensure.is_present()) {
        state
            .role_passwords
            .entry(role.name.clone())
            .or_insert_with(|| {
                generated = true;
                Secret::generate().expose().to_owned()
            });
    }
    generated
}

/// Forgets the passwords of roles the applied spec declares absent.
fn forget_dropped_roles(state: &mut InstanceState) {
    for role in state.spec.roles.iter().filter(|r| !r.ensure.is_present()) {
        state.role_passwords.remove(&role.name);
    }
}

fn role_secrets(state: &InstanceState) -> agent::RolePasswords {
    agent::RolePasswords::new(
        state
            .role_passwords
            .iter()
            .map(|(role, p)| (role.clone(), Secret::new(p.clone())))
            .collect(),
    )
}

/// The passwords of the roles the applied spec declares present.
fn declared_passwords(state: &InstanceState) -> BTreeMap<String, String> {
    state
        .spec
        .roles
        .iter()
        .filter(|r| r.ensure.is_present())
        .filter_map(|r| Some((r.name.clone(), state.role_passwords.get(&r.name)?.clone())))
        .collect()
}

/// The default [`LocalSettings::ports`].
pub const DEFAULT_PORTS: RangeInclusive<u16> = 20000..=29999;

/// The OS user an instance's server runs as when pgplane runs as root:
/// one per instance, so that not even a superuser of one instance reaches
/// another's files or the control plane's.
fn instance_os_user(id: Uuid) -> String {
    format!("pgplane-{}", LocalRuntime::key(id))
}

impl LocalSettings {
    pub fn new(root: impl Into<PathBuf>, postgres_user: &str) -> LocalSettings {
        LocalSettings {
            root: root.into(),
            postgres_user: postgres_user.to_owned(),
            listen_address: agent::InstanceConfig::DEFAULT_LISTEN_ADDRESS.to_owned(),
            template: None,
            create_pause: None,
            restart_backoff: DEFAULT_RESTART_BACKOFF,
            enforce_memory: true,
            ports: DEFAULT_PORTS,
            backup_repository: None,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
        }
    }
}

#[derive(Serialize, Deserialize, Clone)]
struct InstanceState {
    instance_id: Uuid,
    org: String,
    name: String,
    port: u16,
    password: String,
    /// The passwords generated for the spec's declared roles.
    #[serde(default)]
    role_passwords: BTreeMap<String, String>,
    spec: InstanceSpec,
    applied_generation: i64,
    last_report: Option<ReportKind>,
    /// The OS user its server runs as (when pgplane is root).
    #[serde(default)]
    os_user: Option<String>,
    /// Set when the instance was deleted: the file stays as a tombstone so
    /// that an older event delivered late cannot bring the instance back.
    #[serde(default)]
    deleted: bool,
    /// When the next scheduled full backup is due; `None`: at once.
    #[serde(default)]
    next_backup_at: Option<DateTime<Utc>>,
    /// When the instance was deleted (its backups are kept for its
    /// retention after that).
    #[serde(default)]
    deleted_at: Option<DateTime<Utc>>,
    /// Whether a deleted instance's backups have been removed.
    #[serde(default)]
    backups_removed: bool,
    /// Its servers; empty: one, member 0 on `port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    members: Vec<members::MemberState>,
    /// Which member is the primary.
    #[serde(default)]
    primary: u32,
}

pub struct LocalRuntime {
    settings: LocalSettings,
    bins: PostgresBinaries,
    run_as: RunAs,
    template: Template,
    /// Whether each instance runs as an OS user of its own (pgplane is root).
    isolated: bool,
    /// Serialises events per instance.
    locks: std::sync::Mutex<HashMap<Uuid, Arc<Mutex<()>>>>,
    /// Serialises port allocation.
    allocating: Mutex<()>,
    /// Recent crashes per instance, for supervision's backoff.
    crashes: std::sync::Mutex<HashMap<Uuid, Crashes>>,
    memory: Option<MemoryController>,
    /// This machine's memory (`MemTotal`), when known.
    machine_memory: Option<u64>,
    /// The instances' OS users, looked up once each.
    users: std::sync::Mutex<HashMap<String, RunAs>>,
    /// `pgbackrest`, when instances are backed up.
    pgbackrest: Option<PathBuf>,
    /// When deleted instances' backups were last looked at.
    expired_at: std::sync::Mutex<Option<Instant>>,
    /// How far each server log was shipped.
    log_cursors: crate::logs::LogCursors,
    /// Since when each replicated instance's primary has not answered.
    unreachable: std::sync::Mutex<HashMap<Uuid, Instant>>,
}

/// Supervision gives up on a server that crashed this often within
/// [`CRASH_WINDOW`], and leaves it stopped.
const MAX_CRASHES: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(600);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// The default [`LocalSettings::restart_backoff`].
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// One instance's recent crashes.
#[derive(Debug, Default)]
struct Crashes {
    at: VecDeque<Instant>,
    /// No restart before this.
    not_before: Option<Instant>,
    /// The generation supervision gave up on; a new one tries again.
    gave_up: Option<i64>,
}

impl Crashes {
    /// Records a crash; returns how many happened within the window.
    fn record(&mut self, now: Instant) -> usize {
        self.at.push_back(now);
        while self
            .at
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.at.pop_front();
        }
        self.at.len()
    }

    /// Backoff before the next restart: none after the first crash, then
    /// `base`, twice that, four times … up to [`MAX_RESTART_DELAY`].
    fn delay(&self, base: Duration) -> Duration {
        match self.at.len() {
            0 | 1 => Duration::ZERO,
            n => (base * (1u32 << (n - 2).min(8))).min(MAX_RESTART_DELAY),
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl LocalRuntime {
    /// Prepares the root directory and the template (initdb once).
    pub async fn open(settings: LocalSettings) -> Result<LocalRuntime, RuntimeError> {
        let bins = PostgresBinaries::discover()?;
        let run_as = RunAs::for_this_process(&settings.postgres_user)?;
        tokio::fs::create_dir_all(&settings.root)
            .await
            .map_err(io("create", &settings.root))?;
        // Instances' OS users traverse it to their own directories; none of
        // them lists it or reads the state files (0600, pgplane's own).
        tokio::fs::set_permissions(&settings.root, std::fs::Permissions::from_mode(0o711))
            .await
            .map_err(io("chmod", &settings.root))?;
        let isolated = RunAs::can_isolate();
        let memory = settings
            .enforce_memory
            .then(MemoryController::detect)
            .flatten();
        if settings.enforce_memory && memory.is_none() {
            tracing::warn!(
                "no usable cgroup memory controller (needs root and cgroup v1 `memory` or v2 \
                 with `memory` delegated): resources.memory is not enforced"
            );
        }
        if !isolated {
            tracing::warn!(
                user = run_as.name(),
                "pgplane is not running as root: every instance runs as this OS user, so \
                 instances are not isolated from each other and superuser access is refused"
            );
        }
        let template_dir = settings
            .template
            .clone()
            .unwrap_or_else(|| settings.root.join("template"));
        let template = Template::ensure(&template_dir, &bins, &run_as).await?;
        let pgbackrest = match &settings.backup_repository {
            Some(repo) => {
                agent::prepare_repository(repo)?;
                Some(agent::Archiving::find_pgbackrest()?)
            }
            None => None,
        };
        Ok(LocalRuntime {
            pgbackrest,
            expired_at: Default::default(),
            log_cursors: Default::default(),
            unreachable: Default::default(),
            settings,
            bins,
            run_as,
            template,
            isolated,
            locks: Default::default(),
            allocating: Mutex::new(()),
            crashes: Default::default(),
            memory,
            machine_memory: machine_memory(),
            users: Default::default(),
        })
    }

    fn key(id: Uuid) -> String {
        format!("i-{}", &id.simple().to_string()[..12])
    }

    fn state_path(&self, id: Uuid) -> PathBuf {
        self.settings.root.join(format!("{}.json", Self::key(id)))
    }

    /// The agent of one instance, running its server as the instance's own
    /// OS user (created when missing) when pgplane is root.
    fn agent(&self, state: &InstanceState) -> Result<Agent, RuntimeError> {
        self.agent_for(state, &state.spec)
    }

    /// The OS user `name` (created when missing), looked up once.
    fn os_user(&self, name: &str) -> Result<RunAs, RuntimeError> {
        if let Some(user) = self.users.lock().expect("user map poisoned").get(name) {
            return Ok(user.clone());
        }
        let user = RunAs::user(name)?;
        self.users
            .lock()
            .expect("user map poisoned")
            .insert(name.to_owned(), user.clone());
        Ok(user)
    }

    /// The agent of one instance's primary, its memory limited as `spec`
    /// says.
    fn agent_for(&self, state: &InstanceState, spec: &InstanceSpec) -> Result<Agent, RuntimeError> {
        self.member_agent(state, spec, state.primary_member())
    }

    /// How instance `id` archives, when this runtime backs instances up.
    fn archiving(&self, id: Uuid, spec: &InstanceSpec) -> Option<agent::Archiving> {
        Some(agent::Archiving {
            pgbackrest: self.pgbackrest.clone()?,
            repository: self.settings.backup_repository.clone()?,
            stanza: Self::key(id),
            retention: spec.backup.retention,
        })
    }

    fn lock(&self, id: Uuid) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().expect("lock map poisoned");
        locks.entry(id).or_default().clone()
    }

    async fn load(&self, id: Uuid) -> Result<Option<InstanceState>, RuntimeError> {
        let path = self.state_path(id);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                RuntimeError::Apply(format!("state file {} is corrupt: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Writes the state file atomically (temp file + rename), mode 0600.
    async fn save(&self, state: &InstanceState) -> Result<(), RuntimeError> {
        let path = self.state_path(state.instance_id);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(io("write", &tmp))?;
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(io("chmod", &tmp))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io("rename", &tmp))?;
        Ok(())
    }

    async fn states(&self) -> Vec<InstanceState> {
        let mut out = Vec::new();
        let Ok(mut dir) = tokio::fs::read_dir(&self.settings.root).await else {
            return out;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("i-") && name.ends_with(".json") {
                match tokio::fs::read(entry.path())
                    .await
                    .map(|b| serde_json::from_slice::<InstanceState>(&b))
                {
                    Ok(Ok(s)) if s.deleted => {}
                    Ok(Ok(s)) => out.push(s),
                    _ => {
                        tracing::warn!(file = %entry.path().display(), "unreadable instance state file skipped")
                    }
                }
            }
        }
        out
    }

    /// Deletes the server, its data and its OS user, and leaves a tombstone.
    /// When the instance is backed up, everything it committed is archived
    /// first, and its backups stay (returned, for the control plane).
    async fn delete(
        &self,
        event: &DataPlaneEvent,
        existing: Option<InstanceState>,
    ) -> Result<Option<BackupCatalog>, RuntimeError> {
        let mut catalog = None;
        let mut state = match existing {
            Some(s) => {
                for (_, standby) in self.standby_agents(&s)? {
                    standby.delete().await?;
                }
                let agent = self.agent(&s)?;
                if agent.archiving().is_some() && s.applied_generation > 0 {
                    catalog = Some(final_catalog(&agent).await);
                }
                agent.delete().await?;
                if let Some(a) = agent.archiving() {
                    let (repo, stanza) = (a.repository.clone(), a.stanza.clone());
                    tokio::task::spawn_blocking(move || agent::seal_stanza(&repo, &stanza))
                        .await
                        .map_err(|e| RuntimeError::Apply(format!("sealing the backups: {e}")))??;
                }
                if let (Some(user), true) = (&s.os_user, self.isolated) {
                    self.users.lock().expect("user map poisoned").remove(user);
                    let user = user.clone();
                    tokio::task::spawn_blocking(move || RunAs::remove_user(&user))
                        .await
                        .map_err(|e| RuntimeError::Apply(format!("removing the OS user: {e}")))??;
                }
                s
            }
            None => InstanceState {
                instance_id: event.instance_id,
                org: event.org.clone(),
                name: event.name.clone(),
                port: 0,
                password: String::new(),
                role_passwords: BTreeMap::new(),
                spec: event.spec.clone(),
                applied_generation: 0,
                last_report: None,
                os_user: None,
                deleted: false,
                next_backup_at: None,
                deleted_at: None,
                backups_removed: false,
                members: Vec::new(),
                primary: 0,
            },
        };
        state.deleted = true;
        state.deleted_at = Some(Utc::now());
        state.password.clear();
        state.role_passwords.clear();
        state.applied_generation = event.generation;
        state.last_report = Some(ReportKind::Deleted);
        self.save(&state).await?;
        Ok(catalog)
    }

    /// Restarts one instance's server if it should run and does not (with
    /// backoff), or gives up on it after [`MAX_CRASHES`]. Called with the
    /// instance's lock held.
    async fn supervise_one(&self, id: Uuid) -> Option<Supervised> {
        let s = self.load(id).await.ok().flatten()?;
        if s.deleted || s.spec.stopped || s.applied_generation == 0 {
            return None;
        }
        if s.replicated() {
            if let Ok(done) = self.supervise_members(id, s.clone()).await {
                return done;
            }
        }
        let agent = self.agent(&s).ok()?;
        if agent.is_running().await.unwrap_or(true) {
            return None;
        }
        let now = Instant::now();
        let crashes = {
            let mut all = self.crashes.lock().expect("crash map poisoned");
            let c = all.entry(id).or_default();
            if c.gave_up == Some(s.applied_generation) || c.not_before.is_some_and(|t| now < t) {
                return None;
            }
            c.gave_up = None;
            c.record(now)
        };
        let how = agent
            .take_exit()
            .map(agent::describe_exit)
            .unwrap_or_else(|| "the postmaster exited".to_owned());
        let fatal = agent.last_fatal();
        let outcome = if crashes > MAX_CRASHES {
            let _ = agent.stop().await;
            let reason = format!(
                "the server keeps stopping by itself ({crashes} times in {} minutes; last: {how}{}); \
                 left stopped until the next change",
                CRASH_WINDOW.as_secs() / 60,
                fatal.map(|f| format!("; {f}")).unwrap_or_default()
            );
            tracing::warn!(instance = %s.name, %reason, "giving up on a crashing server");
            if let Some(c) = self
                .crashes
                .lock()
                .expect("crash map poisoned")
                .get_mut(&id)
            {
                c.gave_up = Some(s.applied_generation);
            }
            Supervision::GaveUp { reason }
        } else {
            tracing::warn!(instance = %s.name, %how, "server stopped by itself; restarting");
            let started = Instant::now();
            let restarted = agent.start_or_restore().await;
            let delay = {
                let mut all = self.crashes.lock().expect("crash map poisoned");
                let c = all.entry(id).or_default();
                let delay = c.delay(self.settings.restart_backoff);
                c.not_before = Some(Instant::now() + delay);
                delay
            };
            match restarted {
                Ok(client) => {
                    drop(client);
                    let observed = agent.observe(&s.spec).await.ok()?;
                    Supervision::Restarted {
                        note: format!(
                            "crashed: {how}; restarted in {:.1} s",
                            started.elapsed().as_secs_f64()
                        ),
                        observed: Box::new(observed),
                    }
                }
                Err(e) => {
                    tracing::warn!(instance = %s.name, error = %e, ?delay, "restart failed; trying again");
                    return None;
                }
            }
        };
        Some(Supervised {
            instance_id: id,
            generation: s.applied_generation,
            outcome,
        })
    }

    /// Starts every instance that should be running (after `pgplane up`
    /// restarts: instances are adopted, not re-created). Returns how many.
    pub async fn adopt_all(&self) -> usize {
        let mut n = 0;
        for s in self.states().await {
            if s.spec.stopped || s.applied_generation == 0 {
                continue;
            }
            let started = match self.agent(&s) {
                Ok(agent) => agent.start().await.map_err(RuntimeError::from),
                Err(e) => Err(e),
            };
            for (_, standby) in self.standby_agents(&s).unwrap_or_default() {
                if let Err(e) = standby.start().await {
                    tracing::warn!(instance = %s.name, error = %e, "could not start a standby on adoption");
                }
            }
            match started {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::warn!(instance = %s.name, error = %e, "could not start instance on adoption")
                }
            }
        }
        n
    }

    /// Stops every instance with a fast shutdown (on `pgplane up` exit).
    pub async fn stop_all(&self) {
        for s in self.states().await {
            for (_, standby) in self.standby_agents(&s).unwrap_or_default() {
                if let Err(e) = standby.stop().await {
                    tracing::warn!(instance = %s.name, error = %e, "could not stop a standby");
                }
            }
            let stopped = match self.agent(&s) {
                Ok(agent) => agent.stop().await.map_err(RuntimeError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = stopped {
                tracing::warn!(instance = %s.name, error = %e, "could not stop instance");
            }
        }
    }

    async fn apply_locked(&self, event: &DataPlaneEvent) -> Result<Applied, RuntimeError> {
        let existing = self.load(event.instance_id).await?;
        let deleted = Applied {
            report: ReportKind::Deleted,
            observed: None,
            connection: None,
            restarted: false,
            password: None,
            role_passwords: None,
            backups: None,
            note: None,
        };
        // A deleted instance stays deleted, whatever arrives late.
        if existing.as_ref().is_some_and(|s| s.deleted) {
            return Ok(deleted);
        }
        // At-least-once delivery: a generation already applied is
        // re-reported, an older one (even a delete) is not acted on.
        if let Some(s) = &existing {
            if event.generation <= s.applied_generation {
                let agent = self.agent(s)?;
                let mut observed = agent.observe(&s.spec).await?;
                self.observe_members(s, &agent, &mut observed).await;
                return Ok(Applied {
                    report: s.last_report.unwrap_or(ReportKind::Updated),
                    observed: Some(observed),
                    connection: Some(self.connection(s, &agent)),
                    restarted: false,
                    password: Some(s.password.clone()),
                    role_passwords: Some(declared_passwords(s)),
                    backups: None,
                    note: None,
                });
            }
        }
        if event.kind == EventKind::Delete {
            let backups = self.delete(event, existing).await?;
            return Ok(Applied { backups, ..deleted });
        }

        check_memory(&event.spec, self.machine_memory)?;
        let shared_credential = self
            .settings
            .backup_repository
            .as_ref()
            .is_some_and(agent::Repository::is_shared_credential);
        if event.spec.superuser_access && shared_credential {
            return Err(RuntimeError::Apply(
                "superuser access is refused on this data plane: its backups go to an object store \
                 whose credentials every instance's archiving holds, and a superuser could read \
                 them and reach every instance's backups"
                    .to_owned(),
            ));
        }
        if event.spec.superuser_access && !self.isolated {
            return Err(RuntimeError::Apply(format!(
                "superuser access needs an OS user per instance, and this data plane runs every \
                 instance as {:?} (pgplane is not running as root); a superuser could reach the \
                 other instances' files",
                self.run_as.name()
            )));
        }
        let mut state = match existing {
            Some(s) => s,
            None => {
                let _allocating = self.allocating.lock().await;
                let used: Vec<u16> = self
                    .states()
                    .await
                    .iter()
                    .flat_map(InstanceState::ports)
                    .collect();
                let s = InstanceState {
                    instance_id: event.instance_id,
                    org: event.org.clone(),
                    name: event.name.clone(),
                    port: free_port(&self.settings.ports, &used)?,
                    password: Secret::generate().expose().to_owned(),
                    role_passwords: BTreeMap::new(),
                    spec: event.spec.clone(),
                    applied_generation: 0,
                    last_report: None,
                    os_user: self.isolated.then(|| instance_os_user(event.instance_id)),
                    deleted: false,
                    next_backup_at: None,
                    deleted_at: None,
                    backups_removed: false,
                    members: Vec::new(),
                    primary: 0,
                };
                self.save(&s).await?;
                s
            }
        };
        let agent = self.agent_for(&state, &event.spec)?;
        let created = state.applied_generation == 0;
        if created {
            let password = Secret::new(state.password.clone());
            match &event.restore_from {
                Some(source) => self.restore_into(&agent, source, &password).await?,
                None => agent.create(&self.template, &password).await?,
            }
            if let Some(pause) = self.settings.create_pause {
                tracing::warn!(?pause, "pausing mid-create (--debug-create-pause)");
                tokio::time::sleep(pause).await;
            }
        }
        if generate_role_passwords(&mut state, &event.spec) {
            self.save(&state).await?;
        }
        let was_running = agent.is_running().await?;
        // With standbys running, a restart restarts them first and then
        // moves the primary, so writes pause for a switchover only.
        let rolling = !created
            && was_running
            && !event.spec.stopped
            && event.spec.replicas > 1
            && !state.standbys().is_empty();
        let (outcome, standbys_restarted, agent, note) = match rolling {
            true => {
                let passwords = role_secrets(&state);
                self.rolling_converge(&mut state, agent, event, &passwords)
                    .await?
            }
            false => {
                let outcome = agent
                    .converge_with(
                        &event.spec,
                        event.kind == EventKind::Restart,
                        &role_secrets(&state),
                    )
                    .await?;
                let standbys_restarted = self.converge_members(&mut state, &event.spec).await?;
                (outcome, standbys_restarted, agent, None)
            }
        };
        let report = report_kind(
            event.kind,
            created,
            !was_running && outcome.observed.running,
            event.spec.stopped,
            outcome.restarted,
        );
        if state.spec.backup.schedule != event.spec.backup.schedule {
            state.next_backup_at = next_backup(&event.spec, Utc::now());
        }
        state.spec = event.spec.clone();
        forget_dropped_roles(&mut state);
        state.applied_generation = event.generation;
        state.last_report = Some(report);
        self.save(&state).await?;
        let mut observed = outcome.observed;
        self.observe_members(&state, &agent, &mut observed).await;
        Ok(Applied {
            report,
            observed: Some(observed),
            connection: Some(self.connection(&state, &agent)),
            restarted: outcome.restarted || standbys_restarted,
            password: created.then(|| state.password.clone()),
            role_passwords: Some(declared_passwords(&state)),
            backups: None,
            note,
        })
    }

    /// Creates a new instance from another's backups. A source that still
    /// runs first archives everything it has committed, so "latest" and
    /// any time up to now are restorable.
    async fn restore_into(
        &self,
        agent: &Agent,
        source: &RestoreSource,
        password: &Secret,
    ) -> Result<(), RuntimeError> {
        if agent.archiving().is_none() {
            return Err(RuntimeError::Apply(
                "this data plane has no backup repository to restore from".to_owned(),
            ));
        }
        let from = self.load(source.instance_id).await?;
        if let Some(s) = from.as_ref().filter(|s| !s.deleted && !s.spec.stopped) {
            let lock = self.lock(s.instance_id);
            let _guard = lock.lock().await;
            self.agent(s)?.archive_now().await?;
        }
        agent
            .create_from_backup(&Self::key(source.instance_id), source.target, password)
            .await?;
        Ok(())
    }

    /// Takes a full backup of one instance. The instance's lock is held to
    /// read and to record its state, not while pgBackRest runs: supervision
    /// must be able to replace a primary that hangs in the middle of a
    /// backup.
    async fn backup_instance(&self, id: Uuid) -> Result<BackupDone, RuntimeError> {
        let missing =
            || RuntimeError::Apply("the instance does not exist on this data plane".into());
        let lock = self.lock(id);
        let (agent, generation) = {
            let _guard = lock.lock().await;
            let mut s = self.load(id).await?.ok_or_else(missing)?;
            if s.deleted || s.applied_generation == 0 {
                return Err(missing());
            }
            if s.spec.stopped {
                s.next_backup_at = next_backup(&s.spec, Utc::now());
                self.save(&s).await?;
                return Err(RuntimeError::Apply(
                    "the instance is stopped; start it to back it up".to_owned(),
                ));
            }
            (self.agent(&s)?, s.applied_generation)
        };
        let started = Instant::now();
        let result = agent.backup_full().await;
        {
            let _guard = lock.lock().await;
            if let Some(mut s) = self.load(id).await?.filter(|s| !s.deleted) {
                let now = Utc::now();
                s.next_backup_at = match &result {
                    Ok(()) => next_backup(&s.spec, now),
                    // Try again in a while, sooner than the schedule would.
                    Err(_) => next_backup(&s.spec, now).map(|n| n.min(now + BACKUP_RETRY)),
                };
                self.save(&s).await?;
            }
        }
        result?;
        let catalog = agent.backup_catalog().await?;
        let note = match catalog.backups.last() {
            Some(b) => format!(
                "full backup {} taken in {:.1} s: {} of data, {} in the repository; {} kept",
                b.id,
                started.elapsed().as_secs_f64(),
                human_bytes(b.size_bytes),
                human_bytes(b.repository_bytes),
                catalog.backups.len()
            ),
            None => "full backup taken".to_owned(),
        };
        Ok(BackupDone {
            generation,
            note,
            catalog,
        })
    }

    /// Removes the backups of instances deleted longer ago than their
    /// retention keeps backups (a count keeps them the default 7 days).
    async fn expire_deleted(&self) {
        let (Some(repo), Ok(mut dir)) = (
            self.settings.backup_repository.clone(),
            tokio::fs::read_dir(&self.settings.root).await,
        ) else {
            return;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".json").filter(|n| n.starts_with("i-")) else {
                continue;
            };
            let Ok(bytes) = tokio::fs::read(entry.path()).await else {
                continue;
            };
            let Ok(mut s) = serde_json::from_slice::<InstanceState>(&bytes) else {
                continue;
            };
            if !s.deleted || s.backups_removed || !backups_expired(&s, Utc::now()) {
                continue;
            }
            let (repo, stanza) = (repo.clone(), key.to_owned());
            let Some(pgbackrest) = self.pgbackrest.clone() else {
                return;
            };
            let removed = tokio::task::spawn_blocking(move || {
                agent::remove_stanza(&pgbackrest, &repo, &stanza)
            })
            .await;
            if let Ok(Ok(())) = removed {
                tracing::info!(instance = %s.name, "backups of a deleted instance removed after its retention");
                s.backups_removed = true;
                let _ = self.save(&s).await;
            }
        }
    }
}

/// How long observing a single server may hold its lock: as long as the
/// agent waits for a server that starts.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often deleted instances' backups are checked against their retention
/// (which counts in days).
const EXPIRY_EVERY: Duration = Duration::from_secs(300);

/// How soon a failed scheduled backup is tried again.
const BACKUP_RETRY: chrono::Duration = chrono::Duration::minutes(10);

/// When the next scheduled backup of `spec` is due after `now`.
fn next_backup(spec: &InstanceSpec, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    domain::Schedule::parse(&spec.backup.schedule)
        .ok()?
        .next_after(now)
}

/// Whether a deleted instance's backups are past their retention.
fn backups_expired(s: &InstanceState, now: DateTime<Utc>) -> bool {
    let days = match s.spec.backup.retention {
        domain::Retention::Days(n) => n,
        domain::Retention::Count(_) => domain::backup::DEFAULT_RETENTION_DAYS,
    };
    s.deleted_at
        .is_some_and(|at| now - at > chrono::Duration::days(i64::from(days)))
}

/// The catalog of an instance about to be deleted: everything it
/// committed archived first when it runs, so the catalog says up to when
/// it can be restored.
async fn final_catalog(agent: &Agent) -> BackupCatalog {
    let until = match agent.is_running().await {
        Ok(true) => match agent.archive_now().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "archiving the last WAL before delete failed");
                None
            }
        },
        _ => None,
    };
    let mut catalog = agent.backup_catalog().await.unwrap_or_default();
    catalog.restorable_until = until.or_else(|| catalog.backups.last().map(|b| b.stopped_at));
    catalog
}

/// `22.0 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

/// `<sharedir>/extension`, from `pg_config --sharedir` next to the binaries,
/// else the Debian layout; the commands run off the async runtime.
async fn extension_dir(bins: &PostgresBinaries) -> Result<PathBuf, RuntimeError> {
    let bins = bins.clone();
    let sharedir = tokio::task::spawn_blocking(move || bins.sharedir())
        .await
        .map_err(|e| RuntimeError::Apply(format!("finding the extension directory: {e}")))??;
    Ok(sharedir.join("extension"))
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn machine_memory() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Refuses an instance that asks for more memory than this machine has:
/// it could never get it, and a server sized for it would not start.
fn check_memory(spec: &InstanceSpec, machine: Option<u64>) -> Result<(), RuntimeError> {
    let Ok(wanted) = domain::quantity::parse_bytes(&spec.resources.memory) else {
        return Ok(());
    };
    match machine {
        Some(total) if wanted > total => Err(RuntimeError::Apply(format!(
            "resources.memory {} is more memory than this data plane has ({} MiB)",
            spec.resources.memory,
            total / (1024 * 1024)
        ))),
        _ => Ok(()),
    }
}

/// A port in `range` that no instance of this runtime has and that nothing
/// listens on now, starting the search at a random place so that runtimes
/// sharing a machine rarely race for the same one.
fn free_port(range: &RangeInclusive<u16>, used: &[u16]) -> Result<u16, RuntimeError> {
    let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
    let len = hi.saturating_sub(lo) + 1;
    let start = rand::random::<u32>() % len;
    (0..len)
        .map(|i| (lo + (start + i) % len) as u16)
        .filter(|p| !used.contains(p))
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or_else(|| {
            RuntimeError::Apply(format!(
                "no free port left in the instance port range {}-{} ({} in use by instances)",
                range.start(),
                range.end(),
                used.len()
            ))
        })
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn available_extensions(&self) -> Result<Vec<String>, RuntimeError> {
        let dir = extension_dir(&self.bins).await?;
        let mut names = Vec::new();
        let mut rd = tokio::fs::read_dir(&dir).await.map_err(io("list", &dir))?;
        while let Ok(Some(e)) = rd.next_entry().await {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(ext) = n.strip_suffix(".control") {
                names.push(ext.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn extension_catalog(&self) -> Result<Vec<domain::AvailableExtension>, RuntimeError> {
        let bins = self.bins.clone();
        tokio::task::spawn_blocking(move || agent::read_catalog(&bins))
            .await
            .map_err(|e| agent::Error::Task {
                op: "reading the extension catalog",
                message: e.to_string(),
            })?
            .map_err(RuntimeError::from)
    }

    async fn apply(&self, event: &DataPlaneEvent) -> Result<Applied, RuntimeError> {
        let lock = self.lock(event.instance_id);
        let _guard = lock.lock().await;
        self.apply_locked(event).await
    }

    async fn supervise(&self) -> Vec<Supervised> {
        let mut out = Vec::new();
        for s in self.states().await {
            if s.applied_generation == 0 || s.spec.stopped {
                continue;
            }
            let lock = self.lock(s.instance_id);
            // Busy applying an event: that event decides.
            let Ok(_guard) = lock.try_lock() else {
                tracing::debug!(instance = %s.name, "busy; not supervised this time");
                continue;
            };
            if let Some(done) = self.supervise_one(s.instance_id).await {
                out.push(done);
            }
        }
        out
    }

    async fn backup(&self, instance_id: Uuid) -> Result<BackupDone, RuntimeError> {
        self.backup_instance(instance_id).await
    }

    async fn switchover(
        &self,
        instance_id: Uuid,
        to: Option<u32>,
    ) -> Result<crate::SwitchedOver, RuntimeError> {
        self.switch_over(instance_id, to).await
    }

    async fn due_backups(&self) -> Vec<Uuid> {
        if self.pgbackrest.is_none() {
            return Vec::new();
        }
        let expire = {
            let mut at = self.expired_at.lock().expect("expiry time poisoned");
            let due = at.is_none_or(|t| t.elapsed() >= EXPIRY_EVERY);
            if due {
                *at = Some(Instant::now());
            }
            due
        };
        if expire {
            self.expire_deleted().await;
        }
        let now = Utc::now();
        self.states()
            .await
            .into_iter()
            .filter(|s| s.applied_generation > 0 && !s.spec.stopped)
            .filter(|s| s.next_backup_at.is_none_or(|t| t <= now))
            .map(|s| s.instance_id)
            .collect()
    }

    async fn observe_all(&self) -> Vec<Observation> {
        let mut out = Vec::new();
        for listed in self.states().await {
            // Supervision decides what a primary that does not answer
            // becomes; observing it would wait for it. Probed before the
            // lock is taken: a probe of a hung primary takes its whole
            // timeout, and supervision, which only tries the lock, must
            // get it between resyncs.
            if listed.replicated() && !self.primary_answers(&listed).await {
                continue;
            }
            let lock = self.lock(listed.instance_id);
            let _guard = lock.lock().await;
            // Read again under the lock: an event may have changed or
            // deleted the instance since it was listed.
            let Some(s) = self
                .load(listed.instance_id)
                .await
                .ok()
                .flatten()
                .filter(|s| !s.deleted && s.applied_generation > 0)
            else {
                continue;
            };
            let mut log = None;
            let mut observed = match self.agent(&s) {
                Ok(agent) => {
                    log = self
                        .log_cursors
                        .read_new(s.instance_id, agent.log_file())
                        .unwrap_or_else(|e| {
                            tracing::warn!(instance = %s.name, error = %e, "reading the server log failed");
                            None
                        });
                    // Never keep supervision (which needs this lock) or the
                    // other instances' observation from a server that hangs.
                    let bound = match s.replicated() {
                        true => members::OBSERVE_TIMEOUT,
                        false => OBSERVE_TIMEOUT,
                    };
                    tokio::time::timeout(bound, agent.sample(&s.spec))
                        .await
                        .unwrap_or_else(|_| {
                            Err(agent::Error::Replication {
                                op: "observing",
                                message: format!(
                                    "the server did not answer within {} s",
                                    bound.as_secs()
                                ),
                            })
                        })
                        .map_err(RuntimeError::from)
                }
                Err(e) => Err(e),
            };
            if let (Ok((observed, _)), Ok(agent)) = (&mut observed, self.agent(&s)) {
                self.observe_members(&s, &agent, observed).await;
            }
            match observed {
                Ok((observed, activity)) => out.push(Observation {
                    instance_id: s.instance_id,
                    generation: s.applied_generation,
                    observed,
                    activity,
                    log,
                }),
                Err(e) => {
                    tracing::warn!(instance = %s.name, error = %e, "observing instance failed")
                }
            }
        }
        out
    }
}
