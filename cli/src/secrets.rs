//! `pgplane secrets`: the keys that seal secrets at rest (instance and
//! role passwords, webhook secrets, shipped server logs), and their
//! rotation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use queue::sealed::Keyring;

/// Where the control plane's sealing keys are.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyArgs {
    /// File holding the sealing keys (base64, one per line, the current one
    /// first; keep it mode 0600, outside the database's backups). Create one
    /// with `pgplane secrets generate-key > FILE`.
    #[arg(long, env = "PGPLANE_SECRET_KEY_FILE", value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// The sealing keys themselves, same format, for keys kept in a secret
    /// manager. Set it in the environment only (command lines are visible
    /// to every user of the machine).
    #[arg(long, env = "PGPLANE_SECRET_KEYS", hide_env_values = true, hide = true)]
    pub secret_keys: Option<String>,
}

impl KeyArgs {
    pub fn keyring(&self) -> anyhow::Result<Keyring> {
        match (&self.secret_key_file, &self.secret_keys) {
            (Some(file), _) => Ok(Keyring::load(file)?),
            (None, Some(text)) => Ok(Keyring::parse(text).context("PGPLANE_SECRET_KEYS")?),
            (None, None) => bail!(
                "no sealing keys: secrets are stored encrypted with a key kept outside the \
                 database. Create one with `pgplane secrets generate-key > /etc/pgplane/keys` \
                 (mode 0600) and pass --secret-key-file /etc/pgplane/keys, or put the keys in \
                 PGPLANE_SECRET_KEYS"
            ),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum SecretsCommand {
    /// Print a new sealing key, for --secret-key-file or PGPLANE_SECRET_KEYS.
    ///
    /// Examples:
    ///
    ///   umask 077; pgplane secrets generate-key > /etc/pgplane/keys
    ///
    ///   pgplane server --database-url postgres://pgplane@db.internal/pgplane --secret-key-file /etc/pgplane/keys
    GenerateKey,
    /// Seal every stored secret with a new key and retire the old ones.
    ///
    /// The key file is rewritten (the new key first); a running control
    /// plane that reads the same file picks the new key up by itself. With
    /// keys in PGPLANE_SECRET_KEYS, rotate with a key file and put its new
    /// content in the environment.
    ///
    /// Examples:
    ///
    ///   pgplane secrets rotate --data-dir ./demo                        # pgplane up's
    ///
    ///   pgplane secrets rotate --database-url postgres://pgplane@db.internal/pgplane --secret-key-file /etc/pgplane/keys
    Rotate {
        /// The data directory of `pgplane up` (its state database and key file).
        #[arg(long, conflicts_with_all = ["database_url", "secret_key_file"])]
        data_dir: Option<PathBuf>,
        /// The control-plane database.
        #[arg(long, env = "PGPLANE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The key file to rotate.
        #[arg(long, env = "PGPLANE_SECRET_KEY_FILE", value_name = "FILE")]
        secret_key_file: Option<PathBuf>,
    },
}

pub async fn run(cmd: SecretsCommand) -> anyhow::Result<()> {
    match cmd {
        SecretsCommand::GenerateKey => {
            print!("{}", Keyring::generate().to_text());
            Ok(())
        }
        SecretsCommand::Rotate {
            data_dir,
            database_url,
            secret_key_file,
        } => {
            let (url, file) = match (data_dir, database_url, secret_key_file) {
                (Some(dir), _, _) => (
                    crate::up::state_database_url(&dir)?,
                    crate::up::key_file(&dir),
                ),
                (None, Some(url), Some(file)) => (url, file),
                _ => bail!("name --data-dir, or --secret-key-file with PGPLANE_DATABASE_URL"),
            };
            rotate(&url, &file).await
        }
    }
}

async fn rotate(url: &str, file: &Path) -> anyhow::Result<()> {
    let old = Keyring::load(file)?;
    let new = Keyring::generate();
    // The new key first, the old ones kept until every value is re-sealed:
    // a rotation interrupted at any point leaves a file that opens all.
    let both = Keyring::parse(&format!("{}{}", new.to_text(), old.to_text()))?;
    both.save(file)?;
    let pool = reconciler::connect(url).await?;
    let resealed = queue::sealed::rotate(&pool, &both).await?;
    new.save(file)?;
    eprintln!(
        "re-sealed {resealed} with key {}; {} now holds only that key",
        new.current().id(),
        file.display()
    );
    Ok(())
}
