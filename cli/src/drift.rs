//! `pgplane drift`: what each instance's source declares versus what its data
//! plane reports, field by field.

use api::{DriftReport, DriftStatus};

use crate::output::{self, Table, NONE};

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq)]
pub enum DriftOutput {
    /// One row per drifted field, for people.
    #[default]
    Table,
    /// The API's drift report.
    Json,
    /// A Markdown table (for an issue or pull-request comment).
    Markdown,
}

#[derive(clap::Args, Debug)]
pub struct DriftArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = DriftOutput::Table)]
    pub output: DriftOutput,
    /// Exit with status 2 when any instance drifted (like `terraform plan -detailed-exitcode`).
    #[arg(long)]
    pub exit_code: bool,
}

pub async fn run(args: DriftArgs, client: &api::Client) -> i32 {
    let report = match client.drift().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let text = match args.output {
        DriftOutput::Table => render_table(&report),
        DriftOutput::Markdown => render_markdown(&report),
        DriftOutput::Json => match output::render_json(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        },
    };
    if let Err(e) = output::print_text(&text) {
        eprintln!("error: {e}");
        return 1;
    }
    if args.exit_code && report.drifted > 0 {
        2
    } else {
        0
    }
}

fn status(s: DriftStatus) -> &'static str {
    match s {
        DriftStatus::InSync => "in sync",
        DriftStatus::Drifted => "drifted",
        DriftStatus::Converging => "converging",
        DriftStatus::Unobserved => "unobserved",
    }
}

fn age(seconds: Option<i64>) -> String {
    seconds
        .map(|s| output::duration(std::time::Duration::from_secs(s as u64)))
        .unwrap_or_else(|| NONE.to_owned())
}

/// One row per drifted field; instances without drift get one row.
pub fn render_table(report: &DriftReport) -> String {
    let mut t = Table::new([
        "NAME",
        "SOURCE",
        "STATUS",
        "FIELD",
        "DECLARED",
        "OBSERVED",
        "OBSERVED AGO",
    ]);
    for i in &report.items {
        if i.fields.is_empty() {
            t.row([
                i.name.as_str(),
                &i.owner,
                status(i.status),
                "",
                "",
                "",
                &age(i.observation_age_seconds),
            ]);
        }
        for f in &i.fields {
            t.row([
                i.name.as_str(),
                &i.owner,
                status(i.status),
                &f.path,
                f.declared.as_deref().unwrap_or(NONE),
                f.observed.as_deref().unwrap_or(NONE),
                &age(i.observation_age_seconds),
            ]);
        }
    }
    let mut out = t.render();
    out.push_str(&format!(
        "{} of {} instances drifted\n",
        report.drifted,
        report.items.len()
    ));
    out
}

pub fn render_markdown(report: &DriftReport) -> String {
    let mut out = format!(
        "**Drift:** {} of {} instances drifted\n\n| instance | source | status | field | declared | observed | observed ago |\n|---|---|---|---|---|---|---|\n",
        report.drifted,
        report.items.len()
    );
    let cell = |s: &str| s.replace('|', "\\|");
    for i in &report.items {
        let rows: Vec<(String, String, String)> = if i.fields.is_empty() {
            vec![(String::new(), String::new(), String::new())]
        } else {
            i.fields
                .iter()
                .map(|f| {
                    (
                        format!("`{}`", f.path),
                        f.declared
                            .clone()
                            .map(|d| format!("`{d}`"))
                            .unwrap_or_default(),
                        f.observed
                            .clone()
                            .map(|o| format!("`{o}`"))
                            .unwrap_or_default(),
                    )
                })
                .collect()
        };
        for (field, declared, observed) in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                cell(&i.name),
                cell(&i.owner),
                status(i.status),
                cell(&field),
                cell(&declared),
                cell(&observed),
                age(i.observation_age_seconds)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::InstanceDrift;
    use domain::{FieldDrift, State};

    fn report() -> DriftReport {
        DriftReport {
            items: vec![
                InstanceDrift {
                    id: uuid::Uuid::nil(),
                    name: "orders".into(),
                    owner: "api".into(),
                    state: State::Up,
                    status: DriftStatus::Drifted,
                    generation: 2,
                    observed_generation: 2,
                    observed_at: None,
                    observation_age_seconds: Some(5),
                    fields: vec![FieldDrift {
                        path: "config.work_mem".into(),
                        declared: Some("16MB".into()),
                        observed: Some("64MB".into()),
                    }],
                },
                InstanceDrift {
                    id: uuid::Uuid::nil(),
                    name: "users".into(),
                    owner: "api".into(),
                    state: State::Up,
                    status: DriftStatus::InSync,
                    generation: 1,
                    observed_generation: 1,
                    observed_at: None,
                    observation_age_seconds: Some(65),
                    fields: vec![],
                },
            ],
            drifted: 1,
        }
    }

    #[test]
    fn table_has_a_row_per_drifted_field() {
        let t = render_table(&report());
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("orders  api     drifted  config.work_mem  16MB"),
            "{t}"
        );
        assert!(lines[2].starts_with("users   api     in sync"), "{t}");
        assert_eq!(lines[3], "1 of 2 instances drifted");
    }

    #[test]
    fn markdown_is_a_table() {
        let m = render_markdown(&report());
        assert!(m.starts_with("**Drift:** 1 of 2 instances drifted"));
        assert!(
            m.contains("| orders | api | drifted | `config.work_mem` | `16MB` | `64MB` | 5s |"),
            "{m}"
        );
    }
}
