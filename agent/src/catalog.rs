//! The extension catalog of this machine's PostgreSQL: read from the control
//! and script files in `SHAREDIR/extension`, the libraries in `$libdir`, the
//! Debian packages the control files belong to, and
//! [`domain::extension::REVIEWED`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use domain::extension::{catalog_entry, parse_control};
use domain::AvailableExtension;

use crate::error::{Error, Result};
use crate::PostgresBinaries;

/// Every extension the server can create, sorted by name. Blocking (reads
/// files, runs `dpkg-query`): call it from `spawn_blocking`.
pub fn read_catalog(bins: &PostgresBinaries) -> Result<Vec<AvailableExtension>> {
    let dir = bins.sharedir()?.join("extension");
    let libdir = bins.pkglibdir();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(Error::io("listing", &dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let controls: Vec<&str> = files
        .iter()
        .filter_map(|f| f.strip_suffix(".control"))
        .collect();
    let paths: Vec<PathBuf> = controls
        .iter()
        .map(|n| dir.join(format!("{n}.control")))
        .collect();
    // A control file may be a link (Debian's alternatives for PostGIS):
    // the package owns what it points to.
    let owned: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let packages = debian_packages(&owned);
    let mut out = Vec::new();
    for ((name, path), owned) in controls.iter().zip(&paths).zip(&owned) {
        let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
        let control = parse_control(&text);
        let present = |lib: &str| library_present(&libdir, lib);
        let entry = catalog_entry(
            name,
            &control,
            files.iter().map(String::as_str),
            packages.get(owned).cloned(),
            present,
        );
        match entry {
            Some(e) => out.push(e),
            None => tracing::warn!(
                extension = name,
                libdir = %libdir.display(),
                "not offering the extension: the library it must preload is missing"
            ),
        }
    }
    Ok(out)
}

/// Whether `$libdir` has the library (`name` or `name.so`).
pub fn library_present(libdir: &Path, name: &str) -> bool {
    let file = name.strip_prefix("$libdir/").unwrap_or(name);
    !file.contains('/')
        && (libdir.join(file).is_file() || libdir.join(format!("{file}.so")).is_file())
}

/// The Debian package of each path (`dpkg-query -S`, one call for all);
/// empty where dpkg is absent (an image without a package database).
fn debian_packages(paths: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    if paths.is_empty() {
        return BTreeMap::new();
    }
    let Ok(out) = std::process::Command::new("dpkg-query")
        .arg("-S")
        .args(paths)
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return BTreeMap::new();
    };
    parse_dpkg_search(&String::from_utf8_lossy(&out.stdout))
}

/// Reads `dpkg-query -S` lines: `pkg[, pkg…]: /path` (the first package).
fn parse_dpkg_search(text: &str) -> BTreeMap<PathBuf, String> {
    text.lines()
        .filter_map(|line| {
            let (pkgs, path) = line.split_once(": ")?;
            let pkg = pkgs.split(',').next()?.trim();
            let pkg = pkg.split(':').next().unwrap_or(pkg);
            (!pkg.is_empty() && !pkgs.starts_with("diversion"))
                .then(|| (PathBuf::from(path.trim()), pkg.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_search_lines_name_the_first_package() {
        let got = parse_dpkg_search(
            "postgresql-15-cron: /usr/share/postgresql/15/extension/pg_cron.control\n\
             postgresql-15, postgresql-contrib:amd64: /usr/share/postgresql/15/extension/hstore.control\n",
        );
        assert_eq!(
            got[Path::new("/usr/share/postgresql/15/extension/pg_cron.control")],
            "postgresql-15-cron"
        );
        assert_eq!(
            got[Path::new("/usr/share/postgresql/15/extension/hstore.control")],
            "postgresql-15"
        );
    }
}
