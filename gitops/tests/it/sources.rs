//! Reading revisions from real git repositories and directories.

use gitops::{read_dir, read_git, DesiredCache, GitCache, GitSource, ParseOptions, SourceError};

use crate::support::{git2_commit, git2_repo, manifest, write_files, Remote};

fn source(url: String, reference: &str, path: &str) -> GitSource {
    GitSource {
        url,
        reference: reference.into(),
        path: path.into(),
    }
}

fn paths(rev: &gitops::Revision) -> Vec<&str> {
    rev.files.iter().map(|f| f.path.as_str()).collect()
}

#[test]
fn reads_a_local_repository_made_with_git2_by_path() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("repo");
    let repo = git2_repo(&work);
    write_files(
        &work,
        &[
            ("instances/b.yaml", &manifest("b", "")),
            ("instances/nested/a.yml", &manifest("a", "")),
            ("instances/README.md", "not a manifest"),
            ("other/c.yaml", &manifest("c", "")),
        ],
    );
    let sha = git2_commit(&repo, "two instances\n\nwith a body");
    let src = source(work.to_str().unwrap().to_owned(), "main", "instances/");
    let rev = read_git(&src, &root.path().join("cache")).unwrap();
    let commit = rev.commit.as_ref().unwrap();
    assert_eq!(commit.sha, sha);
    assert_eq!(commit.author, "Ada Lovelace <ada@example.com>");
    assert_eq!(commit.message, "two instances\n\nwith a body");
    assert_eq!(paths(&rev), ["instances/b.yaml", "instances/nested/a.yml"]);
    assert!(rev.files.iter().all(|f| f.blob.is_some()));
    assert_eq!(rev.files[0].bytes, manifest("b", "").into_bytes());
}

#[test]
fn reads_pushed_commits_from_a_bare_remote_by_file_url() {
    let root = tempfile::tempdir().unwrap();
    let remote = Remote::new(root.path());
    let first = remote.push(&[("db/a.yaml", &manifest("a", ""))], &[], "add a");
    let cache = root.path().join("cache");
    let src = source(remote.url(), "main", "db");
    let rev = read_git(&src, &cache).unwrap();
    assert_eq!(rev.commit.as_ref().unwrap().sha, first);
    assert_eq!(paths(&rev), ["db/a.yaml"]);

    let second = remote.push(
        &[
            ("db/b.yaml", &manifest("b", "")),
            ("db/a.yaml", &manifest("a", "replicas: 1")),
        ],
        &[],
        "add b, touch a",
    );
    let rev = read_git(&src, &cache).unwrap();
    let commit = rev.commit.clone().unwrap();
    assert_eq!(commit.sha, second);
    assert_eq!(commit.author, "Grace Hopper <grace@example.com>");
    assert_eq!(paths(&rev), ["db/a.yaml", "db/b.yaml"]);
}

#[test]
fn a_missing_branch_names_the_ones_that_exist() {
    let root = tempfile::tempdir().unwrap();
    let remote = Remote::new(root.path());
    remote.push(&[("a.yaml", &manifest("a", ""))], &[], "add a");
    let err = read_git(
        &source(remote.url(), "production", ""),
        &root.path().join("c"),
    )
    .unwrap_err();
    match &err {
        SourceError::RefNotFound {
            reference,
            available,
            ..
        } => {
            assert_eq!(reference, "production");
            assert_eq!(available, &["main"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("(branches: main)"), "{err}");
}

#[test]
fn an_empty_repository_is_a_missing_branch_not_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let remote = Remote::new(root.path());
    let err = read_git(&source(remote.url(), "main", ""), &root.path().join("c")).unwrap_err();
    match &err {
        SourceError::RefNotFound { available, .. } => assert!(available.is_empty(), "{err}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_vanished_path_is_an_error_not_an_empty_revision() {
    let root = tempfile::tempdir().unwrap();
    let remote = Remote::new(root.path());
    remote.push(
        &[("db/a.yaml", &manifest("a", "")), ("README", "hi")],
        &[],
        "add a",
    );
    let cache = root.path().join("cache");
    let src = source(remote.url(), "main", "db");
    assert_eq!(read_git(&src, &cache).unwrap().files.len(), 1);
    let gone = remote.push(&[], &["db"], "remove the directory");
    match read_git(&src, &cache).unwrap_err() {
        SourceError::PathNotFound { commit, path } => {
            assert_eq!((commit.as_str(), path.as_str()), (gone.as_str(), "db"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreachable_remote_is_reported_as_such() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    for url in [
        format!("file://{}/no-such-repo", root.path().display()),
        root.path().join("nope").display().to_string(),
        // Nothing listens on port 1.
        "http://127.0.0.1:1/repo.git".to_owned(),
    ] {
        match read_git(&source(url.clone(), "main", ""), &cache).unwrap_err() {
            SourceError::RemoteUnreachable { url: u, .. } => assert_eq!(u, url),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[test]
fn reads_a_plain_directory_recursively_sorted() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("z.yaml", "# z"),
            ("sub/b.yml", "# b"),
            ("a.yaml", "# a"),
            ("notes.txt", "no"),
            (".hidden/x.yaml", "# hidden"),
        ],
    );
    let rev = read_dir(dir.path()).unwrap();
    assert!(rev.commit.is_none());
    let base = dir.path().display().to_string();
    let rel: Vec<String> = rev
        .files
        .iter()
        .map(|f| f.path.strip_prefix(&base).unwrap().to_owned())
        .collect();
    assert_eq!(rel, ["/a.yaml", "/sub/b.yml", "/z.yaml"]);
    assert!(matches!(
        read_dir(&dir.path().join("missing")),
        Err(SourceError::Directory { .. })
    ));
}

#[test]
fn compiled_state_is_cached_by_commit_and_by_blob() {
    let root = tempfile::tempdir().unwrap();
    let remote = Remote::new(root.path());
    let files: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("db/i{i:02}.yaml"),
                manifest(&format!("i{i:02}"), ""),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    remote.push(&refs, &[], "twenty");
    let git = GitCache::open(&root.path().join("cache")).unwrap();
    let src = source(remote.url(), "main", "db");
    let mut cache = DesiredCache::new(ParseOptions {
        default_org: "acme".into(),
    });
    let c1 = git.fetch(&src).unwrap();
    let first = cache.compile_commit(&git, &c1.sha, "db").unwrap();
    assert_eq!(first.as_ref().as_ref().unwrap().len(), 20);
    assert_eq!(cache.files_parsed(), 20);
    let again = cache.compile_commit(&git, &c1.sha, "db").unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));

    remote.push(
        &[("db/i07.yaml", &manifest("i07", "config:\n  work_mem: 8MB"))],
        &[],
        "one change",
    );
    let c2 = git.fetch(&src).unwrap();
    let second = cache.compile_commit(&git, &c2.sha, "db").unwrap();
    assert_eq!(cache.files_parsed(), 21, "only the changed file is parsed");
    let set = second.as_ref().as_ref().unwrap();
    assert_eq!(
        set.get("acme", "i07").unwrap().spec.config["work_mem"],
        "8MB"
    );
}
