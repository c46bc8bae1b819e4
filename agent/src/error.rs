//! The agent's one error type. Each variant names the operation that failed
//! and carries the data directory (or other path) it was working on.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// pgBackRest refused or failed; `message` is its own error line.
    #[error("{op}: {message}")]
    Backup { op: &'static str, message: String },
    /// Building, promoting or rewinding a member failed.
    #[error("{op}: {message}")]
    Replication { op: &'static str, message: String },

    #[error(
        "PostgreSQL binaries not found (tried `pg_config --bindir` and {tried:?}); \
         install PostgreSQL or put its pg_config on PATH"
    )]
    BinariesNotFound { tried: Vec<PathBuf> },

    #[error("reading the PostgreSQL version from {binary}: {message}")]
    Version { binary: PathBuf, message: String },

    #[error("preparing OS user {user:?} to run Postgres: {message}")]
    RunAsUser { user: String, message: String },

    #[error(
        "{path} is not traversable by OS user {user:?}, which runs Postgres for {data_dir}; \
         make it traversable (e.g. `chmod o+x {path}`) or choose a data directory elsewhere"
    )]
    NotTraversable {
        path: PathBuf,
        user: String,
        data_dir: PathBuf,
    },

    #[error(
        "the unix socket path {path} is {len} bytes, over the limit of {max}; \
         choose a shorter --data-dir"
    )]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },

    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("initdb into {dir} failed ({status}): {output}")]
    Initdb {
        dir: PathBuf,
        status: String,
        output: String,
    },

    /// Shown to users: Postgres's own FATAL line when there is one. The log
    /// tail is for pgplane's log, not for users.
    #[error("Postgres did not start: {}", fatal.as_deref().map_or_else(|| message.clone(), |f| format!("{f} ({message})")))]
    Start {
        data_dir: PathBuf,
        message: String,
        fatal: Option<String>,
        log_tail: String,
    },

    #[error("stopping Postgres for {data_dir} (pid {pid}) failed: {message}")]
    Stop {
        data_dir: PathBuf,
        pid: i32,
        message: String,
    },

    #[error("{op} on the instance at {data_dir}")]
    Sql {
        op: &'static str,
        data_dir: PathBuf,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("instance at {data_dir}: setting {name} = {value:?} was rejected")]
    ConfigRejected {
        data_dir: PathBuf,
        name: String,
        value: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error(
        "{name:?} is not a valid parameter name (letters, digits, `_`, and `.` for \
         extension parameters)"
    )]
    InvalidParameterName { name: String },

    #[error("{name:?} is managed by pgplane and cannot be set in the spec")]
    ReservedParameter { name: String },

    #[error("extension {name:?} is not available on this server; available: {}", available.join(", "))]
    ExtensionUnavailable {
        name: String,
        available: Vec<String>,
    },

    #[error(
        "version {version:?} of extension {name:?} is not available on this data plane; available: {}",
        available.join(", ")
    )]
    ExtensionVersionUnavailable {
        name: String,
        version: String,
        available: Vec<String>,
    },

    #[error("extension {name:?} is not dropped because objects depend on it: {dependents}; drop or change those first (pgplane never drops with CASCADE)")]
    ExtensionInUse { name: String, dependents: String },

    #[error("instance at {data_dir}: {op} extension {name:?} failed")]
    Extension {
        data_dir: PathBuf,
        op: &'static str,
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A declared role or database the agent refuses to touch (the
    /// control plane refuses the same spec; this guards specs that come
    /// from elsewhere, such as a custom resource written by hand).
    #[error("refused: {0}")]
    InsideRefused(String),

    #[error("instance at {data_dir}: {op} {kind} {name:?} failed")]
    Inside {
        data_dir: PathBuf,
        op: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("role {name:?} is not dropped because objects depend on it: {dependents}; drop them or give them another owner first")]
    RoleInUse { name: String, dependents: String },

    #[error("database {name:?} is not dropped: {reason}; disconnect its sessions first")]
    DatabaseInUse { name: String, reason: String },

    #[error("instance at {data_dir}: {op} timed out after {seconds} s")]
    Timeout {
        data_dir: PathBuf,
        op: &'static str,
        seconds: u64,
    },

    #[error("background task for {op} failed: {message}")]
    Task { op: &'static str, message: String },

    #[error("Postgres refused {name} = {value:?}: {message}")]
    ConfigInvalid {
        name: String,
        value: String,
        message: String,
    },

    #[error(
        "preload library {name:?} is not installed on this data plane (no such file in {libdir})"
    )]
    LibraryMissing { name: String, libdir: PathBuf },

    /// The change was not applied; the server runs with the configuration
    /// it had before.
    #[error(
        "{}; the configuration was not changed (the previous one is back in force)",
        error_chain(cause.as_ref())
    )]
    ConfigRestored { cause: Box<Error> },

    #[error(
        "{}; putting the previous configuration back failed too: {}",
        error_chain(cause.as_ref()),
        error_chain(rollback.as_ref())
    )]
    ConfigRollback {
        cause: Box<Error>,
        rollback: Box<Error>,
    },
}

/// An error and its causes, `: `-separated (a cause already in the text is
/// not repeated), for users to read.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// A short stable name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BinariesNotFound { .. } => "binaries_not_found",
            Error::Version { .. } => "version",
            Error::RunAsUser { .. } => "run_as_user",
            Error::NotTraversable { .. } => "not_traversable",
            Error::SocketPathTooLong { .. } => "socket_path_too_long",
            Error::Io { .. } => "io",
            Error::Initdb { .. } => "initdb",
            Error::Start { .. } => "start",
            Error::ConfigInvalid { .. } => "config_invalid",
            Error::LibraryMissing { .. } => "library_missing",
            Error::ConfigRestored { .. } => "config_restored",
            Error::ConfigRollback { .. } => "config_rollback",
            Error::Stop { .. } => "stop",
            Error::Sql { .. } => "sql",
            Error::ConfigRejected { .. } => "config_rejected",
            Error::InvalidParameterName { .. } => "invalid_parameter_name",
            Error::ReservedParameter { .. } => "reserved_parameter",
            Error::ExtensionUnavailable { .. } => "extension_unavailable",
            Error::Extension { .. } => "extension",
            Error::ExtensionVersionUnavailable { .. } => "extension_version_unavailable",
            Error::ExtensionInUse { .. } => "extension_in_use",
            Error::InsideRefused(_) => "inside_refused",
            Error::Inside { .. } => "inside",
            Error::RoleInUse { .. } => "role_in_use",
            Error::DatabaseInUse { .. } => "database_in_use",
            Error::Timeout { .. } => "timeout",
            Error::Task { .. } => "task",
            Error::Backup { .. } => "backup",
            Error::Replication { .. } => "replication",
        }
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task {
            op,
            message: e.to_string(),
        })?
}
