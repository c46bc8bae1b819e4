//! Parameter values read the way PostgreSQL 15's `guc.c` reads them, so a
//! value pgplane accepts is one the server accepts, meaning the same thing:
//!
//! - booleans (`parse_bool`): `on`, `off`, `1`, `0`, and any prefix of
//!   `true`, `false`, `yes`, `no` (`of` for `off`), case-insensitive;
//! - integers (`parse_int`): C's `strtol` (decimal, `0x` hex, leading-`0`
//!   octal), or `strtod` for fractions and exponents; then an optional unit
//!   (case-sensitive), converted to the parameter's base unit with
//!   `convert_to_base_unit`'s rounding, rounded half to even (`rint`) and
//!   checked against the bounds;
//! - reals (`parse_real`): `strtod`, unit, bounds;
//! - enums: the listed values and the hidden spellings, case-insensitive,
//!   never a prefix.
//!
//! Only what Postgres skips is skipped: whitespace before a number, between
//! it and its unit, and after the unit.

use super::{closest, Setting, VarType};

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub enum SettingValue {
    Bool(bool),
    /// In the parameter's base unit.
    Integer(i64),
    /// In the parameter's base unit.
    Real(f64),
    /// The spelling `SHOW` prints (`hot_standby` reads as `replica`).
    Enum(&'static str),
    String(String),
}

impl SettingValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            SettingValue::Integer(n) => Some(*n as f64),
            SettingValue::Real(r) => Some(*r),
            _ => None,
        }
    }
}

/// Reads `value` for `setting`; the error says what is allowed.
pub fn parse_value(setting: &Setting, value: &str) -> Result<SettingValue, String> {
    match setting.vartype {
        VarType::Bool => parse_bool(value).map(SettingValue::Bool).ok_or_else(|| {
            format!("expected a boolean (on/off, true/false, yes/no, 1/0), got {value:?}")
        }),
        VarType::Integer => {
            parse_number(setting, value, true).map(|n| SettingValue::Integer(n as i64))
        }
        VarType::Real => parse_number(setting, value, false).map(SettingValue::Real),
        VarType::Enum => parse_enum(setting, value).map(SettingValue::Enum),
        VarType::String => Ok(SettingValue::String(value.to_owned())),
    }
}

/// `parse_bool_with_len`.
pub fn parse_bool(value: &str) -> Option<bool> {
    let v = value.to_ascii_lowercase();
    let prefix_of = |word: &str| word.starts_with(v.as_str());
    match v.as_bytes().first()? {
        b't' if prefix_of("true") => Some(true),
        b'f' if prefix_of("false") => Some(false),
        b'y' if prefix_of("yes") => Some(true),
        b'n' if prefix_of("no") => Some(false),
        // "o" alone is ambiguous.
        b'o' if v == "on" => Some(true),
        b'o' if v.len() >= 2 && prefix_of("off") => Some(false),
        b'1' if v.len() == 1 => Some(true),
        b'0' if v.len() == 1 => Some(false),
        _ => None,
    }
}

fn parse_enum(setting: &Setting, value: &str) -> Result<&'static str, String> {
    let alias = setting
        .aliases
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(value))
        .map(|(_, canonical)| *canonical);
    let listed = setting
        .enum_values
        .iter()
        .find(|v| v.eq_ignore_ascii_case(value))
        .copied();
    alias.or(listed).ok_or_else(|| {
        let mut message = format!(
            "expected one of: {} (got {value:?})",
            list_values(&setting.enum_values)
        );
        if let Some(s) = closest(value, setting.enum_values.iter().copied()) {
            message.push_str(&format!("; did you mean {s:?}?"));
        }
        message
    })
}

/// Enum values for a message: as they are, quoted when empty or spaced.
pub(crate) fn list_values(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| {
            if v.is_empty() || v.contains(' ') {
                format!("{v:?}")
            } else {
                (*v).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `parse_int` / `parse_real` followed by the bounds check; the result is in
/// the base unit.
fn parse_number(setting: &Setting, value: &str, integer: bool) -> Result<f64, String> {
    let units = Units::of(setting.unit);
    let bytes = value.as_bytes();
    let syntax = || syntax_error(setting, units, value, integer);
    let (number, end) = read_number(bytes, integer).ok_or_else(syntax)?;
    let rest = skip_space(&bytes[end..]);
    let mut base = number;
    if !rest.is_empty() {
        let units = units.ok_or_else(syntax)?;
        base = units
            .to_base(number, rest)
            .ok_or_else(|| unit_error(units, value, end))?;
    }
    if integer {
        base = base.round_ties_even();
    }
    let below = setting.min.is_some_and(|min| base < min);
    let above = setting.max.is_some_and(|max| base > max);
    let out_of_int = integer && (base > i32::MAX as f64 || base < i32::MIN as f64);
    if below || above || out_of_int {
        return Err(range_error(setting, value, base));
    }
    Ok(base)
}

/// The number at the start of `s` and where it ends, as `parse_int` or
/// `parse_real` finds it; `None` for no number, an overflow or NaN.
fn read_number(s: &[u8], integer: bool) -> Option<(f64, usize)> {
    if integer {
        let (n, end, overflow) = strtol(s);
        if !overflow && !matches!(s.get(end), Some(b'.' | b'e' | b'E')) {
            return (end > 0).then_some((n as f64, end));
        }
    }
    let (f, end, erange) = strtod(s);
    (end > 0 && !erange && !f.is_nan()).then_some((f, end))
}

/// C's `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| is_space(**b)).count();
    &s[n..]
}

/// C's `strtol(s, &end, 0)` on a 64-bit `long`: (value, end, overflowed).
/// `end` is 0 when there is no number.
fn strtol(s: &[u8]) -> (i64, usize, bool) {
    let mut i = s.iter().take_while(|b| is_space(**b)).count();
    let negative = s.get(i) == Some(&b'-');
    if matches!(s.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let radix = match (s.get(i), s.get(i + 1), s.get(i + 2)) {
        (Some(b'0'), Some(b'x' | b'X'), Some(h)) if h.is_ascii_hexdigit() => {
            i += 2;
            16
        }
        (Some(b'0'), _, _) => 8,
        _ => 10,
    };
    let start = i;
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    while let Some(d) = s.get(i).and_then(|b| (*b as char).to_digit(radix)) {
        match magnitude
            .checked_mul(u64::from(radix))
            .and_then(|m| m.checked_add(u64::from(d)))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start {
        return (0, 0, false);
    }
    let limit = if negative {
        i64::MAX as u64 + 1
    } else {
        i64::MAX as u64
    };
    if overflow || magnitude > limit {
        let saturated = if negative { i64::MIN } else { i64::MAX };
        return (saturated, i, true);
    }
    let value = if negative {
        (magnitude as i64).wrapping_neg()
    } else {
        magnitude as i64
    };
    (value, i, false)
}

/// C's `strtod`: (value, end, ERANGE). Decimal and hex floats, `inf`,
/// `infinity` and `nan`; `end` is 0 when there is no number.
fn strtod(s: &[u8]) -> (f64, usize, bool) {
    let lead = s.iter().take_while(|b| is_space(**b)).count();
    let mut i = lead;
    let negative = s.get(i) == Some(&b'-');
    if matches!(s.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let sign = if negative { -1.0 } else { 1.0 };
    let word =
        |w: &str| s.len() >= i + w.len() && s[i..i + w.len()].eq_ignore_ascii_case(w.as_bytes());
    if word("infinity") {
        return (sign * f64::INFINITY, i + 8, false);
    }
    if word("inf") {
        return (sign * f64::INFINITY, i + 3, false);
    }
    if word("nan") {
        let mut end = i + 3;
        if s.get(end) == Some(&b'(') {
            let close = s[end..]
                .iter()
                .position(|b| *b == b')')
                .filter(|&p| s[end + 1..end + p].iter().all(u8::is_ascii_alphanumeric));
            if let Some(p) = close {
                end += p + 1;
            }
        }
        return (f64::NAN, end, false);
    }
    let hex_start = matches!((s.get(i), s.get(i + 1)), (Some(b'0'), Some(b'x' | b'X')));
    if hex_start {
        if let Some((v, end)) = hex_float(s, i + 2) {
            return finish(sign * v, end, v != 0.0);
        }
    }
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let int_digits = digits(i);
    let mut end = i + int_digits;
    let mut frac_digits = 0;
    if s.get(end) == Some(&b'.') {
        frac_digits = digits(end + 1);
        if int_digits + frac_digits > 0 {
            end += 1 + frac_digits;
        }
    }
    if int_digits + frac_digits == 0 {
        return (0.0, 0, false);
    }
    if matches!(s.get(end), Some(b'e' | b'E')) {
        let mut e = end + 1;
        if matches!(s.get(e), Some(b'-' | b'+')) {
            e += 1;
        }
        let exp_digits = digits(e);
        if exp_digits > 0 {
            end = e + exp_digits;
        }
    }
    let text = std::str::from_utf8(&s[lead..end]).unwrap_or_default();
    let value: f64 = text.parse().unwrap_or(f64::NAN);
    let nonzero = s[i..end]
        .iter()
        .take(int_digits + frac_digits + 1)
        .any(|b| (b'1'..=b'9').contains(b));
    finish(value, end, nonzero)
}

/// ERANGE as glibc sets it: an overflow to infinity, or an underflow to a
/// subnormal or zero from a non-zero number.
fn finish(value: f64, end: usize, nonzero: bool) -> (f64, usize, bool) {
    let erange = value.is_infinite() || (nonzero && value.abs() < f64::MIN_POSITIVE);
    (value, end, erange)
}

/// A hex float's digits after `0x` (`1.8p3`): (magnitude, end).
fn hex_float(s: &[u8], from: usize) -> Option<(f64, usize)> {
    let mut i = from;
    let mut value = 0.0f64;
    let mut any = false;
    while let Some(d) = s.get(i).and_then(|b| (*b as char).to_digit(16)) {
        value = value * 16.0 + f64::from(d);
        any = true;
        i += 1;
    }
    if s.get(i) == Some(&b'.') {
        let mut scale = 1.0 / 16.0;
        let mut j = i + 1;
        while let Some(d) = s.get(j).and_then(|b| (*b as char).to_digit(16)) {
            value += f64::from(d) * scale;
            scale /= 16.0;
            any = true;
            j += 1;
        }
        if any {
            i = j;
        }
    }
    if !any {
        return None;
    }
    if matches!(s.get(i), Some(b'p' | b'P')) {
        let mut e = i + 1;
        let negative = s.get(e) == Some(&b'-');
        if matches!(s.get(e), Some(b'-' | b'+')) {
            e += 1;
        }
        let n = s[e..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n > 0 {
            let exp: i32 = std::str::from_utf8(&s[e..e + n])
                .ok()?
                .parse()
                .unwrap_or(i32::MAX);
            value *= 2f64.powi(if negative { -exp } else { exp });
            i = e + n;
        }
    }
    Some((value, i))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnitKind {
    Memory,
    Time,
}

/// `memory_unit_conversion_table` or `time_unit_conversion_table` for one
/// base unit: user units from the largest, with their multipliers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Units {
    pub kind: UnitKind,
    table: &'static [(&'static str, f64)],
}

const KB: f64 = 1024.0;
const MEMORY_B: &[(&str, f64)] = &[
    ("TB", KB * KB * KB * KB),
    ("GB", KB * KB * KB),
    ("MB", KB * KB),
    ("kB", KB),
    ("B", 1.0),
];
const MEMORY_KB: &[(&str, f64)] = &[
    ("TB", KB * KB * KB),
    ("GB", KB * KB),
    ("MB", KB),
    ("kB", 1.0),
    ("B", 1.0 / KB),
];
const MEMORY_MB: &[(&str, f64)] = &[
    ("TB", KB * KB),
    ("GB", KB),
    ("MB", 1.0),
    ("kB", 1.0 / KB),
    ("B", 1.0 / (KB * KB)),
];
/// Pages of 8kB (`BLCKSZ`, and `XLOG_BLCKSZ` for WAL).
const MEMORY_8KB: &[(&str, f64)] = &[
    ("TB", (KB * KB * KB) / 8.0),
    ("GB", (KB * KB) / 8.0),
    ("MB", KB / 8.0),
    ("kB", 1.0 / 8.0),
    ("B", 1.0 / 8192.0),
];
const TIME_MS: &[(&str, f64)] = &[
    ("d", 86_400_000.0),
    ("h", 3_600_000.0),
    ("min", 60_000.0),
    ("s", 1000.0),
    ("ms", 1.0),
    ("us", 1.0 / 1000.0),
];
const TIME_S: &[(&str, f64)] = &[
    ("d", 86_400.0),
    ("h", 3600.0),
    ("min", 60.0),
    ("s", 1.0),
    ("ms", 1.0 / 1000.0),
    ("us", 1.0 / (1000.0 * 1000.0)),
];
const TIME_MIN: &[(&str, f64)] = &[
    ("d", 1440.0),
    ("h", 60.0),
    ("min", 1.0),
    ("s", 1.0 / 60.0),
    ("ms", 1.0 / (1000.0 * 60.0)),
    ("us", 1.0 / (1000.0 * 1000.0 * 60.0)),
];

/// `MAX_UNIT_LEN`: a unit longer than this is no unit.
const MAX_UNIT_LEN: usize = 3;

impl Units {
    pub(crate) fn of(base: &str) -> Option<Units> {
        let (kind, table) = match base {
            "B" => (UnitKind::Memory, MEMORY_B),
            "kB" => (UnitKind::Memory, MEMORY_KB),
            "MB" => (UnitKind::Memory, MEMORY_MB),
            "8kB" => (UnitKind::Memory, MEMORY_8KB),
            "ms" => (UnitKind::Time, TIME_MS),
            "s" => (UnitKind::Time, TIME_S),
            "min" => (UnitKind::Time, TIME_MIN),
            _ => return None,
        };
        Some(Units { kind, table })
    }

    /// `convert_to_base_unit`: a fraction is rounded to the nearest multiple
    /// of the next smaller unit (`1.5GB` is `1536MB`).
    fn to_base(self, value: f64, unit: &[u8]) -> Option<f64> {
        let len = unit.iter().take_while(|b| !is_space(**b)).count();
        if len > MAX_UNIT_LEN || !skip_space(&unit[len..]).is_empty() {
            return None;
        }
        let unit = &unit[..len];
        let i = self.table.iter().position(|(u, _)| u.as_bytes() == unit)?;
        let converted = value * self.table[i].1;
        Some(match self.table.get(i + 1) {
            Some((_, next)) => (converted / next).round_ties_even() * next,
            None => converted,
        })
    }

    /// The multiplier of a user unit into the base unit.
    fn multiplier(self, unit: &str) -> f64 {
        self.table
            .iter()
            .find(|(u, _)| *u == unit)
            .map_or(1.0, |(_, m)| *m)
    }

    /// "B, kB, MB, GB or TB", smallest first.
    fn names(self) -> String {
        let names: Vec<&str> = self.table.iter().rev().map(|(u, _)| *u).collect();
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        format!("{} or {last}", rest.join(", "))
    }

    /// A unit a misspelt one probably meant: the same letters in another
    /// case (`mb`), a binary prefix (`Gi`, `GiB`), or a word (`sec`).
    fn suggest(self, unit: &str) -> Option<&'static str> {
        let lower = unit.to_ascii_lowercase();
        let stem = lower
            .strip_suffix("ib")
            .or_else(|| lower.strip_suffix('i'))
            .map(|s| format!("{s}b"))
            .unwrap_or_else(|| lower.clone());
        let word = match lower.as_str() {
            "sec" | "secs" | "second" | "seconds" => "s",
            "m" | "mins" | "minute" | "minutes" => "min",
            "hr" | "hrs" | "hour" | "hours" => "h",
            "day" | "days" => "d",
            "msec" | "msecs" => "ms",
            "usec" | "usecs" => "us",
            _ => "",
        };
        self.table.iter().map(|(u, _)| *u).find(|u| {
            let u = u.to_ascii_lowercase();
            u == lower || u == stem || u == word
        })
    }
}

fn syntax_error(setting: &Setting, units: Option<Units>, value: &str, integer: bool) -> String {
    let what = if integer { "an integer" } else { "a number" };
    match units {
        Some(u) => format!(
            "expected {what} with an optional unit {} (a number alone is in units of {}), got {value:?}",
            u.names(),
            setting.unit
        ),
        None => format!(
            "expected {what} ({} takes no unit), got {value:?}",
            setting.name
        ),
    }
}

fn unit_error(units: Units, value: &str, number_end: usize) -> String {
    let unit = value[number_end..].trim();
    let mut message = format!(
        "{value:?} has an invalid unit {unit:?}: use {} (case-sensitive)",
        units.names()
    );
    if let Some(u) = units.suggest(unit) {
        message.push_str(&format!(
            "; did you mean \"{}{u}\"?",
            value[..number_end].trim()
        ));
    }
    message
}

fn range_error(setting: &Setting, value: &str, base: f64) -> String {
    let min = setting.min.map(|m| format_amount(setting, m));
    let bounds = match (min, setting.max) {
        (Some(min), Some(max)) if max < f64::MAX => {
            format!("between {min} and {}", format_amount(setting, max))
        }
        (Some(min), _) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {}", format_amount(setting, max)),
        (None, None) => format!("between {} and {}", i32::MIN, i32::MAX),
    };
    let meaning = format_amount(setting, base);
    let got = if base.is_finite() && meaning != value.trim() && Units::of(setting.unit).is_some() {
        format!("{value:?} = {meaning}")
    } else {
        format!("{value:?}")
    };
    format!("must be {bounds} (got {got})")
}

/// An amount in the base unit, written with the largest unit that keeps it
/// exact (`131072` pages of 8kB is `1GB`); one unit short of a round amount
/// is written so (`8TB - 8kB`), and other long numbers get an approximation.
/// Zero and negative amounts (which usually mean "off") have no unit.
pub(crate) fn format_amount(setting: &Setting, base: f64) -> String {
    let Some(units) = Units::of(setting.unit) else {
        return format_number(base);
    };
    if base <= 0.0 || !base.is_finite() {
        return format_number(base);
    }
    // In the smallest unit: bytes or microseconds.
    let smallest = units.table.last().map_or(1.0, |(_, m)| *m);
    let in_smallest = base / smallest;
    let exact = exact_in_units(units, in_smallest);
    let digits = exact.chars().take_while(char::is_ascii_digit).count();
    if digits < 7 {
        return exact;
    }
    let base_unit_in_smallest = 1.0 / smallest;
    let next = exact_in_units(units, in_smallest + base_unit_in_smallest);
    if next.chars().take_while(char::is_ascii_digit).count() < 5 {
        return format!("{next} - {}", exact_in_units(units, base_unit_in_smallest));
    }
    let (unit, m) = units
        .table
        .iter()
        .find(|(_, m)| in_smallest >= m / smallest)
        .copied()
        .unwrap_or(("", 1.0));
    let approx = (in_smallest * smallest / m * 10.0).round() / 10.0;
    format!("{exact} (about {}{unit})", format_number(approx))
}

/// `amount` (in the smallest unit) in the largest unit that divides it.
fn exact_in_units(units: Units, amount: f64) -> String {
    let smallest = units.table.last().map_or(1.0, |(_, m)| *m);
    for (unit, m) in units.table {
        let size = (m / smallest).round();
        if amount >= size && (amount / size).fract() == 0.0 {
            return format!("{}{unit}", format_number(amount / size));
        }
    }
    let (unit, _) = units.table.last().copied().unwrap_or(("", 1.0));
    format!("{}{unit}", format_number(amount))
}

/// Whole numbers without a fraction, others as Rust prints them.
pub(crate) fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// The value in bytes of a memory parameter's `base` amount.
pub(crate) fn to_bytes(setting: &Setting, base: f64) -> Option<f64> {
    let units = Units::of(setting.unit)?;
    (units.kind == UnitKind::Memory).then(|| base / units.multiplier("B"))
}

/// The value in milliseconds of a time parameter's `base` amount.
pub(crate) fn to_millis(setting: &Setting, base: f64) -> Option<f64> {
    let units = Units::of(setting.unit)?;
    (units.kind == UnitKind::Time).then(|| base / units.multiplier("ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::lookup;

    fn parse(name: &str, value: &str) -> Result<SettingValue, String> {
        parse_value(lookup(name).unwrap(), value)
    }

    fn int(name: &str, value: &str) -> Option<i64> {
        match parse(name, value) {
            Ok(SettingValue::Integer(n)) => Some(n),
            _ => None,
        }
    }

    #[test]
    fn booleans_take_postgres_spellings_and_unique_prefixes() {
        for (v, want) in [
            ("on", Some(true)),
            ("OFF", Some(false)),
            ("of", Some(false)),
            ("o", None),
            ("onn", None),
            ("t", Some(true)),
            ("TrU", Some(true)),
            ("truee", None),
            ("y", Some(true)),
            ("ye", Some(true)),
            ("n", Some(false)),
            ("fa", Some(false)),
            ("1", Some(true)),
            ("0", Some(false)),
            ("01", None),
            (" on", None),
            ("", None),
            ("maybe", None),
        ] {
            assert_eq!(parse_bool(v), want, "{v:?}");
        }
    }

    #[test]
    fn integers_read_like_strtol_with_units_and_rounding() {
        let cases: &[(&str, &str, Option<i64>)] = &[
            ("max_connections", "150", Some(150)),
            ("max_connections", " 150 ", Some(150)),
            ("max_connections", "+150", Some(150)),
            ("max_connections", "0x10", Some(16)),
            ("max_connections", "010", Some(8)),
            ("max_connections", "08", None),
            ("max_connections", "1e2", Some(100)),
            ("max_connections", "2.5", Some(2)),
            ("max_connections", "3.5", Some(4)),
            ("max_connections", ".5e1", Some(5)),
            ("max_connections", " .5", None),
            ("max_connections", "150 connections", None),
            ("max_connections", "nan", None),
            ("work_mem", "16MB", Some(16384)),
            ("work_mem", "16 MB", Some(16384)),
            ("work_mem", "16MB ", Some(16384)),
            ("work_mem", "16mb", None),
            ("work_mem", "1.5GB", Some(1536 * 1024)),
            ("work_mem", "1.0001GB", Some(1024 * 1024)),
            ("work_mem", "65537B", Some(64)),
            ("work_mem", "16XB", None),
            ("shared_buffers", "128MB", Some(16384)),
            ("shared_buffers", "16384", Some(16384)),
            ("shared_buffers", "132kB", Some(16)),
            ("shared_buffers", "1GB", Some(131072)),
            ("statement_timeout", "1min", Some(60000)),
            ("statement_timeout", "1.5s", Some(1500)),
            ("statement_timeout", "1500us", Some(2)),
            ("statement_timeout", "2500us", Some(2)),
            ("archive_timeout", "1500ms", Some(2)),
            ("archive_timeout", "90s", Some(90)),
            ("log_rotation_age", "1d", Some(1440)),
            ("log_rotation_age", "90s", Some(2)),
            ("log_min_duration_statement", "-1", Some(-1)),
            ("track_activity_query_size", "1kB", Some(1024)),
        ];
        for (name, value, want) in cases {
            assert_eq!(int(name, value), *want, "{name}={value:?}");
        }
    }

    #[test]
    fn reals_read_like_strtod() {
        let real = |name: &str, value: &str| match parse(name, value) {
            Ok(SettingValue::Real(r)) => Some(r),
            _ => None,
        };
        assert_eq!(real("random_page_cost", "1.1"), Some(1.1));
        assert_eq!(real("random_page_cost", "1e1"), Some(10.0));
        assert_eq!(real("random_page_cost", "0x10"), Some(16.0));
        assert_eq!(real("random_page_cost", "inf"), None);
        assert_eq!(real("random_page_cost", "1e400"), None);
        assert_eq!(real("random_page_cost", "nan"), None);
        assert_eq!(real("random_page_cost", "-1"), None);
        assert_eq!(real("vacuum_cost_delay", "500us"), Some(0.5));
        assert_eq!(real("vacuum_cost_delay", "2"), Some(2.0));
        assert_eq!(real("checkpoint_completion_target", "0.9"), Some(0.9));
        assert_eq!(real("checkpoint_completion_target", "1.1"), None);
    }

    #[test]
    fn enums_take_listed_and_hidden_spellings() {
        let e = |name: &str, value: &str| match parse(name, value) {
            Ok(SettingValue::Enum(v)) => Some(v),
            _ => None,
        };
        assert_eq!(e("wal_level", "Logical"), Some("logical"));
        assert_eq!(e("wal_level", "hot_standby"), Some("replica"));
        assert_eq!(e("wal_level", "repl"), None);
        assert_eq!(e("synchronous_commit", "true"), Some("on"));
        assert_eq!(e("wal_compression", "on"), Some("pglz"));
        assert_eq!(e("client_min_messages", "debug"), Some("debug2"));
        assert_eq!(
            e("default_transaction_isolation", "REPEATABLE READ"),
            Some("repeatable read")
        );
        assert_eq!(e("ssl_max_protocol_version", ""), Some(""));
        assert_eq!(e("huge_pages", " on"), None);
    }

    #[test]
    fn errors_say_what_is_allowed() {
        let err = |name: &str, value: &str| parse(name, value).unwrap_err();
        let cases = [
            (
                "shared_buffers",
                "4",
                "must be between 128kB and 8TB - 8kB (got \"4\" = 32kB)",
            ),
            (
                "work_mem",
                "3TB",
                "must be between 64kB and 2TB - 1kB (got \"3TB\")",
            ),
            (
                "max_connections",
                "300000",
                "must be between 1 and 262143 (got \"300000\")",
            ),
            (
                "max_connections",
                "99999999999",
                "must be between 1 and 262143 (got \"99999999999\")",
            ),
            (
                "statement_timeout",
                "-5s",
                "must be between 0 and 2147483647ms (about 24.9d) (got \"-5s\" = -5000)",
            ),
            (
                "random_page_cost",
                "-1",
                "must be at least 0 (got \"-1\")",
            ),
            (
                "wal_level",
                "replicas",
                "expected one of: minimal, replica, logical (got \"replicas\"); did you mean \"replica\"?",
            ),
            (
                "default_transaction_isolation",
                "snapshot",
                "expected one of: serializable, \"repeatable read\", \"read committed\", \"read uncommitted\" (got \"snapshot\")",
            ),
            (
                "work_mem",
                "16mb",
                "\"16mb\" has an invalid unit \"mb\": use B, kB, MB, GB or TB (case-sensitive); did you mean \"16MB\"?",
            ),
            (
                "shared_buffers",
                "2Gi",
                "\"2Gi\" has an invalid unit \"Gi\": use B, kB, MB, GB or TB (case-sensitive); did you mean \"2GB\"?",
            ),
            (
                "statement_timeout",
                "5 seconds",
                "\"5 seconds\" has an invalid unit \"seconds\": use us, ms, s, min, h or d (case-sensitive); did you mean \"5s\"?",
            ),
            (
                "max_connections",
                "many",
                "expected an integer (max_connections takes no unit), got \"many\"",
            ),
            (
                "work_mem",
                "lots",
                "expected an integer with an optional unit B, kB, MB, GB or TB (a number alone is in units of kB), got \"lots\"",
            ),
            (
                "jit",
                "maybe",
                "expected a boolean (on/off, true/false, yes/no, 1/0), got \"maybe\"",
            ),
        ];
        for (name, value, want) in cases {
            assert_eq!(err(name, value), want, "{name}={value:?}");
        }
    }

    #[test]
    fn amounts_are_written_in_the_largest_exact_unit() {
        let f = |name: &str, base: f64| format_amount(lookup(name).unwrap(), base);
        assert_eq!(f("shared_buffers", 16.0), "128kB");
        assert_eq!(f("shared_buffers", 131072.0), "1GB");
        assert_eq!(f("shared_buffers", 1073741823.0), "8TB - 8kB");
        assert_eq!(f("max_wal_size", 1024.0), "1GB");
        assert_eq!(f("statement_timeout", 60000.0), "1min");
        assert_eq!(f("statement_timeout", 0.0), "0");
        assert_eq!(f("log_min_duration_statement", -1.0), "-1");
        assert_eq!(f("max_connections", 262143.0), "262143");
        assert_eq!(f("vacuum_cost_delay", 0.5), "500us");
    }
}
