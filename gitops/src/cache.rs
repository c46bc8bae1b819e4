//! Compiled desired state, cached so a sync does only the work a commit
//! needs: by commit (a commit seen before costs a map lookup) and by blob
//! id (a new commit re-parses only the files whose contents changed).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use git2::Oid;

use crate::manifest::{assemble, parse_file, DesiredSet, ManifestErrors, ParseOptions, ParsedFile};
use crate::source::{GitCache, Result, Revision};

/// What a revision compiles to: its desired state, or all of its errors.
pub type Compiled = Arc<std::result::Result<DesiredSet, ManifestErrors>>;

/// How many compiled commits are kept.
const COMMITS_KEPT: usize = 8;

/// One source's compiled revisions. Parsed files depend only on their
/// bytes, so they are shared between commits by blob id; only the blobs of
/// the latest commit are kept.
pub struct DesiredCache {
    options: ParseOptions,
    blobs: HashMap<Oid, Arc<ParsedFile>>,
    commits: HashMap<(String, String), Compiled>,
    order: VecDeque<(String, String)>,
    parsed: usize,
}

impl DesiredCache {
    pub fn new(options: ParseOptions) -> DesiredCache {
        DesiredCache {
            options,
            blobs: HashMap::new(),
            commits: HashMap::new(),
            order: VecDeque::new(),
            parsed: 0,
        }
    }

    /// Compiles the manifests under `path` at `commit` (already fetched into
    /// `git`), reading and parsing only blobs not seen before.
    pub fn compile_commit(&mut self, git: &GitCache, commit: &str, path: &str) -> Result<Compiled> {
        let key = (commit.to_owned(), path.to_owned());
        if let Some(hit) = self.commits.get(&key) {
            return Ok(hit.clone());
        }
        let files = git.list_files(commit, path)?;
        let mut parsed = Vec::with_capacity(files.len());
        for (file, oid) in &files {
            let p = match self.blobs.get(oid) {
                Some(p) => p.clone(),
                None => {
                    let p = Arc::new(parse_file(&git.read_blob(*oid)?));
                    self.parsed += 1;
                    self.blobs.insert(*oid, p.clone());
                    p
                }
            };
            parsed.push((file.as_str(), p));
        }
        let compiled: Compiled = Arc::new(assemble(
            parsed.iter().map(|(f, p)| (*f, p.as_ref())),
            &self.options,
        ));
        let live: HashSet<Oid> = files.iter().map(|(_, oid)| *oid).collect();
        self.blobs.retain(|oid, _| live.contains(oid));
        self.remember(key, compiled.clone());
        Ok(compiled)
    }

    /// Compiles a revision already read (a directory, or a git revision read
    /// whole); files with a blob id use and fill the blob cache.
    pub fn compile_revision(&mut self, revision: &Revision) -> Compiled {
        let parsed: Vec<(&str, Arc<ParsedFile>)> = revision
            .files
            .iter()
            .map(|f| {
                let oid = f.blob.as_deref().and_then(|b| Oid::from_str(b).ok());
                let p = match oid.and_then(|o| self.blobs.get(&o)) {
                    Some(p) => p.clone(),
                    None => {
                        let p = Arc::new(parse_file(&f.bytes));
                        self.parsed += 1;
                        if let Some(o) = oid {
                            self.blobs.insert(o, p.clone());
                        }
                        p
                    }
                };
                (f.path.as_str(), p)
            })
            .collect();
        Arc::new(assemble(
            parsed.iter().map(|(f, p)| (*f, p.as_ref())),
            &self.options,
        ))
    }

    /// How many files this cache has parsed so far (the rest were hits).
    pub fn files_parsed(&self) -> usize {
        self.parsed
    }

    fn remember(&mut self, key: (String, String), compiled: Compiled) {
        if self.commits.insert(key.clone(), compiled).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > COMMITS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.commits.remove(&old);
            }
        }
    }
}
