//! Backups and branches under Terraform: `backup_schedule` and
//! `backup_retention` change in place, `restore_from`/`restore_at` create a
//! branch at a point in time (and force replacement when changed), the
//! `pgplane_backups` data source reads the window, and bad restore points
//! are errors at their attribute before anything is created.

use std::time::{Duration, Instant};

use crate::support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];
const PLAN: &[&str] = &["plan", "-detailed-exitcode", "-input=false", "-no-color"];

fn config(retention: &str, branch: Option<&str>) -> String {
    let branch = branch
        .map(|at| {
            format!(
                r#"
resource "pgplane_instance" "branch" {{
  name         = "orders-branch"
  extensions   = ["hstore"]
  restore_from = pgplane_instance.orders.name
  restore_at   = "{at}"
}}

output "branch_uri" {{
  value     = pgplane_instance.branch.connection_uri
  sensitive = true
}}
"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"terraform {{
  required_providers {{
    pgplane = {{ source = "registry.pgplane.io/pgplane/pgplane" }}
  }}
}}
provider "pgplane" {{}}

resource "pgplane_instance" "orders" {{
  name             = "orders"
  extensions       = ["hstore"]
  backup_schedule  = "@daily"
  backup_retention = "{retention}"
}}

data "pgplane_backups" "orders" {{
  instance = pgplane_instance.orders.name
}}

output "uri" {{
  value     = pgplane_instance.orders.connection_uri
  sensitive = true
}}

output "backups" {{
  value = length(data.pgplane_backups.orders.backups)
}}

output "restorable_from" {{
  value = data.pgplane_backups.orders.restorable_from
}}
{branch}"#
    )
}

#[test]
fn branches_and_backup_policy_under_terraform() {
    let scratch = scratch_dir();
    let pgplane = Pgplane::up(scratch.path());
    let ws = Workspace::new(Tf::V1_15, scratch.path(), pgplane.env());

    ws.write(&config("3", None));
    ws.ok(&["init", "-input=false", "-no-color"]);
    ws.ok(APPLY);
    ws.expect(0, PLAN);
    let uri = ws.ok(&["output", "-raw", "uri"]).stdout;
    psql(&uri, "create table t (i int)");
    psql(&uri, "insert into t select generate_series(1, 5)");
    // The first full backup is taken by itself; the data source sees it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pgplane
        .cli(&["instance", "backups", "orders", "-o", "json"])
        .contains("\"id\"")
    {
        assert!(Instant::now() < deadline, "no backup after 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    ws.ok(&[
        "apply",
        "-refresh-only",
        "-auto-approve",
        "-input=false",
        "-no-color",
    ]);
    assert_eq!(ws.ok(&["output", "-raw", "backups"]).stdout, "1");
    assert!(ws
        .ok(&["output", "-raw", "restorable_from"])
        .stdout
        .starts_with("20"));

    // Retention changes in place; "3" and a spec value of 3 are the same.
    ws.write(&config("5d", None));
    let plan = ws.expect(2, PLAN);
    assert!(plan.stdout.contains("update in-place"), "{}", plan.all());
    ws.ok(APPLY);
    ws.expect(0, PLAN);
    let got = pgplane.cli(&["instance", "get", "orders", "-o", "json"]);
    assert!(got.contains("\"retention\": \"5d\""), "{got}");

    // A branch at T has the rows committed before T.
    let at = psql(
        &uri,
        "select to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    psql(&uri, "insert into t select generate_series(6, 9)");
    ws.write(&config("5d", Some(&at)));
    let applied = ws.ok(APPLY);
    assert!(applied.stdout.contains("1 added"), "{}", applied.all());
    let branch = ws.ok(&["output", "-raw", "branch_uri"]).stdout;
    assert_eq!(psql(&branch, "select count(*) from t"), "5");
    assert_eq!(psql(&uri, "select count(*) from t"), "9");
    ws.expect(0, PLAN);

    // Another restore point is another instance: replacement.
    ws.write(&config("5d", Some("2026-01-01T00:00:00Z")));
    let plan = ws.expect(2, PLAN);
    assert!(plan.stdout.contains("must be replaced"), "{}", plan.all());
    assert!(plan.stdout.contains("restore_at"), "{}", plan.all());
    // ... and one before the first backup fails at its attribute, leaving
    // the existing branch alone until then.
    let failed = ws.run(APPLY);
    assert_ne!(failed.code, 0);
    assert!(
        failed.all().contains("before the first backup"),
        "{}",
        failed.all()
    );

    // Bad values are errors at validate time, naming the attribute.
    ws.write(&config("0", None));
    let bad = ws.run(&["validate", "-no-color"]);
    assert_ne!(bad.code, 0);
    assert!(bad.all().contains("backup_retention"), "{}", bad.all());
    assert!(bad.all().contains("at least one"), "{}", bad.all());
    ws.write(&config("5d", Some("yesterday")));
    let bad = ws.run(&["validate", "-no-color"]);
    assert_ne!(bad.code, 0);
    assert!(bad.all().contains("restore_at"), "{}", bad.all());
    assert!(bad.all().contains("RFC 3339"), "{}", bad.all());
}
