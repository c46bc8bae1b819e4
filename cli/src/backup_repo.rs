//! Where a data plane's backups go: `--backup-repo DIR`, or an
//! S3-compatible bucket (`--backup-s3-*`, credentials from the environment).

use std::path::PathBuf;

use anyhow::{bail, Context};

/// The credentials' environment variables (never flags: a command line is
/// visible to every user of the machine).
pub const S3_KEY_ENV: &str = "PGPLANE_BACKUP_S3_KEY";
pub const S3_KEY_SECRET_ENV: &str = "PGPLANE_BACKUP_S3_KEY_SECRET";

#[derive(clap::Args, Debug, Clone)]
pub struct BackupRepoArgs {
    /// The backup repository directory: every instance archives its WAL
    /// here continuously and keeps its full backups here (pgBackRest). Put
    /// it on another disk than the instances to survive losing that disk.
    #[arg(
        long,
        value_name = "PATH",
        env = "PGPLANE_BACKUP_REPO",
        conflicts_with = "backup_s3_endpoint"
    )]
    pub backup_repo: Option<PathBuf>,
    /// Keep backups in an S3-compatible bucket instead, e.g.
    /// `https://s3.eu-west-1.amazonaws.com` or `https://127.0.0.1:9000`. The
    /// credentials come from PGPLANE_BACKUP_S3_KEY and
    /// PGPLANE_BACKUP_S3_KEY_SECRET. Superuser access is refused on such a
    /// data plane (a superuser could read the bucket's credentials).
    #[arg(
        long,
        value_name = "URL",
        env = "PGPLANE_BACKUP_S3_ENDPOINT",
        requires = "backup_s3_bucket"
    )]
    pub backup_s3_endpoint: Option<String>,
    /// The bucket (it must exist).
    #[arg(long, value_name = "NAME", env = "PGPLANE_BACKUP_S3_BUCKET")]
    pub backup_s3_bucket: Option<String>,
    #[arg(
        long,
        value_name = "REGION",
        env = "PGPLANE_BACKUP_S3_REGION",
        default_value = "us-east-1"
    )]
    pub backup_s3_region: String,
    /// The prefix inside the bucket.
    #[arg(long, value_name = "PATH", default_value = "/pgplane")]
    pub backup_s3_path: String,
    /// Verify the endpoint's TLS certificate (turn off only for a local
    /// test server with a self-signed certificate).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub backup_s3_verify_tls: bool,
}

impl BackupRepoArgs {
    /// The repository these flags name; a directory `default` when none.
    pub fn repository(
        &self,
        default: Option<PathBuf>,
    ) -> anyhow::Result<Option<agent::Repository>> {
        let Some(endpoint) = &self.backup_s3_endpoint else {
            return Ok(self
                .backup_repo
                .clone()
                .or(default)
                .map(agent::Repository::Directory));
        };
        let rest = endpoint.strip_prefix("https://").with_context(|| {
            format!("--backup-s3-endpoint {endpoint:?}: use https://HOST[:PORT] (pgBackRest speaks TLS only)")
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("--backup-s3-endpoint {endpoint:?}: use https://HOST[:PORT], without a path (the bucket is --backup-s3-bucket)");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse::<u16>().with_context(|| {
                    format!("--backup-s3-endpoint {endpoint:?}: {p:?} is not a port")
                })?,
            ),
            None => (authority.to_owned(), 443),
        };
        let secret = |name: &str| -> anyhow::Result<agent::Secret> {
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(agent::Secret::new(v)),
                _ => bail!("--backup-s3-endpoint needs the bucket's credentials in {S3_KEY_ENV} and {S3_KEY_SECRET_ENV}; {name} is not set"),
            }
        };
        Ok(Some(agent::Repository::S3(agent::S3Repository {
            host,
            port,
            bucket: self
                .backup_s3_bucket
                .clone()
                .context("--backup-s3-bucket is required")?,
            region: self.backup_s3_region.clone(),
            path: self.backup_s3_path.clone(),
            verify_tls: self.backup_s3_verify_tls,
            key: secret(S3_KEY_ENV)?,
            key_secret: secret(S3_KEY_SECRET_ENV)?,
        })))
    }
}
