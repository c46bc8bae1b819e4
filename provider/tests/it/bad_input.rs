//! Invalid configurations are errors at `validate` (and so `plan`) time,
//! naming the attribute; nothing reaches the control plane.

use crate::support::*;

const HEADER: &str = r#"terraform {
  required_providers {
    pgplane = { source = "registry.pgplane.io/pgplane/pgplane" }
  }
}
provider "pgplane" {
  endpoint = "http://127.0.0.1:9"
  token    = "unused"
}
"#;

/// (resource body, what the error must say, the offending line)
const CASES: &[(&str, &str, &str)] = &[
    (
        r#"name = "Bad_Name""#,
        "Invalid instance name",
        r#"name = "Bad_Name""#,
    ),
    (
        r#"name = "a"
  extensions = ["Not Valid"]"#,
        "is not a valid extension name",
        r#"extensions = ["Not Valid"]"#,
    ),
    (
        r#"name = "a"
  config = { port = "5433" }"#,
        "managed by pgplane and may not be set",
        r#"config = { port = "5433" }"#,
    ),
    (
        r#"name = "a"
  config = { work_mem = "16XB" }"#,
        "work_mem",
        r#"config = { work_mem = "16XB" }"#,
    ),
    (
        r#"name = "a"
  config = { max_connections = "lots" }"#,
        "Error: Invalid instance spec: config.max_connections",
        r#"config = { max_connections = "lots" }"#,
    ),
    (
        r#"name = "a"
  config = { max_connections = true }"#,
        "Error: Invalid instance spec: config.max_connections",
        r#"config = { max_connections = true }"#,
    ),
    (
        r#"name = "a"
  cpu = "lots""#,
        "Error: Invalid instance spec: cpu",
        r#"cpu = "lots""#,
    ),
    (
        r#"name = "a"
  backup_retention = "forever""#,
        "Error: Invalid backup retention: backup_retention",
        r#"backup_retention = "forever""#,
    ),
    (
        r#"name = "a"
  postgres_version = "9""#,
        "unsupported version",
        r#"postgres_version = "9""#,
    ),
    (
        r#"name = "a"
  id = "x""#,
        "\"id\"",
        r#"id = "x""#,
    ),
    (
        r#"name = "a"
  timeouts { create = "5 minutes" }"#,
        "Error: Invalid timeout: timeouts.create",
        r#"create = "5 minutes""#,
    ),
];

fn bad_input(tf: Tf) {
    let scratch = scratch_dir();
    let ws = Workspace::new(tf, scratch.path(), vec![]);
    ws.write(&format!(
        "{HEADER}resource \"pgplane_instance\" \"x\" {{\n  name = \"ok\"\n}}\n"
    ));
    ws.ok(&["init", "-input=false", "-no-color"]);
    ws.ok(&["validate", "-no-color"]);
    for (body, message, line) in CASES {
        ws.write(&format!(
            "{HEADER}resource \"pgplane_instance\" \"x\" {{\n  {body}\n}}\n"
        ));
        let r = ws.run(&["validate", "-no-color"]);
        let out = r.all();
        assert_eq!(
            r.code, 1,
            "{tf:?} {body}: validate exited {}:\n{out}",
            r.code
        );
        assert!(
            out.contains(message),
            "{tf:?} {body}: expected {message:?} in:\n{out}"
        );
        assert!(
            out.contains(line),
            "{tf:?} {body}: expected the line {line:?} in:\n{out}"
        );
    }
    // A parameter from elsewhere: the line Terraform shows does not name
    // it, the summary does.
    ws.write(&format!(
        "{HEADER}locals {{\n  settings = {{ work_mem = \"16MB\", max_connections = \"lots\" }}\n}}\n\
         resource \"pgplane_instance\" \"x\" {{\n  name   = \"a\"\n  config = local.settings\n}}\n"
    ));
    let r = ws.expect(1, &["validate", "-no-color"]);
    assert!(
        r.all()
            .contains("Error: Invalid instance spec: config.max_connections"),
        "{tf:?}: {}",
        r.all()
    );
    assert!(r.all().contains("expected an integer"), "{}", r.all());
    // The data source's state filter.
    ws.write(&format!(
        "{HEADER}data \"pgplane_instances\" \"x\" {{\n  state = \"Sleeping\"\n}}\n"
    ));
    let r = ws.expect(1, &["validate", "-no-color"]);
    assert!(r.all().contains("is not a state"), "{}", r.all());
    // A provider without endpoint/token says where to set them.
    let without_provider_block = HEADER.split("provider \"pgplane\"").next().unwrap();
    ws.write(&format!(
        "{without_provider_block}resource \"pgplane_instance\" \"x\" {{\n  name = \"a\"\n}}\n"
    ));
    let r = ws.expect(1, &["plan", "-input=false", "-no-color"]);
    assert!(r.all().contains("PGPLANE_ENDPOINT"), "{}", r.all());
}

#[test]
fn bad_input_terraform_1_15() {
    bad_input(Tf::V1_15);
}

#[test]
fn bad_input_terraform_1_0() {
    bad_input(Tf::V1_0);
}

#[test]
fn bad_input_tofu() {
    bad_input(Tf::Tofu);
}
