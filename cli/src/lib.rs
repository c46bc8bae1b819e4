//! The `pgplane` command line: every subcommand parses its arguments here
//! and calls into the library crates.

pub mod agent;
pub mod backup_repo;
pub mod context;
pub mod drift;
pub mod extension;
pub mod instance;
pub mod output;
pub mod plan;
pub mod secrets;
pub mod server;
pub mod source;
pub mod token;
pub mod up;

use clap::{Parser, Subcommand};

use crate::output::OutputFormat;

/// Declarative managed Postgres.
///
/// Start everything on this machine with `pgplane up`, then manage instances
/// with `pgplane instance …` (the endpoint and token come from
/// PGPLANE_ENDPOINT and PGPLANE_TOKEN, which `pgplane up` writes to
/// DATA_DIR/pgplane.env).
#[derive(Parser, Debug)]
#[command(name = "pgplane", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in one process: an embedded state Postgres, the control
    /// plane's HTTP API and a conductor with the local runtime.
    Up(up::UpArgs),
    /// Manage Postgres instances through the control-plane API.
    Instance {
        #[command(flatten)]
        conn: ApiArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table, global = true)]
        output: OutputFormat,
        #[command(subcommand)]
        command: instance::InstanceCommand,
    },
    /// Dry run of a GitOps sync: what would be created, updated, deleted or orphaned.
    Plan {
        #[command(flatten)]
        conn: ApiArgs,
        #[command(flatten)]
        args: plan::PlanArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = plan::PlanOutput::Table)]
        output: plan::PlanOutput,
    },
    /// Manage GitOps sources: git repositories whose manifests declare instances.
    Source {
        #[command(flatten)]
        conn: ApiArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table, global = true)]
        output: OutputFormat,
        #[command(subcommand)]
        command: source::SourceCommand,
    },
    /// The extensions a data plane can install.
    Extension {
        #[command(flatten)]
        conn: ApiArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table, global = true)]
        output: OutputFormat,
        #[command(subcommand)]
        command: extension::ExtensionCommand,
    },
    /// Show drift: each instance's declaration versus what its data plane reports.
    Drift {
        #[command(flatten)]
        conn: ApiArgs,
        #[command(flatten)]
        args: drift::DriftArgs,
    },
    /// Run the control plane alone, against an external Postgres.
    Server(server::ServerArgs),
    /// Run a conductor (data plane) alone, against the control plane's database.
    Conductor(server::ConductorArgs),
    /// Run the instance agent in the foreground (the container entrypoint of
    /// the pods the Kubernetes operator creates): Postgres converged to a
    /// spec file, re-applied when the file changes.
    Agent(agent::AgentArgs),
    /// Manage API tokens: create (with a name and an expiry), list, revoke.
    Token {
        #[command(flatten)]
        conn: ApiArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table, global = true)]
        output: OutputFormat,
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// The keys that encrypt secrets at rest: generate one, rotate them.
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Print the control plane's OpenAPI document.
    Openapi,
    /// Which control plane this shell talks to, as which organisation, and
    /// the versions and data planes there. Exits 1 when it cannot be
    /// reached or refuses the token.
    ///
    ///   pgplane status
    ///   pgplane status -o json
    Status {
        #[command(flatten)]
        conn: ApiArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Print a shell completion script.
    ///
    ///   source <(pgplane completion bash)        # this shell
    ///   pgplane completion bash > /etc/bash_completion.d/pgplane
    ///   pgplane completion zsh > "${fpath[1]}/_pgplane"
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Where the control-plane API is and who you are.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Control-plane endpoint, e.g. http://127.0.0.1:8080.
    #[arg(
        long,
        env = "PGPLANE_ENDPOINT",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub endpoint: String,
    /// Bearer token (scoped to one organisation); `pgplane up` prints one.
    #[arg(long, env = "PGPLANE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Change an instance another client manages (Terraform's, say): its
    /// owner's next run may put it back. Instances a GitOps source manages
    /// change only in git.
    #[arg(long, global = true)]
    pub override_owner: bool,
}

impl ApiArgs {
    /// The API client, or `None` (after saying why on stderr) without a token.
    pub fn client(&self) -> Option<api::Client> {
        match &self.token {
            Some(token) => {
                Some(api::Client::new(&self.endpoint, token).overriding_owner(self.override_owner))
            }
            None => {
                eprintln!("error: no token: set PGPLANE_TOKEN (`pgplane up` writes it to DATA_DIR/pgplane.env) or pass --token");
                None
            }
        }
    }
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Up(args) => {
            init_logging("info,sqlx=warn");
            report(up::run(args).await)
        }
        Command::Server(args) => {
            init_logging("info,sqlx=warn");
            report(server::run_server(args).await)
        }
        Command::Conductor(args) => {
            init_logging("info,sqlx=warn");
            report(server::run_conductor(args).await)
        }
        Command::Agent(args) => {
            init_logging("info,sqlx=warn");
            report(agent::run(args).await)
        }
        Command::Token {
            conn,
            output,
            command,
        } => {
            init_logging("warn");
            token::run(command, &conn, output).await.clamp(0, 255) as u8
        }
        Command::Secrets { command } => {
            init_logging("warn");
            report(secrets::run(command).await)
        }
        Command::Status { conn, output } => {
            init_logging("warn");
            context::status(&conn, output).await.clamp(0, 255) as u8
        }
        Command::Completion { shell } => context::completion(shell).clamp(0, 255) as u8,
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&reconciler::http::openapi_document())
                    .expect("OpenAPI document serialises")
            );
            0
        }
        Command::Instance {
            conn,
            output,
            command,
        } => {
            init_logging("warn");
            let Some(client) = conn.client() else {
                return 1;
            };
            instance::run(command, &client, output).await.clamp(0, 255) as u8
        }
        Command::Plan { conn, args, output } => {
            init_logging("warn");
            let client = conn
                .token
                .as_ref()
                .map(|t| api::Client::new(&conn.endpoint, t));
            plan::run(args, client.as_ref(), output).await.clamp(0, 255) as u8
        }
        Command::Source {
            conn,
            output,
            command,
        } => {
            init_logging("warn");
            let Some(client) = conn.client() else {
                return 1;
            };
            source::run(command, &client, output).await.clamp(0, 255) as u8
        }
        Command::Extension {
            conn,
            output,
            command,
        } => {
            init_logging("warn");
            let Some(client) = conn.client() else {
                return 1;
            };
            extension::run(command, &client, output).await.clamp(0, 255) as u8
        }
        Command::Drift { conn, args } => {
            init_logging("warn");
            let Some(client) = conn.client() else {
                return 1;
            };
            drift::run(args, &client).await.clamp(0, 255) as u8
        }
    }
}

fn report(result: anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Logs go to stderr (stdout is for results); `RUST_LOG` overrides the level.
/// Colours only on a terminal, and never with `NO_COLOR` set (no-color.org).
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .try_init();
}
