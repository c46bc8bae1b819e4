//! The OS user Postgres processes run as. Postgres refuses to run as root, so
//! when pgplane runs as root every Postgres process drops to an unprivileged
//! user, and the directories pgplane creates are handed to that user.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::{getgid, getuid, User};

use crate::error::{Error, Result};

/// SIGKILLs every process whose real uid is `uid`, and waits (bounded)
/// until none is left.
fn kill_processes_of(uid: u32) {
    use nix::sys::signal::{kill, Signal};
    let owned = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
                        == Some(uid)
                })
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pids = owned();
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        tracing::warn!(
            uid,
            ?pids,
            "killing processes left by a deleted instance's user"
        );
        for pid in pids {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Serialises useradd/userdel in this process (they lock /etc/passwd).
static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Who Postgres runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
    /// Whether child processes switch uid/gid (this process is root and the
    /// target user is not).
    switch: bool,
}

impl RunAs {
    /// The user this process runs as (for when it is not root).
    pub fn current() -> RunAs {
        let uid = getuid();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        RunAs {
            name,
            uid: uid.as_raw(),
            gid: getgid().as_raw(),
            switch: false,
        }
    }

    /// A named user, created as a system user (no home, no login shell) when
    /// missing and this process is root.
    pub fn user(name: &str) -> Result<RunAs> {
        let err = |message: String| Error::RunAsUser {
            user: name.to_owned(),
            message,
        };
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            return Err(err("not a valid user name ([a-z_][a-z0-9_-]*)".into()));
        }
        let lookup = || User::from_name(name).map_err(|e| err(format!("looking it up: {e}")));
        let user = match lookup()? {
            Some(u) => u,
            None => {
                // useradd locks /etc/passwd; one at a time in this process.
                let _accounts = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(u) = lookup()? {
                    return Ok(RunAs::of(u));
                }
                if !getuid().is_root() {
                    return Err(err("it does not exist and only root can create it".into()));
                }
                tracing::info!(user = name, "creating system user to run Postgres");
                let out = Command::new("useradd")
                    .args([
                        "--system",
                        "--user-group",
                        "--no-create-home",
                        "--home-dir",
                        "/nonexistent",
                        "--shell",
                        "/usr/sbin/nologin",
                        name,
                    ])
                    .output()
                    .map_err(|e| err(format!("running useradd: {e}")))?;
                if !out.status.success() {
                    return Err(err(format!(
                        "useradd failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                lookup()?
                    .ok_or_else(|| err("useradd succeeded but the user is not found".into()))?
            }
        };
        Ok(RunAs::of(user))
    }

    fn of(user: User) -> RunAs {
        RunAs {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            switch: getuid().is_root() && !user.uid.is_root(),
        }
    }

    /// Removes a system user [`RunAs::user`] created, with its private group.
    /// A no-op when it does not exist or this process is not root.
    pub fn remove_user(name: &str) -> Result<()> {
        if !getuid().is_root() {
            return Ok(());
        }
        let _accounts = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let exists = User::from_name(name).ok().flatten().is_some();
        if !exists {
            return Ok(());
        }
        tracing::info!(
            user = name,
            "removing the system user of a deleted instance"
        );
        // What a superuser of the instance may have left running as it
        // (userdel refuses a user with processes, and they must not outlive it).
        if let Some(uid) = User::from_name(name).ok().flatten().map(|u| u.uid.as_raw()) {
            kill_processes_of(uid);
        }
        let out = Command::new("userdel")
            .arg(name)
            .output()
            .map_err(|e| Error::RunAsUser {
                user: name.to_owned(),
                message: format!("running userdel: {e}"),
            })?;
        if !out.status.success() {
            return Err(Error::RunAsUser {
                user: name.to_owned(),
                message: format!(
                    "userdel failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(())
    }

    /// Whether this process can run Postgres as users other than itself
    /// (it is root), so that servers can be isolated from each other.
    pub fn can_isolate() -> bool {
        getuid().is_root()
    }

    /// As root: the named user (created if missing). Otherwise: the current user.
    pub fn for_this_process(name: &str) -> Result<RunAs> {
        if getuid().is_root() {
            RunAs::user(name)
        } else {
            Ok(RunAs::current())
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// A command that runs as this user, from `/` (so it never depends on
    /// this process's working directory being readable).
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir("/");
        if self.switch {
            // std drops supplementary groups when root switches uid.
            cmd.uid(self.uid).gid(self.gid);
        }
        cmd
    }

    /// Hands `path` to this user (a no-op unless this process is root).
    pub(crate) fn chown(&self, path: &Path) -> Result<()> {
        if !self.switch {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(Error::io("changing the owner of", path))
    }

    /// Checks that this user can traverse every existing ancestor of `path`,
    /// so Postgres fails with a clear error instead of a cryptic one.
    pub(crate) fn check_traversable(&self, path: &Path, data_dir: &Path) -> Result<()> {
        if !self.switch {
            return Ok(());
        }
        for dir in path.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            let mode = meta.mode();
            let bit = if meta.uid() == self.uid {
                0o100
            } else if meta.gid() == self.gid {
                0o010
            } else {
                0o001
            };
            if mode & bit == 0 {
                return Err(Error::NotTraversable {
                    path: dir.to_path_buf(),
                    user: self.name.clone(),
                    data_dir: data_dir.to_path_buf(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_user_never_switches() {
        let me = RunAs::current();
        assert_eq!(me.uid(), getuid().as_raw());
        assert!(!me.switch);
    }

    #[test]
    fn root_runs_postgres_as_someone_else() {
        let r = RunAs::for_this_process("postgres").unwrap();
        if getuid().is_root() {
            assert_ne!(r.uid(), 0);
            assert_eq!(r.name(), "postgres");
        } else {
            assert_eq!(r, RunAs::current());
        }
    }
}
