//! Generated requests against the in-process API on a real database: bodies
//! for every route that takes one (instance create and update, source
//! create, token create, the webhook), close to valid or not at all, with
//! unicode, NUL, huge and odd numbers, repeated and unknown keys, wrong
//! types, broken JSON and bytes that are not UTF-8; and paths with odd
//! names. Nothing may answer 5xx, and no handler may panic.
//!
//! Source URLs are only ever local paths, `file://` or private IP
//! addresses, which the default policy refuses without a DNS lookup: the
//! suite never reaches outside the machine.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use crate::config_validation::send;
use crate::support::test_app;

/// How many requests carry a generated body; as many again a tenth of this
/// have only a generated path.
const BODIES: usize = 10_000;
const SEED: u64 = 0xf022_a91e;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;

const WORDS: &[&str] = &[
    "",
    " ",
    "a",
    "b",
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
    "\\",
    "\"",
    "%00",
    "%",
    "../..",
    "/etc/passwd",
    "$libdir/x",
    "null",
    "true",
    "0",
    "-1",
    "1e308",
    "NaN",
    "16MB",
    "16mb",
    "4TB",
    "1Gi",
    "10GB",
    "500m",
    "0.5",
    "0x10",
    "010",
    "15",
    "16",
    "minimal",
    "replica",
    "on",
    "try",
    "pg_stat_statements",
    "hstore",
    "does_not_exist",
    "local",
    "nosuch",
    "api",
    "terraform",
    "git:x",
    "acme",
    "globex",
    "main",
    "report",
    "heal",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "60",
    "4294967295",
    "4294967296",
    "-4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1e400",
    "-1e400",
    "1E-400",
    "1.5",
    "1e2",
    "-0",
    "0.0",
];

const PARAMETERS: &[&str] = &[
    "work_mem",
    "WORK_MEM",
    "shared_buffers",
    "max_connections",
    "wal_level",
    "max_wal_senders",
    "archive_mode",
    "huge_pages",
    "ssl",
    "shared_preload_libraries",
    "port",
    "data_directory",
    "server_version",
    "transaction_isolation",
    "superuser_reserved_connections",
    "min_wal_size",
    "recovery_target_xid",
    "recovery_target_time",
    "pg_stat_statements.max",
    "a.b.c",
    "no_such_param",
    "statement_timeout",
    "random_page_cost",
    "search_path",
];

/// URLs the default source policy refuses without resolving a name.
const SOURCE_URLS: &[&str] = &[
    "https://10.0.0.1/repo.git",
    "http://127.0.0.1:9/repo.git",
    "ssh://git@[fd00::1]/repo.git",
    "git://192.168.0.1/repo.git",
    "git@169.254.1.1:repo.git",
    "https://100.64.0.1/x",
    "https://[::1]/x",
    "https://0.0.0.0/x",
    "file:///srv/repo.git",
    "/srv/repo.git",
    "repo",
    "",
    "https://10.0.0.1/repo\u{0}.git",
    "ftp://10.0.0.1/x",
    "HTTPS://10.0.0.1/x",
];

struct Gen {
    rng: StdRng,
    /// While set, generated text has no ':' (a source URL without one is a
    /// local path, never a host to resolve).
    no_colons: bool,
}

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.gen_range(0..xs.len())]
    }

    fn text(&mut self) -> String {
        let t = self.any_text();
        if self.no_colons {
            t.replace(':', "_")
        } else {
            t
        }
    }

    fn any_text(&mut self) -> String {
        match self.rng.gen_range(0..12) {
            0 => (0..self.rng.gen_range(0..20))
                .map(|_| char::from_u32(self.rng.gen_range(0..0x11000)).unwrap_or('\u{fffd}'))
                .collect(),
            1 => "x".repeat(self.rng.gen_range(60..3000)),
            2 => format!(
                "{}{}",
                self.rng.gen_range(-5i64..100_000),
                self.pick(&["", "kB", "MB", "GB", "TB", "ms", "s", "min", "d", "Mi", "Gi", "XB"])
            ),
            _ => self.pick(WORDS).to_owned(),
        }
    }

    fn string(&mut self) -> String {
        let t = self.text();
        json(&t)
    }

    /// Any JSON value, as text.
    fn value(&mut self, depth: usize) -> String {
        match self.rng.gen_range(0..8) {
            0 if depth < 4 => {
                let items: Vec<String> = (0..self.rng.gen_range(0..4))
                    .map(|_| self.value(depth + 1))
                    .collect();
                format!("[{}]", items.join(","))
            }
            1 if depth < 4 => {
                let fields: Vec<(String, String)> = (0..self.rng.gen_range(0..4))
                    .map(|_| (self.text(), self.value(depth + 1)))
                    .collect();
                object(&fields)
            }
            2 => self.pick(NUMBERS).to_owned(),
            3 => self.pick(&["true", "false", "null"]).to_owned(),
            _ => self.string(),
        }
    }

    /// `fields` as an object, sometimes with one dropped, mistyped,
    /// repeated, or an unknown one added.
    fn damaged(&mut self, mut fields: Vec<(String, String)>) -> String {
        if !fields.is_empty() && self.chance(0.15) {
            let i = self.rng.gen_range(0..fields.len());
            fields.remove(i);
        }
        if !fields.is_empty() && self.chance(0.1) {
            let i = self.rng.gen_range(0..fields.len());
            fields[i].1 = self.value(1);
        }
        if !fields.is_empty() && self.chance(0.05) {
            let i = self.rng.gen_range(0..fields.len());
            let repeated = (fields[i].0.clone(), self.value(1));
            fields.push(repeated);
        }
        if self.chance(0.05) {
            let k = self.text();
            let v = self.value(1);
            fields.push((k, v));
        }
        object(&fields)
    }

    /// An instance name: one of those every organisation starts with, a
    /// new one, or anything.
    fn instance_name(&mut self) -> String {
        match self.rng.gen_range(0..10) {
            0..=3 => format!("db-{}", self.rng.gen_range(0..EXISTING)),
            4..=7 => format!("db-{}", self.rng.gen_range(EXISTING..5000)),
            _ => self.text(),
        }
    }

    fn name(&mut self) -> String {
        let n = self.instance_name();
        json(&n)
    }

    fn config(&mut self) -> String {
        let fields: Vec<(String, String)> = (0..self.rng.gen_range(0..6))
            .map(|_| {
                let key = if self.chance(0.85) {
                    self.pick(PARAMETERS).to_owned()
                } else {
                    self.text()
                };
                let value = if self.chance(0.9) {
                    self.string()
                } else {
                    self.value(1)
                };
                (key, value)
            })
            .collect();
        self.damaged(fields)
    }

    fn spec(&mut self) -> String {
        let mut fields = Vec::new();
        if self.chance(0.3) {
            let v = if self.chance(0.5) {
                json(self.pick(&["15", "16", "9"]))
            } else {
                self.value(1)
            };
            fields.push(("postgresVersion".to_owned(), v));
        }
        if self.chance(0.3) {
            fields.push(("replicas".to_owned(), self.pick(NUMBERS).to_owned()));
        }
        if self.chance(0.3) {
            let cpu = json(self.pick(&["1", "500m", "0.5", "lots", "0", "1e9"]));
            let memory = json(self.pick(&["1Gi", "512Mi", "10GB", "1", "0", "16Ei", "4Ti"]));
            let resources = self.damaged(vec![("cpu".into(), cpu), ("memory".into(), memory)]);
            fields.push(("resources".to_owned(), resources));
        }
        if self.chance(0.2) {
            fields.push(("storage".to_owned(), self.string()));
        }
        if self.chance(0.4) {
            let items: Vec<String> = (0..self.rng.gen_range(0..4))
                .map(|_| {
                    let n = json(self.pick(&[
                        "hstore",
                        "pg_stat_statements",
                        "Bad Ext",
                        "",
                        "citext",
                        "pg_cron",
                        "a\u{0}",
                    ]));
                    self.damaged(vec![("name".into(), n)])
                })
                .collect();
            fields.push(("extensions".to_owned(), format!("[{}]", items.join(","))));
        }
        if self.chance(0.7) {
            let c = self.config();
            fields.push(("config".to_owned(), c));
        }
        for flag in ["stopped", "superuserAccess"] {
            if self.chance(0.1) {
                let v = self
                    .pick(&["true", "false", "1", "\"yes\"", "null"])
                    .to_owned();
                fields.push((flag.to_owned(), v));
            }
        }
        self.damaged(fields)
    }

    fn create_instance(&mut self) -> String {
        let mut fields = vec![("name".to_owned(), self.name())];
        if self.chance(0.8) {
            let s = self.spec();
            fields.push(("spec".to_owned(), s));
        }
        if self.chance(0.1) {
            let dp = if self.chance(0.5) {
                json(self.pick(&["local", "nosuch", "eu_west", "Bad", "x".repeat(41).as_str()]))
            } else {
                self.string()
            };
            fields.push(("dataPlane".to_owned(), dp));
        }
        if self.chance(0.1) {
            let owner = json(self.pick(&["api", "terraform", "git:x", "", "me"]));
            fields.push(("owner".to_owned(), owner));
        }
        self.damaged(fields)
    }

    fn update_instance(&mut self) -> String {
        let mut fields = vec![("spec".to_owned(), self.spec())];
        if self.chance(0.3) {
            fields.push((
                "expectedGeneration".to_owned(),
                self.pick(NUMBERS).to_owned(),
            ));
        }
        self.damaged(fields)
    }

    fn create_source(&mut self) -> String {
        self.no_colons = true;
        let url = if self.chance(0.9) {
            json(self.pick(SOURCE_URLS))
        } else {
            self.string()
        };
        let mut fields = vec![("name".to_owned(), self.name()), ("url".to_owned(), url)];
        for (key, values) in [
            ("branch", &["main", "", "a\u{0}", "../x"][..]),
            ("path", &["instances", "", "/", "../.."][..]),
            ("drift", &["report", "heal", "fix"][..]),
        ] {
            if self.chance(0.3) {
                let v = json(self.pick(values));
                fields.push((key.to_owned(), v));
            }
        }
        if self.chance(0.3) {
            fields.push(("intervalSeconds".to_owned(), self.pick(NUMBERS).to_owned()));
        }
        for flag in ["prune", "adopt"] {
            if self.chance(0.2) {
                fields.push((
                    flag.to_owned(),
                    self.pick(&["true", "false", "0"]).to_owned(),
                ));
            }
        }
        if self.chance(0.2) {
            let secret = self.string();
            fields.push(("webhookSecret".to_owned(), secret));
        }
        let body = self.damaged(fields);
        self.no_colons = false;
        body
    }

    fn create_token(&mut self) -> String {
        let org = if self.chance(0.6) {
            json(self.pick(&["acme", "globex", "initech"]))
        } else {
            self.string()
        };
        let mut fields = vec![("org".to_owned(), org)];
        if self.chance(0.3) {
            fields.push((
                "admin".to_owned(),
                self.pick(&["true", "false", "1"]).to_owned(),
            ));
        }
        if self.chance(0.5) {
            let d = self.string();
            fields.push(("description".to_owned(), d));
        }
        self.damaged(fields)
    }

    /// Breaks a body the JSON way or the byte way, now and then.
    fn corrupt(&mut self, body: String) -> Vec<u8> {
        match self.rng.gen_range(0..100) {
            0..=3 => {
                let mut b = body.into_bytes();
                let cut = self.rng.gen_range(0..=b.len());
                b.truncate(cut);
                b
            }
            4 => (0..self.rng.gen_range(0..100))
                .map(|_| self.rng.gen())
                .collect(),
            5 => format!("{}{}", "[".repeat(500), "]".repeat(500)).into_bytes(),
            6 => Vec::new(),
            7 => self.value(0).into_bytes(),
            _ => body.into_bytes(),
        }
    }

    /// A path segment, percent-encoded.
    fn segment(&mut self) -> String {
        let raw = self.instance_name();
        percent_encode(&raw)
    }
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Raw object text: keys may repeat.
fn object(fields: &[(String, String)]) -> String {
    let entries: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", json(k)))
        .collect();
    format!("{{{}}}", entries.join(","))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Organisations with a token each (only the first one's is an admin's).
const ORGS: &[&str] = &["acme", "globex", "initech", "umbrella", "hooli"];
/// Instances every organisation has, `Up`, before the requests:
/// `db-0` … `db-9`.
const EXISTING: usize = 10;

/// One generated request: which organisation's token, method, path, body
/// (`None`: none).
type Request = (usize, &'static str, String, Option<Vec<u8>>);

fn requests(gen: &mut Gen) -> Vec<Request> {
    let mut out = Vec::with_capacity(BODIES + BODIES / 10);
    for _ in 0..BODIES {
        let (method, path, body) = match gen.rng.gen_range(0..100) {
            0..=39 => (
                "POST",
                "/api/v1/instances".to_owned(),
                gen.create_instance(),
            ),
            40..=59 => {
                let path = format!("/api/v1/instances/{}", gen.segment());
                ("PUT", path, gen.update_instance())
            }
            60..=74 => ("POST", "/api/v1/sources".to_owned(), gen.create_source()),
            75..=89 => ("POST", "/api/v1/tokens".to_owned(), gen.create_token()),
            _ => {
                let path = format!(
                    "/api/v1/orgs/{}/sources/{}/webhook",
                    gen.segment(),
                    gen.segment()
                );
                ("POST", path, gen.value(0))
            }
        };
        let body = gen.corrupt(body);
        let org = gen.rng.gen_range(0..ORGS.len());
        out.push((org, method, path, Some(body)));
    }
    for _ in 0..BODIES / 10 {
        let name = gen.segment();
        let (method, suffix) = match gen.rng.gen_range(0..8) {
            0 => ("GET", ""),
            1 => ("DELETE", ""),
            2 => ("POST", "/restart"),
            3 => ("POST", "/stop"),
            4 => ("POST", "/start"),
            5 => ("GET", "/history"),
            6 => ("GET", "/credentials"),
            _ => ("GET", "?state="),
        };
        let path = if suffix == "?state=" {
            format!("/api/v1/instances?state={name}")
        } else if gen.chance(0.2) {
            format!("/api/v1/sources/{name}")
        } else {
            format!("/api/v1/instances/{name}{suffix}")
        };
        let org = gen.rng.gen_range(0..ORGS.len());
        out.push((org, method, path, None));
    }
    out
}

#[sqlx::test(migrations = false)]
async fn generated_requests_never_get_5xx_nor_panic(pool: PgPool) {
    let t = test_app(pool).await;
    // A second data plane, so some creates go elsewhere than the default.
    t.state
        .queues
        .create_data_plane_queue("eu_west")
        .await
        .unwrap();
    t.state
        .queues
        .register_data_plane("eu_west", &["hstore".into(), "pg_stat_statements".into()])
        .await
        .unwrap();
    let mut tokens = vec![t.token.clone()];
    for org in &ORGS[1..] {
        tokens.push(t.token_for(org).await);
    }
    for token in &tokens {
        for i in 0..EXISTING {
            let body = format!(r#"{{"name": "db-{i}"}}"#).into_bytes();
            let (status, created) =
                send(t.app.clone(), token, "POST", "/api/v1/instances", body).await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            crate::reports::report(&t, created["id"].as_str().unwrap(), 1, "Created").await;
        }
    }
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(SEED),
        no_colons: false,
    };
    let requests = requests(&mut gen);
    let total = requests.len();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut panics = 0;
    let mut pending = requests.into_iter().enumerate();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < CONCURRENCY {
            let Some((i, (org, method, path, body))) = pending.next() else {
                break;
            };
            let app = t.app.clone();
            let token = tokens[org].clone();
            tasks.spawn(async move {
                let shown = body.as_deref().map(|b| {
                    String::from_utf8_lossy(b)
                        .chars()
                        .take(500)
                        .collect::<String>()
                });
                let (status, resp) = match body {
                    Some(b) => send(app, &token, method, &path, b).await,
                    None => send(app, &token, method, &path, Vec::new()).await,
                };
                (i, method, path, shown, status, resp)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok((i, method, path, body, status, resp)) => {
                *statuses.entry(status.as_u16()).or_default() += 1;
                if status.is_server_error() {
                    failures.push(format!("#{i} {method} {path} {body:?} → {status} {resp}"));
                }
                if status == StatusCode::UNPROCESSABLE_ENTITY
                    && resp["fields"].as_array().is_none_or(Vec::is_empty)
                {
                    failures.push(format!(
                        "#{i} {method} {path} {body:?} → 422 without fields: {resp}"
                    ));
                }
            }
            Err(e) if e.is_panic() => panics += 1,
            Err(e) => failures.push(format!("a request task failed: {e}")),
        }
    }
    let summary: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    println!(
        "API fuzz: {total} requests ({BODIES} with generated bodies): {}; 5xx: {}, panics: {panics}",
        summary.join(" "),
        statuses.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum::<usize>(),
    );
    assert_eq!(panics, 0, "handlers panicked");
    assert!(
        failures.is_empty(),
        "{} failures, the first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        statuses.get(&201).copied().unwrap_or(0) > 50,
        "the generator reaches the success path: {summary:?}"
    );
}
