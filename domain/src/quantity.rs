//! Kubernetes-style quantities (`500m`, `2Gi`, `10G`) and Postgres parameter
//! values with units (`16MB`, `1min`), parsed and put in canonical form so
//! equal values compare equal.

use crate::settings;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}: {expected}")]
pub struct QuantityError {
    pub value: String,
    pub what: &'static str,
    pub expected: &'static str,
}

const CPU_EXPECTED: &str = "expected cores like \"1\", \"0.5\" or millicores like \"500m\"";
const BYTES_EXPECTED: &str =
    "expected a byte quantity like \"512Mi\", \"2Gi\", \"10G\" (suffixes Ki Mi Gi Ti Pi, k M G T P)";

/// CPU in millicores.
pub fn parse_cpu(value: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError {
        value: value.to_owned(),
        what: "cpu quantity",
        expected: CPU_EXPECTED,
    };
    let v = value.trim();
    let millis = if let Some(m) = v.strip_suffix('m') {
        m.parse::<u64>().map_err(|_| err())?
    } else {
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
    let err = || QuantityError {
        value: value.to_owned(),
        what: "byte quantity",
        expected: BYTES_EXPECTED,
    };
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
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
    let n: f64 = num.parse().map_err(|_| err())?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

/// Memory units Postgres accepts, in kB.
fn memory_unit_kb(unit: &str) -> Option<f64> {
    Some(match unit {
        "B" => 1.0 / 1024.0,
        "kB" => 1.0,
        "8kB" => 8.0,
        "16MB" => 16.0 * 1024.0,
        "MB" => 1024.0,
        "GB" => 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// Time units Postgres accepts, in ms.
fn time_unit_ms(unit: &str) -> Option<f64> {
    Some(match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    })
}

fn split_number(value: &str) -> (&str, &str) {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(v.len());
    let (n, u) = v.split_at(split);
    (n, u.trim())
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// The canonical form of a parameter value: memory in kB, time in ms,
/// booleans as `on`/`off`, enums lower-case; anything unparseable unchanged.
/// `16MB` and `16384kB` both become `16384kB`.
pub fn normalize_setting(name: &str, value: &str) -> String {
    let Some(setting) = settings::lookup(name) else {
        return value.trim().to_owned();
    };
    match setting.vartype {
        "bool" => match value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" | "t" | "y" => "on".to_owned(),
            "off" | "false" | "no" | "0" | "f" | "n" => "off".to_owned(),
            other => other.to_owned(),
        },
        "enum" => value.trim().to_ascii_lowercase(),
        "integer" | "real" => {
            normalize_with_unit(setting.unit, value).unwrap_or_else(|| value.trim().to_owned())
        }
        _ => value.trim().to_owned(),
    }
}

fn normalize_with_unit(base_unit: &str, value: &str) -> Option<String> {
    let (num, unit) = split_number(value);
    let n: f64 = num.parse().ok()?;
    if n == -1.0 && unit.is_empty() {
        return Some("-1".to_owned());
    }
    if let Some(base) = memory_unit_kb(base_unit) {
        let u = if unit.is_empty() {
            base
        } else {
            memory_unit_kb(unit)?
        };
        return Some(format!("{}kB", format_number(n * u)));
    }
    if let Some(base) = time_unit_ms(base_unit) {
        let u = if unit.is_empty() {
            base
        } else {
            time_unit_ms(unit)?
        };
        return Some(format!("{}ms", format_number(n * u)));
    }
    unit.is_empty().then(|| format_number(n))
}

/// Checks that `value` is acceptable for the parameter's type; the error says
/// what is expected.
pub fn check_setting_value(name: &str, value: &str) -> Result<(), String> {
    let Some(setting) = settings::lookup(name) else {
        return Ok(());
    };
    match setting.vartype {
        "bool" => match normalize_setting(name, value).as_str() {
            "on" | "off" => Ok(()),
            _ => Err("expected a boolean (on/off, true/false)".to_owned()),
        },
        "integer" | "real" => {
            let (num, unit) = split_number(value);
            let number_ok = if setting.vartype == "integer" {
                num.parse::<i64>().is_ok() || (!unit.is_empty() && num.parse::<f64>().is_ok())
            } else {
                num.parse::<f64>().is_ok()
            };
            let unit_ok = unit.is_empty()
                || (memory_unit_kb(setting.unit).is_some() && memory_unit_kb(unit).is_some())
                || (time_unit_ms(setting.unit).is_some() && time_unit_ms(unit).is_some());
            if number_ok && unit_ok {
                Ok(())
            } else if memory_unit_kb(setting.unit).is_some() {
                Err("expected a number with an optional unit B, kB, MB, GB or TB".to_owned())
            } else if time_unit_ms(setting.unit).is_some() {
                Err("expected a number with an optional unit us, ms, s, min, h or d".to_owned())
            } else {
                Err(format!(
                    "expected {} {}",
                    if setting.vartype == "integer" {
                        "an"
                    } else {
                        "a"
                    },
                    setting.vartype
                ))
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn setting_values_are_checked_against_their_type() {
        assert!(check_setting_value("work_mem", "16MB").is_ok());
        assert!(check_setting_value("work_mem", "16XB")
            .unwrap_err()
            .contains("kB, MB"));
        assert!(check_setting_value("max_connections", "many").is_err());
        assert!(check_setting_value("jit", "maybe").is_err());
        assert!(check_setting_value("statement_timeout", "5s").is_ok());
    }
}
