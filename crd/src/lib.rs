//! The `PostgresInstance` custom resource (group `pgplane.io`, version `v1`):
//! the Rust types, from which the CRD YAML committed beside this crate
//! (`pgplane.io_postgresinstances.yaml`) is generated.
//!
//! The spec mirrors [`domain::InstanceSpec`] field for field (the domain crate
//! stays free of schema derives); [`From`] converts both ways. The status
//! carries a phase, the standard conditions, the observed spec and where to
//! connect — never the password, which lives in the Secret it names.

mod spec;
mod status;

use kube::CustomResourceExt;

pub use spec::{
    roles_secret_name, DatabaseRef, ExtensionRef, PostgresInstance, PostgresInstanceSpec,
    ResourceRequests, RoleRef, MAX_NAME_LEN,
};
pub use status::{
    Condition, ConditionStatus, ConditionType, Connection, ObservedDatabaseStatus,
    ObservedRoleStatus, ObservedSpecStatus, Phase, PostgresInstanceStatus,
};

/// The API group of pgplane's resources.
pub const GROUP: &str = "pgplane.io";
/// File name of the committed CRD manifest (in this crate's folder).
pub const CRD_FILE: &str = "pgplane.io_postgresinstances.yaml";

/// The CRD manifest as committed: a header comment and the YAML document.
pub fn crd_yaml() -> String {
    let crd = PostgresInstance::crd();
    let body = serde_yaml::to_string(&crd).expect("a CRD serializes to YAML");
    format!(
        "# Generated from crd/src (cargo test -p crd; PGPLANE_UPDATE_CRD=1 rewrites). Do not edit.\n{body}"
    )
}
