//! The extension catalog and extensions at versions, through the built
//! binary: `pgplane extension list`, `--extension name=version`, preloaded
//! pg_cron, and a drop refused while something depends on the extension.

use crate::support::*;

#[test]
fn the_catalog_versions_and_preloading_through_the_cli() {
    let up = Embedded::start();
    let env = up.env();

    // The catalog the local data plane registered.
    let table = ok(&["extension", "list"], &env);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "VERSIONS", "PRELOAD", "TRUSTED", "REQUIRES", "PACKAGE"]
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} not listed:\n{table}"))
            .clone()
    };
    assert_eq!(
        row("pg_cron")[2..],
        ["yes", "no", "-", "postgresql-15-cron"]
    );
    assert_eq!(row("pgaudit")[2], "yes");
    assert_eq!(row("hstore")[2..4], ["no", "yes"]);
    assert!(row("hstore")[1].contains("1.7,1.8*"), "{table}");
    assert_eq!(row("postgis_topology")[4], "postgis");
    let catalog = json(&["extension", "list"], &env);
    assert_eq!(catalog["dataPlane"], "local");
    let items = catalog["items"].as_array().unwrap();
    let cron = items.iter().find(|e| e["name"] == "pg_cron").unwrap();
    assert_eq!(cron["preloadLibrary"], "pg_cron");
    let bad = run(&["extension", "list", "--data-plane", "mars"], &env);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("dataPlane: unknown data plane \"mars\"; known: local"),
        "{}",
        stderr(&bad)
    );

    // A version the data plane does not have is refused up front, by field.
    let o = run(
        &["instance", "create", "x", "--extension", "hstore=9.9"],
        &env,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("spec.extensions[0].version: version \"9.9\" of extension \"hstore\" is not available on data plane \"local\"; available: "),
        "{}",
        stderr(&o)
    );

    // Created at a version, then updated.
    ok(
        &[
            "instance",
            "create",
            "jobs",
            "--extension",
            "hstore=1.7",
            "--wait",
        ],
        &env,
    );
    let uri = ok(&["instance", "credentials", "jobs"], &env)
        .trim()
        .to_owned();
    let version = || {
        psql(
            &uri,
            "select extversion from pg_extension where extname = 'hstore'",
        )
    };
    assert_eq!(version(), "1.7");
    let out = run(
        &[
            "instance",
            "update",
            "jobs",
            "--extension",
            "hstore=1.8",
            "--wait",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("applied without restart"),
        "{}",
        stderr(&out)
    );
    assert_eq!(version(), "1.8", "ALTER EXTENSION … UPDATE TO ran");

    // pg_cron: a predicted restart, then jobs can be scheduled.
    let out = run(
        &[
            "instance",
            "update",
            "jobs",
            "--extension",
            "pg_cron",
            "--wait",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("restart required: shared_preload_libraries changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(psql(&uri, "show shared_preload_libraries"), "pg_cron");
    let job = psql(
        &uri,
        "select cron.schedule('nightly', '30 3 * * *', 'select 1')",
    );
    assert_eq!(
        psql(
            &uri,
            &format!("select schedule from cron.job where jobid = {job}")
        ),
        "30 3 * * *"
    );
    let history = ok(&["instance", "history", "jobs"], &env);
    assert!(history.contains("Restarting"), "{history}");
    // The periodic re-observation (1 s here) settles what a concurrent
    // one read with the previous spec.
    eventually("no drift", std::time::Duration::from_secs(20), || {
        ok(&["drift"], &env)
            .contains("0 of 1 instances drifted")
            .then_some(())
    });

    // Taken out of the spec, hstore stays; dropped, it is refused while a
    // column uses it, naming the column.
    psql(&uri, "create table tags (labels hstore)");
    ok(
        &[
            "instance",
            "update",
            "jobs",
            "--remove-extension",
            "hstore",
            "--wait",
        ],
        &env,
    );
    assert_eq!(version(), "1.8");
    let out = run(
        &[
            "instance",
            "update",
            "jobs",
            "--drop-extension",
            "hstore",
            "--wait",
        ],
        &env,
    );
    assert!(!out.status.success());
    let shown = ok(&["instance", "get", "jobs"], &env);
    assert!(
        shown.contains("extension \"hstore\" is not dropped because objects depend on it: column labels of table tags depends on type hstore"),
        "{shown}"
    );
    assert_eq!(version(), "1.8");
    assert_eq!(psql(&uri, "select 1"), "1", "the server still runs");
}
