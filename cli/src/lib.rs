//! The `pgplane` command line: every subcommand parses its arguments here
//! and calls into the library crates.

pub mod agent;
pub mod backup_repo;
pub mod context;
pub mod data_plane;
pub mod down;
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
    ///
    /// Examples:
    ///
    ///   pgplane up
    ///
    ///   pgplane up --data-dir ./demo --listen 127.0.0.1:8081
    ///
    ///   pgplane up --backup-repo /srv/pgplane-backups --instance-ports 6000-6099
    Up(up::UpArgs),
    /// Stop a `pgplane up` running on a data directory (in the background,
    /// in another terminal, under a service manager) as Ctrl-C would: every
    /// instance stops with a fast shutdown and comes back on the next
    /// `pgplane up`. Exits 0 once it has stopped (or when none runs there),
    /// 3 when --timeout passed.
    ///
    /// Examples:
    ///
    ///   pgplane up > up.log 2>&1 &   # later:
    ///
    ///   pgplane down
    ///
    ///   pgplane down --data-dir ./demo --timeout 5m
    Down(down::DownArgs),
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
    ///
    /// Examples:
    ///
    ///   pgplane plan -f instances/
    ///
    ///   pgplane plan -f instances/ --source prod --prune
    ///
    ///   pgplane plan --git https://git.example.com/infra.git --ref main --path instances -o markdown
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
    ///
    /// Examples:
    ///
    ///   pgplane drift
    ///
    ///   pgplane drift --exit-code          # exits 2 when anything drifted
    ///
    ///   pgplane drift -o markdown
    Drift {
        #[command(flatten)]
        conn: ApiArgs,
        #[command(flatten)]
        args: drift::DriftArgs,
    },
    /// Run the control plane alone, against an external Postgres.
    ///
    /// Examples:
    ///
    ///   pgplane server --database-url postgres://pgplane@db.internal/pgplane
    ///
    ///   pgplane server --database-url postgres://pgplane@db.internal/pgplane --listen 0.0.0.0:8080 --secret-key-file /etc/pgplane/keys
    Server(server::ServerArgs),
    /// Run a conductor (data plane) alone, against the control plane's database.
    ///
    /// Examples:
    ///
    ///   pgplane conductor --database-url postgres://pgplane@db.internal/pgplane --data-dir /srv/pgplane
    ///
    ///   pgplane conductor --database-url postgres://pgplane@db.internal/pgplane --data-plane k8s --runtime kubernetes --namespace databases
    Conductor(server::ConductorArgs),
    /// Run the instance agent in the foreground (the container entrypoint of
    /// the pods the Kubernetes operator creates): Postgres converged to a
    /// spec file, re-applied when the file changes.
    ///
    /// Examples:
    ///
    ///   pgplane agent --data-dir /var/lib/postgresql/data --spec-file /etc/pgplane/spec.json --password-file /etc/pgplane/secret/password
    ///
    ///   pgplane agent --data-dir ./pgdata --spec-file spec.json --password-file password --port 5433 --status-addr 127.0.0.1:8008
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
    /// What a data plane's conductor may do in the control plane's
    /// database: grant it to a role of its own.
    DataPlane {
        #[command(subcommand)]
        command: data_plane::DataPlaneCommand,
    },
    /// The keys that encrypt secrets at rest: generate one, rotate them.
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Print the control plane's OpenAPI document.
    ///
    /// Examples:
    ///
    ///   pgplane openapi > openapi.json
    ///
    ///   pgplane openapi | jq '.paths | keys'
    Openapi,
    /// Which control plane this shell talks to, as which organisation, and
    /// the versions and data planes there. Exits 1 when it cannot be
    /// reached or refuses the token.
    ///
    /// Examples:
    ///
    ///   pgplane status
    ///
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
    /// Examples:
    ///
    ///   source <(pgplane completion bash)        # this shell
    ///
    ///   pgplane completion bash > /etc/bash_completion.d/pgplane
    ///
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
        Command::Down(args) => down::run(args).clamp(0, 255) as u8,
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
        Command::DataPlane { command } => {
            init_logging("warn");
            report(data_plane::run(command).await)
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every leaf command's path (`pgplane instance create`) and its help text.
    fn leaves(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        let path = format!("{path} {}", cmd.get_name());
        let subcommands: Vec<_> = cmd
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subcommands.is_empty() {
            let help = cmd
                .get_long_about()
                .or(cmd.get_about())
                .map(|s| s.to_string())
                .unwrap_or_default();
            out.push((path.trim().to_owned(), help));
        }
        for sub in subcommands {
            leaves(sub, &path, out);
        }
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        let mut all = Vec::new();
        leaves(&Cli::command(), "", &mut all);
        assert!(all.len() > 30, "{all:?}");
        let missing: Vec<&str> = all
            .iter()
            .filter(|(_, help)| !help.lines().any(|l| l.trim_start().starts_with("pgplane ")))
            .map(|(path, _)| path.as_str())
            .collect();
        assert!(
            missing.is_empty(),
            "these commands' --help shows no example (an indented `pgplane …` line in the doc comment): {missing:#?}"
        );
    }

    /// The words of an example's `pgplane` command: up to a pipe, a
    /// redirection, a comment or the next command; quotes removed.
    fn example_words(line: &str) -> Vec<String> {
        let end = [" | ", " > ", " >> ", " && ", " #", "; ", " &"]
            .iter()
            .filter_map(|sep| line.find(sep))
            .min()
            .unwrap_or(line.len());
        line[..end]
            .split_whitespace()
            .map(|w| w.trim_matches(['\'', '"']).to_owned())
            .collect()
    }

    #[test]
    fn every_example_parses() {
        use clap::Parser;
        let mut all = Vec::new();
        leaves(&Cli::command(), "", &mut all);
        let mut checked = 0;
        for (path, help) in &all {
            for line in help
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("pgplane "))
            {
                let words = example_words(line);
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{path}: the example `{line}` does not parse:\n{e}");
                }
                checked += 1;
            }
        }
        assert!(checked > all.len(), "{checked} examples");
    }
}
