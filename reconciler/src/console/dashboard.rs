//! The dashboard: the organisation's fleet per state and its activity
//! (state changes per hour over the last 24 hours, from the instances'
//! history) as inline SVG pictures, each with a text equivalent, and the
//! drift and source health at a glance.

use api::DriftStatus;
use axum::extract::State as AxumState;
use chrono::{DateTime, Utc};
use domain::State;
use maud::{html, Markup};
use sqlx::PgConnection;

use super::layout;
use super::session::Session;
use super::Result;
use crate::error::ApiError;
use crate::AppState;

/// Hours the activity chart covers.
pub const HOURS: usize = 24;

const WIDTH: f64 = 720.0;

/// Live instances per state, in [`State::ALL`] order, zeros included.
pub async fn fleet(conn: &mut PgConnection, org: &str) -> Result<Vec<(State, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select state, count(*) from instances where org = $1 and state <> 'Deleted' group by state",
    )
    .bind(org)
    .fetch_all(&mut *conn)
    .await
    .map_err(ApiError::from)?;
    Ok(State::ALL
        .into_iter()
        .filter(|s| *s != State::Deleted)
        .map(|s| {
            let n = rows
                .iter()
                .find(|(name, _)| name == s.as_str())
                .map_or(0, |(_, n)| *n);
            (s, n)
        })
        .collect())
}

/// State changes per hour, oldest hour first: `activity[HOURS - 1]` is the
/// last 60 minutes. A history entry that keeps the state (a re-sent spec)
/// is not a change.
pub async fn activity(conn: &mut PgConnection, org: &str) -> Result<(Vec<i64>, DateTime<Utc>)> {
    let now: DateTime<Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&mut *conn)
        .await
        .map_err(ApiError::from)?;
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "select floor(extract(epoch from ($2 - h.at)) / 3600)::int, count(*)
         from instance_history h join instances i on i.id = h.instance_id
         where i.org = $1 and h.at > $2 - make_interval(hours => $3) and h.at <= $2
           and h.from_state is distinct from h.to_state
         group by 1",
    )
    .bind(org)
    .bind(now)
    .bind(HOURS as i32)
    .fetch_all(&mut *conn)
    .await
    .map_err(ApiError::from)?;
    let mut per_hour = vec![0; HOURS];
    for (hours_ago, n) in rows {
        if let Ok(ago) = usize::try_from(hours_ago) {
            if ago < HOURS {
                per_hour[HOURS - 1 - ago] += n;
            }
        }
    }
    Ok((per_hour, now))
}

pub async fn page(AxumState(state): AxumState<AppState>, session: Session) -> Result<Markup> {
    let org = &session.caller.org;
    let mut conn = state.pool.acquire().await.map_err(ApiError::from)?;
    let fleet = fleet(&mut conn, org).await?;
    let (activity, now) = activity(&mut conn, org).await?;
    let drift = crate::drift::report(&mut conn, org, now).await?;
    drop(conn);
    let sources = crate::sources::list(&state, org).await?;
    let mut unhealthy = Vec::new();
    for source in &sources {
        let last = crate::sources::history(&state, org, &source.name, 1).await?;
        let health = super::sources::Health::of(source, last.first(), now);
        if !matches!(health, super::sources::Health::Healthy) {
            unhealthy.push((source.name.clone(), health));
        }
    }
    let drifted = drift
        .items
        .iter()
        .filter(|i| i.status == DriftStatus::Drifted)
        .count();
    Ok(layout::page(
        &session,
        "Dashboard",
        html! {
            h1 { "Dashboard" }
            div.columns {
                section aria-labelledby="h-fleet" {
                    h2 #h-fleet { "Fleet" }
                    (fleet_chart(&fleet))
                }
                section aria-labelledby="h-glance" {
                    h2 #h-glance { "At a glance" }
                    dl.facts {
                        dt { "Drifted" } dd #glance-drifted { a href="/drift" { (drifted) " of " (drift.items.len()) } }
                        dt { "Sources" } dd #glance-sources {
                            a href="/sources" { (sources.len()) }
                            @if !unhealthy.is_empty() {
                                " (" (unhealthy.len()) " not healthy: "
                                @for (i, (name, health)) in unhealthy.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    a href={ "/sources/" (name) } { (name) } " " (health.render())
                                }
                                ")"
                            }
                        }
                    }
                }
            }
            section aria-labelledby="h-activity" {
                h2 #h-activity { "Activity" }
                (activity_chart(&activity, now))
            }
        },
    ))
}

/// Horizontal bars, one per state.
pub fn fleet_chart(fleet: &[(State, i64)]) -> Markup {
    const ROW: f64 = 22.0;
    const LABEL: f64 = 110.0;
    let total: i64 = fleet.iter().map(|(_, n)| n).sum();
    let max = fleet.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1) as f64;
    let height = ROW * fleet.len() as f64 + 4.0;
    let bar_room = WIDTH / 2.0 - LABEL - 50.0;
    let summary = if total == 0 {
        "No live instances.".to_owned()
    } else {
        let parts: Vec<String> = fleet
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        format!("{total} live instances: {}.", parts.join(", "))
    };
    html! {
        figure.chart {
            svg #fleet-chart viewBox={ "0 0 " (WIDTH / 2.0) " " (height) } width="100%" role="img"
                aria-labelledby="fleet-title fleet-desc" xmlns="http://www.w3.org/2000/svg" {
                title #fleet-title { "Live instances per state" }
                desc #fleet-desc { (summary) }
                @for (i, (state, n)) in fleet.iter().enumerate() {
                    @let y = ROW * i as f64 + 2.0;
                    g.bar data-state=(state.as_str()) data-count=(n) {
                        text.axis x=(LABEL - 6.0) y=(fmt(y + ROW * 0.65)) text-anchor="end" { (state.as_str()) }
                        rect class={ "st-" (state.as_str()) } x=(LABEL) y=(fmt(y + 3.0))
                            width=(fmt(if *n > 0 { (*n as f64 / max * bar_room).max(2.0) } else { 0.0 }))
                            height=(fmt(ROW - 6.0)) {}
                        text.value x=(fmt(LABEL + (*n as f64 / max * bar_room) + 6.0)) y=(fmt(y + ROW * 0.65)) { (n) }
                    }
                }
            }
            figcaption #fleet-text { (summary) }
        }
    }
}

/// One column per hour, the last 60 minutes at the right.
pub fn activity_chart(per_hour: &[i64], now: DateTime<Utc>) -> Markup {
    const HEIGHT: f64 = 140.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 22.0;
    let total: i64 = per_hour.iter().sum();
    let max = per_hour.iter().copied().max().unwrap_or(0).max(1) as f64;
    let column = WIDTH / per_hour.len().max(1) as f64;
    let room = HEIGHT - TOP - BOTTOM;
    let hours = per_hour.len();
    let busiest = per_hour
        .iter()
        .enumerate()
        .max_by_key(|(i, n)| (**n, *i))
        .filter(|(_, n)| **n > 0);
    let summary = match busiest {
        None => format!("No state changes in the last {hours} hours."),
        Some((i, n)) => format!(
            "{total} state changes in the last {hours} hours; the busiest hour had {n} ({}).",
            hour_label(hours - 1 - i)
        ),
    };
    html! {
        figure.chart {
            svg #activity-chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width="100%" role="img"
                aria-labelledby="activity-title activity-desc" xmlns="http://www.w3.org/2000/svg" {
                title #activity-title { "State changes per hour, last " (hours) " hours" }
                desc #activity-desc { (summary) }
                line.baseline x1="0" x2=(WIDTH) y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM) {}
                @for (i, n) in per_hour.iter().enumerate() {
                    @let h = *n as f64 / max * room;
                    g.hour data-hours-ago=(hours - 1 - i) data-count=(n) {
                        rect.activity x=(fmt(i as f64 * column + 2.0)) y=(fmt(HEIGHT - BOTTOM - h))
                            width=(fmt(column - 4.0)) height=(fmt(h)) {
                            title { (hour_label(hours - 1 - i)) ": " (n) " state changes" }
                        }
                        @if *n > 0 {
                            text.value x=(fmt(i as f64 * column + column / 2.0)) y=(fmt(HEIGHT - BOTTOM - h - 3.0))
                                text-anchor="middle" { (n) }
                        }
                    }
                }
                text.axis x="0" y=(HEIGHT - 6.0) { (hours) " h ago" }
                text.axis x=(WIDTH) y=(HEIGHT - 6.0) text-anchor="end" { "now (" (now.format("%H:%M UTC")) ")" }
            }
            figcaption #activity-text { (summary) }
            details {
                summary { "The numbers" }
                table #activity-table {
                    thead { tr { th scope="col" { "Hour" } th scope="col" { "State changes" } } }
                    tbody {
                        @for (i, n) in per_hour.iter().enumerate().rev() {
                            tr { td { (hour_label(hours - 1 - i)) } td { (n) } }
                        }
                    }
                }
            }
        }
    }
}

fn hour_label(hours_ago: usize) -> String {
    match hours_ago {
        0 => "the last hour".to_owned(),
        1 => "1–2 hours ago".to_owned(),
        h => format!("{h}–{} hours ago", h + 1),
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_activity_chart_says_in_words_what_it_draws() {
        let mut per_hour = vec![0; HOURS];
        per_hour[HOURS - 1] = 7;
        per_hour[HOURS - 3] = 2;
        let svg = activity_chart(&per_hour, Utc::now()).into_string();
        assert!(
            svg.contains(
                "9 state changes in the last 24 hours; the busiest hour had 7 (the last hour)."
            ),
            "{svg}"
        );
        assert!(
            svg.contains("data-hours-ago=\"2\" data-count=\"2\""),
            "{svg}"
        );
        assert_eq!(svg.matches("<g class=\"hour\"").count(), HOURS);
        let quiet = activity_chart(&[0; HOURS], Utc::now()).into_string();
        assert!(quiet.contains("No state changes in the last 24 hours."));
    }

    #[test]
    fn the_fleet_chart_scales_bars_to_the_largest_state() {
        let fleet = [(State::Up, 8), (State::Error, 2), (State::Stopped, 0)];
        let svg = fleet_chart(&fleet).into_string();
        assert!(svg.contains("10 live instances: 8 Up, 2 Error."), "{svg}");
        assert!(svg.contains("data-state=\"Stopped\" data-count=\"0\""));
        let up = svg.find("class=\"st-Up\"").unwrap();
        let error = svg.find("class=\"st-Error\"").unwrap();
        let width = |at: usize| -> f64 {
            let w = &svg[at..];
            let w = &w[w.find("width=\"").unwrap() + 7..];
            w[..w.find('"').unwrap()].parse().unwrap()
        };
        assert!((width(up) / width(error) - 4.0).abs() < 0.05);
    }
}
