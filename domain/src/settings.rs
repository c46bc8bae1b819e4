//! PostgreSQL 15's parameters, generated from a real server's `pg_settings`
//! by `scripts/gen-pg-settings.sh` into `domain/data/pg15_settings.tsv`:
//! context, type, unit, bounds, enum values and built-in defaults.
//! [`value`] reads a value the way the server does.

pub mod value;

use std::collections::BTreeMap;
use std::sync::OnceLock;

pub use value::{parse_value, SettingValue};

const PG15_SETTINGS: &str = include_str!("../data/pg15_settings.tsv");

/// `pg_settings.context`: when a parameter can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Internal,
    Postmaster,
    Sighup,
    SuperuserBackend,
    Backend,
    Superuser,
    User,
}

/// `pg_settings.vartype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarType {
    Bool,
    Integer,
    Real,
    Enum,
    String,
}

/// One parameter as PostgreSQL 15 describes it in `pg_settings`.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub name: &'static str,
    pub context: Context,
    pub vartype: VarType,
    /// The base unit of integer and real values (`8kB`, `kB`, `ms`, `s`, …);
    /// empty when the parameter has none.
    pub unit: &'static str,
    /// Bounds of integer and real values, in the base unit.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The values an enum lists (`pg_settings.enumvals`).
    pub enum_values: Vec<&'static str>,
    /// Enum spellings Postgres accepts besides the listed ones, or that mean
    /// another listed value: (spelling, the value `SHOW` prints).
    pub aliases: Vec<(&'static str, &'static str)>,
    /// The built-in default (`pg_settings.boot_val`), in the base unit.
    pub boot_val: &'static str,
    /// Whether `ALTER SYSTEM` (and so the configuration file) may set it:
    /// not internal parameters, nor per-transaction ones such as
    /// `transaction_isolation`.
    pub alter_system: bool,
}

/// Parameters a user may not set: pgplane owns them (where the data lives,
/// how to reach it, how clients authenticate) or Postgres does.
pub const RESERVED: &[&str] = &[
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "external_pid_file",
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_crl_dir",
    "ssl_passphrase_command",
    "password_encryption",
    "archive_mode",
    "archive_command",
    "restore_command",
    "archive_library",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "wal_log_hints",
    "cluster_name",
    "krb_server_keyfile",
    "dynamic_library_path",
    "local_preload_libraries",
    "session_preload_libraries",
];

fn table() -> &'static BTreeMap<&'static str, Setting> {
    static TABLE: OnceLock<BTreeMap<&'static str, Setting>> = OnceLock::new();
    TABLE.get_or_init(|| {
        PG15_SETTINGS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(parse_line)
            .map(|s| (s.name, s))
            .collect()
    })
}

/// One line of the generated table (see `scripts/gen-pg-settings.sh` for
/// the columns).
fn parse_line(line: &'static str) -> Setting {
    let mut cols = line.split('\t');
    let mut col = || cols.next().unwrap_or_default();
    let name = col();
    let context = match col() {
        "internal" => Context::Internal,
        "postmaster" => Context::Postmaster,
        "sighup" => Context::Sighup,
        "superuser-backend" => Context::SuperuserBackend,
        "backend" => Context::Backend,
        "superuser" => Context::Superuser,
        _ => Context::User,
    };
    let vartype = match col() {
        "bool" => VarType::Bool,
        "integer" => VarType::Integer,
        "real" => VarType::Real,
        "enum" => VarType::Enum,
        _ => VarType::String,
    };
    let unit = col();
    let min = col().parse().ok();
    // pg_settings prints reals with six digits: its largest double
    // (1.79769e+308) stands for "no upper bound".
    let max = col()
        .parse::<f64>()
        .ok()
        .map(|m| if m >= 1.79769e308 { f64::MAX } else { m });
    let enum_values = match (vartype, col()) {
        (VarType::Enum, values) => values.split(',').collect(),
        _ => Vec::new(),
    };
    let boot_val = col();
    let aliases = col().split(',').filter_map(|a| a.split_once('=')).collect();
    let alter_system = col() != "f";
    Setting {
        name,
        context,
        vartype,
        unit,
        min,
        max,
        enum_values,
        aliases,
        boot_val,
        alter_system,
    }
}

/// Looks a parameter up by name (case-insensitive, as Postgres does).
pub fn lookup(name: &str) -> Option<&'static Setting> {
    let t = table();
    t.get(name)
        .or_else(|| t.values().find(|s| s.name.eq_ignore_ascii_case(name)))
}

pub fn is_reserved(name: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Whether changing the parameter needs a server restart.
pub fn needs_restart(name: &str) -> bool {
    lookup(name).is_some_and(|s| s.context == Context::Postmaster)
}

pub fn all() -> impl Iterator<Item = &'static Setting> {
    table().values()
}

impl Setting {
    /// The built-in default, parsed.
    pub fn default_value(&self) -> Option<SettingValue> {
        parse_value(self, self.boot_val).ok()
    }
}

/// Contrib modules meant for `shared_preload_libraries` besides the
/// libraries of [`crate::extension::REVIEWED`]: they work only when
/// preloaded (`auth_delay`, `passwordcheck`, `auto_explain` for every
/// session) or do more (`pg_prewarm`'s autoprewarm worker).
pub const CONTRIB_PRELOAD_LIBRARIES: &[&str] =
    &["auth_delay", "auto_explain", "passwordcheck", "pg_prewarm"];

/// Every library a user may preload, sorted.
pub fn preloadable_libraries() -> Vec<&'static str> {
    let mut libs: Vec<&'static str> = crate::extension::REVIEWED
        .iter()
        .map(|r| r.library)
        .chain(CONTRIB_PRELOAD_LIBRARIES.iter().copied())
        .collect();
    libs.sort_unstable();
    libs.dedup();
    libs
}

/// The parameter name closest to a misspelt one, if any is close.
pub fn suggest_name(name: &str) -> Option<&'static str> {
    closest(name, all().map(|s| s.name))
}

/// The candidate closest to `input` (case-insensitive edit distance, at most
/// a third of the input's length and at least 1), or one it is a prefix of.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Longer than any name or value worth suggesting for: not compared.
    const LONGEST: usize = 64;
    if input.len() > LONGEST {
        return None;
    }
    let input = input.to_ascii_lowercase();
    let len = input.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| !c.is_empty())
        .filter_map(|c| {
            let lower = c.to_ascii_lowercase();
            if input.len() >= 3 && lower.starts_with(&input) {
                return Some((lower.len() - input.len(), c));
            }
            // The distance is at least the difference in length.
            if lower.chars().count().abs_diff(len) > limit {
                return None;
            }
            let d = edit_distance(&input, &lower);
            (d <= limit).then_some((d, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance with adjacent transpositions counting as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_table_is_postgres_15() {
        assert!(PG15_SETTINGS
            .starts_with("# generated by scripts/gen-pg-settings.sh from PostgreSQL 15."));
        assert!(all().count() > 300);
    }

    #[test]
    fn contexts_match_postgres() {
        assert!(needs_restart("max_connections"));
        assert!(needs_restart("shared_preload_libraries"));
        assert!(needs_restart("shared_buffers"));
        assert!(!needs_restart("work_mem"));
        assert!(!needs_restart("log_min_duration_statement"));
        assert_eq!(lookup("WORK_MEM").map(|s| s.unit), Some("kB"));
        assert!(lookup("no_such_parameter").is_none());
    }

    #[test]
    fn bounds_enum_values_and_defaults_come_from_the_server() {
        let sb = lookup("shared_buffers").unwrap();
        assert_eq!(
            (sb.vartype, sb.unit, sb.min, sb.max),
            (VarType::Integer, "8kB", Some(16.0), Some(1073741823.0))
        );
        assert_eq!(sb.default_value(), Some(SettingValue::Integer(16384)));
        let wal_level = lookup("wal_level").unwrap();
        assert_eq!(wal_level.enum_values, ["minimal", "replica", "logical"]);
        assert!(wal_level.aliases.contains(&("hot_standby", "replica")));
        assert_eq!(
            lookup("ssl_max_protocol_version").unwrap().enum_values[0],
            "",
            "the empty value is one of its values"
        );
        assert_eq!(lookup("cpu_tuple_cost").unwrap().max, Some(f64::MAX));
        assert_eq!(lookup("max_wal_senders").unwrap().boot_val, "10");
    }

    #[test]
    fn suggestions_are_close_names() {
        assert_eq!(suggest_name("shared_buffer"), Some("shared_buffers"));
        assert_eq!(suggest_name("work_mme"), Some("work_mem"));
        assert_eq!(suggest_name("no_such_param"), None);
        assert_eq!(
            closest("replicas", ["minimal", "replica", "logical"]),
            Some("replica")
        );
        assert_eq!(
            closest("rep", ["minimal", "replica", "logical"]),
            Some("replica")
        );
        assert_eq!(closest("zzz", ["minimal", "replica", "logical"]), None);
    }
}
