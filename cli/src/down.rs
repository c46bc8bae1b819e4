//! `pgplane down`: stops a `pgplane up` running in the background on a
//! data directory, the way Ctrl-C would, and waits until it has stopped
//! (its lock on `DATA_DIR/up.lock` is released).

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which `pgplane up` to stop, and how long to wait.
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// The data directory of the `pgplane up` to stop (the same default
    /// as `pgplane up`'s).
    #[arg(long, env = "PGPLANE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Give up waiting after this long, e.g. `30s`, `5m` (then exit 3).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = crate::instance::wait::parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: DownArgs) -> i32 {
    let dir = args.data_dir.unwrap_or_else(crate::up::default_data_dir);
    let path = dir.join("up.lock");
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "no `pgplane up` runs on {}; nothing to do (no {})",
                dir.display(),
                path.display()
            );
            return 0;
        }
        Err(e) => {
            eprintln!("error: opening {}: {e}", path.display());
            return 1;
        }
    };
    if file.try_lock().is_ok() {
        eprintln!("no `pgplane up` runs on {}; nothing to do", dir.display());
        return 0;
    }
    let mut text = String::new();
    let pid = file
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| text.trim().parse::<i32>().ok())
        .filter(|&p| p > 0);
    let Some(pid) = pid else {
        eprintln!(
            "error: a `pgplane up` holds {} but did not write its pid there (an older version?); stop it with Ctrl-C or SIGTERM",
            path.display()
        );
        return 1;
    };
    let target = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM) {
        eprintln!("error: cannot signal `pgplane up` (pid {pid}): {e}");
        return 1;
    }
    eprintln!(
        "stopping `pgplane up` (pid {pid}) on {}: its instances stop with a fast shutdown",
        dir.display()
    );
    let started = Instant::now();
    loop {
        if file.try_lock().is_ok() {
            eprintln!("stopped after {:.1}s", started.elapsed().as_secs_f64());
            return 0;
        }
        if started.elapsed() > args.timeout {
            eprintln!(
                "error: `pgplane up` (pid {pid}) is still stopping after {:?}; it may yet finish",
                args.timeout
            );
            return 3;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
