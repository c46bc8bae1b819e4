//! Stopping a cluster without leaving anything behind: processes,
//! containers, mounts, cgroups, the bridge, kubelet's links in
//! /var/log/containers, the directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::Cluster;

/// Every mounted cgroup hierarchy (v1 controllers and the unified one).
pub(crate) fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(target))
        })
        .collect()
}

/// The cgroup directories under `root`, deepest first.
fn cgroups_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(entry.path());
            }
        }
        out.push(dir);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn pids_in(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The containerd shims serving this cluster's containerd (they run
/// outside the pods' cgroups): their command line names its socket.
fn shims(socket: &Path) -> Vec<i32> {
    let socket = socket.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first()?.ends_with("containerd-shim-runc-v2");
            (is_shim && args.iter().any(|a| a == &socket)).then_some(pid)
        })
        .collect()
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

pub(crate) fn teardown(cluster: &mut Cluster) {
    let cgroup = format!("pgk{}", cluster.n);
    // Nothing may start containers again: kubelet and the controllers first.
    for (name, child) in cluster.procs.iter_mut().rev() {
        if *name != "containerd" && *name != "apiserver" {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    // Every process of every pod: they are all in the kubelet's cgroup root.
    let deadline = Instant::now() + Duration::from_secs(30);
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(&cgroup);
        if !root.exists() {
            continue;
        }
        loop {
            let pids: Vec<i32> = cgroups_under(&root)
                .iter()
                .flat_map(|c| pids_in(c))
                .collect();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for pid in shims(&cluster.containerd_socket()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    for (_, child) in cluster.procs.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    cluster.procs.clear();
    // Container root filesystems, network namespaces, kubelet's volumes and
    // its bind mount of its root dir onto itself.
    for point in mounts_under(&cluster.dir) {
        if let Err(e) = umount2(&point, MntFlags::MNT_DETACH) {
            eprintln!("kubetest: unmounting {}: {e}", point.display());
        }
    }
    for hierarchy in cgroup_hierarchies() {
        for dir in cgroups_under(&hierarchy.join(&cgroup)) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    let bridge = format!("pgk{}", cluster.n);
    if Path::new("/sys/class/net").join(&bridge).exists() {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &bridge])
            .status();
    }
    // kubelet links every container's log here, whatever its root dir.
    for entry in std::fs::read_dir("/var/log/containers")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if target.starts_with(&cluster.dir) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if std::env::var_os("PGPLANE_KEEP_CLUSTER_DIR").is_some() {
        eprintln!("kubetest: keeping {}", cluster.dir.display());
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(&cluster.dir) {
        eprintln!("kubetest: removing {}: {e}", cluster.dir.display());
    }
}
