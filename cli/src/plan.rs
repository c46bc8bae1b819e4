//! `pgplane plan`: a dry run of a GitOps sync. Reads manifests from a
//! directory (`-f DIR`) or a git repository (`--git URL --ref BRANCH
//! [--path P]`), validates them whole, and lists per instance what a sync
//! would do: the sync's own decisions ([`gitops::plan_sync`]), printed
//! instead of applied. Nothing changes.
//!
//! Exit codes, like `terraform plan -detailed-exitcode`: 0 no changes,
//! 2 changes, 1 error (invalid manifests, manifests of another
//! organisation, a refused prune, an unreadable source, the control plane
//! unreachable, or instances managed by another owner).

use std::io::Write;
use std::path::PathBuf;

use gitops::plan::DEFAULT_MAX_DELETES;
use gitops::{
    DesiredSet, GitSource, ParseOptions, Plan, PlanOptions, Revision, SourceError, SyncRejection,
    SyncSource,
};

/// How `pgplane plan` prints the plan on stdout.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq)]
pub enum PlanOutput {
    /// ACTION NAME CHANGES RESTART, for people.
    #[default]
    Table,
    /// The whole plan as JSON.
    Json,
    /// A summary, a table and per-update field diffs (for a pull-request comment).
    Markdown,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// A directory of manifests (`*.yaml`, `*.yml`, recursively), or one file.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "DIR",
        required_unless_present = "git",
        conflicts_with = "git"
    )]
    pub dir: Option<PathBuf>,
    /// A git repository: a local path, file://, https:// or ssh URL.
    #[arg(long, value_name = "URL")]
    pub git: Option<String>,
    /// The branch (or tag, or full ref) to read.
    #[arg(
        long = "ref",
        value_name = "BRANCH",
        default_value = "main",
        requires = "git"
    )]
    pub reference: String,
    /// The directory inside the repository holding the manifests.
    #[arg(long, value_name = "P", default_value = "", requires = "git")]
    pub path: String,
    /// Plan as the registered source NAME (owner `git:NAME`): instances it
    /// owns and no longer declares are orphans (or deletions with --prune).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// The organisation planned for: manifests that do not set
    /// metadata.org belong to it, and a sync rejects those naming another.
    #[arg(long, env = "PGPLANE_ORG", default_value = "default")]
    pub org: String,
    /// Plan deletions of instances the source owns and no longer declares.
    #[arg(long)]
    pub prune: bool,
    /// Allow a prune to delete every instance of the source at once.
    #[arg(long, requires = "prune")]
    pub allow_delete_all: bool,
    /// At most this many deletions per sync.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_DELETES)]
    pub max_deletes: usize,
    /// Take over instances another owner (api, terraform, another source) manages.
    #[arg(long)]
    pub adopt: bool,
    /// Bare repository that --git fetches into (kept between runs).
    #[arg(long, value_name = "DIR", env = "PGPLANE_GIT_CACHE")]
    pub cache_dir: Option<PathBuf>,
}

/// Whom a plan acts as.
struct PlanAs {
    /// `git:NAME`.
    owner: String,
    /// The registered source's own settings, which its syncs apply.
    source: Option<api::Source>,
}

impl PlanAs {
    fn unregistered(name: Option<&str>) -> PlanAs {
        PlanAs {
            owner: format!("git:{}", name.unwrap_or("unregistered")),
            source: None,
        }
    }

    fn registered(source: &api::Source) -> PlanAs {
        PlanAs {
            owner: format!("git:{}", source.name),
            source: Some(source.clone()),
        }
    }

    /// The plan's options: the flags, and what the registered source does
    /// by itself (a source that prunes or adopts does so in every sync).
    fn options(&self, args: &PlanArgs) -> PlanOptions {
        let (prune, adopt) = self
            .source
            .as_ref()
            .map_or((false, false), |s| (s.prune, s.adopt));
        if prune && !args.prune {
            eprintln!("Source {:?} prunes: its syncs delete what it no longer declares, and so does this plan", self.owner.trim_start_matches("git:"));
        }
        if adopt && !args.adopt {
            eprintln!(
                "Source {:?} adopts: its syncs take over what it declares, and so does this plan",
                self.owner.trim_start_matches("git:")
            );
        }
        PlanOptions {
            prune: args.prune || prune,
            allow_delete_all: args.allow_delete_all,
            max_deletes: args.max_deletes,
            adopt: args.adopt || adopt,
        }
    }
}

/// Whom a plan acts as: `--source NAME` when given (it must be
/// registered), else the one registered source that manages the declared
/// instances that exist, else `git:unregistered`.
async fn plan_owner(
    args: &PlanArgs,
    client: Option<&api::Client>,
    declared: &gitops::DesiredSet,
    current: &[api::Instance],
) -> Result<PlanAs, String> {
    let Some(client) = client else {
        return Ok(PlanAs::unregistered(args.source.as_deref()));
    };
    let sources = client
        .list_sources()
        .await
        .map_err(|e| format!("cannot list sources: {e}"))?;
    let registered: Vec<&str> = sources.items.iter().map(|s| s.name.as_str()).collect();
    let find = |name: &str| sources.items.iter().find(|s| s.name == name);
    if let Some(name) = &args.source {
        if let Some(source) = find(name) {
            return Ok(PlanAs::registered(source));
        }
        let suggestion = domain::settings::closest(name, registered.iter().copied())
            .map(|s| format!("; did you mean {s:?}?"))
            .unwrap_or_default();
        let known = if registered.is_empty() {
            "none is registered (`pgplane source add`)".to_owned()
        } else {
            format!("registered: {}", registered.join(", "))
        };
        return Err(format!(
            "no such source {name:?} in this organisation ({known}){suggestion}"
        ));
    }
    let mut managing: Vec<&str> = current
        .iter()
        .filter(|i| declared.get(&i.org, &i.name).is_some())
        .filter_map(|i| i.owner.strip_prefix("git:"))
        .filter(|s| registered.contains(s))
        .collect();
    managing.sort_unstable();
    managing.dedup();
    match managing.as_slice() {
        [] => Ok(PlanAs::unregistered(None)),
        [one] => {
            eprintln!(
                "Planning as source {one:?}, which manages the instances these manifests declare (--source chooses another)"
            );
            Ok(PlanAs::registered(find(one).expect("a registered source")))
        }
        several => Err(format!(
            "these manifests declare instances managed by several sources ({}); plan as one of them with --source NAME",
            several.join(", ")
        )),
    }
}

/// Runs `pgplane plan`; returns the exit code (0 no changes, 2 changes, 1 error).
/// Without a client (no PGPLANE_TOKEN) it plans against no instances at all.
/// The decisions are a sync's own ([`gitops::plan_sync`]); only the sink
/// differs: they are printed, not applied.
pub async fn run(args: PlanArgs, client: Option<&api::Client>, output: PlanOutput) -> i32 {
    let Some(desired) = declared(&args).await else {
        return 1;
    };
    let Some(current) = current_instances(client).await else {
        return 1;
    };
    let plan_as = match plan_owner(&args, client, &desired, &current).await {
        Ok(plan_as) => plan_as,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let source = SyncSource {
        org: args.org.clone(),
        options: plan_as.options(&args),
        owner: plan_as.owner,
    };
    match gitops::plan_sync(&desired, &current, &source) {
        Ok(plan) => print_plan(&plan, output),
        Err(rejection) => {
            report_rejection(&rejection, &source.org);
            1
        }
    }
}

/// Reads and validates the revision, reporting why it cannot be planned.
async fn declared(args: &PlanArgs) -> Option<DesiredSet> {
    let revision = match read(args).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    if let Some(c) = &revision.commit {
        eprintln!(
            "Reading commit {} ({}): {}",
            &c.sha[..c.sha.len().min(12)],
            c.author,
            c.message.lines().next().unwrap_or_default()
        );
    }
    let options = ParseOptions {
        default_org: args.org.clone(),
    };
    let files: Vec<(&str, &[u8])> = revision
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.bytes.as_slice()))
        .collect();
    match gitops::parse_manifests(&files, &options) {
        Ok(d) => Some(d),
        Err(errors) => {
            eprint!("{errors}");
            eprintln!(
                "error: {} problem(s) in the manifests; nothing would be applied",
                errors.0.len()
            );
            None
        }
    }
}

/// The organisation's instances, or none without a client.
async fn current_instances(client: Option<&api::Client>) -> Option<Vec<api::Instance>> {
    let Some(client) = client else {
        eprintln!("note: PGPLANE_TOKEN is not set: planning against no existing instances");
        return Some(Vec::new());
    };
    match client.list_instances(None).await {
        Ok(list) => Some(list.items),
        Err(e) => {
            eprintln!("error: cannot list instances: {e}");
            None
        }
    }
}

/// Why a sync would apply nothing, in the sync's words.
fn report_rejection(rejection: &SyncRejection, org: &str) {
    match rejection {
        SyncRejection::ForeignOrg(lines) => {
            for line in lines {
                eprintln!("{line}");
            }
            eprintln!(
                "error: {} manifest(s) name an organisation other than {org:?}; a sync would reject the revision and apply nothing",
                lines.len()
            );
        }
        SyncRejection::Refused(e) => eprintln!("error: {e}"),
    }
}

/// Prints `plan` and returns the exit code.
fn print_plan(plan: &Plan, output: PlanOutput) -> i32 {
    let text = match output {
        PlanOutput::Table => gitops::render::render_table(plan),
        PlanOutput::Json => gitops::render::render_json(plan),
        PlanOutput::Markdown => gitops::render::render_markdown(plan),
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("error: {e}");
        return 1;
    }
    if plan.has_conflicts() {
        eprintln!(
            "error: {} declared instance(s) are managed by another owner; a sync would leave them alone (--adopt takes them over, --source plans as the source that manages them)",
            plan.summary.conflict
        );
        return 1;
    }
    if plan.has_changes() {
        2
    } else {
        0
    }
}

/// Reads the revision; git work runs on the blocking pool.
async fn read(args: &PlanArgs) -> Result<Revision, SourceError> {
    if let Some(dir) = &args.dir {
        let dir = dir.clone();
        return tokio::task::spawn_blocking(move || gitops::read_dir(&dir))
            .await
            .expect("reading a directory does not panic");
    }
    let source = GitSource {
        url: args.git.clone().unwrap_or_default(),
        reference: args.reference.clone(),
        path: args.path.clone(),
    };
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| default_cache_dir(&source.url));
    tokio::task::spawn_blocking(move || gitops::read_git(&source, &cache))
        .await
        .expect("reading git does not panic")
}

/// One bare cache per URL under the system's temporary directory.
fn default_cache_dir(url: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    std::env::temp_dir()
        .join("pgplane-git-cache")
        .join(format!("{:016x}", h.finish()))
}
