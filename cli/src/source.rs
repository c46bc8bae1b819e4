//! `pgplane source …`: GitOps sources — git repositories whose manifests
//! declare instances.

use api::{CreateSource, DriftMode, Source, SyncRecord, WebhookSecret};

use crate::output::{self, Details, OutputFormat, Table, NONE};
use crate::up::parse_duration;

#[derive(clap::Subcommand, Debug)]
pub enum SourceCommand {
    /// Watch a git repository: its manifests are synced every interval (and
    /// at once on a push webhook). The branch is fetched first: a
    /// repository, branch or path that cannot be read is refused.
    ///
    /// Examples:
    ///
    ///   pgplane source add prod --git https://git.example.com/infra.git --path instances
    ///
    ///   pgplane source add prod --git https://git.example.com/infra.git --prune --drift heal --adopt
    Add(AddArgs),
    /// List sources with their health: the commit in force, when they last
    /// synced, and the newest sync's outcome and first error.
    ///
    /// Examples:
    ///
    ///   pgplane source list
    ///
    ///   pgplane source list -o json
    List,
    /// Sync now and show what the sync did.
    ///
    /// Examples:
    ///
    ///   pgplane source sync prod
    ///
    ///   pgplane source sync prod -o json
    Sync {
        /// Source name.
        name: String,
    },
    /// The history of syncs: commit, author, message, outcome per instance, errors.
    ///
    /// Examples:
    ///
    ///   pgplane source status prod
    ///
    ///   pgplane source status prod -o yaml
    Status {
        /// Source name.
        name: String,
    },
    /// Stop watching a source (its instances are left as they are).
    ///
    /// Examples:
    ///
    ///   pgplane source delete prod
    ///
    ///   pgplane source delete prod && pgplane instance list --owner git:prod   # its instances stay
    Delete {
        /// Source name.
        name: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// Source name (DNS-1123 label); instances it creates are owned by `git:NAME`.
    pub name: String,
    /// Git repository: an https://, ssh://, git:// or user@host:path URL
    /// (local paths and file:// where the control plane allows them, as
    /// `pgplane up` does).
    #[arg(long = "git")]
    pub url: String,
    /// Branch to follow.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory inside the repository holding the manifests.
    #[arg(long, default_value = "")]
    pub path: String,
    /// How often to fetch, e.g. 60s, 5m (at least 10s; a push webhook
    /// syncs sooner).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Delete instances the source no longer declares (otherwise they are
    /// reported as orphans and left alone). Never deletes all at once.
    #[arg(long)]
    pub prune: bool,
    /// On drift: `report` it, or `heal` (re-send the desired spec).
    #[arg(long, value_enum, default_value_t = DriftArg::Report)]
    pub drift: DriftArg,
    /// Take over instances the manifests declare that another owner manages.
    #[arg(long)]
    pub adopt: bool,
    /// HMAC key the push webhook's X-Hub-Signature-256 must be signed with;
    /// generated and printed once when not given.
    #[arg(long, env = "PGPLANE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Register without reading the repository first (by default the
    /// branch is fetched and a missing repository, branch or path is
    /// refused): for a repository that does not exist yet.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DriftArg {
    Report,
    Heal,
}

pub async fn run(cmd: SourceCommand, client: &api::Client, out: OutputFormat) -> i32 {
    let result = match cmd {
        SourceCommand::Add(a) => {
            let req = CreateSource {
                name: a.name,
                url: a.url,
                branch: a.branch,
                path: a.path,
                interval_seconds: i32::try_from(a.interval.as_secs()).unwrap_or(i32::MAX),
                prune: a.prune,
                drift: match a.drift {
                    DriftArg::Report => DriftMode::Report,
                    DriftArg::Heal => DriftMode::Heal,
                },
                adopt: a.adopt,
                webhook_secret: a.webhook_secret.map(WebhookSecret),
                verify: !a.no_verify,
            };
            client
                .create_source(&req)
                .await
                .map(|s| show(out, &s, |s| render_source(client.endpoint(), s)))
        }
        SourceCommand::List => client
            .list_sources()
            .await
            .map(|l| show(out, &l, |l| render_list(&l.items))),
        SourceCommand::Sync { name } => client.sync_source(&name).await.map(|r| {
            let code = show(out, &r, render_sync);
            if code == 0 && r.outcome.is_failure() {
                1
            } else {
                code
            }
        }),
        SourceCommand::Status { name } => client.source_status(&name).await.map(|st| {
            show(out, &st, |st| {
                let mut text = render_source(client.endpoint(), &st.source);
                text.push('\n');
                for r in &st.syncs {
                    text.push_str(&render_sync(r));
                    text.push('\n');
                }
                if st.syncs.is_empty() {
                    text.push_str("no syncs yet\n");
                }
                text
            })
        }),
        SourceCommand::Delete { name } => client
            .delete_source(&name)
            .await
            .map(|s| show(out, &s, |s| render_source(client.endpoint(), s))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", crate::instance::failure::client_error(&e));
            1
        }
    }
}

fn show<T: serde::Serialize>(out: OutputFormat, value: &T, render: impl Fn(&T) -> String) -> i32 {
    let printed = match out {
        f if f.is_data() => output::print_data(f, value),
        _ => output::print_text(&render(value)),
    };
    match printed {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn short(sha: Option<&str>) -> String {
    sha.map(|s| s.chars().take(10).collect())
        .unwrap_or_else(|| NONE.to_owned())
}

fn render_source(endpoint: &str, s: &Source) -> String {
    let mut d = Details::new();
    d.field("Name", &s.name)
        .field("Repository", &s.url)
        .field("Branch", &s.branch)
        .field("Path", if s.path.is_empty() { "/" } else { &s.path })
        .field("Interval", format!("{}s", s.interval_seconds))
        .field("Prune", if s.prune { "yes" } else { "no" })
        .field("Drift", format!("{:?}", s.drift).to_lowercase())
        .field("Adopt", if s.adopt { "yes" } else { "no" })
        .field("Webhook", format!("{endpoint}{}", s.webhook_path));
    if let Some(secret) = &s.webhook_secret {
        d.field(
            "Webhook secret",
            format!("{} (generated; shown only now)", secret.0),
        );
    }
    d.field("Commit in force", short(s.last_good_commit.as_deref()))
        .field("Last seen commit", short(s.last_seen_commit.as_deref()))
        .field(
            "Last sync",
            s.last_sync_at
                .map(output::timestamp)
                .unwrap_or_else(|| NONE.to_owned()),
        )
        .field(
            "Status",
            s.last_outcome
                .as_ref()
                .map_or("not synced yet", |o| o.as_str()),
        )
        .field("Error", s.last_error.as_deref().unwrap_or(NONE));
    d.render()
}

fn render_list(items: &[Source]) -> String {
    let now = chrono::Utc::now();
    let mut t = Table::new([
        "NAME",
        "REPOSITORY",
        "BRANCH",
        "PATH",
        "COMMIT",
        "SYNCED",
        "STATUS",
        "ERROR",
    ]);
    for s in items {
        t.row([
            s.name.clone(),
            s.url.clone(),
            s.branch.clone(),
            s.path.clone(),
            short(s.last_good_commit.as_deref()),
            s.last_sync_at
                .map(|at| format!("{} ago", output::age(at, now)))
                .unwrap_or_default(),
            s.last_outcome
                .as_ref()
                .map_or_else(|| "pending".into(), ToString::to_string),
            s.last_error
                .as_deref()
                .map(|e| output::ellipsize(e, 80))
                .unwrap_or_default(),
        ]);
    }
    t.render()
}

/// One sync: a header line, then a row per instance, then every error.
pub fn render_sync(r: &SyncRecord) -> String {
    let mut out = format!(
        "{}  {}  {}  {}  {}\n",
        output::timestamp(r.at),
        r.outcome,
        short(r.commit.as_deref()),
        r.author.as_deref().unwrap_or(NONE),
        r.message
            .as_deref()
            .and_then(|m| m.lines().next())
            .unwrap_or(NONE)
    );
    if !r.results.is_empty() {
        let mut t = Table::new(["  INSTANCE", "ACTION", "RESTART", "RESULT", "DETAIL"]);
        for x in &r.results {
            t.row([
                format!("  {}", x.name),
                x.action.to_string(),
                if x.restart { "yes".into() } else { "no".into() },
                x.error
                    .clone()
                    .map(|e| format!("error: {e}"))
                    .unwrap_or_else(|| "ok".into()),
                x.detail.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&t.render());
    }
    for e in &r.errors {
        out.push_str(&format!("  {e}\n"));
    }
    out
}
