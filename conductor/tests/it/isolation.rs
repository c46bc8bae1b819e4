//! Process isolation on the local runtime, tried as a tenant with superuser
//! access would: a shell run by one instance's server reaches neither
//! another instance's files nor the runtime's, and pgplane's own role is not
//! reachable over the socket. As root every instance has an OS user of its
//! own; otherwise superuser access is refused.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use conductor::{LocalRuntime, LocalSettings, Runtime};
use domain::{EventKind, InstanceSpec, ReportKind};
use uuid::Uuid;

use crate::support::*;

async fn runtime(root: &std::path::Path) -> LocalRuntime {
    let mut settings = LocalSettings::new(root, "postgres");
    settings.template = Some(shared_template());
    settings.restart_backoff = Duration::from_millis(20);
    LocalRuntime::open(settings).await.unwrap()
}

fn key(id: Uuid) -> String {
    format!("i-{}", &id.simple().to_string()[..12])
}

async fn client(applied: &conductor::Applied) -> tokio_postgres::Client {
    try_client(applied).await.expect("connect")
}

async fn try_client(applied: &conductor::Applied) -> Option<tokio_postgres::Client> {
    try_connect(applied, applied.password.as_ref()?).await
}

/// Runs `script` through `COPY … FROM PROGRAM` (as the server's OS user)
/// and returns what it printed, stderr included.
async fn shell(client: &tokio_postgres::Client, script: &str) -> String {
    let quoted = format!("sh -c '{} 2>&1; true'", script.replace('\'', "'\\''"));
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS out; CREATE TEMP TABLE out (line text); \
             COPY out FROM PROGRAM '{}'",
            quoted.replace('\'', "''")
        ))
        .await
        .unwrap();
    client
        .query("SELECT coalesce(line, '') FROM out", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_superuser_shell_reaches_nothing_outside_its_own_instance() {
    let dir = scratch_dir();
    let root = dir.path();
    let rt = runtime(root).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let superuser = InstanceSpec {
        superuser_access: true,
        ..InstanceSpec::default()
    };
    if !nix::unistd::getuid().is_root() {
        let err = rt
            .apply(&event(a, 1, EventKind::Create, superuser))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("superuser access needs"), "{err}");
        return;
    }
    let ia = rt
        .apply(&event(a, 1, EventKind::Create, superuser))
        .await
        .unwrap();
    rt.apply(&event(b, 1, EventKind::Create, InstanceSpec::default()))
        .await
        .unwrap();
    let (ka, kb) = (key(a), key(b));

    // Own OS users, data directories 0700.
    let (ma, mb) = (
        std::fs::metadata(root.join(&ka)).unwrap(),
        std::fs::metadata(root.join(&kb)).unwrap(),
    );
    assert_ne!(ma.uid(), mb.uid());
    assert!(ma.uid() != 0 && mb.uid() != 0);
    assert_eq!(ma.mode() & 0o777, 0o700);
    assert_eq!(mb.mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::metadata(root).unwrap().mode() & 0o777,
        0o711,
        "the runtime's root is not listable"
    );

    let ca = client(&ia).await;
    assert_eq!(shell(&ca, "id -un").await, format!("pgplane-{ka}"));
    let bin = agent::PostgresBinaries::discover().unwrap().bindir;
    let test_db = std::env::var("PGPLANE_TEST_PG_DIR").unwrap_or("/tmp/pgplane-test-pg".into());
    for (what, script) in [
        (
            "B's data",
            format!("cat {}/{kb}/PG_VERSION", root.display()),
        ),
        ("B's socket", format!("ls {}/{kb}.sock", root.display())),
        (
            "B's state file",
            format!("cat {}/{kb}.json", root.display()),
        ),
        ("the runtime's root", format!("ls {}", root.display())),
        (
            "the template",
            format!("ls {}/PG_VERSION", shared_template().display()),
        ),
        ("the control plane's database", format!("ls {test_db}/data")),
    ] {
        let out = shell(&ca, &script).await;
        assert!(
            out.contains("Permission denied"),
            "{what} must be out of reach: {script} printed {out:?}"
        );
    }
    // Its own socket admits only pgplane's OS user as pgplane's role.
    let out = shell(
        &ca,
        &format!(
            "{}/psql -h {}/{ka}.sock -p {} -U pgplane -d postgres -c 'select 1'",
            bin.display(),
            root.display(),
            ia.connection.as_ref().unwrap().port
        ),
    )
    .await;
    assert!(
        out.contains("Peer authentication failed"),
        "pgplane's role over the socket: {out:?}"
    );

    // A program left running by the superuser does not outlive its instance.
    let daemon: u32 = shell(&ca, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
        .await
        .trim()
        .parse()
        .unwrap();
    let daemon_runs = || {
        std::fs::read(format!("/proc/{daemon}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("600"))
    };
    assert!(daemon_runs());

    // Deleting an instance removes its OS user, and everything it ran.
    drop(ca);
    for id in [a, b] {
        let done = rt
            .apply(&event(id, 2, EventKind::Delete, InstanceSpec::default()))
            .await
            .unwrap();
        assert_eq!(done.report, ReportKind::Deleted);
        let user = format!("pgplane-{}", key(id));
        assert!(
            nix::unistd::User::from_name(&user).unwrap().is_none(),
            "{user} removed"
        );
    }
    assert!(
        !daemon_runs(),
        "what the deleted instance's user ran is gone"
    );
}

#[tokio::test]
async fn a_killed_server_is_restarted_and_one_that_keeps_dying_is_given_up_on() {
    let dir = scratch_dir();
    let rt = runtime(dir.path()).await;
    let id = Uuid::new_v4();
    let created = rt
        .apply(&event(id, 1, EventKind::Create, InstanceSpec::default()))
        .await
        .unwrap();
    let data_dir = dir.path().join(key(id));
    let postmaster = || -> i32 {
        std::fs::read_to_string(data_dir.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let kill9 = |pid: i32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap()
    };
    assert!(
        rt.supervise().await.is_empty(),
        "nothing to do while it runs"
    );

    let first = postmaster();
    kill9(first);
    let restarted = eventually("the restart", Duration::from_secs(60), || async {
        rt.supervise()
            .await
            .into_iter()
            .find(|s| s.instance_id == id)
    })
    .await;
    let conductor::Supervision::Restarted { note, observed } = &restarted.outcome else {
        panic!("{restarted:?}");
    };
    assert!(note.starts_with("crashed: killed by signal 9"), "{note}");
    assert!(note.contains("restarted in"), "{note}");
    assert!(observed.running);
    assert_eq!(restarted.generation, 1);
    assert_ne!(postmaster(), first);
    client(&created)
        .await
        .simple_query("select 1")
        .await
        .unwrap();

    // Now it cannot start any more: supervision retries with backoff, then
    // gives up with Postgres's own words and leaves it stopped.
    let pid = postmaster();
    std::fs::remove_file(data_dir.join("PG_VERSION")).unwrap();
    kill9(pid);
    let gave_up = eventually("giving up", Duration::from_secs(60), || async {
        rt.supervise()
            .await
            .into_iter()
            .find(|s| matches!(s.outcome, conductor::Supervision::GaveUp { .. }))
    })
    .await;
    let conductor::Supervision::GaveUp { reason } = &gave_up.outcome else {
        unreachable!()
    };
    assert!(reason.contains("keeps stopping"), "{reason}");
    assert!(reason.contains("FATAL:"), "{reason}");
    assert!(rt.supervise().await.is_empty(), "no more attempts");
    let observed = rt.observe_all().await;
    assert!(
        !observed
            .iter()
            .find(|o| o.instance_id == id)
            .unwrap()
            .observed
            .running
    );
    rt.apply(&event(id, 2, EventKind::Delete, InstanceSpec::default()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_server_is_held_to_its_declared_memory() {
    let dir = scratch_dir();
    let rt = runtime(dir.path()).await;
    let id = Uuid::new_v4();
    let mut spec = InstanceSpec::default();
    spec.resources.memory = "256Mi".into();
    let Some(controller) = agent::MemoryController::detect() else {
        // Without a usable memory controller the runtime says so at start
        // and still creates instances.
        rt.apply(&event(id, 1, EventKind::Create, spec.clone()))
            .await
            .unwrap();
        rt.apply(&event(id, 2, EventKind::Delete, spec))
            .await
            .unwrap();
        return;
    };
    let created = rt
        .apply(&event(id, 1, EventKind::Create, spec.clone()))
        .await
        .unwrap();
    let limit = controller.limit(&key(id), 256 << 20);
    let limit_file = ["memory.limit_in_bytes", "memory.max"]
        .into_iter()
        .map(|f| limit.dir().join(f))
        .find(|f| f.is_file())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&limit_file).unwrap().trim(),
        (256u64 << 20).to_string()
    );
    let postmaster: i32 = std::fs::read_to_string(dir.path().join(key(id)).join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let pids = limit.pids();
    assert!(pids.contains(&postmaster), "{postmaster} not in {pids:?}");
    assert!(pids.len() > 1, "its children are inside too: {pids:?}");

    // A query that needs more than the limit is killed inside the cgroup;
    // the server survives it.
    let c = client(&created).await;
    let err = c
        .simple_query("select length(repeat('x', 600 * 1024 * 1024))")
        .await
        .unwrap_err();
    assert!(
        err.is_closed() || err.to_string().contains("out of memory") || err.as_db_error().is_some(),
        "{err:?}"
    );
    eventually(
        "the server accepts connections again",
        Duration::from_secs(60),
        || async {
            let c = try_client(&created).await?;
            c.simple_query("select 1").await.ok().map(|_| ())
        },
    )
    .await;

    // A new limit applies to the running server.
    spec.resources.memory = "512Mi".into();
    rt.apply(&event(id, 2, EventKind::Update, spec.clone()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&limit_file).unwrap().trim(),
        (512u64 << 20).to_string()
    );
    rt.apply(&event(id, 3, EventKind::Delete, spec))
        .await
        .unwrap();
    assert!(!limit.dir().exists(), "the cgroup goes with the instance");
}
