//! A [`Plan`] for people (an aligned table), for programs (JSON) and for a
//! pull-request comment (Markdown).

use domain::FieldChange;

use crate::plan::{Action, Plan, PlanEntry, Summary};

/// Shown for an empty cell.
const NONE: &str = "-";

/// `Plan: 1 to create, 2 to update (1 restarts Postgres), …`
pub fn summary_line(s: &Summary) -> String {
    let mut parts = vec![
        format!("{} to create", s.create),
        if s.restart > 0 {
            format!("{} to update ({} restarting Postgres)", s.update, s.restart)
        } else {
            format!("{} to update", s.update)
        },
        format!("{} to delete", s.delete),
    ];
    if s.delete_deferred > 0 {
        parts.push(format!(
            "{} deletions deferred to a later sync",
            s.delete_deferred
        ));
    }
    parts.push(format!("{} orphaned", s.orphan));
    parts.push(format!("{} unchanged", s.unchanged));
    if s.conflict > 0 {
        parts.push(format!("{} in conflict", s.conflict));
    }
    format!("Plan: {}.", parts.join(", "))
}

fn change_text(c: &FieldChange) -> String {
    format!(
        "{}: {} → {}",
        c.path,
        c.from.as_deref().unwrap_or("(unset)"),
        c.to.as_deref().unwrap_or("(unset)")
    )
}

/// The CHANGES cell of an entry.
fn changes_cell(entry: &PlanEntry) -> String {
    match &entry.action {
        Action::Create { spec } => {
            let mut parts = vec![format!("postgres {}", spec.postgres_version)];
            if !spec.extensions.is_empty() {
                parts.push(format!(
                    "extensions {}",
                    spec.extension_names().collect::<Vec<_>>().join(",")
                ));
            }
            if !spec.config.is_empty() {
                parts.push(format!("{} parameters", spec.config.len()));
            }
            format!("new instance ({})", parts.join(", "))
        }
        Action::Update {
            changes,
            adopt_from,
            ..
        } => {
            let mut parts: Vec<String> = changes.iter().map(change_text).collect();
            if let Some(from) = adopt_from {
                parts.insert(0, format!("adopted from {from}"));
            }
            parts.join("; ")
        }
        Action::Unchanged => String::new(),
        Action::Delete => "no longer declared".to_owned(),
        Action::DeleteDeferred => {
            "no longer declared; over this sync's deletion limit, deleted by a later sync"
                .to_owned()
        }
        Action::Orphan => "no longer declared; prune is off, left alone".to_owned(),
        Action::Conflict { owner, source } => match owner.strip_prefix("git:") {
            Some(name) => format!(
                "managed by {owner}, declared by {source}; left alone (plan as that source with --source {name})"
            ),
            None => {
                format!("managed by {owner}, declared by {source}; left alone (adopt to take it over)")
            }
        },
    }
}

fn restart_cell(action: &Action) -> &'static str {
    match action {
        Action::Update { restart, .. } if !restart.is_empty() => "yes",
        Action::Update { .. } => "no",
        _ => NONE,
    }
}

fn display_name(entry: &PlanEntry, orgs: usize) -> String {
    if orgs > 1 {
        format!("{}/{}", entry.org, entry.name)
    } else {
        entry.name.clone()
    }
}

fn org_count(plan: &Plan) -> usize {
    let mut orgs: Vec<&str> = plan.entries.iter().map(|e| e.org.as_str()).collect();
    orgs.sort_unstable();
    orgs.dedup();
    orgs.len()
}

/// ACTION NAME CHANGES RESTART, columns aligned, then the summary line.
pub fn render_table(plan: &Plan) -> String {
    let orgs = org_count(plan);
    let header = ["ACTION", "NAME", "CHANGES", "RESTART"].map(str::to_owned);
    let rows: Vec<[String; 4]> = plan
        .entries
        .iter()
        .map(|e| {
            let changes = changes_cell(e);
            [
                e.action.label().to_owned(),
                display_name(e, orgs),
                if changes.is_empty() {
                    NONE.to_owned()
                } else {
                    changes
                },
                restart_cell(&e.action).to_owned(),
            ]
        })
        .collect();
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(
                    ' ',
                    widths[i] - cell.chars().count() + 2,
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&summary_line(&plan.summary));
    out.push('\n');
    out
}

/// Pretty JSON of the whole plan, with a trailing newline.
pub fn render_json(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(plan).expect("a plan always serialises");
    text.push('\n');
    text
}

fn md(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn code(text: Option<&str>) -> String {
    match text {
        Some(t) => format!("`{}`", md(t).replace('`', "'")),
        None => "(unset)".to_owned(),
    }
}

/// For a pull-request comment: the summary, a table of every instance that
/// is not unchanged, then each update's field diff and restart reasons.
pub fn render_markdown(plan: &Plan) -> String {
    let orgs = org_count(plan);
    let mut out = format!("**{}**\n\n", summary_line(&plan.summary));
    let shown: Vec<&PlanEntry> = plan
        .entries
        .iter()
        .filter(|e| e.action != Action::Unchanged)
        .collect();
    if shown.is_empty() {
        out.push_str("No changes: every declared instance matches.\n");
        return out;
    }
    out.push_str("| Action | Instance | Changes | Restart |\n|---|---|---|---|\n");
    for e in &shown {
        let changes = match &e.action {
            Action::Update { changes, .. } => format!("{} field(s)", changes.len()),
            _ => changes_cell(e),
        };
        out.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            e.action.label(),
            md(&display_name(e, orgs)),
            md(&changes),
            restart_cell(&e.action)
        ));
    }
    for e in &shown {
        let Action::Update {
            changes,
            restart,
            adopt_from,
            ..
        } = &e.action
        else {
            continue;
        };
        out.push_str(&format!("\n### `{}`", md(&display_name(e, orgs))));
        if let (Some(file), Some(line)) = (&e.file, e.line) {
            out.push_str(&format!(" ({}:{line})", md(file)));
        }
        out.push_str("\n\n");
        if let Some(from) = adopt_from {
            out.push_str(&format!("Adopted from `{}`.\n\n", md(from)));
        }
        if !changes.is_empty() {
            out.push_str("| Field | From | To |\n|---|---|---|\n");
            for c in changes {
                out.push_str(&format!(
                    "| `{}` | {} | {} |\n",
                    md(&c.path),
                    code(c.from.as_deref()),
                    code(c.to.as_deref())
                ));
            }
        }
        if restart.is_empty() {
            out.push_str("\nApplied without a restart.\n");
        } else {
            out.push_str("\n**Postgres restarts:**\n");
            for r in restart {
                out.push_str(&format!("- {}\n", md(r)));
            }
        }
    }
    out
}
