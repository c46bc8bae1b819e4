//! `stopped`, `owner` and the connection attributes, for both Terraform
//! versions and OpenTofu: stop and start in place through the plan, a stop
//! outside Terraform planned back, `host`/`port`/`dbname`/`user`/`password`
//! connecting on their own, and the password never shown.

use std::process::Command;

use crate::support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];
const PLAN: &[&str] = &["plan", "-detailed-exitcode", "-input=false", "-no-color"];

fn config(stopped: Option<bool>) -> String {
    let stopped = stopped
        .map(|s| format!("  stopped = {s}\n"))
        .unwrap_or_default();
    format!(
        r#"terraform {{
  required_providers {{
    pgplane = {{
      source  = "registry.pgplane.io/pgplane/pgplane"
      version = "~> 0.1"
    }}
  }}
}}
provider "pgplane" {{}}

resource "pgplane_instance" "reports" {{
  name = "reports"
{stopped}}}

output "uri" {{
  value     = pgplane_instance.reports.connection_uri
  sensitive = true
}}

output "pg" {{
  value = {{
    host     = pgplane_instance.reports.host
    port     = pgplane_instance.reports.port
    dbname   = pgplane_instance.reports.dbname
    user     = pgplane_instance.reports.user
    password = pgplane_instance.reports.password
  }}
  sensitive = true
}}

output "owner" {{
  value = pgplane_instance.reports.owner
}}
"#
    )
}

/// What a plan's output says it will do, without the changes it noticed
/// outside Terraform (which Terraform 1.0 prints first).
fn actions(plan: &Run) -> &str {
    let out = plan.stdout.as_str();
    out.find("will perform the following actions")
        .map_or(out, |at| &out[at..])
}

/// The line of `out` that mentions attribute `name` (`+ name = …`, `~ name = …`).
fn attr_line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            let l = l
                .trim_start()
                .trim_start_matches(['+', '~', '-'])
                .trim_start();
            l.starts_with(name) && l[name.len()..].trim_start().starts_with('=')
        })
        .unwrap_or_else(|| panic!("no line for {name:?} in:\n{out}"))
}

/// Plans and asserts the plan is exactly `stopped` changing as `change`
/// says (`false -> true`), in place.
#[track_caller]
fn plan_stopped(ws: &Workspace, change: &str) -> Run {
    let plan = ws.expect(2, PLAN);
    assert!(plan.stdout.contains("update in-place"), "{}", plan.all());
    assert!(
        attr_line(actions(&plan), "stopped").ends_with(change),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout.contains("0 to add, 1 to change, 0 to destroy"),
        "{}",
        plan.all()
    );
    plan
}

fn state(pgplane: &Pgplane) -> String {
    instance_json(pgplane, "reports")["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn run_state(tf: Tf) {
    let scratch = scratch_dir();
    let pgplane = Pgplane::up(scratch.path());
    let ws = Workspace::new(tf, scratch.path(), pgplane.env());

    // The create plan shows `stopped` and the owner, the password only as sensitive.
    ws.write(&config(None));
    ws.ok(&["init", "-input=false", "-no-color"]);
    let plan = ws.expect(2, PLAN);
    assert!(
        attr_line(actions(&plan), "stopped").ends_with("= false"),
        "{}",
        plan.all()
    );
    assert!(
        attr_line(actions(&plan), "owner").ends_with(r#"= "terraform""#),
        "{}",
        plan.all()
    );
    assert!(
        attr_line(actions(&plan), "password").contains("(sensitive value)"),
        "{}",
        plan.all()
    );
    let applied = ws.ok(APPLY);
    assert!(applied.stdout.contains("1 added"), "{}", applied.all());
    ws.expect(0, PLAN);

    // The separate attributes connect without the URI.
    let pg: serde_json::Value =
        serde_json::from_str(&ws.ok(&["output", "-json", "pg"]).stdout).unwrap();
    let password = pg["password"].as_str().unwrap().to_owned();
    assert!(!password.is_empty(), "{pg}");
    let who = Command::new("psql")
        .args(["-Atc", "select current_user || ' ' || current_database()"])
        .env("PGHOST", pg["host"].as_str().unwrap())
        .env("PGPORT", pg["port"].as_f64().unwrap().to_string())
        .env("PGDATABASE", pg["dbname"].as_str().unwrap())
        .env("PGUSER", pg["user"].as_str().unwrap())
        .env("PGPASSWORD", &password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSFILE")
        .output()
        .unwrap();
    assert!(who.status.success(), "{}", text(&who.stderr));
    assert_eq!(
        text(&who.stdout).trim(),
        format!(
            "{} {}",
            pg["user"].as_str().unwrap(),
            pg["dbname"].as_str().unwrap()
        )
    );
    let uri = ws.ok(&["output", "-raw", "uri"]).stdout;
    assert!(uri.contains(&password), "the URI and the password disagree");
    assert_eq!(ws.ok(&["output", "-raw", "owner"]).stdout, "terraform");
    assert_eq!(instance_json(&pgplane, "reports")["owner"], "terraform");
    let shown = ws
        .ok(&["state", "show", "-no-color", "pgplane_instance.reports"])
        .stdout;
    assert!(
        attr_line(&shown, "password").contains("(sensitive value)"),
        "{shown}"
    );
    assert!(
        !shown.contains(&password),
        "state show printed the password"
    );

    // stopped = true: an in-place update that really stops Postgres.
    ws.write(&config(Some(true)));
    let plan = plan_stopped(&ws, "false -> true");
    assert!(
        !plan.all().contains(&password),
        "the plan printed the password"
    );
    let applied = ws.ok(APPLY);
    assert!(applied.stdout.contains("1 changed"), "{}", applied.all());
    assert!(!applied.all().contains(&password));
    assert_eq!(state(&pgplane), "Stopped");
    assert!(psql_fails(&uri), "a stopped instance accepts connections");
    ws.expect(0, PLAN);

    // stopped = false starts it again.
    ws.write(&config(Some(false)));
    plan_stopped(&ws, "true -> false");
    ws.ok(APPLY);
    assert_eq!(state(&pgplane), "Up");
    assert_eq!(psql(&uri, "select 1"), "1");
    ws.expect(0, PLAN);

    // Stopped outside Terraform: the next plan starts it again.
    ws.write(&config(None));
    ws.expect(0, PLAN);
    pgplane.cli(&["instance", "stop", "reports", "--wait", "--override-owner"]);
    assert!(psql_fails(&uri));
    plan_stopped(&ws, "true -> false");
    ws.ok(APPLY);
    assert_eq!(state(&pgplane), "Up");
    assert_eq!(psql(&uri, "select 1"), "1");
    ws.expect(0, PLAN);

    ws.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

#[test]
fn run_state_terraform_1_15() {
    run_state(Tf::V1_15);
}

#[test]
fn run_state_terraform_1_0() {
    run_state(Tf::V1_0);
}

#[test]
fn run_state_tofu() {
    run_state(Tf::Tofu);
}
