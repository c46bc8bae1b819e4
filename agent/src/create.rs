//! Creating an instance from the template, and deleting it.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::error::{blocking, Error, Result};
use crate::run_as::RunAs;
use crate::secret::Secret;
use crate::sql::quote_literal;
use crate::template::{Template, TEMPLATE_MARKER, USER_ROLE};
use crate::Agent;

impl Agent {
    /// Creates the instance from `template` and leaves it running with the
    /// `postgres` role's password set. Idempotent: a complete instance is left
    /// alone; a half-created one is cleaned up and created again.
    pub async fn create(&self, template: &Template, password: &Secret) -> Result<()> {
        let layout = &self.layout;
        if layout.marker.is_file() {
            tracing::debug!(data_dir = %layout.data_dir.display(), "instance already exists");
            return Ok(());
        }
        let started = Instant::now();
        layout.check_socket_path()?;
        self.run_as
            .check_traversable(&layout.tmp_dir, &layout.data_dir)?;
        let (agent, template_dir) = (self.clone(), template.dir.clone());
        blocking("preparing the data directory", move || {
            agent.prepare_data_dir(&template_dir)
        })
        .await?;
        tracing::debug!(elapsed = ?started.elapsed(), "data directory copied");
        let client = self.start_connected().await?;
        tracing::debug!(elapsed = ?started.elapsed(), "server started");
        self.apply_password(&client, password).await?;
        std::fs::write(&layout.marker, "created by pgplane\n")
            .map_err(Error::io("writing", &layout.marker))?;
        tracing::info!(data_dir = %layout.data_dir.display(), elapsed = ?started.elapsed(), "instance created");
        Ok(())
    }

    /// Sets the client role's password on an existing instance
    /// (starting it if needed): how a rotated credentials Secret reaches the
    /// server without a restart.
    pub async fn set_password(&self, password: &Secret) -> Result<()> {
        let client = self.start_connected().await?;
        self.apply_password(&client, password).await
    }

    async fn apply_password(
        &self,
        client: &tokio_postgres::Client,
        password: &Secret,
    ) -> Result<()> {
        // The verifier, not the password, goes over the wire and into the catalog.
        let sql = format!(
            "ALTER ROLE {USER_ROLE} PASSWORD {}",
            quote_literal(&password.scram_verifier())
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.sql_error("setting the postgres password", e))
    }

    /// Stops the server (fast) and removes the data directory, its socket
    /// directory and any half-created copy. Idempotent.
    pub async fn delete(&self) -> Result<()> {
        self.stop().await?;
        if let Some(limit) = self.memory_limit.clone() {
            blocking("removing the cgroup", move || limit.remove()).await?;
        }
        let layout = self.layout.clone();
        blocking("deleting the instance", move || {
            for dir in [
                &layout.data_dir,
                &layout.tmp_dir,
                &layout.socket_dir,
                &layout.backup_dir,
            ] {
                remove_dir_if_exists(dir)?;
            }
            Ok(())
        })
        .await
    }

    /// Copies the template to `<data_dir>.tmp`, writes pgplane's settings and
    /// renames it into place.
    fn prepare_data_dir(&self, template_dir: &Path) -> Result<()> {
        let layout = &self.layout;
        if layout.data_dir.exists() {
            // Renamed into place but never finished (no marker): start over.
            tracing::warn!(data_dir = %layout.data_dir.display(), "removing a half-created instance");
            self.stop_blocking()?;
            remove_dir_if_exists(&layout.data_dir)?;
        }
        remove_dir_if_exists(&layout.tmp_dir)?;
        if let Some(parent) = layout.data_dir.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
        }
        copy_tree(template_dir, &layout.tmp_dir, &self.run_as)?;
        let template_marker = layout.tmp_dir.join(TEMPLATE_MARKER);
        std::fs::remove_file(&template_marker).map_err(Error::io("removing", &template_marker))?;
        if !is_loopback(&self.config.listen_address) {
            self.allow_remote_clients(&layout.tmp_dir)?;
        }
        self.write_pgplane_conf(&layout.tmp_dir)?;
        std::fs::rename(&layout.tmp_dir, &layout.data_dir).map_err(Error::io(
            "renaming the new data directory into place at",
            &layout.data_dir,
        ))
    }

    /// Listening beyond loopback: clients from anywhere, still with SCRAM.
    pub(crate) fn allow_remote_clients(&self, dir: &Path) -> Result<()> {
        use std::io::Write;
        let hba = dir.join("pg_hba.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&hba)
            .map_err(Error::io("opening", &hba))?;
        f.write_all(
            b"host    all   all       0.0.0.0/0       scram-sha-256\n\
              host    all   all       ::/0            scram-sha-256\n",
        )
        .map_err(Error::io("appending to", &hba))
    }
}

pub(crate) fn is_loopback(address: &str) -> bool {
    address
        .split(',')
        .map(str::trim)
        .all(|a| matches!(a, "localhost" | "127.0.0.1" | "::1"))
}

pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            op: "removing",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Copies a directory tree keeping permission bits, handing every entry to
/// `run_as`. Creating a file dominates the cost and is serialised per
/// directory by the kernel, so directories are copied in parallel (one
/// directory per thread at a time, biggest first); `std::fs::copy` uses
/// `copy_file_range`, so data stays in the kernel.
fn copy_tree(src: &Path, dst: &Path, run_as: &RunAs) -> Result<()> {
    let mut jobs = Vec::new();
    create_dirs(src, dst, run_as, &mut jobs)?;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.files.len()));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        for name in &job.files {
                            let to = job.dst.join(name);
                            std::fs::copy(job.src.join(name), &to)
                                .map_err(Error::io("copying to", &to))?;
                            run_as.chown(&to)?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().map_err(|_| Error::Task {
                op: "copying the template",
                message: "a copy thread panicked".to_owned(),
            })?
        })
    })
}

/// The files of one directory, to copy.
struct CopyJob {
    src: PathBuf,
    dst: PathBuf,
    files: Vec<OsString>,
}

/// Creates `dst` and its subdirectories like `src` (and copies symlinks),
/// collecting the regular files to copy.
fn create_dirs(src: &Path, dst: &Path, run_as: &RunAs, jobs: &mut Vec<CopyJob>) -> Result<()> {
    let meta = std::fs::metadata(src).map_err(Error::io("reading", src))?;
    std::fs::create_dir(dst).map_err(Error::io("creating", dst))?;
    std::fs::set_permissions(
        dst,
        std::fs::Permissions::from_mode(meta.permissions().mode()),
    )
    .map_err(Error::io("setting permissions of", dst))?;
    run_as.chown(dst)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(src).map_err(Error::io("listing", src))? {
        let entry = entry.map_err(Error::io("listing", src))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().map_err(Error::io("reading", &from))?;
        if kind.is_dir() {
            create_dirs(&from, &to, run_as, jobs)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(Error::io("reading", &from))?;
            std::os::unix::fs::symlink(target, &to).map_err(Error::io("creating", &to))?;
            run_as.chown(&to)?;
        } else {
            files.push(entry.file_name());
        }
    }
    jobs.push(CopyJob {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        files,
    });
    Ok(())
}
