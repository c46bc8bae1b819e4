//! GitOps end to end: real git (the `git` command, pushing to a bare
//! "remote"), real `pgplane up`, real instances.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(60);

/// A manifest whose `postgres` role is a superuser: the test changes
/// settings behind pgplane's back with `ALTER SYSTEM`.
fn manifest(name: &str, work_mem: &str) -> String {
    format!(
        "apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: {name}\nspec:\n  superuserAccess: true\n  extensions:\n    - name: hstore\n  config:\n    work_mem: {work_mem}\n"
    )
}

fn push(work: &Path, files: &[(&str, Option<&str>)], message: &str) {
    for (path, content) in files {
        let p = work.join(path);
        match content {
            Some(c) => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, c).unwrap();
            }
            None => std::fs::remove_file(&p).unwrap(),
        }
    }
    git(work, &["add", "-A"]);
    git(work, &["commit", "-qm", message]);
    git(work, &["push", "-q", "origin", "main"]);
}

/// POSTs `body` and returns the status and the response body.
fn http_post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

fn hmac_sha256_hex(key: &str, body: &str) -> String {
    let o = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn git_push_drives_instances() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("demo");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut up = spawn(
        "pgplane up",
        &[
            "up",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &listen,
            "--resync-interval",
            "1s",
        ],
        &[],
        &scratch.path().join("up.log"),
    );
    read_until(&mut up, "Press Ctrl-C", WAIT);
    let env_vars = read_env_file(&data_dir.join("pgplane.env"));
    let env: Vec<(&str, &str)> = env_vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    // A bare "remote" and a working clone.
    let remote = scratch.path().join("remote.git");
    let work = scratch.path().join("work");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare", "-b", "main"]);
    git(
        scratch.path(),
        &["clone", "-q", remote.to_str().unwrap(), "work"],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    push(
        &work,
        &[
            ("instances/orders.yaml", Some(&manifest("orders", "16MB"))),
            ("README.md", Some("not a manifest\n")),
        ],
        "add orders",
    );
    // `pgplane up` is single-user: local repositories are allowed.
    let url = format!("file://{}", remote.display());
    let add = |extra: &[&str]| {
        let mut args = vec![
            "source",
            "add",
            "prod",
            "--git",
            &url,
            "--branch",
            "main",
            "--path",
            "instances",
        ];
        args.extend_from_slice(extra);
        ok(&args, &env)
    };
    // A push is picked up within the interval; the tests sync at once.
    let sync = || ok(&["source", "sync", "prod"], &env);

    // Intervals under 10 s are refused, naming the field.
    let o = run(
        &["source", "add", "prod", "--git", &url, "--interval", "1s"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("intervalSeconds"), "{}", stderr(&o));

    // Without --webhook-secret one is generated and shown once, with the URL.
    let added = add(&[]);
    let hook_path = "/api/v1/orgs/default/sources/prod/webhook";
    assert!(
        added.contains(&format!("http://{listen}{hook_path}")),
        "{added}"
    );
    assert!(added.contains("Webhook secret:"), "{added}");
    assert!(
        !ok(&["source", "status", "prod"], &env).contains("Webhook secret:"),
        "shown once"
    );

    // push → Up, owned by the source.
    let inst = eventually("orders Up", WAIT, || {
        let o = run(&["instance", "get", "orders", "-o", "json"], &env);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (v["state"] == "Up").then_some(v)
    });
    assert_eq!(inst["owner"], "git:prod");
    let uri = ok(&["instance", "credentials", "orders"], &env)
        .trim()
        .to_owned();
    assert_eq!(psql(&uri, "show work_mem"), "16MB");

    // Editing it updates in place.
    push(
        &work,
        &[("instances/orders.yaml", Some(&manifest("orders", "32MB")))],
        "more work_mem",
    );
    sync();
    eventually("work_mem 32MB", WAIT, || {
        (psql(&uri, "show work_mem") == "32MB").then_some(())
    });
    let status = json(&["source", "status", "prod"], &env);
    let update = status["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["message"] == "more work_mem")
        .expect("sync recorded");
    assert_eq!(update["outcome"], "applied");
    assert_eq!(update["author"], "Ada <ada@example.com>");
    assert_eq!(update["results"][0]["action"], "update");
    assert!(
        update["results"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("config.work_mem: 16MB → 32MB"),
        "{update}"
    );

    // One owner: the API may not change what git manages.
    let o = run(
        &["instance", "update", "orders", "--config", "work_mem=1MB"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("managed by git:prod"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("changing") && !stderr(&o).contains("run the command again"),
        "the refusal alone, without a diff or a retry hint: {}",
        stderr(&o)
    );
    // Whether it runs is declared too: stop is refused here, and a
    // manifest saying `stopped: true` stops it (and plan and drift agree).
    let o = run(&["instance", "stop", "orders"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("managed by git:prod") && stderr(&o).contains("stopped: true"),
        "{}",
        stderr(&o)
    );
    assert_eq!(json(&["instance", "get", "orders"], &env)["state"], "Up");
    push(
        &work,
        &[(
            "instances/orders.yaml",
            Some(&format!("{}  stopped: true\n", manifest("orders", "32MB"))),
        )],
        "stop orders",
    );
    sync();
    eventually("orders Stopped by git", WAIT, || {
        (json(&["instance", "get", "orders"], &env)["state"] == "Stopped").then_some(())
    });
    let worktree = work.join("instances");
    let o = run(&["plan", "-f", worktree.to_str().unwrap()], &env);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("Planning as source \"prod\""),
        "the owning source is found: {}",
        stderr(&o)
    );
    let o = run(
        &["plan", "-f", worktree.to_str().unwrap(), "--source", "prdo"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no such source \"prdo\"")
            && stderr(&o).contains("did you mean \"prod\"")
            && !stderr(&o).contains("adopt"),
        "{}",
        stderr(&o)
    );
    push(
        &work,
        &[("instances/orders.yaml", Some(&manifest("orders", "32MB")))],
        "start orders",
    );
    sync();
    eventually("orders Up again by git", WAIT, || {
        (json(&["instance", "get", "orders"], &env)["state"] == "Up").then_some(())
    });
    let listed = ok(&["source", "list"], &env);
    assert!(
        listed.contains("STATUS") && listed.contains("applied"),
        "{listed}"
    );

    // A repository, branch or path that cannot be read is refused when
    // added, naming the field; `--no-verify` registers it anyway.
    let o = run(
        &[
            "source",
            "add",
            "bad",
            "--git",
            "file:///srv/nonexistent.git",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("url: could not fetch"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &["source", "add", "bad", "--git", &url, "--branch", "mian"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("branch: ") && stderr(&o).contains("branches: main"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &["source", "add", "bad", "--git", &url, "--path", "nowhere"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("path: "), "{}", stderr(&o));
    ok(
        &[
            "source",
            "add",
            "later",
            "--git",
            "file:///srv/nonexistent.git",
            "--no-verify",
        ],
        &env,
    );
    ok(&["source", "delete", "later"], &env);

    // An invalid commit is rejected whole; the instance is untouched.
    let generation = json(&["instance", "get", "orders"], &env)["generation"].clone();
    push(
        &work,
        &[
            ("instances/orders.yaml", Some(&manifest("orders", "64MB"))),
            ("instances/bad.yaml", Some("apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: bad\nspec:\n  config:\n    port: \"5433\"\n  replica: 2\n")),
        ],
        "broken",
    );
    let o = run(&["source", "sync", "prod"], &env);
    assert_eq!(o.status.code(), Some(1), "a rejected sync fails");
    let rejected = eventually("rejected sync", WAIT, || {
        let st = json(&["source", "status", "prod"], &env);
        st["syncs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["message"] == "broken")
            .cloned()
    });
    assert_eq!(rejected["outcome"], "rejected");
    let errors = rejected["errors"].to_string();
    assert!(
        errors.contains("instances/bad.yaml:7") && errors.contains("spec.config.port"),
        "{errors}"
    );
    assert!(errors.contains("replica"), "{errors}");
    assert_eq!(
        json(&["instance", "get", "orders"], &env)["generation"],
        generation,
        "nothing applied"
    );
    assert_eq!(psql(&uri, "show work_mem"), "32MB");

    // Removing a manifest without prune: orphan reported, instance left alone.
    push(
        &work,
        &[
            ("instances/bad.yaml", None),
            ("instances/orders.yaml", None),
            ("instances/users.yaml", Some(&manifest("users", "8MB"))),
        ],
        "replace orders by users",
    );
    sync();
    let synced = eventually("orphan reported", WAIT, || {
        let st = json(&["source", "status", "prod"], &env);
        st["syncs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["message"] == "replace orders by users")
            .cloned()
    });
    let actions: Vec<String> = synced["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["name"].as_str().unwrap(),
                r["action"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        actions.contains(&"orders:orphan".to_owned())
            && actions.contains(&"users:create".to_owned()),
        "{actions:?}"
    );
    eventually("users Up", WAIT, || {
        (json(&["instance", "get", "users"], &env)["state"] == "Up").then_some(())
    });
    assert_eq!(
        json(&["instance", "get", "orders"], &env)["state"],
        "Up",
        "orphan left alone"
    );
    // Right after a sync, plan and drift show nothing to do.
    eventually("users observed", WAIT, || {
        (json(&["instance", "get", "users"], &env)["observed"]["config"]["work_mem"] == "8MB")
            .then_some(())
    });
    let o = run(
        &[
            "plan",
            "--git",
            &url,
            "--ref",
            "main",
            "--path",
            "instances",
            "--source",
            "prod",
            "-o",
            "json",
        ],
        &env,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "plan after sync: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        run(&["drift", "--exit-code"], &env).status.success(),
        "no drift after sync"
    );

    // With prune: deleted.
    ok(&["source", "delete", "prod"], &env);
    add(&["--prune"]);
    eventually("orders deleted", WAIT, || {
        (json(&["instance", "get", "orders"], &env)["state"] == "Deleted").then_some(())
    });

    // ALTER SYSTEM behind pgplane's back → drift, field by field.
    let users_uri = ok(&["instance", "credentials", "users"], &env)
        .trim()
        .to_owned();
    psql(&users_uri, "alter system set work_mem = '48MB'");
    psql(&users_uri, "select pg_reload_conf()");
    let report = eventually("drift shown", WAIT, || {
        let o = run(&["drift", "-o", "json", "--exit-code"], &env);
        (o.status.code() == Some(2))
            .then(|| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap())
    });
    let users = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "users")
        .unwrap();
    assert_eq!(users["owner"], "git:prod");
    assert_eq!(users["fields"][0]["path"], "config.work_mem");
    assert_eq!(users["fields"][0]["observed"], "48MB");

    // heal → drift gone.
    ok(&["source", "delete", "prod"], &env);
    add(&["--prune", "--drift", "heal"]);
    eventually("healed", WAIT, || {
        (psql(&users_uri, "show work_mem") == "8MB").then_some(())
    });
    eventually("no drift", WAIT, || {
        run(&["drift", "--exit-code"], &env)
            .status
            .success()
            .then_some(())
    });
    let st = json(&["source", "status", "prod"], &env);
    let healed = st["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["results"].as_array().unwrap().clone())
        .find(|r| r["action"] == "heal")
        .expect("heal recorded");
    assert_eq!(healed["name"], "users");
    assert_eq!(healed["restart"], false);

    // The webhook: no trust, only sooner; a signed push syncs at once.
    ok(&["source", "delete", "prod"], &env);
    add(&["--prune", "--interval", "1h", "--webhook-secret", "s3cret"]);
    push(
        &work,
        &[("instances/users.yaml", Some(&manifest("users", "12MB")))],
        "webhook please",
    );
    let body = "{\"ref\":\"refs/heads/main\"}";
    let unsigned = http_post(&listen, hook_path, &[], body);
    assert_eq!(unsigned.0, 401, "unsigned");
    // A source that does not exist answers exactly the same.
    let sig = format!("sha256={}", hmac_sha256_hex("s3cret", body));
    for path in [
        "/api/v1/orgs/default/sources/nope/webhook",
        "/api/v1/orgs/other/sources/prod/webhook",
    ] {
        assert_eq!(
            http_post(&listen, path, &[("X-Hub-Signature-256", &sig)], body),
            unsigned,
            "{path}"
        );
    }
    assert_eq!(
        http_post(&listen, hook_path, &[("X-Hub-Signature-256", &sig)], body).0,
        202
    );
    eventually("webhook sync", Duration::from_secs(30), || {
        (psql(&users_uri, "show work_mem") == "12MB").then_some(())
    });

    // A deleted source keeps ownership (re-adding it resumes); the API still may not delete.
    ok(&["source", "delete", "prod"], &env);
    let o = run(&["instance", "delete", "users"], &env);
    assert!(stderr(&o).contains("managed by git:prod"), "{}", stderr(&o));
    // Ctrl-C stops every instance.
    up.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(up.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(psql_fails(&users_uri));
}

/// A fresh database on the test cluster (`DATABASE_URL`), dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create(suffix: &str) -> Database {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL must be set (eval \"$(bash scripts/test-db.sh)\")");
        let name = format!("e2e_{suffix}_{}", std::process::id());
        psql_admin(
            &admin_url,
            &format!("drop database if exists {name} with (force)"),
        );
        assert!(psql_admin(&admin_url, &format!("create database {name}")));
        let base = admin_url.rsplit_once('/').unwrap().0;
        Database {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql_admin(
            &self.admin_url,
            &format!("drop database if exists {} with (force)", self.name),
        );
    }
}

fn psql_admin(url: &str, sql: &str) -> bool {
    Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .unwrap()
        .status
        .success()
}

/// `pgplane server` serves organisations that do not trust each other: by
/// default a source may not read the machine's repositories or reach its
/// network; the operator may allow either.
#[test]
fn server_sources_are_public_remotes_unless_the_operator_allows_more() {
    let db = Database::create("sources");
    let scratch = scratch_dir();
    let remote = scratch.path().join("remote.git");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare", "-b", "main"]);
    git(
        scratch.path(),
        &["clone", "-q", remote.to_str().unwrap(), "work"],
    );
    let work = scratch.path().join("work");
    git(&work, &["checkout", "-q", "-b", "main"]);
    push(&work, &[("README.md", Some("no manifests yet\n"))], "start");
    let file_url = format!("file://{}", remote.display());
    let private_url = format!("https://127.0.0.1:{}/x.git", free_port());
    let keys = ok(&["secrets", "generate-key"], &[]);
    let db_env = [
        ("PGPLANE_DATABASE_URL", db.url.as_str()),
        ("PGPLANE_SECRET_KEYS", keys.as_str()),
    ];
    let token = ok(&["token", "create", "--org", "globex"], &db_env)
        .trim()
        .to_owned();

    let serve = |flags: &[&str]| {
        let listen = format!("127.0.0.1:{}", free_port());
        let cache = scratch.path().join("git-cache");
        let mut args = vec![
            "server",
            "--listen",
            &listen,
            "--git-cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        let proc = spawn(
            "pgplane server",
            &args,
            &db_env,
            &scratch.path().join("server.log"),
        );
        let endpoint = format!("http://{listen}");
        eventually("server ready", WAIT, || {
            std::net::TcpStream::connect(&listen).ok()
        });
        (proc, endpoint)
    };
    let add = |endpoint: &str, name: &str, url: &str| {
        run(
            &["source", "add", name, "--git", url],
            &[("PGPLANE_ENDPOINT", endpoint), ("PGPLANE_TOKEN", &token)],
        )
    };

    let (server, endpoint) = serve(&[]);
    for (name, url) in [("local", &file_url), ("lan", &private_url)] {
        let o = add(&endpoint, name, url);
        assert_eq!(o.status.code(), Some(1), "{url}: {}", stdout(&o));
        assert!(stderr(&o).contains("url: "), "{}", stderr(&o));
    }
    drop(server);

    let (server, endpoint) = serve(&["--allow-local-sources"]);
    let o = add(&endpoint, "local", &file_url);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = add(&endpoint, "lan", &private_url);
    assert_eq!(o.status.code(), Some(1), "private hosts still refused");
    drop(server);

    // Allowed, the private host is tried: nothing listens there, so the
    // add is refused for the repository, not for the policy, and
    // `--no-verify` registers it.
    let (_server, endpoint) = serve(&["--allow-private-source-urls"]);
    let o = add(&endpoint, "lan", &private_url);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("url: could not fetch the repository"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &["source", "add", "lan", "--git", &private_url, "--no-verify"],
        &[("PGPLANE_ENDPOINT", &endpoint), ("PGPLANE_TOKEN", &token)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}
