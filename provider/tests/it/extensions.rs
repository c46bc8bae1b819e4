//! Extensions under Terraform: the `pgplane_extensions` data source lists
//! the data plane's catalog, and `extensions` takes `name=version`.

use crate::support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];
const PLAN: &[&str] = &["plan", "-detailed-exitcode", "-input=false", "-no-color"];

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

        // The data plane's versions are checked by the control plane, when
        // the change is sent: nothing is applied.
        ws.write(&config("hstore=9.9"));
        let bad = ws.expect(1, APPLY);
        assert!(
            bad.all()
                .contains("version \"9.9\" of extension \"hstore\" is not available"),
            "{}",
            bad.all()
        );
        assert_eq!(version(), "1.8");
        ws.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    }
}
