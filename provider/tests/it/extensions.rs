//! Extensions under Terraform: the `pgplane_extensions` data source lists
//! the data plane's catalog, and `extensions` takes `name=version`.

use crate::support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];
const PLAN: &[&str] = &["plan", "-detailed-exitcode", "-input=false", "-no-color"];
const HEADER: &str = r#"terraform {
  required_providers {
    pgplane = { source = "registry.pgplane.io/pgplane/pgplane" }
  }
}
"#;

fn config(hstore: &str) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    pgplane = {{ source = "registry.pgplane.io/pgplane/pgplane" }}
  }}
}}
provider "pgplane" {{}}

data "pgplane_extensions" "local" {{}}

resource "pgplane_instance" "jobs" {{
  name       = "jobs"
  extensions = ["{hstore}"]
}}

output "preloaded" {{
  value = join(",", [for e in data.pgplane_extensions.local.extensions : e.name if e.preload])
}}

output "cron" {{
  value = one([for e in data.pgplane_extensions.local.extensions : "${{e.package}} ${{e.default_version}} ${{e.preload_library}}" if e.name == "pg_cron"])
}}

output "data_plane" {{
  value = data.pgplane_extensions.local.data_plane
}}

output "uri" {{
  value     = pgplane_instance.jobs.connection_uri
  sensitive = true
}}
"#
    )
}

/// The preloaded extensions the resource's documentation says the local
/// data plane offers, sorted.
fn documented_preloads() -> Vec<&'static str> {
    const DOCS: &str = include_str!("../../docs/resources/instance.md");
    const LEAD: &str = "installs it, those are ";
    let from = DOCS
        .find(LEAD)
        .expect("the docs list the preloaded extensions")
        + LEAD.len();
    let list = &DOCS[from..];
    let mut names: Vec<&str> = list[..list.find(" (").unwrap()]
        .split(',')
        .map(|n| n.trim().trim_matches('`'))
        .collect();
    names.sort_unstable();
    names
}

#[test]
fn the_extensions_data_source_and_versions_under_terraform() {
    let scratch = scratch_dir();
    let pgplane = Pgplane::up(scratch.path());
    for tf in [Tf::V1_15, Tf::V1_0] {
        let root = scratch.path().join(format!("{tf:?}"));
        std::fs::create_dir_all(&root).unwrap();
        let ws = Workspace::new(tf, &root, pgplane.env());
        ws.write(&config("hstore=1.7"));
        ws.ok(&["init", "-input=false", "-no-color"]);
        ws.ok(APPLY);
        let preloaded = ws.ok(&["output", "-raw", "preloaded"]).stdout;
        let preloaded: Vec<&str> = preloaded.split(',').collect();
        assert!(preloaded.contains(&"pg_cron"), "{preloaded:?}");
        assert!(preloaded.contains(&"pgaudit"), "{preloaded:?}");
        assert!(!preloaded.contains(&"hstore"), "{preloaded:?}");
        let mut offered = preloaded.clone();
        offered.sort_unstable();
        assert_eq!(
            offered,
            documented_preloads(),
            "provider/docs/resources/instance.md names other preloaded extensions than the data plane offers"
        );
        assert_eq!(
            ws.ok(&["output", "-raw", "cron"]).stdout,
            "postgresql-15-cron 1.4-1 pg_cron"
        );
        assert_eq!(ws.ok(&["output", "-raw", "data_plane"]).stdout, "local");
        let uri = ws.ok(&["output", "-raw", "uri"]).stdout;
        let version = || {
            psql(
                &uri,
                "select extversion from pg_extension where extname = 'hstore'",
            )
        };
        assert_eq!(version(), "1.7");
        ws.expect(0, PLAN);

        ws.write(&config("hstore=1.8"));
        let plan = ws.expect(2, PLAN);
        assert!(plan.all().contains("hstore=1.8"), "{}", plan.all());
        ws.ok(APPLY);
        assert_eq!(version(), "1.8");
        ws.expect(0, PLAN);

        // The data plane's versions are checked at plan, against its
        // catalog: nothing is applied.
        ws.write(&config("hstore=9.9"));
        let bad = ws.expect(1, PLAN);
        assert!(
            bad.all()
                .contains("version \"9.9\" of extension \"hstore\" is not available"),
            "{}",
            bad.all()
        );
        let bad = ws.expect(1, APPLY);
        assert!(
            bad.all()
                .contains("version \"9.9\" of extension \"hstore\" is not available"),
            "{}",
            bad.all()
        );
        assert_eq!(version(), "1.8");
        // Destroy plans the configuration first, as it validates it: the
        // refused version is put right before.
        ws.write(&config("hstore=1.8"));
        ws.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    }
}

/// A `pgplane_instance` named `jobs` declaring `extensions` and one
/// database declaring `db_extensions`, under `provider`.
fn instance(provider: &str, extensions: &str, db_extensions: &str) -> String {
    format!(
        r#"{HEADER}{provider}
resource "pgplane_instance" "jobs" {{
  name       = "jobs"
  extensions = [{extensions}]
  database {{
    name       = "app"
    extensions = [{db_extensions}]
  }}
}}
"#
    )
}

/// What the data plane does not offer fails `terraform plan`, at the
/// extension, naming what it does offer; nothing is created.
fn unoffered_extensions_fail_the_plan(tf: Tf) {
    let scratch = scratch_dir();
    let pgplane = Pgplane::up(scratch.path());
    let ws = Workspace::new(tf, scratch.path(), pgplane.env());
    let configured = r#"provider "pgplane" {}"#;
    ws.write(&instance(configured, r#""hstore""#, ""));
    ws.ok(&["init", "-input=false", "-no-color"]);
    ws.expect(2, PLAN);

    let cases = [
        (
            r#""hstore=9.9""#,
            "",
            "version \"9.9\" of extension \"hstore\" is not available on data plane \"local\"; available: 1.4, 1.5, 1.6, 1.7, 1.8",
            "extensions.hstore=9.9",
        ),
        (
            r#""citext", "hstor""#,
            "",
            "extension \"hstor\" is not available on data plane \"local\" (did you mean \"hstore\"?)",
            "extensions.hstor",
        ),
        (
            "",
            r#""citext=0.1""#,
            "version \"0.1\" of extension \"citext\" is not available",
            "database.0.extensions.citext=0.1",
        ),
    ];
    for (extensions, db_extensions, message, at) in cases {
        ws.write(&instance(configured, extensions, db_extensions));
        for args in [PLAN, APPLY] {
            let out = ws.expect(1, args).all();
            // Terraform wraps the detail to its width.
            let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains(message),
                "{tf:?} {args:?}: expected {message:?} in:\n{out}"
            );
            assert!(
                out.contains(&format!(
                    "Error: Extension not available on data plane \"local\": {at}"
                )),
                "{tf:?} {args:?}: expected the path {at:?} in:\n{out}"
            );
            assert!(
                out.contains("extensions = ["),
                "{tf:?}: the line is shown:\n{out}"
            );
        }
    }
    pgplane.cli_fails(&["instance", "get", "jobs"]);

    // Without a reachable control plane the plan goes on; apply judges.
    let unreachable = format!(
        "provider \"pgplane\" {{\n  endpoint = \"http://127.0.0.1:{}\"\n  token    = \"unused\"\n}}",
        free_port()
    );
    ws.write(&instance(&unreachable, r#""hstore=9.9""#, ""));
    ws.expect(2, PLAN);
}

#[test]
fn unoffered_extensions_fail_the_plan_terraform_1_15() {
    unoffered_extensions_fail_the_plan(Tf::V1_15);
}

#[test]
fn unoffered_extensions_fail_the_plan_terraform_1_0() {
    unoffered_extensions_fail_the_plan(Tf::V1_0);
}

#[test]
fn unoffered_extensions_fail_the_plan_tofu() {
    unoffered_extensions_fail_the_plan(Tf::Tofu);
}
