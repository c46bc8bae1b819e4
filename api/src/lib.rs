//! The control plane's HTTP API under `/api/v1`: wire types and a typed
//! client. The server (in `reconciler`) and every client (CLI, Terraform
//! provider) share these types, so they cannot drift apart.

pub mod client;
pub mod events;
pub mod types;
pub mod vocabulary;
pub mod wait;

pub use client::{Client, ClientError};
pub use events::{EventStream, InstanceEvent, StreamEvent};
pub use types::*;
pub use vocabulary::{ErrorCode, HistoryEvent, SyncAction, SyncOutcome};

/// Prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";
