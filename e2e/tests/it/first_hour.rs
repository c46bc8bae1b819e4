//! What a new user runs into first: a busy `--listen` port, a redirected
//! log, an endpoint typed without `http://` or pointing at another server,
//! refused requests, and the everyday commands: status, completion,
//! credentials in several forms, psql.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// `up` refuses before starting anything; well within this.
const REFUSED: Duration = Duration::from_secs(10);
/// `up` gives up after starting the state Postgres (initdb included).
const GIVES_UP: Duration = Duration::from_secs(120);

/// No Postgres runs on `DATA_DIR/state`: no pid file, or its pid is dead.
fn assert_no_state_postgres(data_dir: &Path) {
    let pid_file = data_dir.join("state/postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return;
    };
    let pid: i32 = text.lines().next().unwrap().trim().parse().unwrap();
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "the state Postgres (pid {pid}, {}) is still running",
        pid_file.display()
    );
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn up_on_a_busy_port_fails_at_once_and_starts_nothing() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("demo");
    let log = scratch.path().join("up.log");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();

    let mut up = spawn(
        "pgplane up",
        &[
            "up",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[],
        &log,
    );
    assert_eq!(up.wait_exit(REFUSED), Some(1));

    let text = std::fs::read_to_string(&log).unwrap();
    let errors = error_lines(&text);
    assert_eq!(errors.len(), 1, "{text}");
    let port: u16 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(
        errors[0].starts_with(&format!(
            "error: cannot listen on {listen}: the address is already in use"
        )) && errors[0].ends_with(&format!("--listen 127.0.0.1:{}", port + 1)),
        "{text}"
    );
    assert!(!text.contains("starting the state Postgres"), "{text}");
    assert_no_state_postgres(&data_dir);
}

#[test]
fn a_failure_after_the_state_postgres_started_stops_it() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("demo");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("pgplane.key"), "not a key\n").unwrap();
    let log = scratch.path().join("up.log");

    let listen = format!("127.0.0.1:{}", free_port());
    let mut up = spawn(
        "pgplane up",
        &[
            "up",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[],
        &log,
    );
    assert_eq!(up.wait_exit(GIVES_UP), Some(1));

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("starting the state Postgres"), "{text}");
    assert_eq!(error_lines(&text).len(), 1, "{text}");
    assert!(data_dir.join("state/PG_VERSION").exists(), "{text}");
    assert_no_state_postgres(&data_dir);
}

/// A server that answers every request with an HTML 404 page.
fn html_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "<!DOCTYPE html>\n<html><head><title>Not Found</title></head>\
                        <body><h1>Not Found</h1><p>nothing here</p></body></html>\n";
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn an_endpoint_that_is_not_pgplane_is_named_without_its_html() {
    let addr = html_server();
    let o = run(
        &["instance", "list"],
        &[("PGPLANE_ENDPOINT", &addr), ("PGPLANE_TOKEN", "pgp_x")],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "error: the server at http://{addr} answered HTTP 404 with text/html: \
             is this a pgplane control plane?\n"
        )),
        "{err}"
    );
    assert!(err.contains("PGPLANE_ENDPOINT"), "{err}");
    assert!(!err.contains('<'), "the body is not shown: {err}");
}

#[test]
fn the_cli_on_a_fresh_up() {
    let up = Embedded::start();

    // The log is a file: no colour codes in it.
    let log = std::fs::read_to_string(&up.log).unwrap();
    assert!(log.contains("control plane listening"), "{log}");
    assert!(!log.contains("\x1b["), "colour codes in the log: {log:?}");

    // `host:port` means `http://host:port`.
    let env = up.env();
    let endpoint = env
        .iter()
        .find(|(k, _)| *k == "PGPLANE_ENDPOINT")
        .unwrap()
        .1;
    let token = env.iter().find(|(k, _)| *k == "PGPLANE_TOKEN").unwrap().1;
    let bare = endpoint.strip_prefix("http://").unwrap();
    let o = run(
        &["instance", "list"],
        &[("PGPLANE_ENDPOINT", bare), ("PGPLANE_TOKEN", token)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "no instances\n");

    // Each problem of a refused request reads once.
    let o = run(
        &[
            "instance",
            "create",
            "orders",
            "--config",
            "port=5433",
            "--config",
            "shared_buffer=128MB",
        ],
        &env,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().next(), Some("error: invalid request"), "{err}");
    for field in ["spec.config.port:", "spec.config.shared_buffer:"] {
        assert_eq!(err.matches(field).count(), 1, "{field} in {err}");
    }
    assert!(err.contains("did you mean \"shared_buffers\"?"), "{err}");

    let o = run(&["instance", "create", "Orders!"], &env);
    assert!(!o.status.success());
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let unique: std::collections::BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(lines.len(), unique.len(), "a line repeats: {err}");

    // Extensions are known once the conductor has registered the data plane.
    eventually("the conductor to register", Duration::from_secs(30), || {
        std::fs::read_to_string(&up.log)
            .unwrap()
            .contains("conductor consuming")
            .then_some(())
    });
    let o = run(
        &["instance", "create", "orders", "--extension", "hstor"],
        &env,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("extension \"hstor\" is not available on data plane \"local\" (did you mean \"hstore\"?); available: "),
        "{err}"
    );
    assert_eq!(err.matches("available: ").count(), 1, "{err}");
    assert_eq!(err.matches("hstore,").count(), 1, "{err}");
}

#[test]
fn status_completion_credentials_and_psql_from_the_cli() {
    let up = Embedded::start();
    let env = up.env();

    // Which control plane, as whom, and how it is.
    eventually("the conductor to register", Duration::from_secs(30), || {
        let o = run(&["status"], &env);
        (o.status.success() && stdout(&o).contains("data planes:   local (seen")).then_some(())
    });
    let status = ok(&["status"], &env);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        status.contains("organisation:  default (admin token)"),
        "{status}"
    );
    assert!(
        status.contains(&format!("client:        pgplane {version}")),
        "{status}"
    );
    assert!(
        status.contains(&format!("server:        pgplane {version}")),
        "{status}"
    );
    let json = json(&["status"], &env);
    assert_eq!(json["org"], "default");
    assert!(json["endpoint"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    let mut bad = env.clone();
    bad.retain(|(k, _)| *k != "PGPLANE_TOKEN");
    bad.push(("PGPLANE_TOKEN", "pgp_not-a-token"));
    let o = run(&["status"], &bad);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());

    // Completion scripts load in the shell they are for.
    let script = ok(&["completion", "bash"], &[]);
    assert!(
        script.contains("instance") && script.contains("credentials"),
        "{script}"
    );
    let path = up.path("pgplane.bash");
    std::fs::write(&path, &script).unwrap();
    let o = Command::new("bash")
        .args([
            "-c",
            &format!("source {}; complete -p pgplane", path.display()),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("pgplane"), "{}", stdout(&o));
    let o = run(&["completion", "tcsh"], &[]);
    assert_eq!(o.status.code(), Some(2), "clap refuses an unknown shell");
    assert!(
        stderr(&o).contains("bash"),
        "the choices are listed: {}",
        stderr(&o)
    );

    // Credentials in the forms tools read, and psql started with them.
    let o = run(&["instance", "create", "orders", "--wait"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let progress = stderr(&o);
    let reached = progress
        .lines()
        .find(|l| l.contains("→ Up (generation 1) after "))
        .unwrap_or_else(|| panic!("the transition to Up, with its time: {progress}"));
    assert!(reached.ends_with('s'), "{reached}");
    let exports = ok(
        &["instance", "credentials", "orders", "--format", "env"],
        &env,
    );
    assert!(exports.contains("export PGPASSWORD='"), "{exports}");
    let o = Command::new("sh")
        .args(["-c", &format!("{exports}psql -Atc 'select 40 + 2'")])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "42", "{}", stderr(&o));
    let line = ok(
        &["instance", "credentials", "orders", "--format", "pgpass"],
        &env,
    );
    let uri = ok(&["instance", "credentials", "orders"], &env);
    let password = password_of(uri.trim());
    assert!(line.trim_end().ends_with(&format!(":{password}")), "{line}");
    let pgpass = up.path("pgpass");
    std::fs::write(&pgpass, &line).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let fields: Vec<&str> = line.trim_end().splitn(5, ':').collect();
    let o = Command::new("psql")
        .args([
            "-h",
            fields[0],
            "-p",
            fields[1],
            "-d",
            fields[2],
            "-U",
            fields[3],
            "-w",
            "-Atc",
            "select 'via pgpass'",
        ])
        .env("PGPASSFILE", &pgpass)
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "via pgpass", "{}", stderr(&o));

    let o = run(
        &[
            "instance",
            "psql",
            "orders",
            "--",
            "-Atc",
            "select current_user",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "postgres");
    let o = run(
        &["instance", "psql", "orders", "--", "-c", "select nope"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "psql's own exit status");
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    let o = run(&["instance", "psql", "missing"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));

    // Exported as a manifest, the instance plans as itself: adopting it
    // changes nothing but its owner.
    ok(
        &[
            "instance",
            "update",
            "orders",
            "--config",
            "work_mem=16MB",
            "--extension",
            "hstore",
            "--wait",
        ],
        &env,
    );
    let manifest = ok(&["instance", "export", "orders"], &env);
    assert!(
        manifest.starts_with("apiVersion: \"pgplane.io/v1\"\nkind: \"PostgresInstance\"\n"),
        "{manifest}"
    );
    assert!(manifest.contains("work_mem: \"16MB\""), "{manifest}");
    assert!(!manifest.contains("restore"), "{manifest}");
    let dir = up.path("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("orders.yaml"), &manifest).unwrap();
    let o = run(&["plan", "-f", dir.to_str().unwrap(), "--adopt"], &env);
    let plan = stdout(&o);
    let row = plan
        .lines()
        .find(|l| l.contains("orders"))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        row.starts_with("update") && row.contains("adopted from api"),
        "{plan}"
    );
    assert!(
        !row.contains("config") && !row.contains("extensions"),
        "nothing else changes: {plan}"
    );

    // Asking again for what is declared is not an error; for scripts, a
    // delete may ignore an instance that is gone.
    ok(&["instance", "stop", "orders", "--wait"], &env);
    let o = run(&["instance", "stop", "orders", "--wait"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("orders: already stopped; nothing to do"),
        "{}",
        stderr(&o)
    );
    let o = run(&["instance", "restart", "orders"], &env);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a restart of a stopped instance is refused"
    );
    ok(&["instance", "start", "orders", "--wait"], &env);
    let o = run(&["instance", "start", "orders"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
    ok(&["instance", "delete", "orders", "--wait"], &env);
    let o = run(&["instance", "delete", "orders"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("deleted"), "{}", stderr(&o));
    for name in ["orders", "ghost"] {
        let o = run(&["instance", "delete", name, "--ignore-not-found"], &env);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    }
    let o = run(&["instance", "delete", "ghost"], &env);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn tokens_are_created_listed_and_revoked_through_the_api_and_name_the_history() {
    let up = Embedded::start();
    let env = up.env();

    // An admin token (the one `pgplane up` wrote) makes a named one.
    let ci = ok(
        &[
            "token",
            "create",
            "--org",
            "acme",
            "--name",
            "ci",
            "--expires-in",
            "30d",
            "--description",
            "deploys",
        ],
        &env,
    );
    let ci = ci.trim().to_owned();
    assert!(ci.starts_with("pgp_"), "{ci}");
    let mut as_ci: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "PGPLANE_TOKEN")
        .collect();
    as_ci.push(("PGPLANE_TOKEN", &ci));
    ok(&["instance", "create", "shop", "--wait"], &as_ci);
    let history = json(&["instance", "history", "shop"], &as_ci);
    assert_eq!(history["items"][0]["actor"], "token:ci", "{history}");

    // The list shows it, never a token itself.
    let list = ok(&["token", "list"], &env);
    let row = list
        .lines()
        .find(|l| l.starts_with("acme"))
        .expect("acme's token listed");
    assert!(
        row.contains(" ci ") && row.contains("in 29d") && row.contains("deploys"),
        "{row}"
    );
    assert!(!list.contains("pgp_"), "{list}");

    // A name is unique within its organisation; bad input names its field.
    let o = run(&["token", "create", "--org", "acme", "--name", "ci"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("already has a token named \"ci\""),
        "{}",
        stderr(&o)
    );
    let o = run(&["token", "create", "--org", "acme", "--name", "CI!"], &env);
    assert!(stderr(&o).contains("name"), "{}", stderr(&o));
    let o = run(
        &["token", "create", "--org", "acme", "--expires-in", "soon"],
        &env,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Not an admin: no listing, no creating, no revoking.
    for args in [
        vec!["token", "list"],
        vec!["token", "create", "--org", "acme"],
        vec!["token", "revoke", "ci", "--org", "acme"],
    ] {
        let o = run(&args, &as_ci);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("admin only"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Not the token of the request itself.
    let admin_id = json(&["token", "list"], &env)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["org"] == "default" && t["admin"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = run(&["token", "revoke", &admin_id], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the token of this request"),
        "{}",
        stderr(&o)
    );

    // Revoked, it is refused at once.
    let out = ok(&["token", "revoke", "ci", "--org", "acme"], &env);
    assert!(out.starts_with("revoked ci ("), "{out}");
    let o = run(&["instance", "list"], &as_ci);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).to_lowercase().contains("token"),
        "{}",
        stderr(&o)
    );
    let o = run(&["token", "revoke", "ci", "--org", "acme"], &env);
    assert!(
        stderr(&o).contains("token \"ci\" not found"),
        "{}",
        stderr(&o)
    );
}

/// `PUT /api/v1/instances/NAME` with curl, as a client that sends its own
/// headers (the Terraform provider acts as `terraform`).
fn put_instance(env: &[(&str, &str)], name: &str, headers: &[&str], body: &str) -> String {
    let var = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1;
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", "PUT", "-H", "content-type: application/json"])
        .arg("-H")
        .arg(format!("authorization: Bearer {}", var("PGPLANE_TOKEN")));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .args(["-d", body])
        .arg(format!(
            "{}/api/v1/instances/{name}",
            var("PGPLANE_ENDPOINT")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn list_columns_formats_watch_ownership_and_heal_from_the_cli() {
    let up = Embedded::start();
    let env = up.env();
    ok(&["instance", "create", "orders", "--wait"], &env);
    ok(&["instance", "create", "billing", "--wait"], &env);

    // One table for list, create and update: who owns each, where it is.
    let listed = ok(&["instance", "list"], &env);
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATE",
            "OWNER",
            "VERSION",
            "EXTENSIONS",
            "ENDPOINT",
            "AGE"
        ]
    );
    let port = json(&["instance", "get", "orders"], &env)["connection"]["port"].clone();
    assert!(
        listed.contains(&format!("127.0.0.1:{port}")) && listed.contains(" api "),
        "{listed}"
    );
    let created = ok(
        &["instance", "update", "orders", "--config", "work_mem=8MB"],
        &env,
    );
    let columns = |table: &str| -> Vec<String> {
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        columns(&created),
        header,
        "update prints the list's columns"
    );
    let wide = ok(&["instance", "list", "-o", "wide"], &env);
    assert!(
        wide.lines().next().unwrap().contains("DATA PLANE"),
        "{wide}"
    );
    assert_eq!(
        ok(&["instance", "list", "-o", "name"], &env),
        "billing\norders\n"
    );
    let yaml: serde_json::Value =
        serde_yaml::from_str(&ok(&["instance", "get", "orders", "-o", "yaml"], &env)).unwrap();
    assert_eq!(yaml["name"], "orders");
    assert_eq!(yaml["spec"]["config"]["work_mem"], "8MB");

    // A Terraform-owned instance: the CLI says who owns it and changes it
    // only when told to override.
    let handed = put_instance(
        &env,
        "billing",
        &["pgplane-override-owner: true"],
        r#"{"spec": {}, "owner": "terraform"}"#,
    );
    assert!(handed.contains(r#""owner":"terraform""#), "{handed}");
    assert_eq!(
        ok(
            &["instance", "list", "--owner", "terraform", "-o", "name"],
            &env
        ),
        "billing\n"
    );
    let o = run(
        &["instance", "update", "billing", "--config", "work_mem=8MB"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("managed by terraform")
            && err.contains("--override-owner")
            && !err.contains("changing")
            && !err.contains("run the command again"),
        "{err}"
    );
    for action in ["stop", "delete"] {
        let o = run(&["instance", action, "billing"], &env);
        assert_eq!(o.status.code(), Some(1), "{action}");
        assert!(
            stderr(&o).contains("managed by terraform"),
            "{}",
            stderr(&o)
        );
    }
    ok(
        &[
            "instance",
            "update",
            "billing",
            "--config",
            "work_mem=8MB",
            "--override-owner",
            "--wait",
        ],
        &env,
    );
    assert_eq!(
        json(&["instance", "get", "billing"], &env)["owner"],
        "terraform",
        "an override changes the spec, not the owner"
    );

    // Every change shows as a row while watching.
    let mut watch = spawn(
        "pgplane instance list -w",
        &["instance", "list", "-w"],
        &env,
        &up.path("watch.log"),
    );
    ok(&["instance", "restart", "orders"], &env);
    let seen = read_until(&mut watch, "Restarting", Duration::from_secs(60));
    assert!(seen.lines().next().unwrap().starts_with("NAME"), "{seen}");
    let row = seen.lines().last().unwrap();
    assert!(row.starts_with("orders") && row.contains(" api "), "{seen}");
    drop(watch);
    eventually(
        "orders Up after the restart",
        Duration::from_secs(60),
        || (json(&["instance", "get", "orders"], &env)["state"] == "Up").then_some(()),
    );

    // Drift on an API-owned instance heals from the CLI.
    admin_sql(
        &up.data_dir,
        "orders",
        &env,
        "alter system set work_mem = '48MB'",
    );
    admin_sql(&up.data_dir, "orders", &env, "select pg_reload_conf()");
    eventually("drift reported", Duration::from_secs(60), || {
        let report = json(&["drift"], &env);
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "orders" && i["status"] == "Drifted")
            .then_some(())
    });
    ok(&["instance", "heal", "orders", "--wait"], &env);
    eventually("in sync again", Duration::from_secs(60), || {
        let report = json(&["drift"], &env);
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "orders" && i["status"] == "InSync")
            .then_some(())
    });
    let uri = ok(&["instance", "credentials", "orders"], &env);
    assert_eq!(psql(uri.trim(), "show work_mem"), "8MB");
    let o = run(&["instance", "heal", "orders"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to heal"), "{}", stderr(&o));

    // The server's log, by the instance's name: an error a client caused
    // shows up there, sealed at rest, and only for its organisation.
    let o = run(
        &[
            "instance",
            "psql",
            "orders",
            "--",
            "-c",
            "select nope_column",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    let logs = eventually("the error in the log", Duration::from_secs(60), || {
        let text = ok(&["instance", "logs", "orders", "--tail", "1000"], &env);
        text.contains("column \"nope_column\" does not exist")
            .then_some(text)
    });
    assert!(logs.lines().count() <= 1000, "{logs}");
    let page = json(&["instance", "logs", "orders", "--tail", "2"], &env);
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert!(page["cursor"].as_i64().is_some(), "{page}");
    let o = run(&["instance", "logs", "orders", "--tail", "0"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("tail: must be between 1 and 10000"),
        "{}",
        stderr(&o)
    );
    let stored = Command::new("psql")
        .args([
            "-X",
            "-At",
            &up.state_url(),
            "-c",
            "select chunk from instance_logs",
        ])
        .output()
        .unwrap();
    let stored = String::from_utf8(stored.stdout).unwrap();
    assert!(
        !stored.is_empty() && !stored.contains("nope_column"),
        "sealed at rest"
    );
    assert!(
        stored.lines().all(|l| l.starts_with("sealed:v1:")),
        "{stored}"
    );
    let other = ok(
        &["token", "create", "--org", "globex"],
        &[("PGPLANE_DATABASE_URL", &up.state_url())],
    )
    .trim()
    .to_owned();
    let endpoint = env
        .iter()
        .find(|(k, _)| *k == "PGPLANE_ENDPOINT")
        .unwrap()
        .1;
    let o = run(
        &["instance", "logs", "orders"],
        &[("PGPLANE_ENDPOINT", endpoint), ("PGPLANE_TOKEN", &other)],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn down_stops_a_background_up_and_its_instances() {
    let up = Embedded::start();
    let env = up.env();
    ok(&["instance", "create", "orders", "--wait"], &env);
    let uri = ok(&["instance", "credentials", "orders"], &env);
    let data_dir = up.data_dir.to_str().unwrap();
    let o = run(&["down", "--data-dir", data_dir], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped after"), "{}", stderr(&o));
    assert!(psql_fails(uri.trim()), "the instance stopped with it");
    let log = std::fs::read_to_string(&up.log).unwrap();
    assert!(log.contains("stopping instances"), "{log}");
    let o = run(&["down", "--data-dir", data_dir], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
}
