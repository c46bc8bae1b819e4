//! Where manifests come from: a git repository (local path, `file://`,
//! http(s) or ssh remote) read with git2 into a bare cache, or a plain
//! directory.
//!
//! Everything here blocks: callers on an async runtime run it in
//! `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use chrono::{DateTime, TimeZone, Utc};
use git2::{
    AutotagOption, Cred, CredentialType, Direction, FetchOptions, ObjectType, Oid, RemoteCallbacks,
    RemoteRedirect, Repository, TreeWalkMode, TreeWalkResult,
};
use serde::Serialize;

use crate::manifest::is_manifest_path;

/// A git repository, a branch (or full ref) in it, and a directory inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitSource {
    /// A local path, `file://…`, `https://…`, `ssh://…` or `user@host:path`.
    pub url: String,
    /// A branch name (`main`), a tag, or a full ref (`refs/heads/main`).
    pub reference: String,
    /// The directory inside the repository holding the manifests; empty for
    /// the repository's root.
    pub path: String,
}

/// The commit a revision was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    pub sha: String,
    /// `Name <email>`
    pub author: String,
    pub message: String,
    pub time: DateTime<Utc>,
}

/// One manifest file of a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Relative to the repository root (git), or the directory as given
    /// joined with the file's relative path (`-f DIR`).
    pub path: String,
    /// The git blob id, which identifies the contents: parsed files are
    /// cached by it. `None` for files read from a directory.
    pub blob: Option<String>,
    pub bytes: Vec<u8>,
}

/// Everything one revision of a source holds: its manifest files, sorted by
/// path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// `None` for a plain directory.
    pub commit: Option<CommitInfo>,
    pub files: Vec<SourceFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open the git cache directory {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("remote {url} is unreachable: {message}")]
    RemoteUnreachable { url: String, message: String },
    #[error("branch or ref {reference:?} not found in {url} (branches: {})", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    RefNotFound {
        url: String,
        reference: String,
        available: Vec<String>,
    },
    /// The source's directory does not exist in this commit. Callers must
    /// treat this as "change nothing", never as "nothing is desired".
    #[error("path {path:?} does not exist in commit {commit}; nothing is changed until it does")]
    PathNotFound { commit: String, path: String },
    #[error("fetching {reference:?} from {url} failed: {message}")]
    Fetch {
        url: String,
        reference: String,
        message: String,
    },
    #[error("reading {what} from the git cache failed: {message}")]
    Read { what: String, message: String },
    #[error("cannot read {path}: {message}")]
    Directory { path: PathBuf, message: String },
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;

impl SourceError {
    /// Whether the error is about the repository's contents (a branch or a
    /// path it does not have) rather than about reaching the remote or the
    /// local cache, whose messages carry network and file-system details.
    pub fn is_about_contents(&self) -> bool {
        match self {
            SourceError::RefNotFound { .. } | SourceError::PathNotFound { .. } => true,
            SourceError::Cache { .. }
            | SourceError::RemoteUnreachable { .. }
            | SourceError::Fetch { .. }
            | SourceError::Read { .. }
            | SourceError::Directory { .. } => false,
        }
    }
}

/// A bare repository that remote commits are fetched into; one per source.
///
/// The cache is private to its OS user: directories are created 0700 and
/// the files git writes lose their group and other bits after each fetch.
/// A remote that redirects to another host is not followed: the host a
/// source names is the host it is fetched from.
pub struct GitCache {
    repo: Repository,
    dir: PathBuf,
    /// Whether fetches may authenticate with this process's own
    /// credentials (ssh agent, default NTLM/Negotiate identity).
    lend_credentials: bool,
}

impl GitCache {
    /// Opens the bare cache at `dir`, creating it (and missing parents) when
    /// missing.
    pub fn open(dir: &Path) -> Result<GitCache> {
        let cache_err = |e: &dyn std::fmt::Display| SourceError::Cache {
            path: dir.to_owned(),
            message: e.to_string(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| cache_err(&e))?;
        let repo = match Repository::open_bare(dir) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(dir).map_err(|e| cache_err(&e))?,
        };
        let mut config = repo.config().map_err(|e| cache_err(&e))?;
        let follows = config.get_string("http.followRedirects").ok();
        if follows.as_deref() != Some("false") {
            config
                .set_str("http.followRedirects", "false")
                .map_err(|e| cache_err(&e))?;
        }
        make_private(dir).map_err(|e| cache_err(&e))?;
        Ok(GitCache {
            repo,
            dir: dir.to_owned(),
            lend_credentials: true,
        })
    }

    /// Whether fetches may use this process's own credentials (its ssh
    /// agent, its default NTLM/Negotiate identity). On by default, for
    /// tools acting as their user (`pgplane plan --git`); a control plane
    /// serving several organisations turns it off unless allowed.
    pub fn lending_credentials(mut self, lend: bool) -> GitCache {
        self.lend_credentials = lend;
        self
    }

    /// Asks the remote where `source.reference` points, fetches that commit
    /// when the cache does not have it yet, and describes it.
    pub fn fetch(&self, source: &GitSource) -> Result<CommitInfo> {
        let unreachable = |e: git2::Error| SourceError::RemoteUnreachable {
            url: source.url.clone(),
            message: e.message().to_owned(),
        };
        let mut remote = self
            .repo
            .remote_anonymous(&source.url)
            .map_err(unreachable)?;
        let (name, oid) = {
            let connection = remote
                .connect_auth(
                    Direction::Fetch,
                    Some(callbacks(self.lend_credentials)),
                    None,
                )
                .map_err(unreachable)?;
            let heads = connection.list().map_err(unreachable)?;
            let found = ref_candidates(&source.reference).into_iter().find_map(|c| {
                heads
                    .iter()
                    .find(|h| h.name() == c)
                    .map(|h| (h.name().to_owned(), h.oid()))
            });
            match found {
                Some(f) => f,
                None => {
                    let available = heads
                        .iter()
                        .filter_map(|h| h.name().strip_prefix("refs/heads/"))
                        .map(str::to_owned)
                        .collect();
                    return Err(SourceError::RefNotFound {
                        url: source.url.clone(),
                        reference: source.reference.clone(),
                        available,
                    });
                }
            }
        };
        if self.repo.find_commit(oid).is_err() {
            let fetch_err = |e: git2::Error| SourceError::Fetch {
                url: source.url.clone(),
                reference: source.reference.clone(),
                message: e.message().to_owned(),
            };
            let mut options = FetchOptions::new();
            options
                .remote_callbacks(callbacks(self.lend_credentials))
                .download_tags(AutotagOption::None)
                .follow_redirects(RemoteRedirect::None);
            let local = format!("refs/pgplane/{}", name.trim_start_matches("refs/"));
            remote
                .fetch(&[format!("+{name}:{local}")], Some(&mut options), None)
                .map_err(fetch_err)?;
            make_private(&self.dir).map_err(|e| SourceError::Cache {
                path: self.dir.clone(),
                message: e.to_string(),
            })?;
        }
        self.commit_info(oid)
    }

    /// Describes a commit already in the cache (a tag is peeled to its commit).
    pub fn commit_info(&self, oid: Oid) -> Result<CommitInfo> {
        let commit = self
            .repo
            .find_object(oid, None)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| read_err(&format!("commit {oid}"), e))?;
        let author = commit.author();
        let time = commit.time();
        Ok(CommitInfo {
            sha: commit.id().to_string(),
            author: format!(
                "{} <{}>",
                author.name().unwrap_or_default(),
                author.email().unwrap_or_default()
            ),
            message: commit.message().unwrap_or_default().trim_end().to_owned(),
            time: Utc
                .timestamp_opt(time.seconds(), 0)
                .single()
                .unwrap_or_default(),
        })
    }

    /// The manifest files under `path` in `commit`, with their blob ids,
    /// sorted by path. Reads no file contents.
    pub fn list_files(&self, commit: &str, path: &str) -> Result<Vec<(String, Oid)>> {
        let what = || format!("commit {commit}");
        let oid = Oid::from_str(commit).map_err(|e| read_err(&what(), e))?;
        let tree = self
            .repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|e| read_err(&what(), e))?;
        let dir = path.trim_matches('/');
        let not_found = || SourceError::PathNotFound {
            commit: commit.to_owned(),
            path: path.to_owned(),
        };
        let mut files = Vec::new();
        if dir.is_empty() || dir == "." {
            walk(&tree, "", &mut files).map_err(|e| read_err(&what(), e))?;
        } else {
            let entry = tree.get_path(Path::new(dir)).map_err(|_| not_found())?;
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .map_err(|e| read_err(&what(), e))?;
                    walk(&sub, &format!("{dir}/"), &mut files).map_err(|e| read_err(&what(), e))?;
                }
                // A single manifest file may be named as the path.
                Some(ObjectType::Blob) if entry.filemode() != 0o120000 => {
                    files.push((dir.to_owned(), entry.id()));
                }
                _ => return Err(not_found()),
            }
        }
        files.sort();
        Ok(files)
    }

    pub fn read_blob(&self, oid: Oid) -> Result<Vec<u8>> {
        self.repo
            .find_blob(oid)
            .map(|b| b.content().to_vec())
            .map_err(|e| read_err(&format!("blob {oid}"), e))
    }

    /// The whole revision at `commit`: every manifest file's contents.
    pub fn read_revision(&self, commit: CommitInfo, path: &str) -> Result<Revision> {
        let files = self
            .list_files(&commit.sha, path)?
            .into_iter()
            .map(|(path, oid)| {
                Ok(SourceFile {
                    path,
                    blob: Some(oid.to_string()),
                    bytes: self.read_blob(oid)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Revision {
            commit: Some(commit),
            files,
        })
    }
}

/// Fetches `source` into the bare cache at `cache_dir` and reads the
/// revision its reference points to.
pub fn read_git(source: &GitSource, cache_dir: &Path) -> Result<Revision> {
    let cache = GitCache::open(cache_dir)?;
    let commit = cache.fetch(source)?;
    cache.read_revision(commit, &source.path)
}

/// Reads the manifests under a plain directory (recursively, sorted), or a
/// single file.
pub fn read_dir(dir: &Path) -> Result<Revision> {
    let io_err = |path: &Path, e: std::io::Error| SourceError::Directory {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let meta = std::fs::metadata(dir).map_err(|e| io_err(dir, e))?;
    let mut paths = Vec::new();
    if meta.is_file() {
        paths.push(dir.to_owned());
    } else {
        let mut pending = vec![dir.to_owned()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).map_err(|e| io_err(&d, e))? {
                let entry = entry.map_err(|e| io_err(&d, e))?;
                let path = entry.path();
                let meta = std::fs::metadata(&path).map_err(|e| io_err(&path, e))?;
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if meta.is_dir() && !hidden {
                    pending.push(path);
                } else if meta.is_file() && is_manifest_path(&path.to_string_lossy()) {
                    paths.push(path);
                }
            }
        }
    }
    paths.sort();
    let files = paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
            Ok(SourceFile {
                path: path.to_string_lossy().into_owned(),
                blob: None,
                bytes,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Revision {
        commit: None,
        files,
    })
}

/// Creates `dir` (and missing parents) readable by its owner only, and
/// makes an existing one so.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Takes group and other permissions off `dir` and everything under it
/// (symbolic links are left alone).
fn make_private(dir: &Path) -> std::io::Result<()> {
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

fn read_err(what: &str, e: git2::Error) -> SourceError {
    SourceError::Read {
        what: what.to_owned(),
        message: e.message().to_owned(),
    }
}

/// Full ref names `reference` may mean, most likely first.
fn ref_candidates(reference: &str) -> Vec<String> {
    if reference.starts_with("refs/") || reference == "HEAD" {
        vec![reference.to_owned()]
    } else {
        vec![
            format!("refs/heads/{reference}"),
            format!("refs/tags/{reference}"),
        ]
    }
}

fn walk(
    tree: &git2::Tree<'_>,
    prefix: &str,
    out: &mut Vec<(String, Oid)>,
) -> Result<(), git2::Error> {
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let is_file = entry.kind() == Some(ObjectType::Blob) && entry.filemode() != 0o120000;
        if let (true, Ok(name)) = (is_file, entry.name()) {
            if is_manifest_path(name) {
                out.push((format!("{prefix}{dir}{name}"), entry.id()));
            }
        }
        TreeWalkResult::Ok
    })
}

/// Credentials for ssh (the ssh agent) and http (git's credential helpers
/// are not consulted: public remotes, or a URL with a token in it). Gives up
/// after a few attempts instead of looping on a rejected key.
fn callbacks(lend_credentials: bool) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |_url, username, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str("authentication failed"));
        }
        if !lend_credentials {
            return Err(git2::Error::from_str(
                "the remote asks for credentials, and this control plane lends none of its own",
            ));
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            return Cred::ssh_key_from_agent(username.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::DEFAULT) {
            return Cred::default();
        }
        Err(git2::Error::from_str(
            "no credentials available for this remote",
        ))
    });
    callbacks
}
