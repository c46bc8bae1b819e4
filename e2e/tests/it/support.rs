use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The built `pgplane` binary.
pub fn pgplane_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PGPLANE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/pgplane");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory under /tmp that the Postgres user can traverse.
pub fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pge")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// A child process stopped when dropped, unless it already exited: SIGTERM
/// (on which `pgplane up` and `pgplane conductor` stop the servers they
/// run, so no Postgres outlives its test), then SIGKILL if it has not exited
/// within a minute.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    /// Waits for exit (with a deadline) and returns the exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < deadline,
                "{} did not exit in {deadline:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pgplane ARGS`, with stderr appended to `log`.
pub fn spawn(name: &'static str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(pgplane_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap();
    Proc { child, name }
}

/// Reads the child's stdout until a line contains `marker`; returns what was read.
pub fn read_until(proc: &mut Proc, marker: &str, deadline: Duration) -> String {
    let stdout = proc.child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(marker) {
                    // Keep draining in the background so the child never blocks.
                    std::thread::spawn(move || for _ in rx {});
                    return seen;
                }
            }
            Err(_) => panic!(
                "{} did not print {marker:?} within {deadline:?}; printed:\n{seen}",
                proc.name
            ),
        }
    }
}

/// Runs `pgplane ARGS` to completion.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(pgplane_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success, returning stdout.
#[track_caller]
pub fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = run(args, env);
    assert!(
        o.status.success(),
        "pgplane {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs `psql URI -Atc SQL` and returns its trimmed output.
#[track_caller]
pub fn psql(uri: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args([uri, "-Atc", sql])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "psql -c {sql:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

pub fn psql_fails(uri: &str) -> bool {
    !Command::new("psql")
        .args([uri, "-Atc", "select 1"])
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .unwrap()
        .status
        .success()
}

/// Parses `KEY=VALUE` lines of pgplane.env.
pub fn read_env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pgplane ARGS -o json`, parsed.
#[track_caller]
pub fn json(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(&all, env)).unwrap()
}

/// `pgplane up` on a scratch directory, and the environment its
/// `pgplane.env` gives the CLI.
pub struct Embedded {
    /// Killed when dropped; a failing test prints the end of its log.
    _server: Proc,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    vars: Vec<(String, String)>,
    _scratch: tempfile::TempDir,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("PGPLANE_TEST_LOG").is_some() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("not supervised"))
                .collect();
            let tail = lines[lines.len().saturating_sub(120)..].join("\n");
            eprintln!("--- the end of {}:\n{tail}", self.log.display());
        }
    }
}

impl Embedded {
    pub fn start() -> Embedded {
        Embedded::start_with(&[], &[])
    }

    /// `pgplane up` with more flags and environment.
    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Embedded {
        let scratch = scratch_dir();
        let data_dir = scratch.path().join("demo");
        let log = scratch.path().join("up.log");
        let server = crate::walkthrough::up_with(&data_dir, free_port(), &log, extra, env);
        let vars = read_env_file(&data_dir.join("pgplane.env"));
        Embedded {
            _server: server,
            data_dir,
            log,
            vars,
            _scratch: scratch,
        }
    }

    /// `kill -9` of `pgplane up` (its instances keep running), then a new
    /// `pgplane up` on the same directory and port, which adopts them.
    pub fn kill_and_restart(&mut self) {
        self._server.signal(nix::sys::signal::Signal::SIGKILL);
        let _killed = self._server.wait_exit(Duration::from_secs(30));
        let endpoint = &self
            .vars
            .iter()
            .find(|(k, _)| k == "PGPLANE_ENDPOINT")
            .unwrap()
            .1;
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        self._server = crate::walkthrough::up(&self.data_dir, port, &self.log);
    }

    /// `PGPLANE_ENDPOINT` and `PGPLANE_TOKEN`.
    pub fn env(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// A scratch path beside the data directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self._scratch.path().join(name)
    }

    /// The state Postgres's URL, from `state.json` (root reads it).
    pub fn state_url(&self) -> String {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.data_dir.join("state.json")).unwrap())
                .unwrap();
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            state["password"].as_str().unwrap(),
            state["port"]
        )
    }
}

/// The password in a `postgres://user:password@…` URI.
pub fn password_of(uri: &str) -> String {
    uri.split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(cred, _)| cred.split_once(':'))
        .unwrap()
        .1
        .to_owned()
}

/// Runs SQL on an instance as pgplane's own role, over its socket, as
/// an operator on the machine would (root is mapped to it).
pub fn admin_sql(data_dir: &Path, name: &str, env: &[(&str, &str)], sql: &str) -> String {
    let got = json(&["instance", "get", name], env);
    let port = got["connection"]["port"].as_u64().unwrap();
    let id = got["id"].as_str().unwrap().replace('-', "");
    let socket = data_dir
        .join("instances")
        .join(format!("i-{}.sock", &id[..12]));
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-h"])
        .arg(&socket)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "pgplane",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `git ARGS` in `dir` as a fixed author; panics with git's error.
pub fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
}

/// `/metrics` with the admin token.
pub fn metrics(env: &[(&str, &str)]) -> String {
    let var = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1;
    let out = std::process::Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("authorization: Bearer {}", var("PGPLANE_TOKEN")))
        .arg(format!("{}/metrics", var("PGPLANE_ENDPOINT")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
