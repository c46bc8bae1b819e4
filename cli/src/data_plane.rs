//! `pgplane data-plane`: what a data plane's conductor may do in the
//! control plane's database.

use anyhow::Context;

#[derive(clap::Subcommand, Debug)]
pub enum DataPlaneCommand {
    /// Give a database role exactly what the conductor of a data plane
    /// needs: its own queue, the status queue, storing the secrets and logs
    /// it seals, registering itself. It cannot read tokens, stored secrets,
    /// instances or other queues, nor change the schema. Creates the data
    /// plane's queue; run it as the database's owner, after `pgplane server`
    /// has prepared the database. The role must exist.
    ///
    /// Examples:
    ///
    ///   psql "$PGPLANE_DATABASE_URL" -c "create role dp_k8s login password '…'"
    ///
    ///   pgplane data-plane grant k8s --role dp_k8s --database-url postgres://pgplane@db.internal/pgplane
    ///
    ///   pgplane conductor --data-plane k8s --runtime kubernetes --database-url postgres://dp_k8s@db.internal/pgplane
    Grant {
        /// The data plane (as `pgplane conductor --data-plane` names it).
        name: String,
        /// The database role its conductor connects as.
        #[arg(long)]
        role: String,
        /// The control-plane database, as its owner.
        #[arg(long, env = "PGPLANE_DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

pub async fn run(cmd: DataPlaneCommand) -> anyhow::Result<()> {
    match cmd {
        DataPlaneCommand::Grant {
            name,
            role,
            database_url,
        } => {
            let pool = reconciler::connect(&database_url).await?;
            if let Some(why) = reconciler::database_unprepared(&pool)
                .await
                .context("checking the control plane's database")?
            {
                anyhow::bail!(
                    "the control plane's database is not prepared ({why}): start `pgplane server` on it first"
                );
            }
            reconciler::grants::grant_data_plane(&pool, &name, &role).await?;
            eprintln!("granted role {role:?} what the conductor of data plane {name:?} needs");
            Ok(())
        }
    }
}
