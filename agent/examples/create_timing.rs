//! Measures creating an instance from the template up to the first query over
//! TCP: `cargo run --release -p agent --example create_timing`.

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use agent::{Agent, InstanceConfig, PostgresBinaries, RunAs, Secret, Template};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let bins = PostgresBinaries::discover()?;
    let run_as = RunAs::for_this_process("postgres")?;
    let root = std::env::temp_dir().join(format!("pgplane-timing-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;

    let t = Instant::now();
    let template = Template::ensure(&root.join("template"), &bins, &run_as).await?;
    println!("template (initdb): {:?}", t.elapsed());

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let agent = Agent::new(bins, run_as, InstanceConfig::new(root.join("data"), port));
    let password = Secret::generate();
    let t = Instant::now();
    agent.create(&template, &password).await?;
    let created = t.elapsed();
    let info = agent.connection();
    let (client, conn) = tokio_postgres::Config::new()
        .host(&info.host)
        .port(info.port)
        .user(&info.user)
        .dbname(&info.database)
        .password(password.expose())
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    client.query_one("SELECT 1", &[]).await?;
    println!(
        "create: {created:?}; create → first query over TCP: {:?}",
        t.elapsed()
    );

    agent.delete().await?;
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
