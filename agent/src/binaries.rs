//! Finding the PostgreSQL server binaries on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// The directory holding `initdb` and `postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresBinaries {
    pub bindir: PathBuf,
}

impl PostgresBinaries {
    /// `pg_config --bindir` first, then the Debian layout
    /// (`/usr/lib/postgresql/<major>/bin`, newest major first).
    pub fn discover() -> Result<PostgresBinaries> {
        let mut tried = Vec::new();
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if has_server(&dir) {
                    return Ok(PostgresBinaries { bindir: dir });
                }
                tried.push(dir);
            }
        }
        let root = Path::new("/usr/lib/postgresql");
        let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        majors.sort_by_key(|m| std::cmp::Reverse(m.0));
        for (_, dir) in majors {
            if has_server(&dir) {
                return Ok(PostgresBinaries { bindir: dir });
            }
            tried.push(dir);
        }
        if tried.is_empty() {
            tried.push(root.join("<major>/bin"));
        }
        Err(Error::BinariesNotFound { tried })
    }

    pub fn postgres(&self) -> PathBuf {
        self.bindir.join("postgres")
    }

    /// Where the server's loadable libraries are (`$libdir`): `pg_config
    /// --pkglibdir` next to the binaries, else the Debian layout beside
    /// `bindir` (`/usr/lib/postgresql/15/lib`).
    pub fn pkglibdir(&self) -> PathBuf {
        self.pg_config_dir("--pkglibdir")
            .unwrap_or_else(|| self.bindir.with_file_name("lib"))
    }

    /// Where the server's shared files are (`pg_config --sharedir`), else
    /// the Debian layout (`/usr/share/postgresql/15`).
    pub fn sharedir(&self) -> Result<PathBuf> {
        match self.pg_config_dir("--sharedir") {
            Some(d) => Ok(d),
            None => Ok(PathBuf::from(format!(
                "/usr/share/postgresql/{}",
                self.version()?
            ))),
        }
    }

    /// A directory `pg_config` next to the binaries names, when it exists.
    fn pg_config_dir(&self, option: &str) -> Option<PathBuf> {
        std::process::Command::new(self.bindir.join("pg_config"))
            .arg(option)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|d| d.is_dir())
    }

    pub fn initdb(&self) -> PathBuf {
        self.bindir.join("initdb")
    }

    /// The major version of the server binaries, e.g. `"15"`.
    pub fn version(&self) -> Result<String> {
        let binary = self.postgres();
        let err = |message: String| Error::Version {
            binary: binary.clone(),
            message,
        };
        let out = Command::new(&binary)
            .arg("--version")
            .output()
            .map_err(|e| err(e.to_string()))?;
        if !out.status.success() {
            return Err(err(format!("exited with {}", out.status)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        parse_major(&text).ok_or_else(|| err(format!("unexpected output {:?}", text.trim())))
    }
}

fn has_server(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file()
}

/// `postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)` → `15`.
fn parse_major(version_output: &str) -> Option<String> {
    let version = version_output
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    (!major.is_empty()).then_some(major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)\n").as_deref(),
            Some("15")
        );
        assert_eq!(
            parse_major("postgres (PostgreSQL) 17beta1").as_deref(),
            Some("17")
        );
        assert_eq!(parse_major("nonsense"), None);
    }
}
