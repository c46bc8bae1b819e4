//! Backups: what a spec declares (`spec.backup`, `spec.restore`), what a
//! data plane reports (its backups and its WAL archive), and the rules both
//! sides share — the schedule grammar, retention, and which points in time
//! a restore can reach.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The schedule of full backups when a spec does not give one: daily at
/// midnight UTC.
pub const DEFAULT_SCHEDULE: &str = "0 0 * * *";
/// Full backups are kept this many days when a spec does not say.
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
/// The most full backups or days `retention` may ask for.
pub const MAX_RETENTION: u32 = 9999;

/// `spec.backup`: when full backups are taken and how long they are kept.
/// WAL is archived continuously whatever this says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupPolicy {
    /// A cron expression of five fields (minute hour day-of-month month
    /// day-of-week, UTC), or a nickname such as `@daily`.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value, example = "7d"))]
    pub retention: Retention,
}

fn default_schedule() -> String {
    DEFAULT_SCHEDULE.to_owned()
}

impl Default for BackupPolicy {
    fn default() -> Self {
        BackupPolicy {
            schedule: default_schedule(),
            retention: Retention::default(),
        }
    }
}

impl BackupPolicy {
    pub fn is_default(&self) -> bool {
        *self == BackupPolicy::default()
    }
}

/// How many full backups are kept: a number of them (`7`), or those of
/// the last days (`"7d"`). WAL is kept as long as a kept backup needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Count(u32),
    Days(u32),
}

impl Default for Retention {
    fn default() -> Self {
        Retention::Days(DEFAULT_RETENTION_DAYS)
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Count(n) => write!(f, "{n} full backups"),
            Retention::Days(n) => write!(f, "{n}d"),
        }
    }
}

impl Retention {
    /// The value as written in a spec: `7` or `"7d"`.
    pub fn spec_value(&self) -> String {
        match self {
            Retention::Count(n) => n.to_string(),
            Retention::Days(n) => format!("{n}d"),
        }
    }

    /// Reads `7` (full backups) or `7d` (days).
    pub fn parse(s: &str) -> Result<Retention, String> {
        let s = s.trim();
        let (digits, days) = match s.strip_suffix('d') {
            Some(d) => (d, true),
            None => (s, false),
        };
        let n: u32 = digits.parse().map_err(|_| {
            format!(
                "{s:?} is not a retention; use a number of full backups (7) or of days (\"7d\")"
            )
        })?;
        if n == 0 {
            return Err("must keep at least one full backup or one day".to_owned());
        }
        if n > MAX_RETENTION {
            return Err(format!("at most {MAX_RETENTION}"));
        }
        Ok(if days {
            Retention::Days(n)
        } else {
            Retention::Count(n)
        })
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Retention::Count(n) => s.serialize_u32(*n),
            Retention::Days(_) => s.serialize_str(&self.spec_value()),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Retention, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Retention;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of full backups (7) or of days (\"7d\")")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Retention, E> {
                Retention::parse(&n.to_string()).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Retention, E> {
                Retention::parse(&n.to_string()).map_err(E::custom)
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Retention, E> {
                Retention::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A parsed backup schedule.
#[derive(Debug, Clone)]
pub struct Schedule(croner::Cron);

impl Schedule {
    /// Reads a five-field cron expression (UTC) or a nickname (`@daily`,
    /// `@hourly`, …). A schedule that fires more often than every five
    /// minutes is refused: a full backup every minute is a mistake.
    pub fn parse(pattern: &str) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(pattern.trim())
            .map_err(|e| format!("{pattern:?} is not a cron schedule: {e}"))?;
        let schedule = Schedule(cron);
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let mut at = start;
        for _ in 0..3 {
            let Some(next) = schedule.next_after(at) else {
                return Err(format!("{pattern:?} never fires"));
            };
            if next - at < chrono::Duration::minutes(5) && at != start {
                return Err(format!(
                    "{pattern:?} fires more often than every 5 minutes; full backups that often would never finish"
                ));
            }
            at = next;
        }
        Ok(schedule)
    }

    /// The first time strictly after `t` the schedule fires.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&t, false).ok()
    }
}

/// `spec.restore`: the instance starts as a copy of another instance's data
/// (a branch), restored from its backups. Only read when the instance is
/// created; the source is never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSpec {
    /// The instance whose backups to restore, in the same organisation. It
    /// may have been deleted (its backups are kept for its retention).
    pub from: String,
    /// The point in time to recover to (RFC 3339); the latest when neither
    /// this nor `lsn` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A WAL position (`0/3000060`) to recover to, instead of a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
}

/// Where a restore stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RestoreTarget {
    /// Everything the archive holds.
    Latest,
    Time(DateTime<Utc>),
    Lsn(Lsn),
}

impl RestoreSpec {
    /// The target, or why the spec's `at`/`lsn` cannot be one (field, message).
    pub fn target(&self) -> Result<RestoreTarget, (&'static str, String)> {
        match (&self.at, &self.lsn) {
            (Some(_), Some(_)) => Err(("at", "give at or lsn, not both".to_owned())),
            (Some(at), None) => parse_time(at)
                .map(RestoreTarget::Time)
                .map_err(|e| ("at", e)),
            (None, Some(lsn)) => Lsn::parse(lsn)
                .map(RestoreTarget::Lsn)
                .map_err(|e| ("lsn", e)),
            (None, None) => Ok(RestoreTarget::Latest),
        }
    }
}

/// Reads an RFC 3339 time (`2026-12-01T10:00:00Z`).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-12-01T10:00:00Z: {e}"))
}

/// A WAL position, `X/Y` in hexadecimal as Postgres writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(s: &str) -> Result<Lsn, String> {
        let bad = || format!("{s:?} is not a WAL position such as 0/3000060");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        Lsn::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One backup in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    /// The backup's label, e.g. `20261201-230350F`.
    pub id: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub stopped_at: DateTime<Utc>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub start_lsn: Lsn,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub stop_lsn: Lsn,
    /// The database's size when backed up.
    pub size_bytes: u64,
    /// What the backup takes in the repository (compressed).
    pub repository_bytes: u64,
    /// `ok`, or `error` when the backup's files failed verification.
    pub status: String,
}

/// What a data plane reports about an instance's backups.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BackupCatalog {
    /// Oldest first.
    pub backups: Vec<BackupInfo>,
    /// The latest point a restore can reach: the time of the newest
    /// transaction known to be in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restorable_until: Option<DateTime<Utc>>,
}

impl BackupCatalog {
    /// The earliest point a restore can reach: the end of the oldest
    /// backup that completed.
    pub fn restorable_from(&self) -> Option<DateTime<Utc>> {
        self.backups
            .iter()
            .filter(|b| b.status == "ok")
            .map(|b| b.stopped_at)
            .min()
    }

    /// Whether a restore to `target` can be served, and if not why, in
    /// words naming the window. `live`: the source still runs, so the
    /// archive reaches up to now (`now`).
    pub fn check_target(
        &self,
        target: &RestoreTarget,
        live: bool,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let Some(from) = self.restorable_from() else {
            return Err("it has no completed backup yet to restore from".to_owned());
        };
        let until = if live {
            Some(now)
        } else {
            self.restorable_until
        };
        let window = || match until {
            Some(u) => format!("{} to {}", stamp(from), stamp(u)),
            None => format!("from {}", stamp(from)),
        };
        match target {
            RestoreTarget::Latest => Ok(()),
            RestoreTarget::Time(t) if *t < from => Err(format!(
                "{} is before the first backup completed; restorable: {}",
                stamp(*t),
                window()
            )),
            RestoreTarget::Time(t) if until.is_some_and(|u| *t > u) => Err(format!(
                "{} is after the latest restorable point; restorable: {}",
                stamp(*t),
                window()
            )),
            RestoreTarget::Time(_) => Ok(()),
            RestoreTarget::Lsn(lsn) => {
                let first = self
                    .backups
                    .iter()
                    .filter(|b| b.status == "ok")
                    .map(|b| b.stop_lsn)
                    .min()
                    .expect("a completed backup exists");
                if *lsn < first {
                    Err(format!(
                        "{lsn} is before the end of the first backup ({first})"
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// A time as the CLI and errors show it: `2026-12-01T23:03:50Z`.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How an instance's WAL archive is doing, observed on the server
/// (`pg_stat_archiver` and the settings pgplane manages).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    /// `archive_mode` as the server runs it (`on` unless something is wrong).
    pub mode: String,
    /// Archiving settings someone set in the server's configuration files
    /// behind pgplane's back (`archive_mode = off in postgresql.auto.conf`);
    /// pgplane's own values win, and these show as drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<String>,
    pub archived_count: i64,
    pub failed_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_at: Option<DateTime<Utc>>,
}

impl ArchiveStatus {
    /// Whether the newest attempt to archive failed.
    pub fn failing(&self) -> bool {
        match (self.last_failed_at, self.last_archived_at) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_counts_and_days_and_refuses_the_rest() {
        assert_eq!(Retention::parse("7"), Ok(Retention::Count(7)));
        assert_eq!(Retention::parse("14d"), Ok(Retention::Days(14)));
        assert!(Retention::parse("0").unwrap_err().contains("at least one"));
        assert!(Retention::parse("0d").unwrap_err().contains("at least one"));
        assert!(Retention::parse("1w").unwrap_err().contains("\"7d\""));
        assert!(Retention::parse("-3").is_err());
        let r: Retention = serde_json::from_str("3").unwrap();
        assert_eq!(r, Retention::Count(3));
        let r: Retention = serde_json::from_str("\"3d\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"3d\"");
        assert!(serde_json::from_str::<Retention>("true").is_err());
    }

    #[test]
    fn schedules_are_five_field_cron_or_nicknames() {
        let s = Schedule::parse("30 2 * * *").unwrap();
        let t = parse_time("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(
            s.next_after(t).map(stamp).as_deref(),
            Some("2026-12-02T02:30:00Z")
        );
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("every day")
            .unwrap_err()
            .contains("not a cron"));
        assert!(
            Schedule::parse("0 0 0 * * *").is_err(),
            "seconds are refused"
        );
        assert!(Schedule::parse("* * * * *")
            .unwrap_err()
            .contains("every 5 minutes"));
    }

    #[test]
    fn lsn_round_trips() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.to_string(), "16/B374D848");
        assert!(Lsn::parse("16-B3").is_err());
        assert!(Lsn::parse("0/3000060").unwrap() < l);
    }

    fn backup(stop: &str, lsn: &str) -> BackupInfo {
        BackupInfo {
            id: "b".into(),
            kind: "full".into(),
            started_at: parse_time(stop).unwrap(),
            stopped_at: parse_time(stop).unwrap(),
            start_lsn: Lsn::parse(lsn).unwrap(),
            stop_lsn: Lsn::parse(lsn).unwrap(),
            size_bytes: 1,
            repository_bytes: 1,
            status: "ok".into(),
        }
    }

    #[test]
    fn restore_targets_outside_the_window_are_refused_with_the_window() {
        let now = parse_time("2026-12-01T12:00:00Z").unwrap();
        let empty = BackupCatalog::default();
        assert!(empty
            .check_target(&RestoreTarget::Latest, true, now)
            .unwrap_err()
            .contains("no completed backup"));
        let c = BackupCatalog {
            backups: vec![backup("2026-12-01T10:00:00Z", "0/3000000")],
            restorable_until: Some(parse_time("2026-12-01T11:00:00Z").unwrap()),
        };
        let at = |s: &str| RestoreTarget::Time(parse_time(s).unwrap());
        let before = c
            .check_target(&at("2026-12-01T09:00:00Z"), true, now)
            .unwrap_err();
        assert!(before.contains("before the first backup"), "{before}");
        assert!(before.contains("2026-12-01T10:00:00Z to 2026-12-01T12:00:00Z"));
        assert!(c
            .check_target(&at("2026-12-01T11:30:00Z"), true, now)
            .is_ok());
        let after = c
            .check_target(&at("2026-12-01T11:30:00Z"), false, now)
            .unwrap_err();
        assert!(
            after.contains("after the latest restorable point"),
            "{after}"
        );
        let lsn = RestoreTarget::Lsn(Lsn::parse("0/1000000").unwrap());
        assert!(c.check_target(&lsn, true, now).is_err());
    }

    #[test]
    fn restore_spec_gives_one_target() {
        let r = RestoreSpec {
            from: "a".into(),
            at: Some("2026-12-01T10:00:00Z".into()),
            lsn: Some("0/1".into()),
        };
        assert_eq!(r.target().unwrap_err().0, "at");
        let r = RestoreSpec {
            from: "a".into(),
            at: Some("yesterday".into()),
            lsn: None,
        };
        assert!(r.target().unwrap_err().1.contains("RFC 3339"));
        let r = RestoreSpec {
            from: "a".into(),
            at: None,
            lsn: None,
        };
        assert_eq!(r.target(), Ok(RestoreTarget::Latest));
    }
}
