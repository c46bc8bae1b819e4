//! What a sync would do: desired (a revision's [`DesiredSet`]) against
//! current (the control plane's instances), per instance. Pure.

use std::collections::{BTreeMap, HashMap};

use api::Instance;
use domain::{diff_specs, predict_restart, FieldChange, InstanceSpec, State};
use serde::Serialize;
use uuid::Uuid;

use crate::manifest::DesiredSet;

/// Deletions one sync may do at most, unless told otherwise.
pub const DEFAULT_MAX_DELETES: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Delete instances this source owns that it no longer declares.
    /// Without it they are reported as orphans and left alone.
    pub prune: bool,
    /// Allow a prune that deletes every instance the source owns at once
    /// (otherwise [`PlanError::WouldDeleteAll`]: an empty or broken read
    /// must never wipe a source out).
    pub allow_delete_all: bool,
    /// At most this many deletions per sync; the rest wait for later syncs.
    pub max_deletes: usize,
    /// Take over instances another owner manages (rule 4: only when asked).
    pub adopt: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            prune: false,
            allow_delete_all: false,
            max_deletes: DEFAULT_MAX_DELETES,
            adopt: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("refusing to delete all {count} instances of {owner} at once (the revision declares none of them); if that is intended, allow deleting everything explicitly")]
    WouldDeleteAll { owner: String, count: usize },
}

/// What happens to one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    Create {
        spec: InstanceSpec,
    },
    Update {
        /// The spec to send: the declared one (a change of `stopped` is
        /// applied as a stop or a start).
        spec: InstanceSpec,
        changes: Vec<FieldChange>,
        /// Why Postgres will restart; empty when it will not.
        restart: Vec<String>,
        /// The owner taken over (`adopt`).
        #[serde(skip_serializing_if = "Option::is_none")]
        adopt_from: Option<String>,
    },
    Unchanged,
    /// Owned by this source, no longer declared, prune on.
    Delete,
    /// Would be deleted, but this sync reached `max_deletes`.
    DeleteDeferred,
    /// Owned by this source, no longer declared, prune off: left alone.
    Orphan,
    /// Declared here but managed by another owner: left alone.
    Conflict {
        /// Who manages it now (`api`, `terraform`, `git:other`).
        owner: String,
        /// This source.
        source: String,
    },
}

impl Action {
    pub fn label(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::Update { .. } => "update",
            Action::Unchanged => "unchanged",
            Action::Delete => "delete",
            Action::DeleteDeferred => "delete-deferred",
            Action::Orphan => "orphan",
            Action::Conflict { .. } => "conflict",
        }
    }

    /// Whether a sync would send anything for it.
    pub fn is_change(&self) -> bool {
        match self {
            Action::Create { .. } | Action::Update { .. } | Action::Delete => true,
            Action::Unchanged
            | Action::DeleteDeferred
            | Action::Orphan
            | Action::Conflict { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEntry {
    pub org: String,
    pub name: String,
    /// The existing instance, when there is one.
    pub id: Option<Uuid>,
    /// Where it is declared, when it is.
    pub file: Option<String>,
    pub line: Option<usize>,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    /// Updates that restart Postgres.
    pub restart: usize,
    pub delete: usize,
    pub delete_deferred: usize,
    pub orphan: usize,
    pub unchanged: usize,
    pub conflict: usize,
}

/// Per instance, sorted by (org, name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The owner this plan acts as (`git:NAME`).
    pub owner: String,
    pub summary: Summary,
    pub entries: Vec<PlanEntry>,
}

impl Plan {
    /// Whether a sync would change anything (create, update or delete).
    pub fn has_changes(&self) -> bool {
        self.entries.iter().any(|e| e.action.is_change())
    }

    pub fn has_conflicts(&self) -> bool {
        self.summary.conflict > 0
    }
}

/// Plans a sync of `desired` over `current` (the organisation's instances;
/// `Deleted` ones count as absent) as `owner`.
pub fn plan(
    desired: &DesiredSet,
    current: &[Instance],
    owner: &str,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let live: HashMap<(&str, &str), &Instance> = current
        .iter()
        .filter(|i| i.state != State::Deleted)
        .map(|i| ((i.org.as_str(), i.name.as_str()), i))
        .collect();
    let mut entries: BTreeMap<(String, String), PlanEntry> = BTreeMap::new();

    for ((org, name), d) in &desired.instances {
        let existing = live.get(&(org.as_str(), name.as_str())).copied();
        let action = match existing {
            None => Action::Create {
                spec: d.spec.clone(),
            },
            Some(i) if i.owner != owner && !options.adopt => Action::Conflict {
                owner: i.owner.clone(),
                source: owner.to_owned(),
            },
            Some(i) => {
                let adopt_from = (i.owner != owner).then(|| i.owner.clone());
                update(i, &d.spec, adopt_from)
            }
        };
        entries.insert(
            (org.clone(), name.clone()),
            PlanEntry {
                org: org.clone(),
                name: name.clone(),
                id: existing.map(|i| i.id),
                file: Some(d.file.clone()),
                line: Some(d.line),
                action,
            },
        );
    }

    let owned = live.values().filter(|i| i.owner == owner).count();
    let mut gone: Vec<&Instance> = live
        .values()
        .copied()
        .filter(|i| i.owner == owner && desired.get(&i.org, &i.name).is_none())
        .collect();
    gone.sort_by(|a, b| (&a.org, &a.name).cmp(&(&b.org, &b.name)));
    if options.prune && !gone.is_empty() && gone.len() == owned && !options.allow_delete_all {
        return Err(PlanError::WouldDeleteAll {
            owner: owner.to_owned(),
            count: owned,
        });
    }
    for (n, i) in gone.into_iter().enumerate() {
        let action = match (options.prune, n < options.max_deletes) {
            (false, _) => Action::Orphan,
            (true, true) => Action::Delete,
            (true, false) => Action::DeleteDeferred,
        };
        entries.insert(
            (i.org.clone(), i.name.clone()),
            PlanEntry {
                org: i.org.clone(),
                name: i.name.clone(),
                id: Some(i.id),
                file: None,
                line: None,
                action,
            },
        );
    }

    let entries: Vec<PlanEntry> = entries.into_values().collect();
    Ok(Plan {
        owner: owner.to_owned(),
        summary: summarize(&entries),
        entries,
    })
}

/// Desired versus an existing instance, both normalised. Whether it runs
/// is declared like the rest (`stopped`, false when not given).
fn update(current: &Instance, declared: &InstanceSpec, adopt_from: Option<String>) -> Action {
    let from = current.spec.clone().normalized();
    let mut to = declared.clone().normalized();
    if from == to && adopt_from.is_none() {
        return Action::Unchanged;
    }
    // Equal in meaning, spelt differently (`1Gi` / `1024Mi`): keep the
    // current spelling so nothing reads as a change or a restart.
    let changes = diff_specs(&from, &to);
    let changed = |prefix: &str| changes.iter().any(|c| c.path.starts_with(prefix));
    if !changed("resources.") {
        to.resources = from.resources.clone();
    }
    if !changed("storage") {
        to.storage = from.storage.clone();
    }
    if changes.is_empty() && adopt_from.is_none() {
        return Action::Unchanged;
    }
    let restart = predict_restart(&from, &to).reasons;
    Action::Update {
        spec: to,
        changes,
        restart,
        adopt_from,
    }
}

fn summarize(entries: &[PlanEntry]) -> Summary {
    let mut s = Summary::default();
    for e in entries {
        match &e.action {
            Action::Create { .. } => s.create += 1,
            Action::Update { restart, .. } => {
                s.update += 1;
                if !restart.is_empty() {
                    s.restart += 1;
                }
            }
            Action::Unchanged => s.unchanged += 1,
            Action::Delete => s.delete += 1,
            Action::DeleteDeferred => s.delete_deferred += 1,
            Action::Orphan => s.orphan += 1,
            Action::Conflict { .. } => s.conflict += 1,
        }
    }
    s
}
