//! The `pgplane_instance` resource.
//!
//! - [`model`]: Terraform values ↔ the control plane's spec and instance,
//!   with the normalisation that keeps plans free of perpetual diffs.
//! - [`plan`]: validation with attribute paths, and planning by Terraform's
//!   rules (computed values unknown only when they can change, replacement
//!   paths, restart warnings).
//! - [`catalog`]: the data plane's extension catalog, read once per
//!   provider process, judging newly declared extensions at plan time.
//! - [`apply`]: create, update, delete, read and import against the API,
//!   waiting for the data plane.

pub mod apply;
pub mod catalog;
pub mod inside;
pub mod model;
pub mod plan;

pub use apply::{apply, import, read, Ctx};
pub use plan::{plan, validate, Plan};
