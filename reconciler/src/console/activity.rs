//! An instance's activity as three small line charts — client connections,
//! transactions per second, database size — drawn as inline SVG from the
//! samples its data plane reports at each observation, each with the same
//! numbers in words and in a table.

use api::ActivitySample;
use chrono::{DateTime, Utc};
use maud::{html, Markup};

const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 110.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 20.0;

/// One series: what it measures and how its values read.
struct Series<'a> {
    id: &'static str,
    title: &'static str,
    points: Vec<(DateTime<Utc>, f64)>,
    format: &'a dyn Fn(f64) -> String,
}

/// The three charts, or a note when nothing was sampled yet.
pub fn render(samples: &[ActivitySample]) -> Markup {
    if samples.is_empty() {
        return html! {
            p.muted #activity-none {
                "No activity sampled yet: the data plane samples a running server each time it observes it."
            }
        };
    }
    let count = |v: f64| format!("{v:.0}");
    let rate = |v: f64| format!("{v:.1}/s");
    let size = |v: f64| bytes(v);
    let series = [
        Series {
            id: "connections",
            title: "Client connections",
            points: samples
                .iter()
                .map(|s| (s.at, s.connections as f64))
                .collect(),
            format: &count,
        },
        Series {
            id: "tps",
            title: "Transactions per second",
            points: samples
                .iter()
                .filter_map(|s| Some((s.at, s.transactions_per_second?)))
                .collect(),
            format: &rate,
        },
        Series {
            id: "size",
            title: "Database size",
            points: samples
                .iter()
                .map(|s| (s.at, s.database_bytes as f64))
                .collect(),
            format: &size,
        },
    ];
    html! {
        div.columns.activity {
            @for s in &series { (chart(s)) }
        }
        details {
            summary { "The numbers" }
            table #activity-samples {
                thead {
                    tr {
                        th scope="col" { "Sampled" }
                        th scope="col" { "Connections" }
                        th scope="col" { "Transactions per second" }
                        th scope="col" { "Database size" }
                    }
                }
                tbody {
                    @for s in samples.iter().rev() {
                        tr {
                            td { (s.at.format("%Y-%m-%d %H:%M:%S UTC")) }
                            td { (s.connections) }
                            td { @match s.transactions_per_second { Some(r) => (rate(r)), None => "–" } }
                            td { (bytes(s.database_bytes as f64)) }
                        }
                    }
                }
            }
        }
    }
}

fn chart(s: &Series) -> Markup {
    let format = s.format;
    let summary = match (s.points.last(), s.points.len()) {
        (None, _) => format!("{}: not enough samples yet.", s.title),
        (Some((_, last)), n) => {
            let max = s.points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
            let min = s.points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
            format!(
                "{}: now {}; between {} and {} over the last {n} samples.",
                s.title,
                format(*last),
                format(min),
                format(max)
            )
        }
    };
    let max = s.points.iter().map(|p| p.1).fold(0.0, f64::max);
    let scale = if max > 0.0 { max } else { 1.0 };
    let (first, last) = match (s.points.first(), s.points.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => (Utc::now(), Utc::now()),
    };
    let span = (last - first).num_milliseconds().max(1) as f64;
    let room = HEIGHT - TOP - BOTTOM;
    let xy: Vec<(f64, f64)> = s
        .points
        .iter()
        .map(|(at, v)| {
            let x = if s.points.len() == 1 {
                WIDTH / 2.0
            } else {
                (*at - first).num_milliseconds() as f64 / span * WIDTH
            };
            (x, HEIGHT - BOTTOM - v / scale * room)
        })
        .collect();
    let polyline: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let title_id = format!("{}-title", s.id);
    let desc_id = format!("{}-desc", s.id);
    html! {
        figure.chart {
            svg id={ (s.id) "-chart" } viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width="100%" role="img"
                aria-labelledby={ (title_id) " " (desc_id) } xmlns="http://www.w3.org/2000/svg"
                data-points=(s.points.len()) {
                title id=(title_id) { (s.title) }
                desc id=(desc_id) { (summary) }
                line.baseline x1="0" x2=(WIDTH) y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM) {}
                text.axis x="0" y="10" { (s.title) " (max " (format(max)) ")" }
                @if xy.len() > 1 {
                    polyline.series points=(polyline.join(" ")) {}
                }
                @for (x, y) in &xy {
                    circle.point cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="1.8" {}
                }
                text.axis x="0" y=(HEIGHT - 5.0) { (first.format("%H:%M:%S")) }
                text.axis x=(WIDTH) y=(HEIGHT - 5.0) text-anchor="end" { (last.format("%H:%M:%S UTC")) }
            }
            figcaption id={ (s.id) "-text" } { (summary) }
        }
    }
}

/// Bytes in binary units, as `pg_size_pretty` would.
fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn sample(seconds: i64, connections: i64, tps: Option<f64>, size: i64) -> ActivitySample {
        ActivitySample {
            at: DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(seconds),
            connections,
            transactions: 0,
            transactions_per_second: tps,
            database_bytes: size,
        }
    }

    #[test]
    fn each_chart_draws_its_samples_and_says_them_in_words() {
        let samples = [
            sample(0, 2, None, 8 << 20),
            sample(30, 5, Some(12.0), 9 << 20),
            sample(60, 3, Some(4.5), 10 << 20),
        ];
        let html = render(&samples).into_string();
        assert!(html.contains("id=\"connections-chart\""), "{html}");
        assert!(
            html.contains("Client connections: now 3; between 2 and 5 over the last 3 samples.")
        );
        // The first sample has no rate: two points on the rate chart.
        assert!(html.contains("id=\"tps-chart\"") && html.contains("data-points=\"2\""));
        assert!(html.contains(
            "Transactions per second: now 4.5/s; between 4.5/s and 12.0/s over the last 2 samples."
        ));
        assert!(html.contains("Database size: now 10.0 MiB"), "{html}");
        // The busiest sample reaches the top of the plot, the first the left edge.
        assert!(
            html.contains(&format!("cx=\"180.0\" cy=\"{TOP:.1}\"")),
            "{html}"
        );
        assert!(html.contains(&format!(
            "cx=\"0.0\" cy=\"{:.1}\"",
            HEIGHT - BOTTOM - 2.0 / 5.0 * (HEIGHT - TOP - BOTTOM)
        )));
        assert_eq!(html.matches("<tr><td>").count(), 3);
    }

    #[test]
    fn no_samples_is_said_not_drawn() {
        let html = render(&[]).into_string();
        assert!(html.contains("No activity sampled yet"));
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(7.5 * 1024.0 * 1024.0), "7.5 MiB");
        assert_eq!(bytes(3.0 * 1024f64.powi(3)), "3.0 GiB");
    }
}
