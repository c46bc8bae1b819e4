//! A pre-initialised data directory that new instances are copied from, so
//! creating an instance costs a file copy instead of an initdb.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::binaries::PostgresBinaries;
use crate::error::{blocking, Error, Result};
use crate::run_as::RunAs;

/// Written last into a finished template; its content is the template format,
/// so templates written by an older pgplane are rebuilt.
pub(crate) const TEMPLATE_MARKER: &str = ".pgplane-template-complete";
const TEMPLATE_FORMAT: &str = "pgplane template format 2\n";

/// pgplane's own settings file, included from `postgresql.conf`.
pub(crate) const PGPLANE_CONF: &str = "pgplane.conf";

/// The bootstrap superuser: pgplane's own role, used by the agent only.
pub const ADMIN_ROLE: &str = "pgplane";

/// The role clients log in as: it owns the `postgres` database and is a
/// superuser only when the spec opts in (`superuserAccess`).
pub const USER_ROLE: &str = "postgres";

/// The agent administers the instance over the unix socket as
/// [`ADMIN_ROLE`], authenticated by the kernel (`peer`): only the OS users
/// `pg_ident.conf` maps (the agent's own) may, and the socket's directory
/// (mode 0700) admits only the server's OS user and root. Nothing is trusted.
/// Clients connect over TCP with a SCRAM password; [`ADMIN_ROLE`] never does.
pub(crate) const PG_HBA: &str = "\
# Managed by pgplane.
# The agent's admin path: the unix socket, peer-authenticated (pg_ident.conf).
local   all   pgplane                   peer map=pgplane
# Standbys of the same instance stream over the socket the same way.
local   replication   pgplane           peer map=pgplane
# pgplane's own role never logs in over the network.
host    all   pgplane   all             reject
# Clients: TCP with a SCRAM-SHA-256 password.
host    all   all       127.0.0.1/32    scram-sha-256
host    all   all       ::1/128         scram-sha-256
";

/// The line of [`PG_HBA`] that lets standbys stream.
pub(crate) const LOCAL_REPLICATION: &str =
    "local   replication   pgplane           peer map=pgplane";

/// Run once in single-user mode on the new template: the client role owns
/// the database and may read statistics and cancel its own sessions'
/// queries, nothing more. `CREATEROLE` is withheld on purpose: on
/// PostgreSQL 15 it lets a role grant itself `pg_execute_server_program`.
const BOOTSTRAP_SQL: &str = "\
CREATE ROLE postgres LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS
ALTER DATABASE postgres OWNER TO postgres
GRANT pg_monitor, pg_signal_backend TO postgres
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub dir: PathBuf,
}

impl Template {
    /// Creates (once) a pre-initialised data directory at `dir`. Reuses a
    /// complete one; otherwise runs initdb into a temporary sibling and renames
    /// it into place, so concurrent callers (even in other processes) never
    /// see a half-built template.
    pub async fn ensure(dir: &Path, bins: &PostgresBinaries, run_as: &RunAs) -> Result<Template> {
        let dir = std::path::absolute(dir).map_err(Error::io("resolving", dir))?;
        if is_complete(&dir) {
            return Ok(Template { dir });
        }
        // One build at a time in this process; other processes race safely
        // through the atomic rename.
        static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _guard = BUILDING.lock().await;
        if is_complete(&dir) {
            return Ok(Template { dir });
        }
        let (bins, run_as, target) = (bins.clone(), run_as.clone(), dir.clone());
        blocking("initdb", move || build(&target, &bins, &run_as)).await?;
        Ok(Template { dir })
    }
}

fn is_complete(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file()
        && std::fs::read_to_string(dir.join(TEMPLATE_MARKER)).is_ok_and(|m| m == TEMPLATE_FORMAT)
}

fn build(dir: &Path, bins: &PostgresBinaries, run_as: &RunAs) -> Result<()> {
    let span = tracing::info_span!("template", dir = %dir.display());
    let _enter = span.enter();
    if dir.exists() {
        tracing::info!("removing an incomplete or outdated template");
        std::fs::remove_dir_all(dir).map_err(Error::io("removing the stale template", dir))?;
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
    remove_abandoned_builds(dir);
    let tmp = sibling(
        dir,
        &format!("tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()),
    );
    run_as.check_traversable(&tmp, dir)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(Error::io("creating", &tmp))?;
    let result = initdb(&tmp, bins, run_as)
        .and_then(|()| bootstrap(&tmp, bins, run_as))
        .and_then(|()| finish(&tmp));
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => {
            tracing::info!("template ready");
            Ok(())
        }
        // Someone else finished first.
        Err(_) if is_complete(dir) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(Error::Io {
            op: "renaming the new template into place at",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Removes `<dir>.tmp-<pid>-*` left by builds whose process is gone.
fn remove_abandoned_builds(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        let gone = pid.is_some_and(|p| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None)
                == Err(nix::errno::Errno::ESRCH)
        });
        if gone {
            tracing::info!(path = %entry.path().display(), "removing an abandoned template build");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn initdb(tmp: &Path, bins: &PostgresBinaries, run_as: &RunAs) -> Result<()> {
    run_as.chown(tmp)?;
    let initdb = bins.initdb();
    let out = run_as
        .command(&initdb)
        .arg("-D")
        .arg(tmp)
        .args([
            "-U",
            ADMIN_ROLE,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--data-checksums",
            "--no-sync",
        ])
        .output()
        .map_err(Error::io("running", &initdb))?;
    if !out.status.success() {
        return Err(Error::Initdb {
            dir: tmp.to_path_buf(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// Creates the client role in single-user mode (no server, no socket).
fn bootstrap(tmp: &Path, bins: &PostgresBinaries, run_as: &RunAs) -> Result<()> {
    use std::process::Stdio;
    let postgres = bins.postgres();
    let mut child = run_as
        .command(&postgres)
        .arg("--single")
        .arg("-D")
        .arg(tmp)
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("running", &postgres))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(BOOTSTRAP_SQL.as_bytes())
            .map_err(Error::io("writing to single-user", &postgres))?;
    }
    let out = child
        .wait_with_output()
        .map_err(Error::io("running", &postgres))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Single-user mode reports a failed statement as ERROR and carries on.
    if !out.status.success() || output.contains("ERROR:") {
        return Err(Error::Initdb {
            dir: tmp.to_path_buf(),
            status: format!("bootstrap in single-user mode: {}", out.status),
            output,
        });
    }
    Ok(())
}

/// pgplane's pg_hba.conf, the include of pgplane.conf, then the marker.
fn finish(tmp: &Path) -> Result<()> {
    let hba = tmp.join("pg_hba.conf");
    std::fs::write(&hba, PG_HBA).map_err(Error::io("writing", &hba))?;
    let conf = tmp.join("postgresql.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .map_err(Error::io("opening", &conf))?;
    write!(
        f,
        "\n# pgplane: settings pgplane owns (port, sockets, logging). User parameters\n\
         # are set with ALTER SYSTEM and live in postgresql.auto.conf.\n\
         include_if_exists = '{PGPLANE_CONF}'\n"
    )
    .map_err(Error::io("appending to", &conf))?;
    let marker = tmp.join(TEMPLATE_MARKER);
    std::fs::write(&marker, TEMPLATE_FORMAT).map_err(Error::io("writing", &marker))?;
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("setting permissions of", &marker))
}

/// `/a/b` + `tmp` → `/a/b.tmp`.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}
