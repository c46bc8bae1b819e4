//! Databases and roles declared inside an instance, through the built
//! binary and its API: a declared role logs in with its generated password
//! (`instance credentials --role`), owns its database with the extensions
//! inside it; a role made by hand is left alone and is not drift; a
//! declared role dropped by hand is drift and `heal` brings it back;
//! `ensure: absent` drops; bad owners and escalating memberships are 422s;
//! the password is nowhere but `credentials`.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(120);

/// One API call with the embedded control plane's token: (status, body).
fn api(env: &[(&str, &str)], method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let var = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1;
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", var("PGPLANE_TOKEN")))
        .args(["-H", "Content-Type: application/json"]);
    if let Some(body) = body {
        cmd.args(["--data-binary", &body.to_string()]);
    }
    let out = cmd
        .arg(format!("{}/api/v1{path}", var("PGPLANE_ENDPOINT")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn update(env: &[(&str, &str)], name: &str, spec: &Value) -> (u16, Value) {
    api(
        env,
        "PUT",
        &format!("/instances/{name}"),
        Some(&json!({ "spec": spec })),
    )
}

/// Waits until the instance is Up at the generation the data plane applied.
fn settled(env: &[(&str, &str)], name: &str) -> Value {
    eventually("the instance to settle", WAIT, || {
        let got = json(&["instance", "get", name], env);
        (got["state"] == "Up" && got["observedGeneration"] == got["generation"]).then_some(got)
    })
}

fn declared(reader: Value) -> Value {
    json!({
        "roles": [{"name": "app"}, reader],
        "databases": [{
            "name": "shop",
            "owner": "app",
            "extensions": [{"name": "hstore"}, {"name": "citext"}, {"name": "pg_trgm"}],
            "schemas": ["sales"]
        }]
    })
}

#[test]
fn declared_roles_and_databases_through_the_binary() {
    let up = Embedded::start();
    let env = up.env();

    // Flags declare the role and the database; the API adds the rest.
    ok(
        &[
            "instance",
            "create",
            "shop",
            "--role",
            "app",
            "--database",
            "shop:app",
            "--wait",
        ],
        &env,
    );
    let reader =
        json!({"name": "reader", "memberOf": ["app", "pg_read_all_stats"], "connectionLimit": 5});
    let (status, body) = update(&env, "shop", &declared(reader.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "Configuring", "reload only: {body}");
    settled(&env, "shop");

    let app_uri = ok(&["instance", "credentials", "shop", "--role", "app"], &env)
        .trim()
        .to_owned();
    assert!(app_uri.starts_with("postgres://app:"), "{app_uri}");
    assert!(app_uri.ends_with("/shop"), "{app_uri}");
    let app_password = password_of(&app_uri);
    assert_eq!(
        psql(
            &app_uri,
            "select current_user || ' ' || pg_get_userbyid(datdba) || ' ' || \
             (select string_agg(extname, ',' order by extname) from pg_extension where extname <> 'plpgsql') || ' ' || \
             (select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'sales') \
             from pg_database where datname = current_database()"
        ),
        "app app citext,hstore,pg_trgm app"
    );
    psql(&app_uri, "create table sales.orders (tags hstore)");
    let env_form = ok(
        &[
            "instance",
            "credentials",
            "shop",
            "--role",
            "reader",
            "--format",
            "env",
        ],
        &env,
    );
    assert!(env_form.contains("PGUSER='reader'"), "{env_form}");
    assert!(env_form.contains("PGDATABASE='postgres'"), "{env_form}");
    let pgpass = ok(
        &[
            "instance",
            "credentials",
            "shop",
            "--role",
            "app",
            "--format",
            "pgpass",
        ],
        &env,
    );
    assert!(
        pgpass
            .trim()
            .ends_with(&format!(":shop:app:{app_password}")),
        "{pgpass}"
    );
    let reader_uri = ok(
        &["instance", "credentials", "shop", "--role", "reader"],
        &env,
    )
    .trim()
    .to_owned();
    let reader_password = password_of(&reader_uri);
    assert_eq!(
        psql(&reader_uri, "select pg_has_role('app', 'member')"),
        "t"
    );
    let o = run(
        &["instance", "credentials", "shop", "--role", "nobody"],
        &env,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("declares no role \"nobody\""),
        "{}",
        stderr(&o)
    );

    // A role made by hand is left alone and is not drift; a declared one
    // dropped by hand is, and heal recreates it with the same password.
    admin_sql(&up.data_dir, "shop", &env, "create role handmade login");
    admin_sql(&up.data_dir, "shop", &env, "drop role reader");
    let report = eventually("the dropped role as drift", WAIT, || {
        let report = ok(&["drift"], &env);
        report.contains("roles.reader").then_some(report)
    });
    assert!(!report.contains("handmade"), "{report}");
    ok(&["instance", "heal", "shop", "--wait"], &env);
    assert_eq!(psql(&reader_uri, "select current_user"), "reader");
    assert_eq!(
        admin_sql(
            &up.data_dir,
            "shop",
            &env,
            "select count(*) from pg_roles where rolname = 'handmade'"
        ),
        "1"
    );
    eventually("no drift after heal", WAIT, || {
        ok(&["drift"], &env)
            .contains("0 of 1 instances drifted")
            .then_some(())
    });

    // Bad input: an owner that is not declared, memberships that would
    // reach the server's files or pgplane's own role.
    let mut bad = declared(reader.clone());
    bad["databases"][0]["owner"] = json!("nobody");
    let (status, body) = update(&env, "shop", &bad);
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string().contains("spec.databases[0].owner"),
        "{body}"
    );
    for target in [
        "pg_execute_server_program",
        "pg_write_server_files",
        "pgplane",
    ] {
        let attack = declared(json!({"name": "reader", "memberOf": [target]}));
        let (status, body) = update(&env, "shop", &attack);
        assert_eq!(status, 422, "{target}: {body}");
        assert!(
            body.to_string().contains("spec.roles[1].memberOf[0]"),
            "{body}"
        );
    }
    let o = run(
        &["instance", "create", "other", "--database", "d:nobody"],
        &env,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("spec.databases[0].owner: owner \"nobody\" is not a declared role"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        admin_sql(&up.data_dir, "shop", &env, "select count(*) from pg_auth_members m join pg_roles r on r.oid = m.roleid where r.rolname like 'pg\\_%server%'"),
        "0"
    );

    // ensure: absent drops the role.
    let (status, body) = update(
        &env,
        "shop",
        &declared(json!({"name": "reader", "ensure": "absent"})),
    );
    assert_eq!(status, 200, "{body}");
    settled(&env, "shop");
    assert_eq!(
        admin_sql(
            &up.data_dir,
            "shop",
            &env,
            "select count(*) from pg_roles where rolname = 'reader'"
        ),
        "0"
    );
    assert!(psql_fails(&reader_uri));

    // The passwords are nowhere but in `credentials`: not in the history,
    // the state database (queues and their archives included: sealed
    // only), the logs, or any file but the runtime's own 0600 state file.
    let history = ok(&["instance", "history", "shop"], &env);
    let dump = Command::new("pg_dump")
        .args(["--data-only", &up.state_url()])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("pgmq"), "the queues are in the dump");
    assert!(dump.contains("role_secrets"));
    let get = ok(&["instance", "get", "shop", "-o", "json"], &env);
    for password in [&app_password, &reader_password] {
        assert!(!history.contains(password.as_str()));
        assert!(
            !dump.contains(password.as_str()),
            "a password in the state database"
        );
        assert!(!get.contains(password.as_str()));
        let grep = Command::new("grep")
            .args(["-rlF", "--exclude=i-*.json", password])
            .arg(&up.data_dir)
            .arg(&up.log)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&grep.stdout),
            "",
            "files holding a role's password"
        );
    }
}
