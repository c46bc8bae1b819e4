//! The parameter table and the value parser checked against the real
//! PostgreSQL 15 on this machine: the table must be what the server reports
//! (`scripts/gen-pg-settings.sh --check`), and every value the parser reads
//! must be accepted or refused as `postgres -C NAME -c NAME=VALUE` accepts or
//! refuses it, meaning the same number or word.

use std::path::{Path, PathBuf};
use std::process::Command;

use domain::settings::{self, SettingValue};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn pg15_settings_table_is_current() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/gen-pg-settings.sh"))
        .arg("--check")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An initdb'd data directory, removed on drop.
struct DataDir {
    root: PathBuf,
    bindir: PathBuf,
    user: Option<String>,
}

impl DataDir {
    fn new() -> DataDir {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|b| b.join("initdb").exists())
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        let root_user = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        // As root, Postgres runs as the unprivileged user the scripts use.
        let user = root_user.then(|| {
            std::env::var("PGPLANE_POSTGRES_USER").unwrap_or_else(|_| "postgres".to_owned())
        });
        let root = std::env::temp_dir().join(format!("pgplane-domain-pg-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let dir = DataDir { root, bindir, user };
        if let Some(user) = &dir.user {
            let ok = Command::new("chown")
                .arg(user)
                .arg(&dir.root)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {user} {}", dir.root.display());
        }
        let out = dir
            .command("initdb")
            .arg("-D")
            .arg(dir.data())
            .args(["-U", "postgres", "-A", "trust", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// What the server reads `value` as (`SHOW`'s raw form, base units), or
    /// `None` when it refuses it.
    fn server_reads(&self, name: &str, value: &str) -> Option<String> {
        let out = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-C", name, "-c"])
            .arg(format!("{name}={value}"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn same_meaning(ours: &SettingValue, server: &str) -> bool {
    match ours {
        SettingValue::Bool(b) => server == if *b { "on" } else { "off" },
        SettingValue::Integer(n) => server == n.to_string(),
        // The server prints reals with six significant digits (`%g`).
        SettingValue::Real(r) => server
            .parse::<f64>()
            .is_ok_and(|s| (s - r).abs() <= r.abs() * 1e-5),
        SettingValue::Enum(v) => server == *v,
        SettingValue::String(s) => server == s,
    }
}

fn cases() -> Vec<(&'static str, &'static str)> {
    let integers = [
        "max_connections",
        "work_mem",
        "shared_buffers",
        "max_wal_size",
        "track_activity_query_size",
        "statement_timeout",
        "archive_timeout",
        "log_rotation_age",
        "log_min_duration_statement",
    ];
    let integer_values = [
        "0",
        "1",
        "-1",
        "64",
        "010",
        "08",
        "0x1F",
        "0x",
        "1e3",
        "1.5",
        "2.5",
        "3.5",
        " 7",
        "7 ",
        "1 kB",
        "1kB",
        "1KB",
        "1MB",
        "1.5MB",
        "1GB",
        "3TB",
        "1000B",
        "1s",
        "1.5s",
        "1500us",
        "1min",
        "1h",
        "1d",
        "99999999999",
        "abc",
        "",
        "1 2",
        "+5",
        ".5",
        "1e",
        "inf",
        "nan",
        "2147483647",
        "2147483648",
        "1 MB x",
    ];
    let reals = [
        "random_page_cost",
        "vacuum_cost_delay",
        "checkpoint_completion_target",
    ];
    let real_values = [
        "1.1", "1e1", "0x10", "inf", "-inf", "nan", "1e400", "1e-400", ".5", "5.", "-1", "0", "1",
        "500us", "1ms", "2 ms", "1e-5", "1s",
    ];
    let words: &[(&str, &[&str])] = &[
        (
            "jit",
            &[
                "on", "off", "ON", "of", "o", "t", "tr", "true", "truex", "y", "yes", "n", "no",
                "f", "false", "1", "0", "2", "", " on", "yes ",
            ],
        ),
        (
            "wal_level",
            &[
                "minimal",
                "Replica",
                "LOGICAL",
                "archive",
                "hot_standby",
                "repl",
                "",
                "replica ",
            ],
        ),
        (
            "synchronous_commit",
            &[
                "on",
                "off",
                "true",
                "yes",
                "0",
                "local",
                "remote_apply",
                "maybe",
            ],
        ),
        ("huge_pages", &["on", "try", "off", "TRUE", "no", "t"]),
        (
            "wal_compression",
            &["on", "pglz", "lz4", "zstd", "true", "off"],
        ),
        (
            "default_transaction_isolation",
            &[
                "serializable",
                "Repeatable Read",
                "read committed",
                "snapshot",
            ],
        ),
        (
            "client_min_messages",
            &["debug", "info", "DEBUG5", "log", "fatal"],
        ),
        (
            "ssl_min_protocol_version",
            &["TLSv1.2", "tlsv1.3", "TLSv1.4"],
        ),
        ("ssl_max_protocol_version", &["", "TLSv1.3"]),
    ];
    let mut cases = Vec::new();
    for name in integers {
        cases.extend(integer_values.iter().map(|v| (name, *v)));
    }
    for name in reals {
        cases.extend(real_values.iter().map(|v| (name, *v)));
    }
    for (name, values) in words {
        cases.extend(values.iter().map(|v| (*name, *v)));
    }
    cases
}

#[test]
fn values_are_read_as_the_server_reads_them() {
    let dir = DataDir::new();
    let cases = cases();
    let chunk = cases.len().div_ceil(4);
    let disagreements: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = cases
            .chunks(chunk)
            .map(|part| {
                let dir = &dir;
                s.spawn(move || {
                    part.iter()
                        .filter_map(|(name, value)| {
                            let setting = settings::lookup(name).unwrap();
                            let ours = settings::parse_value(setting, value);
                            let server = dir.server_reads(name, value);
                            let agree = match (&ours, &server) {
                                (Ok(v), Some(s)) => same_meaning(v, s),
                                (Err(_), None) => true,
                                _ => false,
                            };
                            (!agree).then(|| {
                                format!("{name}={value:?}: pgplane {ours:?}, postgres {server:?}")
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        disagreements.is_empty(),
        "{} of {} values read differently:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}
