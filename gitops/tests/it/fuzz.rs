//! Generated manifests through the parser (`parse_manifests`): well-formed
//! ones, ones with every field mistyped, misspelt, repeated or missing,
//! unicode, NUL, huge numbers, anchors and aliases, tags, block scalars,
//! broken YAML and bytes that are not UTF-8. The parser must never panic,
//! and every error must say where: a file and line, and a field path unless
//! the whole file or document is what is wrong.

use std::panic::{catch_unwind, AssertUnwindSafe};

use gitops::{parse_manifests, ParseOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How many revisions are generated (each one to three files).
const REVISIONS: usize = 10_000;
const SEED: u64 = 0x5eed_9a1e;

/// Strings that have broken parsers before, or mean something to pgplane.
const WORDS: &[&str] = &[
    "",
    " ",
    "a",
    "orders",
    "Orders",
    "-a",
    "a-",
    "db-1",
    "\u{0}",
    "a\u{0}b",
    "é",
    "日本",
    "😀",
    "\u{202e}",
    "\u{feff}",
    "\n",
    "\t",
    "\\",
    "\"",
    "'",
    "%00",
    "../..",
    "$libdir/x",
    "null",
    "~",
    "true",
    "yes",
    "on",
    "0",
    "-1",
    "1e308",
    "1e400",
    ".nan",
    ".inf",
    "0x10",
    "0o17",
    "010",
    "18446744073709551616",
    "-9223372036854775809",
    "16MB",
    "16mb",
    "4TB",
    "1Gi",
    "10GB",
    "500m",
    "0.5",
    "15",
    "16",
    "minimal",
    "replica",
    "try",
    "pg_stat_statements",
    "hstore",
    "does_not_exist",
    "acme",
    "pgplane.io/v1",
    "PostgresInstance",
];

const FIELDS: &[&str] = &[
    "postgresVersion",
    "replicas",
    "resources",
    "storage",
    "extensions",
    "config",
    "stopped",
    "superuserAccess",
    "replica",
    "Config",
    "",
];

const PARAMETERS: &[&str] = &[
    "work_mem",
    "WORK_MEM",
    "shared_buffers",
    "max_connections",
    "wal_level",
    "max_wal_senders",
    "huge_pages",
    "shared_preload_libraries",
    "port",
    "server_version",
    "transaction_isolation",
    "pg_stat_statements.max",
    "a.b.c",
    "no_such_param",
    "log_min_duration_statement",
    "statement_timeout",
];

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.gen_range(0..xs.len())]
    }

    fn text(&mut self) -> String {
        match self.rng.gen_range(0..10) {
            0 => (0..self.rng.gen_range(0..20))
                .map(|_| char::from_u32(self.rng.gen_range(0..0x11000)).unwrap_or('?'))
                .collect(),
            1 => "x".repeat(self.rng.gen_range(60..5000)),
            2 => format!(
                "{}{}",
                self.rng.gen_range(-5i64..100_000),
                self.pick(&["", "kB", "MB", "GB", "TB", "ms", "s", "min", "h", "d", "Mi", "XB"])
            ),
            _ => self.pick(WORDS).to_owned(),
        }
    }

    /// A YAML scalar for `s`: plain when it can be, otherwise quoted.
    fn scalar(&mut self, s: &str) -> String {
        let plain_ok = !s.is_empty()
            && s.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c))
            && !s.starts_with(['-', '.']);
        match self.rng.gen_range(0..6) {
            0 | 1 if plain_ok => s.to_owned(),
            2 if !s.contains(['\'', '\n']) && !s.chars().any(char::is_control) => {
                format!("'{s}'")
            }
            3 => format!("!!str {}", serde_json::to_string(s).unwrap()),
            _ => serde_json::to_string(s).unwrap(),
        }
    }

    /// Any value, as YAML flow text.
    fn value(&mut self, depth: usize) -> String {
        match self.rng.gen_range(0..9) {
            0 if depth < 4 => {
                let n = self.rng.gen_range(0..4);
                let items: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                format!("[{}]", items.join(", "))
            }
            1 if depth < 4 => {
                let n = self.rng.gen_range(0..4);
                let items: Vec<String> = (0..n)
                    .map(|_| {
                        let k = self.text();
                        format!("{}: {}", self.scalar(&k), self.value(depth + 1))
                    })
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
            2 => self
                .pick(&[
                    "~",
                    "null",
                    "true",
                    "false",
                    "1",
                    "-1",
                    "1.5",
                    "1e400",
                    ".nan",
                    "0x1F",
                    "99999999999999999999",
                ])
                .to_owned(),
            3 => "*nowhere".to_owned(),
            _ => {
                let t = self.text();
                self.scalar(&t)
            }
        }
    }

    fn name(&mut self) -> String {
        if self.chance(0.7) {
            format!("db-{}", self.rng.gen_range(0..50))
        } else {
            let t = self.text();
            self.scalar(&t)
        }
    }

    /// A manifest close to a valid one, with random damage.
    fn manifest(&mut self) -> String {
        let mut out = String::new();
        if self.chance(0.03) {
            out.push('\u{feff}');
        }
        if self.chance(0.9) {
            out.push_str("apiVersion: pgplane.io/v1\n");
        } else {
            let v = self.value(0);
            out.push_str(&format!("apiVersion: {v}\n"));
        }
        if self.chance(0.9) {
            out.push_str("kind: PostgresInstance\n");
        } else {
            let v = self.value(0);
            out.push_str(&format!("kind: {v}\n"));
        }
        if self.chance(0.95) {
            out.push_str("metadata:\n");
            let name = self.name();
            out.push_str(&format!("  name: {name}\n"));
            if self.chance(0.2) {
                let org = self.name();
                out.push_str(&format!("  org: {org}\n"));
            }
            if self.chance(0.05) {
                let v = self.value(0);
                out.push_str(&format!("  owner: {v}\n"));
            }
            if self.chance(0.03) {
                let name = self.name();
                out.push_str(&format!("  name: {name}\n"));
            }
        }
        if self.chance(0.9) {
            out.push_str("spec:\n");
            self.spec(&mut out);
        } else if self.chance(0.5) {
            let v = self.value(0);
            out.push_str(&format!("spec: {v}\n"));
        }
        if self.chance(0.03) {
            let k = self.text();
            let v = self.value(0);
            out.push_str(&format!("{}: {v}\n", self.scalar(&k)));
        }
        out
    }

    fn spec(&mut self, out: &mut String) {
        for _ in 0..self.rng.gen_range(0..7) {
            let field = self.pick(FIELDS);
            match field {
                "resources" if self.chance(0.8) => {
                    out.push_str("  resources:\n");
                    let cpu = self.pick(&["1", "500m", "0.5", "lots", "0", "-1", "1e9"]);
                    let memory = self.pick(&["1Gi", "512Mi", "10GB", "1", "0", "16Ei", "4Ti"]);
                    out.push_str(&format!("    cpu: {}\n", self.scalar(cpu)));
                    out.push_str(&format!("    memory: {}\n", self.scalar(memory)));
                }
                "extensions" if self.chance(0.8) => {
                    out.push_str("  extensions:\n");
                    for _ in 0..self.rng.gen_range(0..4) {
                        let e = self.pick(&[
                            "hstore",
                            "pg_stat_statements",
                            "Bad Ext",
                            "",
                            "citext",
                            "pg_cron",
                        ]);
                        if self.chance(0.9) {
                            out.push_str(&format!("    - name: {}\n", self.scalar(e)));
                        } else {
                            let v = self.value(1);
                            out.push_str(&format!("    - {v}\n"));
                        }
                    }
                }
                "config" if self.chance(0.8) => {
                    out.push_str("  config:\n");
                    for _ in 0..self.rng.gen_range(0..6) {
                        let key = if self.chance(0.85) {
                            self.pick(PARAMETERS).to_owned()
                        } else {
                            self.text()
                        };
                        let value = if self.chance(0.9) {
                            let t = self.text();
                            self.scalar(&t)
                        } else {
                            self.value(1)
                        };
                        let key = self.scalar(&key);
                        out.push_str(&format!("    {key}: {value}\n"));
                    }
                }
                _ => {
                    let v = self.value(1);
                    let f = self.scalar(field);
                    out.push_str(&format!("  {f}: {v}\n"));
                }
            }
        }
    }

    /// YAML features and damage the manifest generator does not produce.
    fn oddity(&mut self) -> Vec<u8> {
        let text = match self.rng.gen_range(0..12) {
            0 => "a: &x [1, 2]\nb: *x\nc: *y\n".to_owned(),
            1 => format!("spec: |\n  {}\n", self.text()),
            2 => "spec:\n\tconfig: {}\n".to_owned(),
            3 => format!("{}{}", "[".repeat(200), "]".repeat(200)),
            4 => format!("{}x", "- ".repeat(150)),
            5 => "--- !!binary aGVsbG8=\n".to_owned(),
            6 => "? [complex, key]\n: value\n".to_owned(),
            7 => "apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata: &m\n  name: a\nspec:\n  <<: *m\n".to_owned(),
            8 => {
                // Aliases of aliases: each level copies the one before ten
                // times (nine levels would be a billion nodes).
                let mut s = "spec:\n  config:\n    l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n".to_owned();
                let levels = if self.chance(0.1) { 10 } else { 4 };
                for i in 1..self.rng.gen_range(2..levels) {
                    let p = i - 1;
                    s.push_str(&format!(
                        "    l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
                    ));
                }
                s
            }
            9 => return (0..self.rng.gen_range(0..200)).map(|_| self.rng.gen()).collect(),
            10 => "%YAML 1.2\n%TAG ! tag:x,2000:\n--- !foo\na: 1\n".to_owned(),
            _ => {
                let mut m = self.manifest().into_bytes();
                let cut = self.rng.gen_range(0..=m.len());
                m.truncate(cut);
                return m;
            }
        };
        text.into_bytes()
    }

    fn file(&mut self) -> Vec<u8> {
        if self.chance(0.15) {
            return self.oddity();
        }
        let documents = self.rng.gen_range(1..4);
        let mut out = String::new();
        for i in 0..documents {
            if i > 0 || self.chance(0.2) {
                out.push_str("---\n");
            }
            if self.chance(0.05) {
                out.push_str("# only a comment\n");
                continue;
            }
            out.push_str(&self.manifest());
        }
        out.into_bytes()
    }
}

/// Errors that concern a whole file or document rather than a field.
fn is_file_level(message: &str) -> bool {
    message.starts_with("not valid YAML")
        || message.starts_with("not UTF-8")
        || message.starts_with("expected a PostgresInstance manifest")
}

#[test]
fn generated_manifests_never_panic_and_errors_say_where() {
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(SEED),
    };
    let options = ParseOptions {
        default_org: "acme".into(),
    };
    let (mut valid, mut invalid, mut errors, mut files_total) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for revision in 0..REVISIONS {
        let files: Vec<(String, Vec<u8>)> = (0..gen.rng.gen_range(1..4))
            .map(|i| (format!("instances/f{i}.yaml"), gen.file()))
            .collect();
        files_total += files.len();
        let result = catch_unwind(AssertUnwindSafe(|| parse_manifests(&files, &options)));
        let show = || {
            files
                .iter()
                .map(|(p, b)| format!("{p}:\n{}", String::from_utf8_lossy(b)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        match result {
            Err(_) => problems.push(format!("revision {revision} panicked:\n{}", show())),
            Ok(Ok(_)) => valid += 1,
            Ok(Err(e)) => {
                invalid += 1;
                errors += e.0.len();
                if e.0.is_empty() {
                    problems.push(format!(
                        "revision {revision}: an error without errors:\n{}",
                        show()
                    ));
                }
                for err in &e.0 {
                    let known_file = files.iter().any(|(p, _)| *p == err.file);
                    let located = known_file && err.line >= 1;
                    // A key that is the empty string has the empty path.
                    let empty_key =
                        err.message.contains("field \"\"") || err.message.contains("key \"\"");
                    let has_path = !err.path.is_empty() || is_file_level(&err.message) || empty_key;
                    if !located || !has_path {
                        problems.push(format!("revision {revision}: {err}\n{}", show()));
                    }
                }
            }
        }
    }
    println!(
        "manifest fuzz: {REVISIONS} revisions ({files_total} files): {valid} valid, {invalid} invalid with {errors} errors, {} problems",
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{} problems, the first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    assert!(valid > 100 && invalid > 1000, "the generator covers both");
}
