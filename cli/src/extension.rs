//! `pgplane extension list`: what a data plane can install.

use api::ExtensionCatalog;

use crate::output::{self, OutputFormat, Table, NONE};

#[derive(clap::Subcommand, Debug)]
pub enum ExtensionCommand {
    /// The extensions a data plane offers: versions, whether they are
    /// preloaded (declaring one restarts the server), trusted, what they
    /// require and the package they come from.
    ///
    /// Examples:
    ///
    ///   pgplane extension list
    ///
    ///   pgplane extension list --data-plane eu-west -o json
    List {
        /// The data plane (default: the control plane's default one).
        #[arg(long)]
        data_plane: Option<String>,
    },
}

pub async fn run(command: ExtensionCommand, client: &api::Client, format: OutputFormat) -> i32 {
    let ExtensionCommand::List { data_plane } = command;
    let catalog = match client.extensions(data_plane.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let text = match format {
        f if f.is_data() => match output::render_data(f, &catalog) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        },
        _ => render_table(&catalog),
    };
    if !catalog.registered {
        eprintln!(
            "data plane {:?} has not registered yet: it lists no extensions",
            catalog.data_plane
        );
    }
    match output::print_text(&text) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// One row per extension; the default version is marked with `*` when
/// there are several.
pub fn render_table(catalog: &ExtensionCatalog) -> String {
    let mut t = Table::new([
        "NAME", "VERSIONS", "PRELOAD", "TRUSTED", "REQUIRES", "PACKAGE",
    ]);
    let or_none = |s: String| if s.is_empty() { NONE.to_owned() } else { s };
    for e in &catalog.items {
        let versions = e
            .versions
            .iter()
            .map(|v| {
                if e.versions.len() > 1 && *v == e.default_version {
                    format!("{v}*")
                } else {
                    v.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let preload = match &e.preload_library {
            Some(lib) if lib == &e.name => "yes".to_owned(),
            Some(lib) => format!("yes ({lib})"),
            None => "no".to_owned(),
        };
        t.row([
            e.name.clone(),
            or_none(versions),
            preload,
            if e.trusted { "yes" } else { "no" }.to_owned(),
            or_none(e.requires.join(",")),
            e.package.clone().unwrap_or_else(|| NONE.to_owned()),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::AvailableExtension;

    #[test]
    fn the_table_shows_versions_preload_and_requirements() {
        let catalog = ExtensionCatalog {
            data_plane: "local".into(),
            registered: true,
            items: vec![
                AvailableExtension {
                    versions: vec!["1.4".into(), "1.8".into()],
                    default_version: "1.8".into(),
                    trusted: true,
                    package: Some("postgresql-15".into()),
                    ..AvailableExtension::named("hstore")
                },
                AvailableExtension {
                    versions: vec!["1.4-1".into()],
                    default_version: "1.4-1".into(),
                    package: Some("postgresql-15-cron".into()),
                    ..AvailableExtension::named("pg_cron")
                },
                AvailableExtension {
                    versions: vec!["3.3.2".into()],
                    requires: vec!["postgis".into()],
                    ..AvailableExtension::named("postgis_topology")
                },
            ],
        };
        let text = render_table(&catalog);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            [
                vec!["NAME", "VERSIONS", "PRELOAD", "TRUSTED", "REQUIRES", "PACKAGE"],
                vec!["hstore", "1.4,1.8*", "no", "yes", "-", "postgresql-15"],
                vec!["pg_cron", "1.4-1", "yes", "no", "-", "postgresql-15-cron"],
                vec!["postgis_topology", "3.3.2", "no", "no", "postgis", "-"],
            ],
            "{text}"
        );
    }
}
