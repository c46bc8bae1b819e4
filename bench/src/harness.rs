//! Running the release `pgplane` binary and talking to it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub fn pgplane_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("pgplane");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release --bins` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// A temp dir under /tmp (removed on drop) that the Postgres user can traverse.
pub fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("pgb").tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    Ok(dir)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A `pgplane` child process, stopped with SIGINT (then killed) on drop.
pub struct Pgplane {
    pub child: Child,
}

impl Pgplane {
    pub fn spawn(
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
        ready_marker: Option<&str>,
    ) -> anyhow::Result<Pgplane> {
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(pgplane_bin()?)
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("PGPLANE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        if let Some(marker) = ready_marker {
            let start = Instant::now();
            loop {
                match rx.recv_timeout(Duration::from_secs(120).saturating_sub(start.elapsed())) {
                    Ok(line) if line.contains(marker) => break,
                    Ok(_) => {}
                    Err(_) => bail!(
                        "pgplane {args:?} did not become ready; see {}",
                        log.display()
                    ),
                }
            }
        }
        std::thread::spawn(move || for _ in rx {});
        Ok(Pgplane { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmRSS, VmHWM) in KiB from /proc.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .context("no such field")?;
            Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Pgplane {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `pgplane ARGS` to completion and returns stdout.
pub fn pgplane_output(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let o = Command::new(pgplane_bin()?)
        .args(args)
        .envs(env.iter().copied())
        .output()?;
    if !o.status.success() {
        bail!("pgplane {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8(o.stdout)?.trim().to_owned())
}

pub fn env_file(data_dir: &Path) -> anyhow::Result<(String, String)> {
    let env = std::fs::read_to_string(data_dir.join("pgplane.env"))?;
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::to_owned)
            .with_context(|| format!("{k} missing"))
    };
    Ok((get("PGPLANE_ENDPOINT=")?, get("PGPLANE_TOKEN=")?))
}

/// The embedded state database's URL, from `pgplane up`'s data directory.
pub fn state_db_url(data_dir: &Path) -> anyhow::Result<String> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("state.json"))?)?;
    Ok(format!(
        "postgres://postgres:{}@127.0.0.1:{}/postgres",
        meta["password"].as_str().context("password")?,
        meta["port"]
    ))
}

pub fn median(xs: &mut [Duration]) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// A control plane (`pgplane server`) and a conductor on the simulated
/// runtime, with their own state Postgres made by the agent, and a token of
/// organisation `bench`.
pub struct SimulatedPlane {
    pub server: Pgplane,
    pub _conductor: Pgplane,
    pub client: api::Client,
    /// `host:port` of the server.
    pub listen: String,
    pub token: String,
    /// The state Postgres (stop it when done).
    pub db: agent::Agent,
}

impl SimulatedPlane {
    pub async fn start(dir: &Path) -> anyhow::Result<SimulatedPlane> {
        use agent::{Agent, InstanceConfig, PostgresBinaries, RunAs, Secret, Template};
        let bins = PostgresBinaries::discover()?;
        let run_as = RunAs::for_this_process("postgres")?;
        let template = Template::ensure(&dir.join("template"), &bins, &run_as).await?;
        let db = Agent::new(
            bins,
            run_as,
            InstanceConfig::new(dir.join("db"), free_port()?),
        );
        let password = Secret::generate();
        db.create(&template, &password).await?;
        let c = db.connection();
        let url = format!(
            "postgres://postgres:{}@{}:{}/postgres",
            password.expose(),
            c.host,
            c.port
        );
        let keys = pgplane_output(&["secrets", "generate-key"], &[])?;
        let env = [
            ("PGPLANE_DATABASE_URL", url.as_str()),
            ("PGPLANE_SECRET_KEYS", keys.as_str()),
        ];
        let listen = format!("127.0.0.1:{}", free_port()?);
        let token = pgplane_output(&["token", "create", "--org", "bench"], &env)?;
        let server = Pgplane::spawn(
            // Benchmarks make more instances than one organisation may have.
            &[
                "server",
                "--listen",
                &listen,
                "--max-instances-per-org",
                "0",
            ],
            &env,
            &dir.join("server.log"),
            None,
        )?;
        let conductor = Pgplane::spawn(
            &[
                "conductor",
                "--runtime",
                "simulated",
                "--data-plane",
                "local",
            ],
            &env,
            &dir.join("conductor.log"),
            None,
        )?;
        let client = api::Client::new(&format!("http://{listen}"), &token);
        let start = Instant::now();
        while client.list_instances(None).await.is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("control plane did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(SimulatedPlane {
            server,
            _conductor: conductor,
            client,
            listen,
            token,
            db,
        })
    }
}

/// Waits until no instance is still `Submitted` (every create reported),
/// looking twice a second.
pub async fn none_submitted(client: &api::Client, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let pending = client.list_instances(Some("Submitted")).await?.items.len();
        if pending == 0 {
            return Ok(());
        }
        if start.elapsed() > limit {
            anyhow::bail!("{pending} instances still Submitted after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
