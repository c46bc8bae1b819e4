//! pgplane's instance agent: converges one Postgres data directory to an
//! [`domain::InstanceSpec`] and observes it (DESIGN.md §2, §7).
//!
//! - [`PostgresBinaries`]: where `initdb` and `postgres` are.
//! - [`RunAs`]: the unprivileged OS user Postgres runs as when pgplane is root.
//! - [`Template`]: an initdb'd data directory that instances are copied from.
//! - [`Agent`]: create, start, stop, converge, observe and delete one instance.
//!
//! Layout for a data directory `/x/name`: the data in `/x/name`, the unix
//! socket in `/x/name.sock/` (mode 0700, owned by the Postgres user), the
//! server log in `/x/name/log/postgres.log`, and `/x/name.tmp` while creating.

mod backup;
mod binaries;
mod catalog;
mod cgroup;
mod converge;
mod create;
mod error;
mod inside;
mod observe;
mod process;
mod replica;
mod run_as;
mod secret;
mod sql;
mod template;
mod upgrade;

use std::path::{Path, PathBuf};

pub use backup::{
    catalog_of, prepare_repository, remove_stanza, seal_stanza, Archiving, Repository, S3Repository,
};
pub use binaries::PostgresBinaries;
pub use catalog::{library_present, read_catalog};
pub use cgroup::{MemoryController, MemoryLimit};
pub use converge::ConvergeOutcome;
pub use error::{error_chain, Error, Result};
pub use inside::RolePasswords;
pub use process::describe_exit;
pub use replica::{Downstream, ReplicationPosition, Upstream};
pub use run_as::RunAs;
pub use secret::Secret;
pub use template::{Template, ADMIN_ROLE, USER_ROLE};

/// Where one instance lives and listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub data_dir: PathBuf,
    pub port: u16,
    /// `listen_addresses`; `"127.0.0.1"` unless the instance must be
    /// reachable from elsewhere.
    pub listen_address: String,
}

impl InstanceConfig {
    pub const DEFAULT_LISTEN_ADDRESS: &'static str = "127.0.0.1";

    pub fn new(data_dir: impl Into<PathBuf>, port: u16) -> InstanceConfig {
        InstanceConfig {
            data_dir: data_dir.into(),
            port,
            listen_address: Self::DEFAULT_LISTEN_ADDRESS.to_owned(),
        }
    }
}

/// Converges and observes the Postgres instance in one data directory.
#[derive(Debug, Clone)]
pub struct Agent {
    bins: PostgresBinaries,
    run_as: RunAs,
    config: InstanceConfig,
    layout: Layout,
    /// The OS user of this process: the only one `pg_ident.conf` lets log
    /// in as [`ADMIN_ROLE`].
    admin_os_user: String,
    /// The server's cgroup, when memory is enforced.
    memory_limit: Option<MemoryLimit>,
    /// Where WAL and backups go; `None`: the instance does not archive.
    archiving: Option<backup::Archiving>,
    /// The primary this server streams from; `None`: it is a primary.
    upstream: Option<replica::Upstream>,
    /// Whether the instance has standbys (or is one).
    replicating: bool,
}

/// The paths derived from the data directory.
#[derive(Debug, Clone)]
struct Layout {
    data_dir: PathBuf,
    tmp_dir: PathBuf,
    socket_dir: PathBuf,
    socket_path: PathBuf,
    log_file: PathBuf,
    /// pgBackRest's configuration and locks for this instance (0700).
    backup_dir: PathBuf,
    /// Written last by [`Agent::create`].
    marker: PathBuf,
}

/// Postgres' limit is `sizeof(sun_path)` (108); keep a margin.
const MAX_SOCKET_PATH: usize = 100;
pub(crate) const INSTANCE_MARKER: &str = ".pgplane-instance-complete";

impl Layout {
    fn new(data_dir: &Path, port: u16) -> Layout {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let socket_dir = template::sibling(&data_dir, "sock");
        Layout {
            tmp_dir: template::sibling(&data_dir, "tmp"),
            socket_path: socket_dir.join(format!(".s.PGSQL.{port}")),
            backup_dir: template::sibling(&data_dir, "pgbackrest"),
            socket_dir,
            log_file: data_dir.join("log").join("postgres.log"),
            marker: data_dir.join(INSTANCE_MARKER),
            data_dir,
        }
    }

    fn check_socket_path(&self) -> Result<()> {
        let len = self.socket_path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(Error::SocketPathTooLong {
                path: self.socket_path.clone(),
                len,
                max: MAX_SOCKET_PATH,
            });
        }
        Ok(())
    }
}

impl Agent {
    pub fn new(bins: PostgresBinaries, run_as: RunAs, config: InstanceConfig) -> Agent {
        let layout = Layout::new(&config.data_dir, config.port);
        Agent {
            bins,
            run_as,
            config,
            layout,
            admin_os_user: RunAs::current().name().to_owned(),
            memory_limit: None,
            archiving: None,
            upstream: None,
            replicating: false,
        }
    }

    /// Runs the server inside `limit`'s cgroup.
    pub fn with_memory_limit(mut self, limit: Option<MemoryLimit>) -> Agent {
        self.memory_limit = limit;
        self
    }

    pub fn memory_limit(&self) -> Option<&MemoryLimit> {
        self.memory_limit.as_ref()
    }

    /// The OS user the server runs as.
    pub fn run_as(&self) -> &RunAs {
        &self.run_as
    }

    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    /// The absolute data directory.
    pub fn data_dir(&self) -> &Path {
        &self.layout.data_dir
    }

    /// The server log (Postgres' stderr).
    pub fn log_file(&self) -> &Path {
        &self.layout.log_file
    }

    /// The directory holding the instance's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.layout.socket_dir
    }

    /// Where clients connect (over TCP, with the password).
    pub fn connection(&self) -> domain::ConnectionInfo {
        let host = match self.config.listen_address.as_str() {
            "" | "*" | "0.0.0.0" | "localhost" => "127.0.0.1".to_owned(),
            "::" => "::1".to_owned(),
            a => a.to_owned(),
        };
        domain::ConnectionInfo {
            host,
            port: self.config.port,
            database: "postgres".to_owned(),
            user: USER_ROLE.to_owned(),
            members: Vec::new(),
        }
    }
}
