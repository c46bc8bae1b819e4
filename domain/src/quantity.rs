//! Kubernetes-style quantities (`500m`, `2Gi`, `10G`) and Postgres parameter
//! values with units (`16MB`, `1min`), parsed and put in canonical form so
//! equal values compare equal.

use crate::settings::{self, value, SettingValue, VarType};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}: {expected}")]
pub struct QuantityError {
    pub value: String,
    pub what: &'static str,
    pub expected: std::borrow::Cow<'static, str>,
}

const CPU_EXPECTED: &str = "expected cores like \"1\", \"0.5\" or millicores like \"500m\"";
const BYTES_EXPECTED: &str =
    "expected a byte quantity like \"512Mi\", \"2Gi\", \"10G\" (suffixes Ki Mi Gi Ti Pi, k M G T P)";

/// What [`parse_cpu`] accepts, as a regular expression (the CRD's schema
/// uses it): cores with optional decimals, or whole millicores.
pub const CPU_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$";

/// What [`parse_bytes`] accepts, as a regular expression (the CRD's schema
/// uses it): a decimal number with an optional suffix.
pub const BYTES_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$";

/// `digits` or `digits.digits`: the numbers both patterns allow.
fn is_decimal(num: &str) -> bool {
    let (whole, fraction) = match num.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (num, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// CPU in millicores.
pub fn parse_cpu(value: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError {
        value: value.to_owned(),
        what: "cpu quantity",
        expected: CPU_EXPECTED.into(),
    };
    let v = value;
    let millis = if let Some(m) = v.strip_suffix('m') {
        if !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        m.parse::<u64>().map_err(|_| err())?
    } else {
        if !is_decimal(v) {
            return Err(err());
        }
        let f: f64 = v.parse().map_err(|_| err())?;
        if !f.is_finite() || f < 0.0 {
            return Err(err());
        }
        (f * 1000.0).round() as u64
    };
    if millis == 0 {
        return Err(err());
    }
    Ok(millis)
}

/// A byte quantity (memory, storage) in bytes.
pub fn parse_bytes(value: &str) -> Result<u64, QuantityError> {
    let v = value;
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let err = || QuantityError {
        value: value.to_owned(),
        what: "byte quantity",
        expected: postgres_spelling(num, suffix)
            .map(Into::into)
            .unwrap_or(BYTES_EXPECTED.into()),
    };
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return Err(err()),
    };
    if !is_decimal(num) {
        return Err(err());
    }
    let n: f64 = num.parse().map_err(|_| err())?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

/// What to write instead of a Postgres-style size (`1GB`, `512MB`), which
/// resources do not take: they are Kubernetes quantities.
fn postgres_spelling(num: &str, suffix: &str) -> Option<String> {
    let prefix = match suffix.to_ascii_uppercase().as_str() {
        "KB" => "K",
        "MB" => "M",
        "GB" => "G",
        "TB" => "T",
        "PB" => "P",
        _ => return None,
    };
    let decimal = if prefix == "K" { "k" } else { prefix };
    Some(format!(
        "sizes of resources and storage are Kubernetes quantities: write \"{num}{prefix}i\" (binary, what Postgres calls {num}{prefix}B) or \"{num}{decimal}\" (decimal)"
    ))
}

/// The canonical form of a parameter value, as Postgres reads it: memory in
/// kB, time in ms (`-1`, usually "off", stays `-1`), booleans as `on`/`off`,
/// enums as `SHOW` prints them (`hot_standby` is `replica`); a value Postgres
/// would refuse is only trimmed (enums also lower-cased).
/// `16MB` and `16384kB` both become `16384kB`.
pub fn normalize_setting(name: &str, value: &str) -> String {
    let Some(setting) = settings::lookup(name) else {
        return value.trim().to_owned();
    };
    match settings::parse_value(setting, value) {
        Ok(SettingValue::Bool(b)) => if b { "on" } else { "off" }.to_owned(),
        Ok(SettingValue::Enum(v)) => v.to_owned(),
        Ok(SettingValue::Integer(n)) => normalize_amount(setting, n as f64),
        Ok(SettingValue::Real(r)) => normalize_amount(setting, r),
        Ok(SettingValue::String(_)) => value.trim().to_owned(),
        Err(_) if setting.vartype == VarType::Enum => value.trim().to_ascii_lowercase(),
        Err(_) => value.trim().to_owned(),
    }
}

fn normalize_amount(setting: &settings::Setting, base: f64) -> String {
    if base == -1.0 {
        return "-1".to_owned();
    }
    if let Some(bytes) = value::to_bytes(setting, base) {
        return format!("{}kB", value::format_number(bytes / 1024.0));
    }
    if let Some(ms) = value::to_millis(setting, base) {
        return format!("{}ms", value::format_number(ms));
    }
    value::format_number(base)
}

/// Checks that `value` is one Postgres accepts for the parameter (type,
/// unit, bounds, enum values); the error says what is allowed. Parameters
/// it does not know are not checked.
pub fn check_setting_value(name: &str, value: &str) -> Result<(), String> {
    match settings::lookup(name) {
        Some(setting) => settings::parse_value(setting, value).map(|_| ()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_style_size_is_told_its_kubernetes_spelling() {
        let err = parse_bytes("1GB").unwrap_err().to_string();
        assert!(
            err.contains("write \"1Gi\" (binary, what Postgres calls 1GB) or \"1G\" (decimal)"),
            "{err}"
        );
        let err = parse_bytes("512kb").unwrap_err().to_string();
        assert!(
            err.contains("\"512Ki\"") && err.contains("\"512k\""),
            "{err}"
        );
        assert!(parse_bytes("lots")
            .unwrap_err()
            .to_string()
            .contains("suffixes Ki Mi"));
    }

    #[test]
    fn cpu() {
        assert_eq!(parse_cpu("1"), Ok(1000));
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("0.25"), Ok(250));
        for bad in ["", "0", "-1", "1x", "m", "abc"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("1Gi"), parse_bytes("1024Mi"));
        assert_eq!(parse_bytes("10G"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("1.5Ki"), Ok(1536));
        for bad in ["", "0", "10GB", "Gi", "1 Gi x", "-1Gi"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        let e = parse_bytes("10GB").unwrap_err();
        assert!(e.to_string().contains("Gi"), "{e}");
    }

    #[test]
    fn settings_normalise_to_one_form() {
        assert_eq!(normalize_setting("work_mem", "16MB"), "16384kB");
        assert_eq!(normalize_setting("work_mem", "16384kB"), "16384kB");
        assert_eq!(normalize_setting("work_mem", "16384"), "16384kB");
        assert_eq!(normalize_setting("shared_buffers", "128MB"), "131072kB");
        assert_eq!(normalize_setting("shared_buffers", "16384"), "131072kB");
        assert_eq!(normalize_setting("statement_timeout", "1min"), "60000ms");
        assert_eq!(normalize_setting("statement_timeout", "60s"), "60000ms");
        assert_eq!(normalize_setting("max_connections", "150"), "150");
        assert_eq!(normalize_setting("jit", "true"), "on");
        assert_eq!(normalize_setting("log_min_duration_statement", "-1"), "-1");
        assert_eq!(
            normalize_setting("log_min_duration_statement", "-1ms"),
            "-1"
        );
        assert_eq!(normalize_setting("log_rotation_age", "1d"), "86400000ms");
        assert_eq!(normalize_setting("jit", "Y"), "on");
        assert_eq!(normalize_setting("wal_level", "hot_standby"), "replica");
        assert_eq!(normalize_setting("wal_level", "Nonsense"), "nonsense");
        assert_eq!(normalize_setting("random_page_cost", "1.10"), "1.1");
        assert_eq!(normalize_setting("vacuum_cost_delay", "500us"), "0.5ms");
        assert_eq!(normalize_setting("track_activity_query_size", "2kB"), "2kB");
        // Postgres rounds to whole 8kB pages.
        assert_eq!(normalize_setting("shared_buffers", "1001kB"), "1000kB");
        assert_eq!(normalize_setting("search_path", " a, b "), "a, b");
    }

    #[test]
    fn setting_values_are_checked_against_their_type() {
        assert!(check_setting_value("work_mem", "16MB").is_ok());
        assert!(check_setting_value("work_mem", "16XB")
            .unwrap_err()
            .contains("kB, MB"));
        assert!(check_setting_value("work_mem", "4TB")
            .unwrap_err()
            .contains("between 64kB and 2TB - 1kB"));
        assert!(check_setting_value("max_connections", "many").is_err());
        assert!(check_setting_value("jit", "maybe").is_err());
        assert!(check_setting_value("statement_timeout", "5s").is_ok());
    }

    /// Whether the pattern and the parser agree on `value`: a value the
    /// pattern refuses never parses, and one it accepts parses unless the
    /// amount itself is refused (zero, or under one byte).
    fn agree(pattern: &regex::Regex, parsed: bool, value: &str, amount_ok: bool) -> bool {
        if pattern.is_match(value) {
            parsed || !amount_ok
        } else {
            !parsed
        }
    }

    fn amount(value: &str) -> f64 {
        let num: String = value
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        num.parse().unwrap_or(0.0)
    }

    const SAMPLES: [&str; 24] = [
        "1", "0.5", "500m", "2Gi", "10G", "512Mi", "1.5Ti", "3k", "1Ei", "1E", "500M", "1e3", ".5",
        "1.", "0", "0m", "2GB", "1 Gi", "Gi", "", "1.5m", "-1", "1Pi", "7P",
    ];

    #[test]
    fn the_patterns_and_the_parsers_agree() {
        let cpu = regex::Regex::new(CPU_PATTERN).unwrap();
        let bytes = regex::Regex::new(BYTES_PATTERN).unwrap();
        for v in SAMPLES {
            let a = amount(v);
            assert!(
                agree(&cpu, parse_cpu(v).is_ok(), v, a > 0.0),
                "cpu {v:?}: pattern {} parser {:?}",
                cpu.is_match(v),
                parse_cpu(v)
            );
            assert!(
                agree(&bytes, parse_bytes(v).is_ok(), v, a >= 1.0),
                "bytes {v:?}: pattern {} parser {:?}",
                bytes.is_match(v),
                parse_bytes(v)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_patterns_and_the_parsers_agree_on_any_input(v in "[0-9.mkMGTPEi e-]{0,8}") {
            let cpu = regex::Regex::new(CPU_PATTERN).unwrap();
            let bytes = regex::Regex::new(BYTES_PATTERN).unwrap();
            let a = amount(&v);
            proptest::prop_assert!(agree(&cpu, parse_cpu(&v).is_ok(), &v, a > 0.0), "cpu {:?}", v);
            proptest::prop_assert!(agree(&bytes, parse_bytes(&v).is_ok(), &v, a >= 1.0), "bytes {:?}", v);
        }
    }
}
