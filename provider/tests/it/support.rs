use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The provider binary cargo built for these tests.
pub fn provider_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_terraform-provider-pgplane"))
}

/// The built `pgplane` binary (`PGPLANE_BIN`, else the workspace's target/debug).
pub fn pgplane_bin() -> PathBuf {
    let bin = std::env::var("PGPLANE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pgplane"));
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --bin pgplane` in the workspace \
         (scripts/test.sh builds every binary before the tests)",
        bin.display()
    );
    bin
}

/// The CLIs that drive the provider: two Terraform versions and OpenTofu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tf {
    V1_15,
    V1_0,
    /// OpenTofu, built by scripts/setup-tofu.sh.
    Tofu,
}

impl Tf {
    pub fn bin(self) -> PathBuf {
        let tools = std::env::var("PGPLANE_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/pgplane")
            });
        let (name, setup) = match self {
            Tf::V1_15 => ("terraform-1.15", "setup-terraform.sh"),
            Tf::V1_0 => ("terraform-1.0", "setup-terraform.sh"),
            Tf::Tofu => ("tofu", "setup-tofu.sh"),
        };
        let bin = tools.join("bin").join(name);
        assert!(
            bin.exists(),
            "{} not found: run `bash scripts/{setup}` (scripts/test.sh does)",
            bin.display()
        );
        bin
    }
}

/// A directory under /tmp that the Postgres user can traverse.
pub fn scratch_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("pgtf")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `pgplane up` in its own data directory, killed when dropped.
pub struct Pgplane {
    child: Child,
    pub endpoint: String,
    pub token: String,
}

impl Pgplane {
    pub fn up(dir: &Path) -> Pgplane {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("up.log")).unwrap();
        let mut child = Command::new(pgplane_bin())
            .args(["up", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen", &listen, "--resync-interval", "1s"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let start = Instant::now();
        let mut seen = String::new();
        loop {
            let left = Duration::from_secs(90).saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains("Press Ctrl-C") {
                        break;
                    }
                }
                Err(_) => panic!(
                    "pgplane up did not start; stdout:\n{seen}\nlog:\n{}",
                    std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()
                ),
            }
        }
        std::thread::spawn(move || for _ in rx {});
        let env = std::fs::read_to_string(dir.join("data/pgplane.env")).unwrap();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_owned()
        };
        Pgplane {
            child,
            endpoint: get("PGPLANE_ENDPOINT"),
            token: get("PGPLANE_TOKEN"),
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGPLANE_ENDPOINT", self.endpoint.clone()),
            ("PGPLANE_TOKEN", self.token.clone()),
        ]
    }

    /// Runs `pgplane ARGS` against this control plane; asserts success, returns stdout.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> String {
        let o = self.run_cli(args);
        assert!(
            o.status.success(),
            "pgplane {args:?} failed: {}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Runs `pgplane ARGS`; asserts failure, returns stdout and stderr.
    #[track_caller]
    pub fn cli_fails(&self, args: &[&str]) -> String {
        let o = self.run_cli(args);
        let out = format!("{}\n{}", text(&o.stdout), text(&o.stderr));
        assert!(!o.status.success(), "pgplane {args:?} succeeded: {out}");
        out
    }

    fn run_cli(&self, args: &[&str]) -> Output {
        Command::new(pgplane_bin())
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Pgplane {
    fn drop(&mut self) {
        // SIGTERM lets `up` stop its Postgres children; then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Terraform working directory with a CLI config that installs the
/// provider from a local filesystem mirror (no network).
pub struct Workspace {
    pub tf: Tf,
    pub dir: PathBuf,
    cli_config: PathBuf,
    env: Vec<(&'static str, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Workspace {
    pub fn new(tf: Tf, root: &Path, env: Vec<(&'static str, String)>) -> Workspace {
        let mirror = root.join("mirror");
        let platform = mirror.join("registry.pgplane.io/pgplane/pgplane/0.1.0/linux_amd64");
        std::fs::create_dir_all(&platform).unwrap();
        // A copy, not a link: a rebuild of the provider while a test runs
        // would change the binary under the lock file's checksum.
        let copy = platform.join("terraform-provider-pgplane_v0.1.0");
        if !copy.exists() {
            std::fs::copy(provider_bin(), &copy).unwrap();
        }
        let cli_config = root.join("terraform.tfrc");
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    \
                 include = [\"registry.pgplane.io/*/*\"]\n  }}\n  direct {{\n    \
                 exclude = [\"registry.pgplane.io/*/*\"]\n  }}\n}}\n",
                mirror.display()
            ),
        )
        .unwrap();
        let dir = root.join("work");
        std::fs::create_dir_all(&dir).unwrap();
        Workspace {
            tf,
            dir,
            cli_config,
            env,
        }
    }

    pub fn write(&self, main_tf: &str) {
        std::fs::write(self.dir.join("main.tf"), main_tf).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let o: Output = Command::new(self.tf.bin())
            .args(args)
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TOFU_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_INPUT", "0")
            .env_remove("TF_LOG")
            .env_remove("PGPLANE_ENDPOINT")
            .env_remove("PGPLANE_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: text(&o.stdout),
            stderr: text(&o.stderr),
        }
    }

    /// Runs and asserts the exit code.
    #[track_caller]
    pub fn expect(&self, code: i32, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.code,
            code,
            "{:?} {args:?} exited {} (expected {code}):\n{}",
            self.tf,
            r.code,
            r.all()
        );
        r
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Run {
        self.expect(0, args)
    }
}

/// Runs `psql URI -Atc SQL`, returning the trimmed output.
#[track_caller]
pub fn psql(uri: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args([uri, "-Atc", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "psql -c {sql:?} failed: {}",
        text(&o.stderr)
    );
    text(&o.stdout).trim().to_owned()
}

/// Whether `select 1` through `uri` fails (nothing accepts connections there).
pub fn psql_fails(uri: &str) -> bool {
    !Command::new("psql")
        .args([uri, "-Atc", "select 1"])
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .unwrap()
        .status
        .success()
}

/// The control plane's view of instance `name` (`pgplane instance get -o json`).
pub fn instance_json(pgplane: &Pgplane, name: &str) -> serde_json::Value {
    serde_json::from_str(&pgplane.cli(&["instance", "get", name, "-o", "json"])).unwrap()
}
