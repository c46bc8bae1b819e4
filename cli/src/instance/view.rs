//! How instances and their history read in table form. Pure: the caller
//! passes `now` for ages.

use chrono::{DateTime, Utc};

use api::{History, Instance};

use crate::output::{self, Details, Table, NONE};

/// One instance as a one-row table: what `create`, `update` and the actions
/// print when they are done.
pub fn summary(inst: &Instance, now: DateTime<Utc>) -> String {
    list(std::slice::from_ref(inst), now, false)
}

/// `list`: one row per instance; `wide` adds generations, resources and
/// the data plane.
pub fn list(items: &[Instance], now: DateTime<Utc>, wide: bool) -> String {
    let mut headers = vec!["NAME", "STATE", "OWNER"];
    if wide {
        headers.extend(["GEN", "OBSERVED", "DATA PLANE", "CPU", "MEMORY", "STORAGE"]);
    }
    headers.extend(["VERSION", "EXTENSIONS", "ENDPOINT", "AGE"]);
    let mut t = Table::new(headers);
    for inst in items {
        let mut row = vec![
            inst.name.clone(),
            inst.state.to_string(),
            inst.owner.clone(),
        ];
        if wide {
            row.extend([
                inst.generation.to_string(),
                inst.observed_generation.to_string(),
                inst.data_plane.clone(),
                inst.spec.resources.cpu.clone(),
                inst.spec.resources.memory.clone(),
                inst.spec.storage.clone(),
            ]);
        }
        row.extend([
            inst.spec.postgres_version.clone(),
            extensions(inst),
            endpoint(inst),
            output::age(inst.created_at, now),
        ]);
        t.row(row);
    }
    t.render()
}

/// `get`: everything about one instance except its password.
pub fn details(inst: &Instance, now: DateTime<Utc>) -> String {
    let mut d = Details::new();
    d.field("Name", &inst.name)
        .field("ID", inst.id.to_string())
        .field("Org", &inst.org)
        .field("State", inst.state.to_string())
        .field(
            "Generation",
            format!(
                "{} (observed {})",
                inst.generation, inst.observed_generation
            ),
        )
        .field("Data plane", &inst.data_plane)
        .field("Owner", &inst.owner)
        .field("Created", when(inst.created_at, now))
        .field("Updated", when(inst.updated_at, now));
    d.section("Spec", |d| {
        let spec = &inst.spec;
        d.field("Postgres version", &spec.postgres_version)
            .field("Replicas", spec.replicas.to_string());
        if spec.replicas > 1 || !spec.synchronous.is_off() {
            d.field("Synchronous", spec.synchronous.to_string());
        }
        d.field("CPU", &spec.resources.cpu)
            .field("Memory", &spec.resources.memory)
            .field("Storage", &spec.storage)
            .field("Stopped", yes_no(spec.stopped))
            .field("Extensions", extensions(inst));
        config(d, spec.config.iter());
    });
    match &inst.observed {
        None => {
            d.field("Observed", "nothing reported yet");
        }
        Some(obs) => {
            d.section("Observed", |d| {
                d.field("Running", yes_no(obs.running))
                    .field("Postgres version", &obs.postgres_version)
                    .field("Extensions", obs.extensions.join(", "))
                    .field("Pending restart", obs.pending_restart.join(", "))
                    .field(
                        "Observed at",
                        inst.observed_at.map(|t| when(t, now)).unwrap_or_default(),
                    );
                config(d, obs.config.iter());
            });
            if let Some(members) = &obs.members {
                d.section("Members", |d| {
                    for m in members {
                        d.item(member_line(m));
                    }
                });
            }
        }
    }
    d.field("Connection", connection(inst));
    d.section("Backups", |d| {
        let spec = &inst.spec.backup;
        d.field("Schedule", &spec.schedule)
            .field("Retention", spec.retention.to_string());
        if let Some(r) = &inst.spec.restore {
            let point =
                r.at.clone()
                    .or(r.lsn.clone())
                    .unwrap_or_else(|| "latest".to_owned());
            d.field("Restored from", format!("{} at {point}", r.from));
        }
        match &inst.backup {
            None => {
                d.field("Backups", "none reported yet");
            }
            Some(b) => {
                d.field("Backups", b.count.to_string());
                if let Some(last) = &b.last {
                    d.field(
                        "Last backup",
                        format!("{} ({})", last.id, when(last.stopped_at, now)),
                    );
                }
                d.field(
                    "Restorable",
                    restorable(b.restorable_from, b.restorable_until),
                );
            }
        }
        if let Some(a) = inst.observed.as_ref().and_then(|o| o.archive.as_ref()) {
            d.field("WAL archiving", archiving(a, now));
        }
    });
    d.field("Error", inst.error.clone().unwrap_or_default());
    if inst.restart_reasons.is_empty() {
        d.field("Restart reasons", "");
    } else {
        d.section("Restart reasons", |d| {
            for reason in &inst.restart_reasons {
                d.item(format!("- {reason}"));
            }
        });
    }
    d.render()
}

/// `history`: the state timeline, oldest first as the API returns it.
pub fn history(h: &History) -> String {
    let mut t = Table::new(["TIME", "FROM", "EVENT", "TO", "GEN", "ACTOR", "DETAIL"]);
    for e in &h.items {
        t.row([
            output::timestamp(e.at),
            e.from.map(|s| s.to_string()).unwrap_or_default(),
            e.event.to_string(),
            e.to.to_string(),
            e.generation.to_string(),
            e.actor.clone(),
            e.detail.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}

/// What `update` tells the user about the restart the change needs.
pub fn restart_note(inst: &Instance) -> String {
    if inst.restart_reasons.is_empty() {
        "applied without restart\n".to_owned()
    } else {
        inst.restart_reasons
            .iter()
            .map(|r| format!("restart required: {r}\n"))
            .collect()
    }
}

/// The changes `update` is about to send, one per line:
/// `  config.work_mem: 4MB → 16MB`.
pub fn changes(changes: &[domain::FieldChange]) -> String {
    changes
        .iter()
        .map(|c| {
            let side = |v: &Option<String>| match v.as_deref() {
                None => "(unset)".to_owned(),
                Some("") => "(none)".to_owned(),
                Some(v) => v.to_owned(),
            };
            format!("  {}: {} → {}\n", c.path, side(&c.from), side(&c.to))
        })
        .collect()
}

fn extensions(inst: &Instance) -> String {
    inst.spec.extension_names().collect::<Vec<_>>().join(",")
}

/// `host:port`, or `-` before the data plane has reported one.
fn endpoint(inst: &Instance) -> String {
    inst.connection
        .as_ref()
        .map(|c| format!("{}:{}", c.host, c.port))
        .unwrap_or_else(|| NONE.to_owned())
}

fn connection(inst: &Instance) -> String {
    inst.connection
        .as_ref()
        .map(|c| {
            format!(
                "{}:{} (database {}, user {})",
                c.host, c.port, c.database, c.user
            )
        })
        .unwrap_or_default()
}

fn config<'a>(d: &mut Details, entries: impl ExactSizeIterator<Item = (&'a String, &'a String)>) {
    if entries.len() == 0 {
        d.field("Config", "");
        return;
    }
    d.section("Config", |d| {
        for (k, v) in entries {
            d.item(format!("{k} = {v}"));
        }
    });
}

fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ({} ago)", output::timestamp(at), output::age(at, now))
}

/// `member-1  standby  running  timeline 2  lsn 0/3000060  lag 0 B  streaming`
fn member_line(m: &domain::ObservedMember) -> String {
    let mut parts = vec![
        format!("{:<9}", m.name),
        format!("{:<8}", m.role.as_str()),
        if m.running { "running" } else { "stopped" }.to_owned(),
    ];
    if let Some(t) = m.timeline {
        parts.push(format!("timeline {t}"));
    }
    if let Some(lsn) = &m.lsn {
        parts.push(format!("lsn {lsn}"));
    }
    if let Some(lag) = m.lag_bytes {
        parts.push(format!("lag {lag} B"));
    }
    if let Some(state) = &m.state {
        parts.push(state.clone());
    }
    parts.join("  ")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `from … to …` of a restore window (`now` while the instance runs).
fn restorable(from: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> String {
    match from {
        None => "not yet (no completed backup)".to_owned(),
        Some(from) => format!(
            "{} to {}",
            domain::backup::stamp(from),
            until.map_or_else(|| "now".to_owned(), domain::backup::stamp)
        ),
    }
}

/// How WAL archiving is doing, in one line.
fn archiving(a: &domain::ArchiveStatus, now: DateTime<Utc>) -> String {
    let mut s = if a.mode != "on" {
        format!("OFF (archive_mode = {})", a.mode)
    } else if a.failing() {
        format!(
            "FAILING: {} failed {}; {} archived",
            a.last_failed_wal.as_deref().unwrap_or("a segment"),
            a.last_failed_at.map(|t| when(t, now)).unwrap_or_default(),
            a.archived_count
        )
    } else {
        format!(
            "ok: {} segments archived{}",
            a.archived_count,
            a.last_archived_at
                .map(|t| format!(", last {}", when(t, now)))
                .unwrap_or_default()
        )
    };
    for o in &a.overridden {
        s.push_str(&format!("; ignored: {o}"));
    }
    s
}

/// `backups`: one row per backup, then the restore window.
pub fn backups(list: &api::BackupList) -> String {
    let mut t = crate::output::Table::new([
        "ID", "TYPE", "STARTED", "STOPPED", "LSN", "SIZE", "STORED", "STATUS",
    ]);
    for b in &list.items {
        t.row(vec![
            b.id.clone(),
            b.kind.clone(),
            domain::backup::stamp(b.started_at),
            domain::backup::stamp(b.stopped_at),
            format!("{}-{}", b.start_lsn, b.stop_lsn),
            bytes(b.size_bytes),
            bytes(b.repository_bytes),
            b.status.clone(),
        ]);
    }
    let mut out = if list.items.is_empty() {
        "no backups yet\n".to_owned()
    } else {
        t.render()
    };
    out.push_str(&format!(
        "restorable: {}\n",
        restorable(list.restorable_from, list.restorable_until)
    ));
    out
}

pub fn activity(list: &api::ActivityList) -> String {
    if list.items.is_empty() {
        return "no activity sampled yet (the data plane samples a running server each time it observes it)\n".to_owned();
    }
    let mut t = crate::output::Table::new(["SAMPLED", "CONNECTIONS", "TPS", "SIZE"]);
    for a in &list.items {
        t.row(vec![
            domain::backup::stamp(a.at),
            a.connections.to_string(),
            a.transactions_per_second
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
            bytes(a.database_bytes.max(0) as u64),
        ]);
    }
    t.render()
}

fn bytes(n: u64) -> String {
    let mib = n as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// `instance status`: what needs attention, and the facts behind it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub name: String,
    pub state: domain::State,
    pub error: Option<String>,
    pub drift: Vec<domain::FieldDrift>,
    pub archive: Option<domain::ArchiveStatus>,
    pub last_backup: Option<domain::BackupInfo>,
    pub restorable_from: Option<DateTime<Utc>>,
    pub restorable_until: Option<DateTime<Utc>>,
    /// Empty when all is well.
    pub problems: Vec<String>,
    #[serde(skip)]
    now: DateTime<Utc>,
}

impl Health {
    pub fn of(
        inst: &Instance,
        backups: &api::BackupList,
        drift: &[domain::FieldDrift],
        now: DateTime<Utc>,
    ) -> Health {
        let archive = inst.observed.as_ref().and_then(|o| o.archive.clone());
        let mut problems = Vec::new();
        if inst.state == domain::State::Error {
            problems.push(format!(
                "state Error: {}",
                inst.error.as_deref().unwrap_or("no reason given")
            ));
        }
        for f in drift {
            problems.push(format!(
                "drift in {}: declared {}, observed {}",
                f.path,
                f.declared.as_deref().unwrap_or("-"),
                f.observed.as_deref().unwrap_or("-")
            ));
        }
        if let Some(a) = &archive {
            if a.failing() {
                problems.push(format!("WAL archiving is failing ({})", archiving(a, now)));
            }
        }
        let running = inst.observed.as_ref().is_some_and(|o| o.running);
        if backups.items.is_empty() && running {
            problems.push("no completed backup yet: nothing to restore from".to_owned());
        }
        Health {
            name: inst.name.clone(),
            state: inst.state,
            error: inst.error.clone(),
            drift: drift.to_vec(),
            archive,
            last_backup: backups.items.last().cloned(),
            restorable_from: backups.restorable_from,
            restorable_until: backups.restorable_until,
            problems,
            now,
        }
    }

    pub fn render(&self) -> String {
        let mut d = Details::new();
        d.field("Name", &self.name)
            .field("State", self.state.to_string())
            .field(
                "Drift",
                match self.drift.len() {
                    0 => "in sync".to_owned(),
                    n => format!("{n} fields"),
                },
            )
            .field(
                "WAL archiving",
                self.archive
                    .as_ref()
                    .map(|a| archiving(a, self.now))
                    .unwrap_or_else(|| "not observed".to_owned()),
            )
            .field(
                "Last backup",
                self.last_backup
                    .as_ref()
                    .map(|b| format!("{} ({})", b.id, when(b.stopped_at, self.now)))
                    .unwrap_or_else(|| "none".to_owned()),
            )
            .field(
                "Restorable",
                restorable(self.restorable_from, self.restorable_until),
            )
            .field(
                "Health",
                match self.problems.len() {
                    0 => "ok".to_owned(),
                    n => format!("{n} problems"),
                },
            );
        d.render()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use api::HistoryEntry;
    use chrono::TimeZone;
    use domain::{ConnectionInfo, Extension, InstanceSpec, ObservedSpec, State};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    /// A freshly created instance, for tests across the module.
    pub(crate) fn instance(name: &str) -> Instance {
        Instance {
            id: uuid::Uuid::nil(),
            org: "acme".into(),
            name: name.into(),
            data_plane: "local".into(),
            owner: "api".into(),
            state: State::Submitted,
            generation: 1,
            observed_generation: 0,
            spec: InstanceSpec::default(),
            observed: None,
            observed_at: None,
            connection: None,
            error: None,
            restart_reasons: Vec::new(),
            backup: None,
            created_at: t0(),
            updated_at: t0(),
        }
    }

    fn running() -> Instance {
        let mut inst = instance("orders");
        inst.state = State::Up;
        inst.generation = 2;
        inst.observed_generation = 2;
        inst.spec.extensions = vec![Extension::new("citext"), Extension::new("hstore")];
        inst.spec.config.insert("work_mem".into(), "16MB".into());
        inst.connection = Some(ConnectionInfo {
            members: Vec::new(),
            host: "127.0.0.1".into(),
            port: 54321,
            database: "postgres".into(),
            user: "postgres".into(),
        });
        inst.observed = Some(ObservedSpec {
            members: None,
            postgres_version: "15".into(),
            extensions: vec!["citext".into(), "hstore".into()],
            config: [("work_mem".to_owned(), "16384kB".to_owned())].into(),
            running: true,
            pending_restart: vec![],
            superuser_access: Some(false),
            archive: None,
            extension_versions: Default::default(),
            roles: None,
            databases: None,
        });
        inst.observed_at = Some(t0() + chrono::Duration::seconds(30));
        inst
    }

    #[test]
    fn summary_is_the_lists_row() {
        let now = t0() + chrono::Duration::minutes(2);
        assert_eq!(
            summary(&running(), now),
            "NAME    STATE  OWNER  VERSION  EXTENSIONS     ENDPOINT         AGE\n\
             orders  Up     api    15       citext,hstore  127.0.0.1:54321  2m\n"
        );
        assert_eq!(
            summary(&instance("new"), now).lines().nth(1),
            Some("new   Submitted  api    15       -           -         2m")
        );
    }

    #[test]
    fn list_shows_owners_endpoints_and_ages() {
        let now = t0() + chrono::Duration::hours(3);
        let mut billing = instance("billing");
        billing.owner = "git:prod".into();
        assert_eq!(
            list(&[running(), billing.clone()], now, false),
            "NAME     STATE      OWNER     VERSION  EXTENSIONS     ENDPOINT         AGE\n\
             orders   Up         api       15       citext,hstore  127.0.0.1:54321  3h\n\
             billing  Submitted  git:prod  15       -              -                3h\n"
        );
        assert_eq!(
            list(&[billing], now, true),
            "NAME     STATE      OWNER     GEN  OBSERVED  DATA PLANE  CPU  MEMORY  STORAGE  VERSION  EXTENSIONS  ENDPOINT  AGE\n\
             billing  Submitted  git:prod  1    0         local       1    1Gi     10Gi     15       -           -         3h\n"
        );
    }

    #[test]
    fn details_show_spec_observed_and_connection_but_no_password() {
        let mut inst = running();
        inst.restart_reasons = vec!["shared_buffers changed".into()];
        let text = details(&inst, t0() + chrono::Duration::minutes(5));
        let expected = "\
Name:                orders
ID:                  00000000-0000-0000-0000-000000000000
Org:                 acme
State:               Up
Generation:          2 (observed 2)
Data plane:          local
Owner:               api
Created:             2024-05-01T12:00:00Z (5m ago)
Updated:             2024-05-01T12:00:00Z (5m ago)
Spec:
  Postgres version:  15
  Replicas:          1
  CPU:               1
  Memory:            1Gi
  Storage:           10Gi
  Stopped:           no
  Extensions:        citext,hstore
  Config:
    work_mem = 16MB
Observed:
  Running:           yes
  Postgres version:  15
  Extensions:        citext, hstore
  Pending restart:   -
  Observed at:       2024-05-01T12:00:30Z (4m ago)
  Config:
    work_mem = 16384kB
Connection:          127.0.0.1:54321 (database postgres, user postgres)
Backups:
  Schedule:          0 0 * * *
  Retention:         7d
  Backups:           none reported yet
Error:               -
Restart reasons:
  - shared_buffers changed
";
        assert_eq!(text, expected);
    }

    #[test]
    fn details_of_a_new_instance_say_nothing_was_observed() {
        let text = details(&instance("orders"), t0());
        assert!(
            text.contains("Observed:            nothing reported yet\n"),
            "{text}"
        );
        assert!(text.contains("Connection:          -\n"), "{text}");
        assert!(text.contains("  Config:            -\n"), "{text}");
    }

    #[test]
    fn history_rows_in_order() {
        let h = History {
            items: vec![
                HistoryEntry {
                    from: None,
                    event: "Create".into(),
                    to: State::Submitted,
                    generation: 1,
                    actor: "api".into(),
                    detail: None,
                    at: t0(),
                },
                HistoryEntry {
                    from: Some(State::Submitted),
                    event: "Created".into(),
                    to: State::Up,
                    generation: 1,
                    actor: "data-plane:local".into(),
                    detail: Some("created in 2.1s".into()),
                    at: t0() + chrono::Duration::seconds(2),
                },
            ],
        };
        assert_eq!(
            history(&h),
            "TIME                  FROM       EVENT    TO         GEN  ACTOR             DETAIL\n\
             2024-05-01T12:00:00Z  -          Create   Submitted  1    api               -\n\
             2024-05-01T12:00:02Z  Submitted  Created  Up         1    data-plane:local  created in 2.1s\n"
        );
    }

    #[test]
    fn restart_note_lists_reasons_or_says_none() {
        let mut inst = running();
        assert_eq!(restart_note(&inst), "applied without restart\n");
        inst.restart_reasons = vec!["shared_buffers changed".into(), "extension x".into()];
        assert_eq!(
            restart_note(&inst),
            "restart required: shared_buffers changed\nrestart required: extension x\n"
        );
    }

    #[test]
    fn changes_read_as_arrows() {
        let text = changes(&[
            domain::FieldChange {
                path: "config.work_mem".into(),
                from: Some("4MB".into()),
                to: Some("16MB".into()),
            },
            domain::FieldChange {
                path: "config.jit".into(),
                from: Some("on".into()),
                to: None,
            },
            domain::FieldChange {
                path: "extensions".into(),
                from: Some("".into()),
                to: Some("hstore".into()),
            },
        ]);
        assert_eq!(
            text,
            "  config.work_mem: 4MB → 16MB\n  config.jit: on → (unset)\n  extensions: (none) → hstore\n"
        );
    }
}
