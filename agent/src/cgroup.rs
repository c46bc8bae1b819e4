//! Memory limits through the kernel's cgroup memory controller: each server
//! runs in a cgroup of its own whose limit is the instance's
//! `resources.memory`, so one instance cannot take the machine's memory
//! whatever the kernel's overcommit policy.
//!
//! The postmaster enters its cgroup before it starts (a shell writes its own
//! pid into the cgroup, then execs Postgres), so every process it forks is
//! inside from the first byte. Only the cgroup's `cgroup.procs` is handed to
//! the server's OS user; the limit stays root's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::run_as::RunAs;

/// Where the memory controller is mounted, and which files set the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryController {
    /// The parent of pgplane's cgroups, e.g. `/sys/fs/cgroup/memory/pgplane`.
    root: PathBuf,
    version: Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// One server's cgroup and its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    controller: MemoryController,
    name: String,
    bytes: u64,
}

impl MemoryController {
    /// The memory controller this process can create cgroups in, if any
    /// (root, with cgroup v1's `memory` hierarchy or cgroup v2 with the
    /// `memory` controller delegated).
    pub fn detect() -> Option<MemoryController> {
        if !RunAs::can_isolate() {
            return None;
        }
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let v2 = Path::new("/sys/fs/cgroup");
        let mut candidates = Vec::new();
        if v1.join("memory.limit_in_bytes").is_file() {
            candidates.push((v1, Version::V1));
        }
        if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        {
            candidates.push((v2, Version::V2));
        }
        for (base, version) in candidates {
            let controller = MemoryController {
                root: base.join("pgplane"),
                version,
            };
            match controller.prepare_root() {
                Ok(()) => return Some(controller),
                Err(e) => tracing::warn!(error = %e, "the memory controller is not usable"),
            }
        }
        None
    }

    fn prepare_root(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(Error::io("creating cgroup", &self.root))?;
        if self.version == Version::V2 {
            let control = self.root.join("cgroup.subtree_control");
            std::fs::write(&control, "+memory")
                .map_err(Error::io("enabling memory in", &control))?;
        }
        Ok(())
    }

    /// The limit of the cgroup called `name` (one per server).
    pub fn limit(&self, name: &str, bytes: u64) -> MemoryLimit {
        MemoryLimit {
            controller: self.clone(),
            name: name.to_owned(),
            bytes,
        }
    }
}

impl MemoryLimit {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> PathBuf {
        self.controller.root.join(&self.name)
    }

    fn limit_file(&self) -> PathBuf {
        self.dir().join(match self.controller.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        })
    }

    /// Creates the cgroup if needed and sets its limit (also on a running
    /// server: lowering it below what the server uses makes the kernel
    /// reclaim, then kill inside the cgroup only).
    pub fn apply(&self, run_as: &RunAs) -> Result<()> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(Error::io("creating cgroup", &dir))?;
        let limit = self.limit_file();
        let write = |path: &Path| {
            std::fs::write(path, self.bytes.to_string())
                .map_err(Error::io("setting the memory limit in", path))
        };
        // cgroup v1 with swap accounting: memory+swap is the limit too (so it
        // cannot be dodged by swapping), and must never be below the memory
        // limit, so the order of the two writes depends on the direction.
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if self.controller.version == Version::V1 && memsw.is_file() {
            let current: u64 = std::fs::read_to_string(&limit)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(u64::MAX);
            if self.bytes > current {
                write(&memsw)?;
                write(&limit)?;
            } else {
                write(&limit)?;
                write(&memsw)?;
            }
        } else {
            write(&limit)?;
        }
        run_as.chown(&dir.join("cgroup.procs"))
    }

    /// A command that runs `program` as `run_as` inside the cgroup.
    pub(crate) fn command(&self, run_as: &RunAs, program: &Path) -> Result<Command> {
        self.apply(run_as)?;
        let mut cmd = run_as.command(Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(self.dir().join("cgroup.procs"))
            .arg(program);
        Ok(cmd)
    }

    /// Kills whatever is still in the cgroup (the server is stopped: what
    /// is left is a straggler, or a program a superuser started), waits
    /// until the kernel has reaped it, and removes the cgroup. Idempotent.
    pub fn remove(&self) -> Result<()> {
        use nix::sys::signal::{kill, Signal};
        let dir = self.dir();
        if !dir.exists() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            for pid in &pids {
                let _ = kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, ?pids, "cgroup still busy");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(Error::Io {
                        op: "removing cgroup",
                        path: dir,
                        source: e,
                    })
                }
            }
        }
    }

    /// The pids in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir().join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}
