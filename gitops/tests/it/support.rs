//! Repositories, manifests and instances for the tests.

use std::path::Path;
use std::process::Command;

use api::Instance;
use chrono::Utc;
use domain::{InstanceSpec, State};
use git2::{Repository, Signature};

/// A manifest for `name` whose spec is `spec` (YAML, indented two spaces).
pub fn manifest(name: &str, spec: &str) -> String {
    let mut out = format!(
        "apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: {name}\nspec:\n"
    );
    for line in spec.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    if spec.trim().is_empty() {
        out.push_str("  replicas: 1\n");
    }
    out
}

/// Writes `files` (relative path, contents) under `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Commits the whole work tree of `repo` (adds and removals) with git2.
pub fn git2_commit(repo: &Repository, message: &str) -> String {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Ada Lovelace", "ada@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

/// A work tree made with git2 on branch `main`.
pub fn git2_repo(dir: &Path) -> Repository {
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head("main");
    Repository::init_opts(dir, &opts).unwrap()
}

/// Runs `git` in `dir`, panicking with its output when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Grace Hopper")
        .env("GIT_AUTHOR_EMAIL", "grace@example.com")
        .env("GIT_COMMITTER_NAME", "Grace Hopper")
        .env("GIT_COMMITTER_EMAIL", "grace@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A bare "remote" and a clone of it to commit in and push from, both made
/// with the `git` command.
pub struct Remote {
    pub bare: std::path::PathBuf,
    pub work: std::path::PathBuf,
}

impl Remote {
    pub fn new(root: &Path) -> Remote {
        let bare = root.join("remote.git");
        let work = root.join("work");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&bare, &["init", "--bare", "-q", "-b", "main"]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Remote { bare, work }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes files, removes paths, commits everything and pushes `main`.
    pub fn push(&self, files: &[(&str, &str)], remove: &[&str], message: &str) -> String {
        write_files(&self.work, files);
        for r in remove {
            let p = self.work.join(r);
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            } else {
                std::fs::remove_file(p).unwrap();
            }
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// An instance as the control plane would list it.
pub fn instance(name: &str, owner: &str, spec: InstanceSpec) -> Instance {
    let now = Utc::now();
    Instance {
        id: uuid::Uuid::new_v4(),
        org: "acme".into(),
        name: name.into(),
        data_plane: "local".into(),
        owner: owner.into(),
        state: State::Up,
        generation: 1,
        observed_generation: 1,
        spec,
        observed: None,
        observed_at: None,
        connection: None,
        error: None,
        backup: None,
        restart_reasons: Vec::new(),
        created_at: now,
        updated_at: now,
    }
}
