//! A runtime that reports success without starting Postgres: a
//! **simulation**, for benchmarks of the control plane and for tests of the
//! queue protocol. Every observation echoes the desired spec.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use domain::restart::effective_config;
use domain::{ConnectionInfo, DataPlaneEvent, EventKind, ObservedSpec};
use uuid::Uuid;

use crate::runtime::{report_kind, Applied, Observation, Runtime, RuntimeError};

#[derive(Default)]
pub struct SimulatedRuntime {
    instances: Mutex<HashMap<Uuid, (i64, ObservedSpec)>>,
}

impl SimulatedRuntime {
    pub fn new() -> SimulatedRuntime {
        SimulatedRuntime::default()
    }

    pub fn len(&self) -> usize {
        self.instances.lock().expect("poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn observed(event: &DataPlaneEvent) -> ObservedSpec {
    let mut extensions: Vec<String> = event.spec.extension_names().map(str::to_owned).collect();
    extensions.sort();
    ObservedSpec {
        members: None,
        postgres_version: event.spec.postgres_version.clone(),
        extension_versions: event
            .spec
            .extensions
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.version.clone()?)))
            .collect(),
        extensions,
        config: effective_config(&event.spec),
        running: !event.spec.stopped,
        pending_restart: Vec::new(),
        superuser_access: Some(event.spec.superuser_access),
        archive: None,
        roles: None,
        databases: None,
    }
}

#[async_trait]
impl Runtime for SimulatedRuntime {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    async fn available_extensions(&self) -> Result<Vec<String>, RuntimeError> {
        Ok([
            "hstore",
            "pg_stat_statements",
            "citext",
            "pgcrypto",
            "pg_trgm",
        ]
        .map(String::from)
        .to_vec())
    }

    async fn apply(&self, event: &DataPlaneEvent) -> Result<Applied, RuntimeError> {
        let mut map = self.instances.lock().expect("poisoned");
        let created = !map.contains_key(&event.instance_id);
        if event.kind == EventKind::Delete {
            map.remove(&event.instance_id);
        } else {
            map.insert(event.instance_id, (event.generation, observed(event)));
        }
        Ok(Applied {
            report: report_kind(
                event.kind,
                created,
                false,
                event.spec.stopped,
                event.restart_predicted,
            ),
            observed: (event.kind != EventKind::Delete).then(|| observed(event)),
            connection: Some(ConnectionInfo {
                members: Vec::new(),
                host: "simulated.invalid".into(),
                port: 5432,
                database: "postgres".into(),
                user: "postgres".into(),
            }),
            restarted: event.restart_predicted,
            password: created.then(|| "simulated".to_owned()),
            role_passwords: None,
            backups: None,
            note: None,
        })
    }

    async fn observe_all(&self) -> Vec<Observation> {
        let map = self.instances.lock().expect("poisoned");
        map.iter()
            .map(|(id, (generation, observed))| Observation {
                instance_id: *id,
                generation: *generation,
                observed: observed.clone(),
                activity: None,
                log: None,
            })
            .collect()
    }
}
