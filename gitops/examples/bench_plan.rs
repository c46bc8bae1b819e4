//! Benchmark: a repository of 10,000 manifests.
//!
//! `cargo run --release -p gitops --example bench_plan [-- N]`
//!
//! Prints the time of a full sync computation (fetch + parse + validate +
//! plan against N current instances; target ≤ 1 s) and of a commit changing
//! one manifest (fetch the new commit → a plan with exactly one update;
//! target ≤ 200 ms).

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::{InstanceSpec, State};
use git2::{Repository, Signature};
use gitops::{plan, DesiredCache, GitCache, GitSource, ParseOptions, PlanOptions};

const OWNER: &str = "git:bench";

fn manifest(i: usize, work_mem_mb: usize) -> String {
    let ext = if matches!(i % 3, 0) {
        "\n  extensions:\n    - name: pg_stat_statements\n    - name: hstore"
    } else {
        ""
    };
    format!(
        "apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: db-{i:05}\nspec:\n  postgresVersion: \"15\"\n  resources: {{cpu: 500m, memory: 2Gi}}\n  storage: 20Gi{ext}\n  config:\n    work_mem: {work_mem_mb}MB\n    max_connections: \"200\"\n    log_min_duration_statement: 1s\n"
    )
}

/// What the control plane would list: the same specs, other unit spellings.
fn current(n: usize) -> Vec<api::Instance> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let mut spec = InstanceSpec::default();
            spec.resources.cpu = "0.5".into();
            spec.resources.memory = "2048Mi".into();
            spec.storage = "20Gi".into();
            if matches!(i % 3, 0) {
                for e in ["hstore", "pg_stat_statements"] {
                    spec.extensions.push(domain::Extension::new(e));
                }
            }
            spec.config.insert("work_mem".into(), "16384kB".into());
            spec.config.insert("max_connections".into(), "200".into());
            spec.config
                .insert("log_min_duration_statement".into(), "1000ms".into());
            api::Instance {
                id: uuid::Uuid::new_v4(),
                org: "default".into(),
                name: format!("db-{i:05}"),
                data_plane: "local".into(),
                owner: OWNER.into(),
                state: State::Up,
                generation: 1,
                observed_generation: 1,
                spec,
                observed: None,
                observed_at: None,
                connection: None,
                error: None,
                restart_reasons: Vec::new(),
                backup: None,
                created_at: now,
                updated_at: now,
            }
        })
        .collect()
}

fn commit_all(repo: &Repository, message: &str) {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("bench", "bench@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap();
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("repo");
    let mut init = git2::RepositoryInitOptions::new();
    init.initial_head("main");
    let repo = Repository::init_opts(&work, &init).unwrap();
    let t = Instant::now();
    std::fs::create_dir_all(work.join("instances")).unwrap();
    for i in 0..n {
        let dir = work.join(format!("instances/team-{:02}", i % 50));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("db-{i:05}.yaml")), manifest(i, 16)).unwrap();
    }
    commit_all(&repo, "10,000 instances");
    println!("setup: {n} manifests committed in {}", ms(t.elapsed()));

    let current = current(n);
    let source = GitSource {
        url: work.display().to_string(),
        reference: "main".into(),
        path: "instances".into(),
    };
    let options = PlanOptions {
        prune: true,
        ..Default::default()
    };

    // Full: nothing cached.
    let cache_dir = root.path().join("cache");
    let t = Instant::now();
    let git = GitCache::open(&cache_dir).unwrap();
    let commit = git.fetch(&source).unwrap();
    let fetched = t.elapsed();
    let mut cache = DesiredCache::new(ParseOptions {
        default_org: "default".into(),
    });
    let compiled = cache
        .compile_commit(&git, &commit.sha, &source.path)
        .unwrap();
    let desired = compiled.as_ref().as_ref().expect("valid manifests");
    let parsed = t.elapsed();
    let p = plan(desired, &current, OWNER, &options).unwrap();
    let full = t.elapsed();
    assert_eq!(p.summary.unchanged, n, "{:?}", p.summary);
    println!(
        "first fetch (clone of {n} files into the empty bare cache, once per source): {}",
        ms(fetched)
    );
    println!(
        "full parse + validate + plan ({n} manifests vs {n} instances): {} (parse+validate {}, plan {}) -> {} unchanged [target <= 1000 ms]",
        ms(full - fetched),
        ms(parsed - fetched),
        ms(full - parsed),
        p.summary.unchanged
    );

    // One manifest changes in a new commit.
    let changed = work.join("instances/team-07/db-04207.yaml");
    let changed = if Path::new(&changed).exists() {
        changed
    } else {
        work.join("instances/team-00/db-00000.yaml")
    };
    let text = std::fs::read_to_string(&changed).unwrap();
    std::fs::write(&changed, text.replace("work_mem: 16MB", "work_mem: 64MB")).unwrap();
    commit_all(&repo, "raise work_mem on one instance");

    let t = Instant::now();
    let commit = git.fetch(&source).unwrap();
    let fetched = t.elapsed();
    let compiled = cache
        .compile_commit(&git, &commit.sha, &source.path)
        .unwrap();
    let desired = compiled.as_ref().as_ref().expect("valid manifests");
    let parsed = t.elapsed();
    let p = plan(desired, &current, OWNER, &options).unwrap();
    let one = t.elapsed();
    assert_eq!(p.summary.update, 1, "{:?}", p.summary);
    assert_eq!(p.summary.create + p.summary.delete, 0, "{:?}", p.summary);
    println!(
        "one-change commit: {} (fetch {}, re-parse {} of {n} files {}, plan {}) -> {} update [target <= 200 ms]",
        ms(one),
        ms(fetched),
        cache.files_parsed() - n,
        ms(parsed - fetched),
        ms(one - parsed),
        p.summary.update
    );

    // The same commit again (e.g. a webhook for a commit already seen).
    let t = Instant::now();
    let compiled = cache
        .compile_commit(&git, &commit.sha, &source.path)
        .unwrap();
    let p = plan(
        compiled.as_ref().as_ref().unwrap(),
        &current,
        OWNER,
        &options,
    )
    .unwrap();
    println!(
        "same commit again (cached by sha): {} -> {} update",
        ms(t.elapsed()),
        p.summary.update
    );
}
