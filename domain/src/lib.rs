//! pgplane's pure domain.
//!
//! Everything here is a plain function of its inputs: no I/O, no clock, no
//! randomness. Callers pass time, ids and observations in.
//!
//! - [`spec`]: the desired [`InstanceSpec`] and the [`ObservedSpec`] a data plane reports.
//! - [`validate`]: strict validation with field paths ([`ValidationErrors`]).
//! - [`state`]: the [`State`] machine: [`transition`] is the single source of truth.
//! - [`restart`]: predicts whether a spec change needs a Postgres restart.
//! - [`diff`]: field-level differences between two specs, normalised.
//! - [`drift`]: declared versus observed, field by field.
//! - [`inside`]: databases and roles declared inside an instance.
//! - [`extension`]: the extension catalog of a data plane and checks against it.
//! - [`backup`]: backup policy, restore targets, backup catalogs and the restore window.
//! - [`duration`]: the one grammar for durations users write (`90s`, `1h30m`).
//! - [`message`]: what travels on the queues between control and data planes.

pub mod backup;
pub mod diff;
pub mod drift;
pub mod duration;
pub mod extension;
pub mod inside;
pub mod message;
pub mod name;
pub mod quantity;
pub mod restart;
pub mod settings;
pub mod spec;
pub mod state;
pub mod synchronous;
pub mod validate;

pub use backup::{
    ArchiveStatus, BackupCatalog, BackupInfo, BackupPolicy, Lsn, RestoreSpec, RestoreTarget,
    Retention, Schedule,
};
pub use diff::{diff_specs, FieldChange};
pub use drift::{drift, FieldDrift};
pub use extension::AvailableExtension;
pub use inside::{Database, ObservedDatabase, ObservedRole, Role};
pub use message::{
    Activity, AgentStatus, DataPlaneEvent, EventKind, ReportKind, RestoreSource, StatusReport,
};
pub use name::{InstanceName, NameError};
pub use restart::{predict_restart, RestartPrediction};
pub use spec::{
    ConnectionInfo, Ensure, Extension, InstanceSpec, MemberAddress, MemberRole, ObservedMember,
    ObservedSpec, Resources,
};
pub use state::{
    settle_report, transition, Event, ReportOutcome, Standing, State, TransitionError,
};
pub use synchronous::Synchronous;
pub use validate::{
    validate_spec, validate_spec_with, FieldError, ValidateOptions, ValidationErrors,
};
