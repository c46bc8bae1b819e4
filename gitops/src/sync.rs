//! The decisions of a sync, shared by the control plane (which applies
//! them) and `pgplane plan` (which prints them): a valid revision's
//! [`DesiredSet`] against the organisation's instances, as a source, to a
//! [`Plan`] or the reason the revision is not applied. Pure.

use api::Instance;

use crate::manifest::{DesiredInstance, DesiredSet};
use crate::plan::{plan, Plan, PlanError, PlanOptions};

/// The source a sync runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSource {
    /// Its organisation: every declared instance must belong to it.
    pub org: String,
    /// The owner it acts as (`git:NAME`).
    pub owner: String,
    pub options: PlanOptions,
}

/// Why a sync applies nothing of a valid revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRejection {
    /// Manifests name another organisation: the revision is rejected
    /// whole. One `file:line: metadata.org: …` message per manifest.
    ForeignOrg(Vec<String>),
    /// The plan is refused (a prune that would delete everything).
    Refused(PlanError),
}

impl SyncRejection {
    /// What a sync records and the dry run prints, one message a line.
    pub fn messages(&self) -> Vec<String> {
        match self {
            SyncRejection::ForeignOrg(lines) => lines.clone(),
            SyncRejection::Refused(e) => vec![e.to_string()],
        }
    }
}

/// Plans a sync of `desired` over `current` (the organisation's
/// instances) as `source`: first the revision's instances must all belong
/// to the source's organisation, then [`plan`] decides per instance.
pub fn plan_sync(
    desired: &DesiredSet,
    current: &[Instance],
    source: &SyncSource,
) -> Result<Plan, SyncRejection> {
    let foreign: Vec<String> = desired
        .instances
        .values()
        .filter(|d| d.org != source.org)
        .map(|d| foreign_org(d, &source.org))
        .collect();
    if !foreign.is_empty() {
        return Err(SyncRejection::ForeignOrg(foreign));
    }
    plan(desired, current, &source.owner, &source.options).map_err(SyncRejection::Refused)
}

fn foreign_org(d: &DesiredInstance, org: &str) -> String {
    format!(
        "{}:{}: metadata.org: {:?} is not this source's organisation {:?}",
        d.file, d.line, d.org, org
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse_manifests, ParseOptions};
    use crate::plan::Action;

    fn manifest(name: &str, org: Option<&str>) -> String {
        let org = org.map(|o| format!("  org: {o}\n")).unwrap_or_default();
        format!("apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: {name}\n{org}spec:\n  replicas: 1\n")
    }

    fn desired(files: &[(&str, String)]) -> DesiredSet {
        let options = ParseOptions {
            default_org: "acme".into(),
        };
        parse_manifests(files, &options).unwrap()
    }

    fn source(options: PlanOptions) -> SyncSource {
        SyncSource {
            org: "acme".into(),
            owner: "git:prod".into(),
            options,
        }
    }

    fn owned(name: &str) -> Instance {
        let now = chrono::Utc::now();
        Instance {
            id: uuid::Uuid::nil(),
            org: "acme".into(),
            name: name.into(),
            data_plane: "local".into(),
            owner: "git:prod".into(),
            state: domain::State::Up,
            generation: 1,
            observed_generation: 1,
            spec: domain::InstanceSpec::default(),
            observed: None,
            observed_at: None,
            connection: None,
            error: None,
            backup: None,
            restart_reasons: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn manifests_of_another_organisation_reject_the_revision_whole() {
        let d = desired(&[
            ("orders.yaml", manifest("orders", None)),
            ("billing.yaml", manifest("billing", Some("globex"))),
        ]);
        let got = plan_sync(&d, &[], &source(PlanOptions::default())).unwrap_err();
        assert_eq!(
            got.messages(),
            ["billing.yaml:1: metadata.org: \"globex\" is not this source's organisation \"acme\""]
        );
        assert!(matches!(got, SyncRejection::ForeignOrg(_)));
    }

    #[test]
    fn a_revision_of_the_organisation_is_planned() {
        let d = desired(&[("orders.yaml", manifest("orders", Some("acme")))]);
        let p = plan_sync(&d, &[], &source(PlanOptions::default())).unwrap();
        assert_eq!(p.owner, "git:prod");
        assert!(matches!(p.entries[0].action, Action::Create { .. }));
    }

    #[test]
    fn a_refused_plan_is_a_rejection_with_the_plans_message() {
        let prune = PlanOptions {
            prune: true,
            ..PlanOptions::default()
        };
        let got = plan_sync(&DesiredSet::default(), &[owned("orders")], &source(prune));
        let Err(SyncRejection::Refused(e)) = got else {
            panic!("{got:?}");
        };
        assert!(matches!(e, PlanError::WouldDeleteAll { count: 1, .. }));
        assert!(e.to_string().starts_with("refusing to delete all 1"), "{e}");
    }
}
