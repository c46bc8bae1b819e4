//! Shared helpers: a template per machine, an instance per test with its own
//! port and directory, and a Drop that stops the server.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent::{Agent, InstanceConfig, PostgresBinaries, RunAs, Secret, Template};
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

pub fn bins() -> PostgresBinaries {
    PostgresBinaries::discover().expect("PostgreSQL binaries")
}

pub fn run_as() -> RunAs {
    RunAs::for_this_process("postgres").expect("run-as user")
}

/// One template for all tests (and test processes) on this machine.
pub async fn template() -> Template {
    let dir = std::env::temp_dir()
        .join(format!("pgplane-agent-it-{}", nix::unistd::getuid()))
        .join("template");
    Template::ensure(&dir, &bins(), &run_as())
        .await
        .expect("template")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory under /tmp that the Postgres user can traverse.
pub fn scratch_dir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pga")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// An instance for one test; stops its server when dropped.
pub struct TestInstance {
    pub agent: Agent,
    pub password: Secret,
    pub dir: TempDir,
}

impl TestInstance {
    /// An agent for a fresh directory; nothing created yet.
    pub fn new() -> TestInstance {
        let dir = scratch_dir();
        let config = InstanceConfig::new(dir.path().join("data"), free_port());
        TestInstance {
            agent: Agent::new(bins(), run_as(), config),
            password: Secret::generate(),
            dir,
        }
    }

    pub async fn created() -> TestInstance {
        let t = TestInstance::new();
        t.agent
            .create(&template().await, &t.password)
            .await
            .expect("create");
        t
    }

    pub fn data_dir(&self) -> PathBuf {
        self.agent.data_dir().to_path_buf()
    }

    /// A client over TCP with the password, as users connect.
    pub async fn client(&self) -> Client {
        connect(&self.agent, self.password.expose())
            .await
            .expect("connect over TCP")
    }

    pub async fn show(&self, name: &str) -> String {
        self.client()
            .await
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for TestInstance {
    fn drop(&mut self) {
        if let Err(e) = self.agent.stop_blocking() {
            eprintln!("stopping the test instance: {e}");
        }
    }
}

pub async fn connect(agent: &Agent, password: &str) -> Result<Client, tokio_postgres::Error> {
    let info = agent.connection();
    let (client, conn) = tokio_postgres::Config::new()
        .host(&info.host)
        .port(info.port)
        .user(&info.user)
        .dbname(&info.database)
        .password(password)
        .connect(NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn spec(config: &[(&str, &str)], extensions: &[&str]) -> domain::InstanceSpec {
    domain::InstanceSpec {
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        extensions: extensions
            .iter()
            .map(|e| domain::Extension::new(e.to_string()))
            .collect(),
        ..Default::default()
    }
}
