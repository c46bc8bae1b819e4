//! Rule 1: a revision is validated whole; every error of every file is
//! reported at once, with file, line, column, field path and what is allowed.

use gitops::{parse_manifests, ParseOptions};

use crate::support::manifest;

fn options() -> ParseOptions {
    ParseOptions {
        default_org: "acme".into(),
    }
}

const A: &str = "\
apiVersion: pgplane.io/v1
kind: PostgresInstance
metadata:
  name: orders
  org: acme
spec:
  replica: 2
  storage: 10GB
  config:
    port: \"5433\"
    work_mem: 16MB
---
apiVersion: pgplane.io/v2
kind: Postgres
metadata:
  name: Bad_Name
  owner: me
spec:
  extensions:
    - name: pg_stat_statements
    - name: \"Bad Ext\"
";

const B: &str = "\
# only a comment
---
apiVersion: pgplane.io/v1
kind: PostgresInstance
metadata:
  name: billing
spec:
  replicas: two
  resources: {cpu: lots, memory: 1Gi}
  config:
    pg_stat_statements.max: \"5000\"
    no_such_param: \"1\"
";

const NOT_YAML: &str = "\
apiVersion: pgplane.io/v1
kind: [unclosed
metadata: {}
";

#[test]
fn every_error_of_every_file_is_reported_at_once() {
    let good = manifest("payments", "postgresVersion: \"15\"");
    let dup = manifest("payments", "");
    let files = [
        ("instances/a.yaml", A.to_owned()),
        ("instances/b.yml", B.to_owned()),
        ("instances/c.yaml", good),
        ("instances/d.yaml", dup),
        ("instances/e.yaml", NOT_YAML.to_owned()),
        ("instances/empty.yaml", String::new()),
        (
            "instances/comments.yaml",
            "# nothing here\n---\n# nor here\n".to_owned(),
        ),
    ];
    let err = parse_manifests(&files, &options()).unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        "instances/a.yaml:7:3: spec.replica: unknown field \"replica\"; allowed: postgresVersion, replicas, synchronous, resources, storage, extensions, config, stopped, superuserAccess, backup, restore, databases, roles",
        "instances/a.yaml:8:3: spec.storage: \"10GB\" is not a valid byte quantity: sizes of resources and storage are Kubernetes quantities: write \"10Gi\" (binary, what Postgres calls 10GB) or \"10G\" (decimal)",
        "instances/a.yaml:10:5: spec.config.port: parameter \"port\" is managed by pgplane and may not be set",
        "instances/a.yaml:13:1: apiVersion: \"pgplane.io/v2\" is not supported; must be \"pgplane.io/v1\"",
        "instances/a.yaml:14:1: kind: \"Postgres\" is not supported; must be \"PostgresInstance\"",
        "instances/a.yaml:16:3: metadata.name: name \"Bad_Name\" must consist of lower-case letters, digits and '-', start with a letter and end with a letter or digit (DNS-1123 label)",
        "instances/a.yaml:17:3: metadata.owner: unknown field \"owner\"; allowed: name, org",
        "instances/a.yaml:21:7: spec.extensions[1].name: \"Bad Ext\" is not a valid extension name: use lower-case letters, digits, '_' and '-'",
        "instances/b.yml:8:13: spec.replicas: invalid type: string \"two\", expected u32",
        "instances/b.yml:9:15: spec.resources.cpu: \"lots\" is not a valid cpu quantity: expected cores like \"1\", \"0.5\" or millicores like \"500m\"",
        "instances/b.yml:12:5: spec.config.no_such_param: unknown parameter \"no_such_param\" for PostgreSQL 15 (see pg_settings; extension parameters are written extension.name)",
        "instances/d.yaml:4:3: metadata.name: duplicate instance acme/payments: already declared at instances/c.yaml:1; each instance may be declared once",
        "instances/e.yaml:3:9: not valid YAML: illegal placement of ':' indicator",
    ];
    assert_eq!(lines, expected, "\n{text}");
    assert_eq!(err.0[0].column, Some(3));
    assert_eq!(err.0[0].path, "spec.replica");
}

#[test]
fn multi_document_files_declare_many_instances() {
    let text = format!(
        "{}---\n# a comment-only document\n---\n{}",
        manifest("one", "extensions: [{name: hstore}, {name: citext}]"),
        manifest("two", "config:\n  work_mem: 16MB\n  max_connections: 200")
    );
    let set = parse_manifests(&[("all.yaml", text)], &options()).unwrap();
    let names: Vec<&str> = set.instances.values().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    let one = set.get("acme", "one").unwrap();
    assert_eq!((one.file.as_str(), one.line), ("all.yaml", 1));
    // Normalised: extensions sorted.
    let exts: Vec<&str> = one.spec.extension_names().collect();
    assert_eq!(exts, ["citext", "hstore"]);
    let two = set.get("acme", "two").unwrap();
    assert_eq!(two.line, 10);
    // Plain scalars read as strings where strings are wanted.
    assert_eq!(two.spec.config["max_connections"], "200");
}

#[test]
fn org_comes_from_the_manifest_or_the_default() {
    let text =
        "apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata: {name: a, org: other}\n";
    let set = parse_manifests(
        &[("x.yaml", text), ("y.yaml", &manifest("a", ""))],
        &options(),
    )
    .unwrap();
    let keys: Vec<(&str, &str)> = set
        .instances
        .keys()
        .map(|(o, n)| (o.as_str(), n.as_str()))
        .collect();
    assert_eq!(keys, [("acme", "a"), ("other", "a")]);
}

#[test]
fn files_that_are_not_manifests_are_reported() {
    let files: [(&str, &[u8]); 3] = [
        ("list.yaml", b"- a\n- b\n"),
        ("binary.yaml", b"name: \xff\xfe\n"),
        (
            "nometa.yaml",
            b"apiVersion: pgplane.io/v1\nkind: PostgresInstance\nspec: {}\n",
        ),
    ];
    let err = parse_manifests(&files, &options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "list.yaml:1:1: expected a PostgresInstance manifest (a mapping with apiVersion, kind, metadata, spec), found a sequence\n\
         binary.yaml:1: not UTF-8 text; manifests are UTF-8 YAML\n\
         nometa.yaml:1:1: metadata: missing; must hold the instance's name (and optionally its org)\n"
    );
}

#[test]
fn an_empty_revision_declares_nothing() {
    let files: [(&str, &str); 2] = [("a.yaml", ""), ("b.yaml", "# just a comment\n")];
    assert!(parse_manifests(&files, &options()).unwrap().is_empty());
}

#[test]
fn extensions_take_a_version_and_an_ensure_checked_at_their_line() {
    let good = manifest(
        "geo",
        "extensions:\n    - {name: postgis, version: \"3.3.2\"}\n    - {name: hstore, ensure: absent}",
    );
    let set = parse_manifests(&[("geo.yaml", good)], &options()).unwrap();
    let geo = set.get("acme", "geo").unwrap();
    let postgis = geo
        .spec
        .extensions
        .iter()
        .find(|e| e.name == "postgis")
        .unwrap();
    assert_eq!(postgis.version.as_deref(), Some("3.3.2"));
    let hstore = geo
        .spec
        .extensions
        .iter()
        .find(|e| e.name == "hstore")
        .unwrap();
    assert_eq!(hstore.ensure, domain::Ensure::Absent);

    let bad = manifest(
        "geo",
        "extensions:\n    - {name: postgis, version: \"3.3--2\"}\n    - {name: hstore, ensure: gone}",
    );
    let err = parse_manifests(&[("geo.yaml", bad)], &options()).unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["geo.yaml:8:32: spec.extensions[1].ensure: \"gone\" is not an ensure value; use \"present\" or \"absent\""],
        "{text}"
    );
}
