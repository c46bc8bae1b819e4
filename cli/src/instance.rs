//! `pgplane instance …`: create, inspect, change and remove instances through
//! the control plane's API.
//!
//! Results go to stdout (a table, or JSON with `-o json`); progress, notes
//! and errors go to stderr, so stdout stays parseable.

mod connect;
mod export;
pub(crate) mod failure;
mod spec;
mod view;
pub(crate) mod wait;

use std::time::Duration;

use api::wait::Goal;
use api::{Client, ClientError, CreateInstance, Instance, UpdateInstance};
use chrono::Utc;
use domain::spec::{DEFAULT_CPU, DEFAULT_MEMORY, DEFAULT_POSTGRES_VERSION, DEFAULT_STORAGE};
use domain::State;

use crate::output::{self, OutputFormat};
use failure::Failure;
use spec::{NewSpec, SpecChange};

#[derive(clap::Subcommand, Debug)]
pub enum InstanceCommand {
    /// Create an instance.
    ///
    /// Examples:
    ///
    ///   pgplane instance create orders --wait
    ///
    ///   pgplane instance create orders --extension hstore,citext=1.6 --config work_mem=16MB --memory 2Gi --wait
    ///
    ///   pgplane instance create shop --role app --database shop:app --backup-schedule @daily --backup-retention 7d
    ///
    ///   pgplane instance create orders-fix --restore-from orders --at 2026-12-01T10:00:00Z --wait
    ///
    ///   pgplane instance create ledger --replicas 3 --synchronous on --wait
    Create(CreateArgs),
    /// List the organisation's instances: who owns each and where it is
    /// reached.
    ///
    /// Examples:
    ///
    ///   pgplane instance list
    ///
    ///   pgplane instance list --owner git:prod -o wide
    ///
    ///   pgplane instance list --state Error -o name | xargs -n1 pgplane instance status
    ///
    ///   pgplane instance list -w            # then a row per change, until Ctrl-C
    List(ListArgs),
    /// Show one instance in detail: spec, what the data plane observes, connection.
    ///
    /// Examples:
    ///
    ///   pgplane instance get orders
    ///
    ///   pgplane instance get orders -o yaml
    Get {
        /// Instance name (or id).
        name: String,
    },
    /// Change an instance's spec; only the flags given change.
    ///
    /// Examples:
    ///
    ///   pgplane instance update orders --config max_connections=200 --wait
    ///
    ///   pgplane instance update orders --extension pg_cron --memory 2Gi
    ///
    ///   pgplane instance update orders --unset-config work_mem --remove-extension citext
    Update(UpdateArgs),
    /// Restart Postgres.
    ///
    /// Examples:
    ///
    ///   pgplane instance restart orders --wait
    ///
    ///   pgplane instance restart orders --wait --timeout 5m
    Restart {
        /// Instance name (or id).
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop Postgres; the data is kept.
    ///
    /// Examples:
    ///
    ///   pgplane instance stop orders --wait
    ///
    ///   pgplane instance stop orders --wait --timeout 5m
    Stop {
        /// Instance name (or id).
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start a stopped instance.
    ///
    /// Examples:
    ///
    ///   pgplane instance start orders --wait
    ///
    ///   pgplane instance start orders --wait --timeout 2m
    Start {
        /// Instance name (or id).
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Put back what drifted: re-send the declared spec, so the data plane
    /// undoes what changed behind pgplane's back (`ALTER SYSTEM`, a dropped
    /// extension, a stopped server); restarts when a drifted parameter
    /// needs it. Nothing happens to an instance in sync.
    ///
    /// Examples:
    ///
    ///   pgplane drift                      # what drifted
    ///
    ///   pgplane instance heal orders --wait
    Heal {
        /// Instance name (or id).
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete an instance and its data.
    ///
    /// Examples:
    ///
    ///   pgplane instance delete orders --wait
    ///
    ///   pgplane instance delete orders --ignore-not-found   # for scripts: gone already is fine
    Delete {
        /// Instance name (or id).
        name: String,
        /// Succeed when there is no such instance or it is deleted already.
        #[arg(long)]
        ignore_not_found: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show an instance's state changes, oldest first.
    ///
    /// Examples:
    ///
    ///   pgplane instance history orders
    ///
    ///   pgplane instance history orders -o json
    History {
        /// Instance name (or id).
        name: String,
    },
    /// Print how to connect, password included: a URI (the default), libpq
    /// environment variables, or a `.pgpass` line.
    ///
    /// Examples:
    ///
    ///   psql "$(pgplane instance credentials orders)"
    ///
    ///   eval "$(pgplane instance credentials orders --format env)"; psql
    ///
    ///   pgplane instance credentials orders --format pgpass >> ~/.pgpass
    ///
    ///   pgplane instance credentials orders --role app   # a role the spec declares
    Credentials {
        /// Instance name (or id).
        name: String,
        #[arg(long, value_enum, default_value_t = connect::CredentialsFormat::Uri)]
        format: connect::CredentialsFormat,
        /// A role the spec declares (`roles`): its generated password, for
        /// the first declared database it owns (else `postgres`).
        #[arg(long)]
        role: Option<String>,
    },
    /// Print the instance's declared spec as a manifest, to move it into
    /// git: commit the file to a source's path, then sync that source with
    /// adopt on (`pgplane source add … --adopt`) so it takes the instance over.
    ///
    /// Examples:
    ///
    ///   pgplane instance export orders > instances/orders.yaml
    ///
    ///   pgplane instance list --owner api -o name | xargs -I{} sh -c 'pgplane instance export {} > instances/{}.yaml'
    Export {
        /// Instance name (or id).
        name: String,
    },
    /// Open `psql` on the instance (PostgreSQL's client; `scripts/setup.sh`
    /// installs it). Arguments after `--` go to psql. The password reaches
    /// psql through its environment, never its command line.
    ///
    /// Examples:
    ///
    ///   pgplane instance psql orders
    ///
    ///   pgplane instance psql orders -- -c 'select version()'
    Psql {
        /// Instance name (or id).
        name: String,
        /// Arguments for psql.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Show the server's log: its newest lines, as the data plane ships
    /// them at each re-observation (the local data plane; on Kubernetes the
    /// pod's log has them: `kubectl logs`).
    ///
    /// Examples:
    ///
    ///   pgplane instance logs orders
    ///
    ///   pgplane instance logs orders --tail 500 | grep ERROR
    ///
    ///   pgplane instance logs orders -f      # keep printing new lines, until Ctrl-C
    Logs {
        /// Instance name (or id).
        name: String,
        /// How many of the newest lines (at most 10000).
        #[arg(long, default_value_t = 100)]
        tail: u32,
        /// Keep printing lines as they are shipped.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// One instance's health at a glance: state, drift, WAL archiving, the
    /// last backup and the window a restore can reach. Exits 1 when
    /// something needs attention (Error, drift, archiving failing or off,
    /// no backup yet), so it can gate a script.
    ///
    /// Example:
    ///
    ///   pgplane instance status orders
    Status {
        /// Instance name (or id).
        name: String,
    },
    /// Take a full backup now (besides the scheduled ones).
    ///
    /// With --wait, waits until the backup is in the repository and prints
    /// what was taken; exits 1 when it failed.
    ///
    /// Example:
    ///
    ///   pgplane instance backup orders --wait
    Backup {
        /// Instance name (or id).
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Make a standby the primary, losing no commit.
    ///
    /// The primary shuts down cleanly, the standby receives its last WAL
    /// and is promoted, and the old primary becomes its standby; writes are
    /// refused only in between (the history says for how long). Clients of
    /// the read-write URI reconnect to the new primary. Without --to, the
    /// standby that has received the most WAL is chosen.
    ///
    /// Examples:
    ///
    ///   pgplane instance switchover orders --wait
    ///
    ///   pgplane instance switchover orders --to member-2 --wait
    Switchover {
        /// Instance name (or id).
        name: String,
        /// The standby to promote, as `instance get` lists the members.
        #[arg(long, value_name = "MEMBER")]
        to: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List an instance's backups and the window a restore can reach.
    ///
    /// Works for deleted instances too: their backups are kept for their
    /// retention, and `instance create NEW --restore-from NAME` restores them.
    ///
    /// Examples:
    ///
    ///   pgplane instance backups orders
    ///
    ///   pgplane instance backups orders -o json | jq .restorableUntil
    Backups {
        /// Instance name (or id).
        name: String,
    },
    /// Show what a running instance has been doing: client connections,
    /// transactions per second and database size, one row per sample
    /// (the data plane samples at each re-observation; the newest 120 are
    /// kept).
    ///
    /// Examples:
    ///
    ///   pgplane instance activity orders
    ///
    ///   pgplane instance activity orders -o json | jq '.items[-1]'
    Activity {
        /// Instance name (or id).
        name: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Instance name: lower-case letters, digits and '-', starting with a letter.
    pub name: String,
    /// Enable a Postgres extension, `NAME` or `NAME=VERSION`; repeat or
    /// separate with commas.
    #[arg(
        long = "extension",
        value_name = "NAME[=VERSION]",
        value_delimiter = ','
    )]
    pub extensions: Vec<String>,
    /// Set a postgresql.conf parameter, e.g. `--config work_mem=16MB`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = spec::parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Declare a login role (its password is generated; read it with
    /// `instance credentials NAME --role ROLE`); repeatable.
    #[arg(long = "role", value_name = "NAME")]
    pub roles: Vec<String>,
    /// Declare a database, owned by `postgres` or by OWNER (a declared
    /// role); repeatable. Manifests and the API declare its extensions and
    /// schemas too.
    #[arg(long = "database", value_name = "NAME[:OWNER]")]
    pub databases: Vec<String>,
    /// Postgres major version.
    #[arg(long, value_name = "VERSION", default_value = DEFAULT_POSTGRES_VERSION)]
    pub postgres_version: String,
    /// CPU: cores (`1`, `0.5`) or millicores (`500m`).
    #[arg(long, default_value = DEFAULT_CPU, value_parser = spec::parse_cpu)]
    pub cpu: String,
    /// Memory, e.g. `512Mi`, `2Gi`.
    #[arg(long, default_value = DEFAULT_MEMORY, value_parser = spec::parse_bytes)]
    pub memory: String,
    /// Disk size, e.g. `10Gi`.
    #[arg(long, default_value = DEFAULT_STORAGE, value_parser = spec::parse_bytes)]
    pub storage: String,
    /// Data plane to run it on; the control plane's default when omitted.
    #[arg(long, value_name = "NAME")]
    pub data_plane: Option<String>,
    /// Make the `postgres` role a superuser. Off by default: the role owns
    /// the database (schemas, tables, functions, trusted extensions) but
    /// cannot run programs on the server or read its files.
    #[arg(long)]
    pub superuser_access: bool,
    /// Servers: one primary and `N - 1` streaming standbys, which take over
    /// when the primary is gone (`instance credentials --format
    /// read-write-uri` follows it).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub replicas: u32,
    /// `on`: a commit is acknowledged once a standby also has it on disk,
    /// so a failover loses none; a number `N`: once N standbys have it.
    /// Needs replicas above that number. Default `off`.
    #[arg(long, value_name = "off|on|N", value_parser = parse_synchronous)]
    pub synchronous: Option<domain::Synchronous>,
    /// When full backups are taken: five-field cron (UTC), e.g. `30 2 * * *`,
    /// or `@daily`. WAL is archived continuously regardless.
    #[arg(long, value_name = "CRON", value_parser = parse_schedule)]
    pub backup_schedule: Option<String>,
    /// How many full backups to keep (`7`), or for how many days (`7d`).
    #[arg(long, value_name = "N|Nd", value_parser = parse_retention)]
    pub backup_retention: Option<domain::Retention>,
    /// Start as a copy of another instance's data, restored from its backups
    /// (a branch). The source may have been deleted; it is never touched.
    /// Its extensions and configuration are the starting point of this spec.
    ///
    /// Example:
    ///
    ///   pgplane instance create orders-fix --restore-from orders --at 2026-12-01T10:00:00Z
    #[arg(long, value_name = "NAME")]
    pub restore_from: Option<String>,
    /// With --restore-from: the point in time to recover to (RFC 3339);
    /// the latest when omitted.
    #[arg(
        long,
        value_name = "TIME",
        requires = "restore_from",
        conflicts_with = "lsn"
    )]
    pub at: Option<String>,
    /// With --restore-from: the WAL position to recover to, e.g. `0/3000060`.
    #[arg(long, value_name = "LSN", requires = "restore_from")]
    pub lsn: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

fn parse_schedule(arg: &str) -> Result<String, String> {
    domain::Schedule::parse(arg).map(|_| arg.trim().to_owned())
}

fn parse_synchronous(arg: &str) -> Result<domain::Synchronous, String> {
    domain::Synchronous::parse(arg)
}

fn parse_retention(arg: &str) -> Result<domain::Retention, String> {
    domain::Retention::parse(arg)
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only instances in this state (Submitted, Up, Configuring, Restarting,
    /// Stopping, Stopped, Starting, Deleting, Deleted, Error).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<State>,
    /// Only instances this owner manages: `api`, `terraform`, `git:SOURCE`,
    /// or `git` for any source.
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<String>,
    /// Only instances on this data plane.
    #[arg(long, value_name = "NAME")]
    pub data_plane: Option<String>,
    /// Keep going after the list: print a row for every change as it
    /// happens, until interrupted (Ctrl-C).
    #[arg(short = 'w', long)]
    pub watch: bool,
}

impl ListArgs {
    fn keeps(&self, owner: &str, data_plane: &str, state: State) -> bool {
        let owner_ok = match self.owner.as_deref() {
            None => true,
            Some("git") => owner.starts_with("git:"),
            Some(o) => o == owner,
        };
        owner_ok
            && self.data_plane.as_deref().is_none_or(|d| d == data_plane)
            && self.state.is_none_or(|s| s == state)
    }
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Instance name (or id).
    pub name: String,
    /// Enable a Postgres extension, `NAME` or `NAME=VERSION` (a new version
    /// of an installed one updates it); repeat or separate with commas.
    #[arg(
        long = "extension",
        value_name = "NAME[=VERSION]",
        value_delimiter = ','
    )]
    pub extensions: Vec<String>,
    /// Take an extension out of the spec; it stays installed. Repeat or
    /// separate with commas.
    #[arg(long = "remove-extension", value_name = "NAME", value_delimiter = ',')]
    pub remove_extensions: Vec<String>,
    /// Drop an extension (`ensure: absent`); refused while objects depend on
    /// it. Repeat or separate with commas.
    #[arg(long = "drop-extension", value_name = "NAME", value_delimiter = ',')]
    pub drop_extensions: Vec<String>,
    /// Set a postgresql.conf parameter, e.g. `--config work_mem=16MB`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = spec::parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Declare a login role (or declare present again); repeatable.
    #[arg(long = "role", value_name = "NAME")]
    pub roles: Vec<String>,
    /// Declare a database, owned by `postgres` or by OWNER; repeatable.
    #[arg(long = "database", value_name = "NAME[:OWNER]")]
    pub databases: Vec<String>,
    /// Remove a parameter from the spec (back to Postgres's default); repeatable.
    #[arg(long = "unset-config", value_name = "KEY", value_parser = spec::parse_config_key)]
    pub unset_config: Vec<String>,
    /// CPU: cores (`1`, `0.5`) or millicores (`500m`).
    #[arg(long, value_parser = spec::parse_cpu)]
    pub cpu: Option<String>,
    /// Memory, e.g. `512Mi`, `2Gi`.
    #[arg(long, value_parser = spec::parse_bytes)]
    pub memory: Option<String>,
    /// Disk size, e.g. `20Gi`.
    #[arg(long, value_parser = spec::parse_bytes)]
    pub storage: Option<String>,
    /// Make the `postgres` role a superuser (`true`) or an ordinary database
    /// owner again (`false`).
    #[arg(long, value_name = "BOOL")]
    pub superuser_access: Option<bool>,
    /// Servers: one primary and `N - 1` standbys. Standbys are added and
    /// removed without restarting the primary.
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// `off`, `on` or N: how many standbys confirm each commit. Applied
    /// with a reload, no restart.
    #[arg(long, value_name = "off|on|N", value_parser = parse_synchronous)]
    pub synchronous: Option<domain::Synchronous>,
    /// When full backups are taken: five-field cron (UTC), or `@daily`.
    #[arg(long, value_name = "CRON", value_parser = parse_schedule)]
    pub backup_schedule: Option<String>,
    /// How many full backups to keep (`7`), or for how many days (`7d`).
    #[arg(long, value_name = "N|Nd", value_parser = parse_retention)]
    pub backup_retention: Option<domain::Retention>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(clap::Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Wait until the data plane has acted (instance Up, Stopped or Deleted),
    /// printing each state change to stderr.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long, e.g. `90s`, `5m`, `1h` (then exit
    /// 3; a refusal or a failure exits 1). The same default as the
    /// Terraform provider's timeouts.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = wait::parse_duration)]
    pub timeout: Duration,
}

fn parse_state(arg: &str) -> Result<State, String> {
    State::parse(arg).ok_or_else(|| {
        let all: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {arg:?}; one of {}", all.join(", "))
    })
}

/// Runs one instance command; returns the process exit code (0 ok, 1 error).
/// Errors are printed to stderr as `error: <message>`, then one line per
/// invalid field, then hints.
pub async fn run(cmd: InstanceCommand, client: &Client, output: OutputFormat) -> i32 {
    match execute(cmd, client, output).await {
        Ok(()) => 0,
        Err(failure) => {
            eprint!("{}", failure.render());
            failure.exit_code()
        }
    }
}

async fn execute(
    cmd: InstanceCommand,
    client: &Client,
    output: OutputFormat,
) -> Result<(), Failure> {
    match cmd {
        InstanceCommand::Create(args) => create(client, args, output).await,
        InstanceCommand::List(args) => list(client, args, output).await,
        InstanceCommand::Get { name } => get(client, &name, output).await,
        InstanceCommand::Update(args) => update(client, args, output).await,
        InstanceCommand::Restart { name, wait } => {
            action(client, &name, Action::Restart, wait, output).await
        }
        InstanceCommand::Stop { name, wait } => {
            action(client, &name, Action::Stop, wait, output).await
        }
        InstanceCommand::Start { name, wait } => {
            action(client, &name, Action::Start, wait, output).await
        }
        InstanceCommand::Heal { name, wait } => {
            action(client, &name, Action::Heal, wait, output).await
        }
        InstanceCommand::Delete {
            name,
            ignore_not_found,
            wait,
        } => match action(client, &name, Action::Delete, wait, output).await {
            Err(Failure::Deleted { .. }) if ignore_not_found => {
                eprintln!("{name}: deleted already; nothing to do");
                Ok(())
            }
            Err(Failure::Client { error, .. }) if ignore_not_found && error.is_not_found() => {
                eprintln!("{name}: no such instance; nothing to do");
                Ok(())
            }
            other => other,
        },
        InstanceCommand::History { name } => history(client, &name, output).await,
        InstanceCommand::Credentials { name, format, role } => {
            credentials(client, &name, role.as_deref(), format, output).await
        }
        InstanceCommand::Psql { name, args } => psql(client, &name, &args).await,
        InstanceCommand::Export { name } => {
            let inst = fetch(client, &name).await?;
            output::print_text(&export::manifest(&inst))?;
            Ok(())
        }
        InstanceCommand::Status { name } => status(client, &name, output).await,
        InstanceCommand::Logs { name, tail, follow } => {
            logs(client, &name, tail, follow, output).await
        }
        InstanceCommand::Backup { name, wait } => backup(client, &name, wait, output).await,
        InstanceCommand::Switchover { name, to, wait } => {
            switchover(client, &name, to.as_deref(), wait, output).await
        }
        InstanceCommand::Backups { name } => backups(client, &name, output).await,
        InstanceCommand::Activity { name } => activity(client, &name, output).await,
    }
}

async fn backup(
    client: &Client,
    name: &str,
    wait: WaitArgs,
    output: OutputFormat,
) -> Result<(), Failure> {
    let sent = send_request(
        client,
        name,
        "full backup",
        &format!("`pgplane instance backups {name}` lists it once taken"),
        (api::HistoryEvent::BackedUp, api::HistoryEvent::BackupFailed),
        &wait,
        client.request_backup(name),
    )
    .await?;
    match (output, sent) {
        (f, Some(inst)) if f.is_data() => Ok(output::print_data(f, &inst)?),
        (f, None) if f.is_data() => Ok(output::print_data(
            f,
            &client
                .backups(name)
                .await
                .map_err(|e| Failure::client(name, e))?,
        )?),
        _ => Ok(()),
    }
}

async fn switchover(
    client: &Client,
    name: &str,
    to: Option<&str>,
    wait: WaitArgs,
    output: OutputFormat,
) -> Result<(), Failure> {
    let sent = send_request(
        client,
        name,
        &format!(
            "switchover to {}",
            to.unwrap_or("the most advanced standby")
        ),
        &format!("`pgplane instance history {name}` shows how it went"),
        (
            api::HistoryEvent::SwitchedOver,
            api::HistoryEvent::SwitchoverFailed,
        ),
        &wait,
        client.request_switchover(name, to),
    )
    .await?;
    let inst = match sent {
        Some(inst) => inst,
        None => client
            .get_instance(name)
            .await
            .map_err(|e| Failure::client(name, e))?,
    };
    match output {
        f if f.is_data() => Ok(output::print_data(f, &inst)?),
        _ => Ok(()),
    }
}

/// Sends a request that moves no state (`send`, not yet polled) and says
/// so; with --wait, waits for the history entry that says how it went
/// (`outcomes`: done, failed) and prints it. Returns the instance as the
/// request left it, or `None` after a wait.
async fn send_request(
    client: &Client,
    name: &str,
    what: &str,
    later: &str,
    outcomes: (api::HistoryEvent, api::HistoryEvent),
    wait: &WaitArgs,
    send: impl std::future::Future<Output = Result<api::Instance, api::ClientError>>,
) -> Result<Option<api::Instance>, Failure> {
    let seen = client
        .history(name)
        .await
        .map_err(|e| Failure::client(name, e))?
        .items
        .len();
    let inst = send.await.map_err(|e| Failure::client(name, e))?;
    if !wait.wait {
        eprintln!("{name}: {what} requested; {later}");
        return Ok(Some(inst));
    }
    eprintln!("{name}: {what} requested; waiting for it");
    let detail = wait_for_outcome(client, name, seen, outcomes, wait).await?;
    eprintln!("{name}: {detail}");
    Ok(None)
}

/// Waits for the history entry (after the first `seen`) that says how a
/// request went: the detail of `done`, or the failure `failed` records.
async fn wait_for_outcome(
    client: &Client,
    name: &str,
    seen: usize,
    (done, failed): (api::HistoryEvent, api::HistoryEvent),
    wait: &WaitArgs,
) -> Result<String, Failure> {
    let started = std::time::Instant::now();
    loop {
        let history = client
            .history(name)
            .await
            .map_err(|e| Failure::client(name, e))?;
        let outcome = history
            .items
            .iter()
            .skip(seen)
            .find(|h| h.event == done || h.event == failed);
        if let Some(h) = outcome {
            let detail = h.detail.clone().unwrap_or_default();
            if h.event == failed {
                return Err(Failure::InstanceFailed {
                    name: name.to_owned(),
                    error: detail,
                });
            }
            return Ok(detail);
        }
        if started.elapsed() > wait.timeout {
            let inst = client
                .get_instance(name)
                .await
                .map_err(|e| Failure::client(name, e))?;
            return Err(Failure::TimedOut {
                name: name.to_owned(),
                after: wait.timeout,
                state: inst.state,
                generation: inst.generation,
                observed_generation: inst.observed_generation,
                last_error: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The server's log lines; with `follow`, then the new ones as they come.
async fn logs(
    client: &Client,
    name: &str,
    tail: u32,
    follow: bool,
    output: OutputFormat,
) -> Result<(), Failure> {
    let mut cursor = None;
    loop {
        // After the first page, every line shipped since.
        let want = if cursor.is_some() { 10_000 } else { tail };
        let page = client
            .logs(name, want, cursor)
            .await
            .map_err(|e| Failure::client(name, e))?;
        match output {
            f if f.is_data() && !follow => output::print_data(f, &page)?,
            f if f.is_data() => {
                for line in &page.items {
                    let json = serde_json::to_string(line).map_err(std::io::Error::other)?;
                    output::print_text(&format!("{json}\n"))?;
                }
            }
            _ => {
                let text: String = page.items.iter().map(|l| format!("{}\n", l.line)).collect();
                output::print_text(&text)?;
            }
        }
        if cursor.is_none() && page.items.is_empty() && !follow {
            eprintln!("{name}: no log lines shipped yet (they come with each re-observation)");
        }
        if !follow {
            return Ok(());
        }
        cursor = page.cursor.or(cursor);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The instance's health; a failure when something needs attention.
async fn status(client: &Client, name: &str, output: OutputFormat) -> Result<(), Failure> {
    let inst = fetch(client, name).await?;
    let backups = client
        .backups(name)
        .await
        .map_err(|e| Failure::client(name, e))?;
    let drift = client.drift().await.map_err(|e| Failure::client(name, e))?;
    let fields = drift
        .items
        .into_iter()
        .find(|d| d.id == inst.id)
        .map(|d| d.fields)
        .unwrap_or_default();
    let report = view::Health::of(&inst, &backups, &fields, Utc::now());
    match output {
        f if f.is_data() => output::print_data(f, &report)?,
        _ => output::print_text(&report.render())?,
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Unhealthy {
            name: inst.name,
            problems: report.problems,
        })
    }
}

async fn backups(client: &Client, name: &str, output: OutputFormat) -> Result<(), Failure> {
    let list = client
        .backups(name)
        .await
        .map_err(|e| Failure::client(name, e))?;
    match output {
        f if f.is_data() => output::print_data(f, &list)?,
        _ => output::print_text(&view::backups(&list))?,
    }
    Ok(())
}

async fn activity(client: &Client, name: &str, output: OutputFormat) -> Result<(), Failure> {
    let list = client
        .activity(name)
        .await
        .map_err(|e| Failure::client(name, e))?;
    match output {
        f if f.is_data() => output::print_data(f, &list)?,
        _ => output::print_text(&view::activity(&list))?,
    }
    Ok(())
}

async fn create(client: &Client, args: CreateArgs, output: OutputFormat) -> Result<(), Failure> {
    // A branch starts from its source's extensions and configuration.
    let (mut extensions, mut config) = (Vec::new(), Vec::new());
    if let Some(from) = &args.restore_from {
        let source = fetch(client, from).await?;
        extensions.extend(
            source
                .spec
                .extensions
                .iter()
                .filter(|e| e.ensure == domain::Ensure::Present)
                .map(|e| e.display()),
        );
        config.extend(source.spec.config.clone());
    }
    extensions.extend(args.extensions.iter().cloned());
    config.retain(|(k, _)| !args.config.iter().any(|(a, _)| a == k));
    config.extend(args.config.iter().cloned());
    let mut spec = NewSpec {
        postgres_version: &args.postgres_version,
        cpu: &args.cpu,
        memory: &args.memory,
        storage: &args.storage,
        extensions: &extensions,
        config: &config,
        superuser_access: args.superuser_access,
    }
    .build()?;
    spec.replicas = args.replicas;
    spec.synchronous = args.synchronous.unwrap_or_default();
    spec::declare_inside(&mut spec, &args.roles, &args.databases);
    if let Some(schedule) = args.backup_schedule {
        spec.backup.schedule = schedule;
    }
    if let Some(retention) = args.backup_retention {
        spec.backup.retention = retention;
    }
    spec.restore = args.restore_from.map(|from| domain::RestoreSpec {
        from,
        at: args.at,
        lsn: args.lsn,
    });
    let req = CreateInstance {
        name: args.name.clone(),
        spec,
        data_plane: args.data_plane,
        owner: None,
    };
    let created = client
        .create_instance(&req)
        .await
        .map_err(|e| Failure::client(&args.name, e))?;
    finish(client, created, Goal::Settled, args.wait, output).await
}

async fn list(client: &Client, args: ListArgs, output: OutputFormat) -> Result<(), Failure> {
    let started = Utc::now();
    let mut list = client
        .list_instances(args.state.map(State::as_str))
        .await
        .map_err(|e| Failure::client("", e))?;
    list.items
        .retain(|i| args.keeps(&i.owner, &i.data_plane, i.state));
    match output {
        f if f.is_data() => output::print_data(f, &list)?,
        OutputFormat::Name => {
            let names: String = list.items.iter().map(|i| format!("{}\n", i.name)).collect();
            output::print_text(&names)?
        }
        _ if list.items.is_empty() => eprintln!("no instances"),
        f => output::print_text(&view::list(
            &list.items,
            Utc::now(),
            f == OutputFormat::Wide,
        ))?,
    }
    if args.watch {
        watch(client, &args, output, started).await?;
    }
    Ok(())
}

/// `list --watch`: one row (or JSON line) per change the event stream
/// reports, until interrupted or the stream ends.
async fn watch(
    client: &Client,
    args: &ListArgs,
    output: OutputFormat,
    since: chrono::DateTime<Utc>,
) -> Result<(), Failure> {
    use api::StreamEvent;
    let mut stream = client
        .instance_events(Some(since))
        .await
        .map_err(|e| Failure::client("", e))?;
    let mut seen = std::collections::HashMap::new();
    while let Some(event) = stream.next().await.map_err(|e| Failure::client("", e))? {
        let StreamEvent::Instance(e) = event else {
            continue;
        };
        if e.updated_at < since || seen.get(&e.id) == Some(&(e.generation, e.state)) {
            continue;
        }
        seen.insert(e.id, (e.generation, e.state));
        let inst = match client.get_instance(&e.id.to_string()).await {
            Ok(inst) => inst,
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(Failure::client(&e.name, err)),
        };
        if !args.keeps(&inst.owner, &inst.data_plane, inst.state) {
            continue;
        }
        let line = match output {
            OutputFormat::Json => serde_json::to_string(&inst)
                .map(|l| l + "\n")
                .map_err(std::io::Error::other)?,
            OutputFormat::Yaml => format!("---\n{}", output::render_data(output, &inst)?),
            OutputFormat::Name => format!("{}\n", inst.name),
            f => view::list(
                std::slice::from_ref(&inst),
                Utc::now(),
                f == OutputFormat::Wide,
            )
            .lines()
            .nth(1)
            .map(|row| format!("{row}\n"))
            .unwrap_or_default(),
        };
        output::print_text(&line)?;
    }
    Ok(())
}

async fn get(client: &Client, name: &str, output: OutputFormat) -> Result<(), Failure> {
    let inst = fetch(client, name).await?;
    match output {
        f if f.is_data() => output::print_data(f, &inst)?,
        _ => output::print_text(&view::details(&inst, Utc::now()))?,
    }
    Ok(())
}

/// Read, change, write back only if nobody changed it meanwhile.
async fn update(client: &Client, args: UpdateArgs, output: OutputFormat) -> Result<(), Failure> {
    let current = fetch(client, &args.name).await?;
    if current.state == State::Deleted {
        return Err(Failure::Deleted { name: args.name });
    }
    let spec = SpecChange {
        add_extensions: &args.extensions,
        remove_extensions: &args.remove_extensions,
        drop_extensions: &args.drop_extensions,
        set_config: &args.config,
        unset_config: &args.unset_config,
        cpu: args.cpu.as_deref(),
        memory: args.memory.as_deref(),
        storage: args.storage.as_deref(),
        superuser_access: args.superuser_access,
    }
    .apply(&current.spec)?;
    let mut spec = spec;
    if let Some(replicas) = args.replicas {
        spec.replicas = replicas;
    }
    if let Some(synchronous) = args.synchronous {
        spec.synchronous = synchronous;
    }
    spec::declare_inside(&mut spec, &args.roles, &args.databases);
    if let Some(schedule) = args.backup_schedule {
        spec.backup.schedule = schedule;
    }
    if let Some(retention) = args.backup_retention {
        spec.backup.retention = retention;
    }
    let changes = domain::diff_specs(&current.spec, &spec);
    if changes.is_empty() {
        eprintln!(
            "{}: nothing to change (spec already as requested at generation {})",
            current.name, current.generation
        );
        return finish(client, current, Goal::Settled, args.wait, output).await;
    }
    let req = UpdateInstance {
        spec,
        expected_generation: Some(current.generation),
        owner: None,
    };
    let updated = client
        .update_instance(&args.name, &req)
        .await
        .map_err(|e| match Failure::client(&args.name, e) {
            Failure::Client { error, hint: None } if error.code() == Some(&api::ErrorCode::Conflict) => {
                Failure::Client {
                    error,
                    hint: Some(format!(
                        "instance {} may have changed since generation {} was read; run the command again",
                        args.name, current.generation
                    )),
                }
            }
            other => other,
        })?;
    eprint!("{}: changing\n{}", current.name, view::changes(&changes));
    eprint!("{}", view::restart_note(&updated));
    finish(client, updated, Goal::Settled, args.wait, output).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Restart,
    Stop,
    Start,
    Heal,
    Delete,
}

async fn action(
    client: &Client,
    name: &str,
    action: Action,
    wait: WaitArgs,
    output: OutputFormat,
) -> Result<(), Failure> {
    let generation_before = match action {
        Action::Heal => fetch(client, name).await?.generation,
        _ => 0,
    };
    let result = match action {
        Action::Restart => client.instance_action(name, "restart").await,
        Action::Stop => client.instance_action(name, "stop").await,
        Action::Start => client.instance_action(name, "start").await,
        Action::Heal => client.instance_action(name, "heal").await,
        Action::Delete => client.delete_instance(name).await,
    };
    let inst = match (result, action) {
        // Stopping a stopped instance (or starting a running one) asks for
        // what is already declared: nothing to do, and --wait still waits
        // for the instance to get there.
        (Err(e @ ClientError::Api { status: 409, .. }), Action::Stop | Action::Start)
            if e.code() == Some(&api::ErrorCode::IllegalTransition) =>
        {
            let inst = fetch(client, name).await?;
            let there = match action {
                Action::Stop => matches!(inst.state, State::Stopped | State::Stopping),
                _ => matches!(
                    inst.state,
                    State::Up | State::Starting | State::Configuring | State::Restarting
                ),
            };
            if !there {
                return Err(Failure::client(name, e));
            }
            eprintln!(
                "{name}: already {}; nothing to do",
                if inst.spec.stopped {
                    "stopped"
                } else {
                    "running"
                }
            );
            inst
        }
        (Ok(inst), Action::Heal) if inst.generation == generation_before => {
            eprintln!("{name}: in sync with its declaration; nothing to heal");
            inst
        }
        (result, _) => result.map_err(|e| Failure::client(name, e))?,
    };
    let goal = match action {
        Action::Delete => Goal::Deleted,
        Action::Restart | Action::Stop | Action::Start | Action::Heal => Goal::Settled,
    };
    finish(client, inst, goal, wait, output).await
}

async fn history(client: &Client, name: &str, output: OutputFormat) -> Result<(), Failure> {
    let history = client
        .history(name)
        .await
        .map_err(|e| Failure::client(name, e))?;
    match output {
        f if f.is_data() => output::print_data(f, &history)?,
        _ => output::print_text(&view::history(&history))?,
    }
    Ok(())
}

/// Only the URI in table mode, so `psql "$(pgplane instance credentials x)"` works.
async fn credentials(
    client: &Client,
    name: &str,
    role: Option<&str>,
    format: connect::CredentialsFormat,
    output: OutputFormat,
) -> Result<(), Failure> {
    let creds = client
        .credentials_for(name, role)
        .await
        .map_err(|e| Failure::client(name, e))?;
    match output {
        f if f.is_data() => output::print_data(f, &creds)?,
        _ => output::print_text(&connect::render(&creds, format))?,
    }
    Ok(())
}

/// Becomes psql on the instance (exec: psql owns the terminal and its
/// signals, and its exit status is this command's). Returns only when psql
/// cannot be started.
async fn psql(client: &Client, name: &str, args: &[String]) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt as _;
    let creds = client
        .credentials(name)
        .await
        .map_err(|e| Failure::client(name, e))?;
    let e = connect::psql(&creds, args).exec();
    Err(Failure::Tool {
        what: format!(
            "cannot run psql: {e}; install PostgreSQL's client (scripts/setup.sh does) or use `pgplane instance credentials {name}`"
        ),
    })
}

async fn fetch(client: &Client, name: &str) -> Result<Instance, Failure> {
    client
        .get_instance(name)
        .await
        .map_err(|e| Failure::client(name, e))
}

/// Waits if asked, then prints the instance.
async fn finish(
    client: &Client,
    inst: Instance,
    goal: Goal,
    wait: WaitArgs,
    output: OutputFormat,
) -> Result<(), Failure> {
    let inst = if wait.wait {
        wait::until_settled(client, inst, goal, wait.timeout).await?
    } else {
        inst
    };
    match output {
        f if f.is_data() => output::print_data(f, &inst)?,
        OutputFormat::Name => output::print_text(&format!("{}\n", inst.name))?,
        _ => output::print_text(&view::summary(&inst, Utc::now()))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The command nested under a top-level parser, as `pgplane` nests it.
    #[derive(clap::Parser, Debug)]
    #[command(name = "pgplane-instance")]
    struct Cli {
        #[command(subcommand)]
        cmd: InstanceCommand,
    }

    fn parse(args: &[&str]) -> Result<InstanceCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("pgplane-instance").chain(args.iter().copied()))
            .map(|c| c.cmd)
    }

    #[test]
    fn command_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn create_takes_repeated_and_comma_separated_flags_with_defaults() {
        let cmd = parse(&[
            "create",
            "orders",
            "--extension",
            "hstore,citext",
            "--extension",
            "pg_trgm",
            "--config",
            "work_mem=16MB",
            "--config",
            "jit=off",
        ])
        .unwrap();
        let InstanceCommand::Create(args) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(args.extensions, ["hstore", "citext", "pg_trgm"]);
        assert_eq!(
            args.config,
            [
                ("work_mem".to_owned(), "16MB".to_owned()),
                ("jit".to_owned(), "off".to_owned())
            ]
        );
        assert_eq!(args.postgres_version, DEFAULT_POSTGRES_VERSION);
        assert_eq!(args.cpu, DEFAULT_CPU);
        assert_eq!(args.memory, DEFAULT_MEMORY);
        assert_eq!(args.storage, DEFAULT_STORAGE);
        assert!(!args.wait.wait);
        assert_eq!(args.wait.timeout, Duration::from_secs(600));
    }

    #[test]
    fn bad_config_names_the_argument_and_the_value() {
        let err = parse(&["create", "orders", "--config", "work_mem"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--config <KEY=VALUE>"), "{text}");
        assert!(text.contains("\"work_mem\""), "{text}");
    }

    #[test]
    fn wait_and_timeout_parse_humanely() {
        let cmd = parse(&["restart", "orders", "--wait", "--timeout", "5m"]).unwrap();
        let InstanceCommand::Restart { name, wait } = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(name, "orders");
        assert!(wait.wait);
        assert_eq!(wait.timeout, Duration::from_secs(300));
        let err = parse(&["delete", "orders", "--wait", "--timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("like 90s, 5m"), "{err}");
    }

    #[test]
    fn list_state_is_case_insensitive_and_checked() {
        let cmd = parse(&["list", "--state", "up"]).unwrap();
        assert!(matches!(
            cmd,
            InstanceCommand::List(ListArgs {
                state: Some(State::Up),
                ..
            })
        ));
        let err = parse(&["list", "--state", "running"]).unwrap_err();
        assert!(err.to_string().contains("one of Submitted, Up"), "{err}");
    }

    #[test]
    fn list_filters_by_owner_and_data_plane() {
        let InstanceCommand::List(args) =
            parse(&["list", "--owner", "git", "--data-plane", "local", "-w"]).unwrap()
        else {
            panic!("not a list");
        };
        assert!(args.watch);
        assert!(args.keeps("git:prod", "local", State::Up));
        assert!(!args.keeps("git:prod", "k8s", State::Up));
        assert!(!args.keeps("terraform", "local", State::Up));
        let InstanceCommand::List(args) = parse(&["list", "--owner", "terraform"]).unwrap() else {
            panic!("not a list");
        };
        assert!(args.keeps("terraform", "k8s", State::Stopped));
        assert!(!args.keeps("api", "k8s", State::Stopped));
    }

    #[test]
    fn update_flags_are_optional_and_quantities_checked() {
        let cmd = parse(&[
            "update",
            "orders",
            "--remove-extension",
            "hstore",
            "--unset-config",
            "jit",
            "--memory",
            "2Gi",
        ])
        .unwrap();
        let InstanceCommand::Update(args) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(args.remove_extensions, ["hstore"]);
        assert_eq!(args.unset_config, ["jit"]);
        assert_eq!(args.memory.as_deref(), Some("2Gi"));
        assert_eq!(args.cpu, None);
        let err = parse(&["update", "orders", "--storage", "10GB"]).unwrap_err();
        assert!(err.to_string().contains("--storage"), "{err}");
    }
}
