//! A tenant attacks `pgplane up` with what an instance hands out: the
//! default credentials cannot run programs, read the server's files or
//! reach the control plane's database; with superuser access opted in, the
//! shell runs, as an OS user of its own that reaches neither the state
//! Postgres nor another instance's files.

use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(120);

/// `psql URI -c SQL`: its stderr when it fails, `None` when it succeeds.
fn refused(uri: &str, sql: &str) -> Option<String> {
    let o = std::process::Command::new("psql")
        .args([uri, "-Atc", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap();
    (!o.status.success()).then(|| String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Runs `script` through `COPY … FROM PROGRAM` and returns what it printed.
fn shell(uri: &str, script: &str) -> String {
    let program = format!("sh -c '{} 2>&1; true'", script.replace('\'', "'\\''"));
    let sql = format!(
        "CREATE TEMP TABLE out (line text); COPY out FROM PROGRAM '{}'; \
         SELECT string_agg(coalesce(line, ''), E'\\n') FROM out",
        program.replace('\'', "''")
    );
    let o = std::process::Command::new("psql")
        .args([uri, "-qAtc", &sql])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn a_tenant_reaches_nothing_of_the_control_plane_or_other_instances() {
    let up = Embedded::start();
    let env = up.env();
    let data_dir = &up.data_dir;
    ok(&["instance", "create", "victim", "--wait"], &env);
    let victim = ok(&["instance", "credentials", "victim"], &env)
        .trim()
        .to_owned();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("state.json")).unwrap()).unwrap();
    let state_port = state["port"].as_u64().unwrap();
    let victim_password = password_of(&victim);

    // The default role: an owner of its database, nothing more.
    psql(&victim, "create table t (line text)");
    for attack in [
        "copy t from program 'id'",
        "copy (select 1) to program 'id'",
        "select pg_read_file('/etc/passwd')",
        "copy t from '/etc/passwd'",
        "select lo_import('/etc/passwd')",
        "create language evil handler plpgsql_call_handler",
        "create extension file_fdw",
        "alter system set work_mem = '1MB'",
        "grant pg_execute_server_program to postgres",
    ] {
        let err = refused(&victim, attack).unwrap_or_else(|| panic!("{attack} was allowed"));
        assert!(
            err.contains("permission denied")
                || err.contains("must be superuser")
                || err.contains("must have admin option"),
            "{attack}: {err}"
        );
    }
    // The state Postgres over TCP: neither the instance's password nor
    // pgplane's role gets in.
    for (user, password) in [
        ("postgres", victim_password.as_str()),
        ("pgplane", ""),
        ("pgplane", victim_password.as_str()),
    ] {
        let uri = format!("postgres://{user}:{password}@127.0.0.1:{state_port}/postgres");
        let err = refused(&uri, "select 1").expect("the state Postgres must refuse");
        assert!(
            err.contains("password authentication failed") || err.contains("rejects connection"),
            "{user}: {err}"
        );
    }

    // Superuser opted in: the shell runs, as the instance's own OS user.
    ok(
        &[
            "instance",
            "create",
            "attacker",
            "--superuser-access",
            "--wait",
        ],
        &env,
    );
    let attacker = ok(&["instance", "credentials", "attacker"], &env)
        .trim()
        .to_owned();
    let whoami = shell(&attacker, "id -un");
    assert!(whoami.starts_with("pgplane-i-"), "{whoami}");
    let instances = data_dir.join("instances");
    let attacker_key = whoami.trim_start_matches("pgplane-").to_owned();
    let victim_dir = std::fs::read_dir(&instances)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            p.is_dir() && name.starts_with("i-") && !name.contains('.') && name != attacker_key
        })
        .expect("the victim's data directory");
    let d = data_dir.display();
    for (what, script) in [
        ("the state database's files", format!("ls {d}/state")),
        ("the state database's socket", format!("ls {d}/state.sock")),
        (
            "the state database's password",
            format!("cat {d}/state.json"),
        ),
        ("the admin token", format!("cat {d}/pgplane.env")),
        ("the instances directory", format!("ls {d}/instances")),
        (
            "another instance's data",
            format!("cat {}/PG_VERSION", victim_dir.display()),
        ),
        (
            "another instance's socket",
            format!("ls {}.sock", victim_dir.display()),
        ),
    ] {
        let out = shell(&attacker, &script);
        assert!(
            out.contains("Permission denied"),
            "{what}: {script} printed {out:?}"
        );
    }
    let out = shell(
        &attacker,
        &format!("psql -h 127.0.0.1 -p {state_port} -U postgres -w -d postgres -c 'select 1'"),
    );
    assert!(
        out.contains("password") || out.contains("not found"),
        "the state Postgres over TCP from the shell: {out:?}"
    );
    let out = shell(
        &attacker,
        &format!("psql -h 127.0.0.1 -p {state_port} -U pgplane -w -d postgres -c 'select 1'"),
    );
    assert!(
        out.contains("rejects connection") || out.contains("password") || out.contains("not found"),
        "pgplane's role over TCP from the shell: {out:?}"
    );

    // Both instances still work, and the data plane reports the role.
    assert_eq!(psql(&victim, "select 1"), "1");
    let got = json(&["instance", "get", "attacker"], &env);
    assert_eq!(got["spec"]["superuserAccess"], true, "{got}");
    eventually("the observed superuser flag", WAIT, || {
        let got = json(&["instance", "get", "attacker"], &env);
        (got["observed"]["superuserAccess"] == true).then_some(())
    });
}
