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

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent::{Agent, InstanceConfig, PostgresBinaries, RunAs, Secret, Template};
use async_trait::async_trait;
use domain::{DataPlaneEvent, EventKind, InstanceSpec, ReportKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::runtime::{report_kind, Applied, Observation, Runtime, RuntimeError};

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
}

impl LocalSettings {
    pub fn new(root: impl Into<PathBuf>, postgres_user: &str) -> LocalSettings {
        LocalSettings {
            root: root.into(),
            postgres_user: postgres_user.to_owned(),
            listen_address: agent::InstanceConfig::DEFAULT_LISTEN_ADDRESS.to_owned(),
            template: None,
            create_pause: None,
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
    spec: InstanceSpec,
    applied_generation: i64,
    last_report: Option<ReportKind>,
}

pub struct LocalRuntime {
    settings: LocalSettings,
    bins: PostgresBinaries,
    run_as: RunAs,
    template: Template,
    /// Serialises events per instance.
    locks: std::sync::Mutex<HashMap<Uuid, Arc<Mutex<()>>>>,
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
        let template_dir = settings
            .template
            .clone()
            .unwrap_or_else(|| settings.root.join("template"));
        let template = Template::ensure(&template_dir, &bins, &run_as).await?;
        Ok(LocalRuntime {
            settings,
            bins,
            run_as,
            template,
            locks: Default::default(),
        })
    }

    fn key(id: Uuid) -> String {
        format!("i-{}", &id.simple().to_string()[..12])
    }

    fn state_path(&self, id: Uuid) -> PathBuf {
        self.settings.root.join(format!("{}.json", Self::key(id)))
    }

    fn agent(&self, id: Uuid, port: u16) -> Agent {
        let mut config = InstanceConfig::new(self.settings.root.join(Self::key(id)), port);
        config.listen_address = self.settings.listen_address.clone();
        Agent::new(self.bins.clone(), self.run_as.clone(), config)
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
                    Ok(Ok(s)) => out.push(s),
                    _ => {
                        tracing::warn!(file = %entry.path().display(), "unreadable instance state file skipped")
                    }
                }
            }
        }
        out
    }

    /// Starts every instance that should be running (after `pgplane up`
    /// restarts: instances are adopted, not re-created). Returns how many.
    pub async fn adopt_all(&self) -> usize {
        let mut n = 0;
        for s in self.states().await {
            if s.spec.stopped || s.applied_generation == 0 {
                continue;
            }
            let agent = self.agent(s.instance_id, s.port);
            match agent.start().await {
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
            if let Err(e) = self.agent(s.instance_id, s.port).stop().await {
                tracing::warn!(instance = %s.name, error = %e, "could not stop instance");
            }
        }
    }

    async fn apply_locked(&self, event: &DataPlaneEvent) -> Result<Applied, RuntimeError> {
        let existing = self.load(event.instance_id).await?;

        if event.kind == EventKind::Delete {
            if let Some(s) = &existing {
                self.agent(s.instance_id, s.port).delete().await?;
                let path = self.state_path(s.instance_id);
                tokio::fs::remove_file(&path)
                    .await
                    .map_err(io("remove", &path))?;
            }
            return Ok(Applied {
                report: ReportKind::Deleted,
                observed: None,
                connection: None,
                restarted: false,
                password: None,
            });
        }

        // At-least-once delivery: a generation already applied is re-reported.
        if let Some(s) = &existing {
            if event.generation <= s.applied_generation {
                let agent = self.agent(s.instance_id, s.port);
                return Ok(Applied {
                    report: s.last_report.unwrap_or(ReportKind::Updated),
                    observed: Some(agent.observe(&s.spec).await?),
                    connection: Some(agent.connection()),
                    restarted: false,
                    password: Some(s.password.clone()),
                });
            }
        }

        let mut state = match existing {
            Some(s) => s,
            None => {
                let s = InstanceState {
                    instance_id: event.instance_id,
                    org: event.org.clone(),
                    name: event.name.clone(),
                    port: free_port()?,
                    password: Secret::generate().expose().to_owned(),
                    spec: event.spec.clone(),
                    applied_generation: 0,
                    last_report: None,
                };
                self.save(&s).await?;
                s
            }
        };
        let agent = self.agent(state.instance_id, state.port);
        let created = state.applied_generation == 0;
        if created {
            agent
                .create(&self.template, &Secret::new(state.password.clone()))
                .await?;
            if let Some(pause) = self.settings.create_pause {
                tracing::warn!(?pause, "pausing mid-create (--debug-create-pause)");
                tokio::time::sleep(pause).await;
            }
        }
        let was_running = agent.is_running().await?;
        let outcome = agent
            .converge(&event.spec, event.kind == EventKind::Restart)
            .await?;
        let report = report_kind(
            event.kind,
            created,
            !was_running && outcome.observed.running,
            event.spec.stopped,
            outcome.restarted,
        );
        state.spec = event.spec.clone();
        state.applied_generation = event.generation;
        state.last_report = Some(report);
        self.save(&state).await?;
        Ok(Applied {
            report,
            observed: Some(outcome.observed),
            connection: Some(agent.connection()),
            restarted: outcome.restarted,
            password: created.then(|| state.password.clone()),
        })
    }
}

/// `<sharedir>/extension`, from `pg_config --sharedir` next to the binaries,
/// else the Debian layout.
fn extension_dir(bins: &PostgresBinaries) -> Result<PathBuf, RuntimeError> {
    let from_pg_config = std::process::Command::new(bins.bindir.join("pg_config"))
        .arg("--sharedir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let sharedir = match from_pg_config {
        Some(d) => d,
        None => PathBuf::from(format!("/usr/share/postgresql/{}", bins.version()?)),
    };
    Ok(sharedir.join("extension"))
}

fn free_port() -> Result<u16, RuntimeError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(io("bind a free port on", Path::new("127.0.0.1")))?;
    let port = l
        .local_addr()
        .map_err(io("bind a free port on", Path::new("127.0.0.1")))?
        .port();
    Ok(port)
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn available_extensions(&self) -> Result<Vec<String>, RuntimeError> {
        let dir = extension_dir(&self.bins)?;
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

    async fn apply(&self, event: &DataPlaneEvent) -> Result<Applied, RuntimeError> {
        let lock = self.lock(event.instance_id);
        let _guard = lock.lock().await;
        self.apply_locked(event).await
    }

    async fn observe_all(&self) -> Vec<Observation> {
        let mut out = Vec::new();
        for s in self.states().await {
            if s.applied_generation == 0 {
                continue;
            }
            let lock = self.lock(s.instance_id);
            let _guard = lock.lock().await;
            match self.agent(s.instance_id, s.port).observe(&s.spec).await {
                Ok(observed) => out.push(Observation {
                    instance_id: s.instance_id,
                    generation: s.applied_generation,
                    observed,
                }),
                Err(e) => {
                    tracing::warn!(instance = %s.name, error = %e, "observing instance failed")
                }
            }
        }
        out
    }
}
