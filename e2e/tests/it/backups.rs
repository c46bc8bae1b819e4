//! Backups through `pgplane up`, with real pgBackRest and real instances:
//! point-in-time branches, restores of deleted instances, refused restore
//! points, an unwritable repository, retention, a killed backup, and what
//! one instance's OS user can reach of another's backups.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(180);

fn uri(name: &str, env: &[(&str, &str)]) -> String {
    ok(&["instance", "credentials", name], env)
        .trim()
        .to_owned()
}

fn count(uri: &str) -> i64 {
    psql(uri, "select count(*) from t").parse().unwrap()
}

/// The server's clock, as RFC 3339 (the restore point a user would note).
fn server_now(uri: &str) -> String {
    psql(
        uri,
        "select to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

/// Waits until the instance has `n` backups listed.
fn backups(name: &str, n: usize, env: &[(&str, &str)]) -> serde_json::Value {
    eventually(&format!("{n} backups of {name}"), WAIT, || {
        let list = json(&["instance", "backups", name], env);
        (list["items"].as_array()?.len() >= n).then_some(list)
    })
}

fn stanza_of(name: &str, env: &[(&str, &str)]) -> String {
    let id = json(&["instance", "get", name], env)["id"]
        .as_str()
        .unwrap()
        .replace('-', "");
    format!("i-{}", &id[..12])
}

#[test]
fn branches_at_a_point_in_time_and_restores_of_deleted_instances() {
    let up = Embedded::start();
    let env = up.env();
    let repo = up.data_dir.join("backups");

    ok(
        &[
            "instance",
            "create",
            "orders",
            "--extension",
            "hstore",
            "--wait",
        ],
        &env,
    );
    let source = uri("orders", &env);
    psql(&source, "create table t (i int, h hstore)");
    // The first full backup is taken at once, by itself.
    let first = backups("orders", 1, &env);
    assert_eq!(first["items"][0]["type"], "full", "{first}");
    assert_eq!(first["items"][0]["status"], "ok", "{first}");
    assert!(first["restorableFrom"].is_string(), "{first}");
    let history = ok(&["instance", "history", "orders"], &env);
    assert!(history.contains("BackedUp"), "{history}");

    psql(
        &source,
        "insert into t select g, 'a=>1' from generate_series(1, 10) g",
    );
    let t = server_now(&source);
    psql(
        &source,
        "insert into t select g, 'b=>2' from generate_series(11, 20) g",
    );

    // A branch at T has exactly the rows committed before T.
    ok(
        &[
            "instance",
            "create",
            "at-t",
            "--restore-from",
            "orders",
            "--at",
            &t,
            "--wait",
        ],
        &env,
    );
    let branch = uri("at-t", &env);
    assert_eq!(count(&branch), 10);
    assert_ne!(
        password_of(&branch),
        password_of(&source),
        "a branch has its own password"
    );
    // It is independent: it takes writes, and so does the source, apart.
    psql(&branch, "insert into t values (100, 'x=>1')");
    psql(&source, "insert into t values (21, 'c=>3')");
    assert_eq!(count(&branch), 11);
    assert_eq!(count(&source), 21);
    let got = json(&["instance", "get", "at-t"], &env);
    assert_eq!(got["spec"]["restore"]["from"], "orders", "{got}");
    assert_eq!(got["spec"]["extensions"][0]["name"], "hstore", "{got}");
    // Its WAL goes to its own stanza; archiving shows no drift.
    let drift = ok(&["drift"], &env);
    assert!(!drift.contains("archiving"), "{drift}");

    // Latest: everything committed, up to the moment of the restore.
    ok(
        &[
            "instance",
            "create",
            "latest",
            "--restore-from",
            "orders",
            "--wait",
        ],
        &env,
    );
    assert_eq!(count(&uri("latest", &env)), 21);

    // Delete the source: its backups stay, sealed away from any new OS
    // user (uids are reused), and restoring it brings back every commit.
    psql(&source, "insert into t values (22, 'd=>4')");
    let stanza = stanza_of("orders", &env);
    ok(&["instance", "delete", "orders", "--wait"], &env);
    for kind in ["archive", "backup"] {
        let meta = std::fs::metadata(repo.join(kind).join(&stanza)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700), "{kind}");
    }
    let kept = json(&["instance", "backups", "orders"], &env);
    assert!(kept["restorableUntil"].is_string(), "{kept}");
    ok(
        &[
            "instance",
            "create",
            "revived",
            "--restore-from",
            "orders",
            "--wait",
        ],
        &env,
    );
    assert_eq!(count(&uri("revived", &env)), 22);
    backups("revived", 1, &env);

    // Bad restore points and sources: a specific error, nothing created.
    let refused = |args: &[&str], want: &str| {
        let o = run(args, &env);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        let o = run(&["instance", "get", args[2]], &env);
        assert!(!o.status.success(), "{} was created", args[2]);
    };
    refused(
        &[
            "instance",
            "create",
            "early",
            "--restore-from",
            "revived",
            "--at",
            "2001-01-01T00:00:00Z",
        ],
        "before the first backup",
    );
    refused(
        &[
            "instance",
            "create",
            "late",
            "--restore-from",
            "orders",
            "--at",
            "2999-01-01T00:00:00Z",
        ],
        "after the latest restorable point",
    );
    refused(
        &["instance", "create", "typo", "--restore-from", "ordres"],
        "ordres",
    );
    refused(
        &[
            "instance",
            "create",
            "when",
            "--restore-from",
            "revived",
            "--at",
            "yesterday",
        ],
        "RFC 3339",
    );
    // Another organisation's instance does not exist for this one.
    let other = ok(
        &["token", "create", "--org", "globex"],
        &[("PGPLANE_DATABASE_URL", &up.state_url())],
    )
    .trim()
    .to_owned();
    let endpoint = env
        .iter()
        .find(|(k, _)| *k == "PGPLANE_ENDPOINT")
        .unwrap()
        .1;
    let theirs = [
        ("PGPLANE_ENDPOINT", endpoint),
        ("PGPLANE_TOKEN", other.as_str()),
    ];
    let o = run(
        &["instance", "create", "steal", "--restore-from", "revived"],
        &theirs,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("revived"), "{}", stderr(&o));
    assert!(!run(&["instance", "backups", "revived"], &theirs)
        .status
        .success());
}

#[test]
fn archiving_survives_an_unwritable_repository_and_cannot_be_switched_off() {
    let up = Embedded::start();
    let env = up.env();
    let repo = up.data_dir.join("backups");
    ok(&["instance", "create", "ledger", "--wait"], &env);
    backups("ledger", 1, &env);
    let db = uri("ledger", &env);
    psql(&db, "create table t (i int)");
    let stanza = stanza_of("ledger", &env);
    let archive = repo.join("archive").join(&stanza);

    // The instance's OS user cannot write its archive: archiving fails,
    // the instance stays Up and serving, and the failure is reported.
    set_mode(&archive, 0o000);
    psql(&db, "insert into t select generate_series(1, 100)");
    admin_sql(&up.data_dir, "ledger", &env, "select pg_switch_wal()");
    let failing = eventually("the archive failure reported", WAIT, || {
        let got = json(&["instance", "get", "ledger"], &env);
        (got["observed"]["archive"]["failedCount"].as_i64()? > 0).then_some(got)
    });
    assert_eq!(failing["state"], "Up", "{failing}");
    assert_eq!(psql(&db, "select count(*) from t"), "100");
    let shown = ok(&["instance", "get", "ledger"], &env);
    assert!(shown.contains("WAL archiving:     FAILING"), "{shown}");
    let o = run(&["instance", "status", "ledger"], &env);
    assert!(!o.status.success(), "status flags failing archiving");
    assert!(
        stderr(&o).contains("WAL archiving is failing"),
        "{}",
        stderr(&o)
    );
    let gauges = metrics(&env);
    assert!(
        gauges.contains("pgplane_wal_archive_failing{org=\"default\",instance=\"ledger\"} 1"),
        "{gauges}"
    );
    assert!(
        gauges.contains("pgplane_backups{org=\"default\",instance=\"ledger\"} 1"),
        "{gauges}"
    );
    let o = run(
        &[
            "instance",
            "backup",
            "ledger",
            "--wait",
            "--timeout",
            "120s",
        ],
        &env,
    );
    assert!(!o.status.success(), "a backup needs its WAL archived");
    assert!(stderr(&o).contains("backup failed"), "{}", stderr(&o));
    assert_eq!(json(&["instance", "get", "ledger"], &env)["state"], "Up");

    // Writable again: the WAL kept meanwhile is archived, nothing is lost.
    set_mode(&archive, 0o700);
    admin_sql(&up.data_dir, "ledger", &env, "select pg_switch_wal()");
    eventually("archiving recovered", WAIT, || {
        let got = json(&["instance", "get", "ledger"], &env);
        let a = &got["observed"]["archive"];
        let archived = a["lastArchivedAt"].as_str()?;
        (a["lastFailedAt"].as_str().is_some_and(|f| archived > f)).then_some(())
    });
    ok(&["instance", "backup", "ledger", "--wait"], &env);
    let healthy = eventually("a healthy status", WAIT, || {
        let o = run(&["instance", "status", "ledger"], &env);
        o.status.success().then(|| stdout(&o))
    });
    assert!(healthy.contains("Health:"), "{healthy}");
    assert!(healthy.contains("ok"), "{healthy}");
    let gauges = eventually("the failing gauge back at 0", WAIT, || {
        let g = metrics(&env);
        g.contains("pgplane_wal_archive_failing{org=\"default\",instance=\"ledger\"} 0")
            .then_some(g)
    });
    assert!(
        gauges.contains(
            "pgplane_backup_last_success_timestamp_seconds{org=\"default\",instance=\"ledger\"}"
        ),
        "{gauges}"
    );
    ok(
        &[
            "instance",
            "create",
            "ledger-copy",
            "--restore-from",
            "ledger",
            "--wait",
        ],
        &env,
    );
    assert_eq!(
        psql(&uri("ledger-copy", &env), "select count(*) from t"),
        "100"
    );

    // ALTER SYSTEM cannot switch archiving off: pgplane's own setting
    // wins, and the attempt shows as drift.
    admin_sql(
        &up.data_dir,
        "ledger",
        &env,
        "alter system set archive_mode = off",
    );
    admin_sql(&up.data_dir, "ledger", &env, "select pg_reload_conf()");
    let drift = eventually("the archiving drift", WAIT, || {
        let d = ok(&["drift"], &env);
        d.contains("archiving").then_some(d)
    });
    assert!(
        drift.contains("archive_mode = off in postgresql.auto.conf"),
        "{drift}"
    );
    assert_eq!(
        admin_sql(&up.data_dir, "ledger", &env, "show archive_mode"),
        "on"
    );
}

#[test]
fn retention_keeps_the_newest_backups_and_a_killed_backup_is_followed_by_a_good_one() {
    let up = Embedded::start();
    let env = up.env();
    let repo = up.data_dir.join("backups");
    ok(
        &[
            "instance",
            "create",
            "kept",
            "--backup-retention",
            "2",
            "--wait",
        ],
        &env,
    );
    backups("kept", 1, &env);
    let db = uri("kept", &env);
    psql(&db, "create table t (i int)");
    for i in 0..2 {
        psql(&db, &format!("insert into t values ({i})"));
        ok(&["instance", "backup", "kept", "--wait"], &env);
    }
    let list = json(&["instance", "backups", "kept"], &env);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "retention 2 keeps two full backups: {list}");
    let first = json(&["instance", "history", "kept"], &env)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|h| {
            h["detail"]
                .as_str()?
                .strip_prefix("full backup ")?
                .split(' ')
                .next()
                .map(str::to_owned)
        })
        .unwrap();
    assert!(
        !ids.contains(&first.as_str()),
        "the oldest went: {first} in {ids:?}"
    );

    // kill -9 of the pgBackRest process in the middle of a backup: the
    // backup fails, the next one succeeds, and the repository verifies.
    let stanza = stanza_of("kept", &env);
    psql(&db, "insert into t select generate_series(1, 300000)");
    ok(&["instance", "backup", "kept"], &env);
    let pid = eventually("a running backup", WAIT, || backup_process(&stanza));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the failed backup in the history", WAIT, || {
        let h = ok(&["instance", "history", "kept"], &env);
        h.contains("BackupFailed").then_some(())
    });
    ok(&["instance", "backup", "kept", "--wait"], &env);
    verify(&repo, &stanza);
    ok(
        &[
            "instance",
            "create",
            "kept-copy",
            "--restore-from",
            "kept",
            "--wait",
        ],
        &env,
    );
    assert_eq!(
        psql(&uri("kept-copy", &env), "select count(*) from t"),
        "300002"
    );
}

#[test]
fn a_kill_of_pgplane_in_the_middle_of_a_backup_is_followed_by_a_good_backup() {
    let mut up = Embedded::start();
    let repo = up.data_dir.join("backups");
    // Owned: `up` is restarted (borrowed mutably) while the CLI uses these.
    let env: Vec<(String, String)> = up
        .env()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ok(&["instance", "create", "busy", "--wait"], &env);
    backups("busy", 1, &env);
    let db = uri("busy", &env);
    psql(&db, "create table t as select generate_series(1, 400000) i");
    let stanza = stanza_of("busy", &env);
    ok(&["instance", "backup", "busy"], &env);
    eventually("a running backup", WAIT, || backup_process(&stanza));
    up.kill_and_restart();
    // The instance kept serving; the next backup waits for any backup the
    // killed process left running, and succeeds.
    assert_eq!(psql(&db, "select count(*) from t"), "400000");
    ok(&["instance", "backup", "busy", "--wait"], &env);
    verify(&repo, &stanza);
    ok(
        &[
            "instance",
            "create",
            "busy-copy",
            "--restore-from",
            "busy",
            "--wait",
        ],
        &env,
    );
    assert_eq!(
        psql(&uri("busy-copy", &env), "select count(*) from t"),
        "400000"
    );
}

#[test]
fn one_instance_cannot_read_another_instances_backups() {
    let up = Embedded::start();
    let env = up.env();
    let repo = up.data_dir.join("backups");
    ok(&["instance", "create", "alpha", "--wait"], &env);
    ok(&["instance", "create", "beta", "--wait"], &env);
    backups("beta", 1, &env);
    let alpha_user = format!("pgplane-{}", stanza_of("alpha", &env));
    let beta = stanza_of("beta", &env);
    let as_alpha = |args: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", &alpha_user, "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let other: PathBuf = repo.join("backup").join(&beta);
    for path in [
        other.join("backup.info"),
        repo.join("archive").join(&beta).join("archive.info"),
    ] {
        let o = as_alpha(&["cat", path.to_str().unwrap()]);
        assert!(
            !o.status.success(),
            "{} is readable by {alpha_user}",
            path.display()
        );
    }
    let o = as_alpha(&["ls", repo.join("backup").to_str().unwrap()]);
    assert!(!o.status.success(), "the repository lists its stanzas");
}

/// `pgbackrest verify` of a stanza in a directory repository passes.
fn verify(repo: &Path, stanza: &str) {
    let out = std::process::Command::new("pgbackrest")
        .arg(format!("--repo1-path={}", repo.display()))
        .arg(format!("--stanza={stanza}"))
        .args(["--log-level-console=error", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The pid of a `pgbackrest … backup` of `stanza` running now.
fn backup_process(stanza: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let has = |s: &str| args.contains(&s.as_bytes());
        (args.first().is_some_and(|a| a.ends_with(b"pgbackrest"))
            && has("backup")
            && has(&format!("--stanza={stanza}")))
        .then_some(pid)
    })
}

/// An S3-compatible server on this machine: moto's server mode (installed
/// by scripts/setup-s3.sh) behind stunnel for TLS, which pgBackRest needs.
struct S3Server {
    _moto: std::process::Child,
    _tls: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl S3Server {
    fn start(bucket: &str) -> S3Server {
        let tools = std::env::var("PGPLANE_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pgplane")
            });
        let moto_bin = tools.join("bin/moto_server");
        assert!(
            moto_bin.exists(),
            "{} missing: run scripts/setup-s3.sh",
            moto_bin.display()
        );
        let dir = scratch_dir();
        let (plain, port) = (free_port(), free_port());
        let quiet = || std::process::Stdio::null();
        let moto = std::process::Command::new(&moto_bin)
            .args(["-H", "127.0.0.1", "-p", &plain.to_string()])
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let conf = dir.path().join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[s3]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{plain}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let tls = std::process::Command::new("stunnel")
            .arg(&conf)
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .unwrap();
        eventually("the S3 server and its bucket", WAIT, || {
            let o = std::process::Command::new("curl")
                .args(["-skf", "-X", "PUT"])
                .arg(format!("https://127.0.0.1:{port}/{bucket}"))
                .output()
                .ok()?;
            o.status.success().then_some(())
        });
        S3Server {
            _moto: moto,
            _tls: tls,
            port,
            _dir: dir,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self._moto.kill();
        let _ = self._tls.kill();
        let _ = self._moto.wait();
        let _ = self._tls.wait();
    }
}

#[test]
fn backups_in_an_s3_bucket_restore_and_keep_the_credentials_secret() {
    let s3 = S3Server::start("pgplane-backups");
    let endpoint = format!("https://127.0.0.1:{}", s3.port);
    let (key, secret) = ("AKIAPGPLANETEST", "s3-secret-never-shown-8c1f0e");
    let up = Embedded::start_with(
        &[
            "--backup-s3-endpoint",
            &endpoint,
            "--backup-s3-bucket",
            "pgplane-backups",
            "--backup-s3-verify-tls",
            "false",
        ],
        &[
            ("PGPLANE_BACKUP_S3_KEY", key),
            ("PGPLANE_BACKUP_S3_KEY_SECRET", secret),
        ],
    );
    let env = up.env();
    ok(&["instance", "create", "objects", "--wait"], &env);
    backups("objects", 1, &env);
    let db = uri("objects", &env);
    psql(&db, "create table t as select generate_series(1, 42) i");
    ok(
        &[
            "instance",
            "create",
            "objects-copy",
            "--restore-from",
            "objects",
            "--wait",
        ],
        &env,
    );
    assert_eq!(count(&uri("objects-copy", &env)), 42);
    // Nothing goes to the local directory repository.
    assert!(!up.data_dir.join("backups").join("backup").exists());

    // A superuser could read the bucket's credentials: refused here.
    let o = run(
        &["instance", "create", "root", "--superuser-access", "--wait"],
        &env,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("object store"), "{}", stderr(&o));

    // The credentials are in no file, log, command line, history or output.
    let mut seen = vec![std::fs::read_to_string(&up.log).unwrap()];
    seen.push(ok(&["instance", "history", "objects", "-o", "json"], &env));
    seen.push(ok(&["instance", "backups", "objects", "-o", "json"], &env));
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            seen.push(String::from_utf8_lossy(&cmd).into_owned());
        }
    }
    fn files(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                files(&p, out);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    files(&up.data_dir.join("instances"), &mut seen);
    for text in &seen {
        assert!(!text.contains(secret), "the S3 secret leaked");
    }
}
