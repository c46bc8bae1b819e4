//! pgplane's GitOps source: `PostgresInstance` manifests kept in git.
//!
//! - [`source`]: read a revision from a git repository (git2, into a bare
//!   cache) or a plain directory. Blocking: run it in `spawn_blocking`.
//! - [`location`]: where a source URL points (local or which host) and
//!   whether a [`SourcePolicy`] lets a control plane fetch from there.
//! - [`manifest`]: parse and validate a revision whole into a
//!   [`DesiredSet`], or report every error with file, line, column and
//!   field path ([`ManifestErrors`]).
//! - [`cache`]: compiled desired state cached by commit and by blob id, so a
//!   commit that changes one file re-parses one file.
//! - [`plan`]: desired versus the control plane's instances, per instance:
//!   create, update (field diff, restart), delete, orphan, conflict.
//! - [`sync`]: the decisions of a sync (the organisation check, then the
//!   plan), shared by the control plane and `pgplane plan`.
//! - [`render`]: a plan as a table, JSON or Markdown.
//!
//! This is the only crate that uses git2.

pub mod cache;
mod de;
pub mod location;
pub mod manifest;
pub mod plan;
pub mod render;
pub mod source;
pub mod sync;
pub mod yaml;

pub use cache::{Compiled, DesiredCache};
pub use location::{parse_location, Location, LocationError, SourcePolicy};
pub use manifest::{
    parse_manifests, DesiredInstance, DesiredSet, ManifestError, ManifestErrors, ParseOptions,
};
pub use plan::{plan, Action, Plan, PlanEntry, PlanError, PlanOptions, Summary};
pub use source::{
    create_private_dir, read_dir, read_git, CommitInfo, GitCache, GitSource, Revision, SourceError,
    SourceFile,
};
pub use sync::{plan_sync, SyncRejection, SyncSource};
