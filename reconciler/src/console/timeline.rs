//! An instance's states over time, drawn as an inline SVG from its history.
//!
//! Time runs left to right from the first entry to now (or to the delete).
//! Short states (a two-second `Submitted` beside a month of `Up`) would be
//! invisible at scale, so each segment gets at least [`MIN_WIDTH`] and the
//! rest of the width is shared by duration.

use api::HistoryEntry;
use chrono::{DateTime, Utc};
use domain::State;
use maud::{html, Markup};

const WIDTH: f64 = 800.0;
const BAR_Y: f64 = 8.0;
const BAR_HEIGHT: f64 = 28.0;
const HEIGHT: f64 = 64.0;
const MIN_WIDTH: f64 = 8.0;

/// One state held from `from` to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub state: State,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub x: f64,
    pub width: f64,
}

/// The segments of `history` (oldest first) up to `now`.
pub fn segments(history: &[HistoryEntry], now: DateTime<Utc>) -> Vec<Segment> {
    let mut spans: Vec<(State, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (i, entry) in history.iter().enumerate() {
        let end = match history.get(i + 1) {
            Some(next) => next.at,
            None if entry.to == State::Deleted => entry.at,
            None => now.max(entry.at),
        };
        // An entry that keeps the state extends the segment before it.
        match spans.last_mut() {
            Some(last) if last.0 == entry.to => last.2 = end,
            _ => spans.push((entry.to, entry.at, end)),
        }
    }
    let total: f64 = spans.iter().map(|(_, from, to)| seconds(*from, *to)).sum();
    let flexible = (WIDTH - MIN_WIDTH * spans.len() as f64).max(0.0);
    let mut x = 0.0;
    spans
        .into_iter()
        .map(|(state, from, to)| {
            let share = if total > 0.0 {
                seconds(from, to) / total
            } else {
                0.0
            };
            let width = MIN_WIDTH + flexible * share;
            let segment = Segment {
                state,
                from,
                to,
                x,
                width,
            };
            x += width;
            segment
        })
        .collect()
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

fn duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let s = (to - from).num_seconds().max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The timeline picture, with a text equivalent for screen readers.
pub fn render(history: &[HistoryEntry], now: DateTime<Utc>) -> Markup {
    let segments = segments(history, now);
    let Some(first) = segments.first() else {
        return html! { p.muted { "No history yet." } };
    };
    let last = segments.last().unwrap_or(first);
    let summary = segments
        .iter()
        .map(|s| format!("{} for {}", s.state.as_str(), duration(s.from, s.to)))
        .collect::<Vec<_>>()
        .join(", then ");
    html! {
        figure.timeline {
            svg #timeline viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width="100%" role="img"
                aria-labelledby="timeline-title timeline-desc" xmlns="http://www.w3.org/2000/svg" {
                title #timeline-title { "State timeline" }
                desc #timeline-desc { (summary) }
                @for s in &segments {
                    g.segment data-state=(s.state.as_str()) {
                        rect class={ "st-" (s.state.as_str()) } x=(fmt(s.x)) y=(BAR_Y)
                            width=(fmt(s.width)) height=(BAR_HEIGHT) {
                            title {
                                (s.state.as_str()) " from " (s.from.format("%Y-%m-%d %H:%M:%S"))
                                " for " (duration(s.from, s.to))
                            }
                        }
                        @if s.width > 60.0 {
                            text.label x=(fmt(s.x + 4.0)) y=(BAR_Y + BAR_HEIGHT / 2.0 + 4.0) {
                                (s.state.as_str())
                            }
                        }
                    }
                }
                text.axis x="0" y=(HEIGHT - 6.0) { (first.from.format("%Y-%m-%d %H:%M:%S UTC")) }
                text.axis x=(WIDTH) y=(HEIGHT - 6.0) text-anchor="end" {
                    @if last.state == State::Deleted { (last.to.format("%Y-%m-%d %H:%M:%S UTC")) } @else { "now" }
                }
            }
            figcaption.legend {
                @for state in legend(&segments) {
                    span.key { span class={ "swatch st-" (state.as_str()) } aria-hidden="true" {} (state.as_str()) }
                }
            }
        }
    }
}

fn legend(segments: &[Segment]) -> Vec<State> {
    let mut states: Vec<State> = segments.iter().map(|s| s.state).collect();
    states.sort();
    states.dedup();
    states
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(to: State, at: DateTime<Utc>) -> HistoryEntry {
        HistoryEntry {
            from: None,
            event: "x".into(),
            to,
            generation: 1,
            actor: "test".into(),
            detail: None,
            at,
        }
    }

    #[test]
    fn segments_fill_the_width_and_short_states_stay_visible() {
        let t0 = Utc::now() - chrono::Duration::days(30);
        let history = [
            entry(State::Submitted, t0),
            entry(State::Up, t0 + chrono::Duration::seconds(2)),
            entry(State::Up, t0 + chrono::Duration::days(1)),
            entry(State::Stopping, t0 + chrono::Duration::days(29)),
            entry(
                State::Stopped,
                t0 + chrono::Duration::days(29) + chrono::Duration::seconds(1),
            ),
        ];
        let segs = segments(&history, t0 + chrono::Duration::days(30));
        let states: Vec<State> = segs.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [State::Submitted, State::Up, State::Stopping, State::Stopped],
            "a repeated state is one segment"
        );
        let total: f64 = segs.iter().map(|s| s.width).sum();
        assert!((total - WIDTH).abs() < 0.01, "{total}");
        assert!(segs.iter().all(|s| s.width >= MIN_WIDTH));
        assert!(segs[1].width > segs[3].width * 10.0, "Up held longest");
        for pair in segs.windows(2) {
            assert!((pair[0].x + pair[0].width - pair[1].x).abs() < 0.01);
        }
    }

    #[test]
    fn a_deleted_instance_ends_at_its_delete() {
        let t0 = Utc::now() - chrono::Duration::hours(2);
        let history = [
            entry(State::Submitted, t0),
            entry(State::Deleting, t0 + chrono::Duration::minutes(1)),
            entry(State::Deleted, t0 + chrono::Duration::minutes(2)),
        ];
        let segs = segments(&history, Utc::now());
        let last = segs.last().unwrap();
        assert_eq!(last.state, State::Deleted);
        assert_eq!(last.from, last.to);
        let svg = render(&history, Utc::now()).into_string();
        assert!(
            svg.contains("Submitted for 1m 0s, then Deleting for 1m 0s, then Deleted for 0s"),
            "{svg}"
        );
    }

    #[test]
    fn no_history_draws_nothing() {
        assert!(segments(&[], Utc::now()).is_empty());
        assert!(render(&[], Utc::now())
            .into_string()
            .contains("No history yet"));
    }
}
