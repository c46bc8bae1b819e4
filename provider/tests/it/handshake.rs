//! go-plugin's handshake, seen from outside the process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

const COOKIE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

#[test]
fn run_by_hand_it_explains_and_fails() {
    let o = Command::new(provider_bin())
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        o.stdout.is_empty(),
        "stdout must stay empty: {}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stderr).contains("is a Terraform plugin"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn refuses_clients_without_protocol_6() {
    let o = Command::new(provider_bin())
        .env("TF_PLUGIN_MAGIC_COOKIE", COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "4,5")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        text(&o.stderr).contains("speaks only version 6"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn prints_one_handshake_line_and_survives_sigint() {
    let dir = scratch_dir();
    let mut child = Command::new(provider_bin())
        .env("TF_PLUGIN_MAGIC_COOKIE", COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .env("PLUGIN_UNIX_SOCKET_DIR", dir.path())
        .env_remove("PLUGIN_CLIENT_CERT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let parts: Vec<&str> = line.trim_end().split('|').collect();
    assert_eq!(parts.len(), 6, "{line}");
    assert_eq!(&parts[..3], ["1", "6", "unix"]);
    assert!(parts[3].starts_with(dir.path().to_str().unwrap()), "{line}");
    assert!(std::path::Path::new(parts[3]).exists());
    assert_eq!(parts[4], "grpc");
    assert_eq!(parts[5], "", "no TLS without PLUGIN_CLIENT_CERT");
    // Ctrl-C reaches the provider's process group: it keeps serving.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGINT stopped the provider"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
