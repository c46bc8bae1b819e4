//! The page shell and the small pieces every page uses.

use chrono::{DateTime, Utc};
use domain::State;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::Session;

/// A page for a signed-in user: navigation, organisation, sign-out.
pub fn page(session: &Session, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/instances" { "pgplane" }
                        a href="/dashboard" { "Dashboard" }
                        a href="/instances" { "Instances" }
                        a href="/instances/new" { "New instance" }
                        a href="/sources" { "Sources" }
                        a href="/drift" { "Drift" }
                    }
                    div.who {
                        span { "Organisation " strong #org { (session.caller.org) } }
                        form method="post" action="/logout" {
                            (csrf_field(session))
                            button.link type="submit" #sign-out { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
                script src="/assets/console.js" defer {}
            }
        }
    }
}

/// A page without a session (sign-in, errors).
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                header.top { nav aria-label="Main" { a.brand href="/" { "pgplane" } } }
                main #main { (body) }
            }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · pgplane" }
        link rel="stylesheet" href="/assets/console.css";
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A state, as a coloured badge the event stream updates in place.
pub fn badge(state: State) -> Markup {
    html! {
        span class={ "badge st-" (state.as_str()) } data-role="state" { (state.as_str()) }
    }
}

pub fn timestamp(t: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

/// "3m", "5h", "2d": how long ago, roughly.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - since).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A thin space-free "—" for absent values.
pub fn none() -> Markup {
    PreEscaped("<span class=\"muted\">—</span>".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_rounds_down_to_the_largest_unit() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s");
        assert_eq!(age(now - chrono::Duration::seconds(150), now), "2m");
        assert_eq!(age(now - chrono::Duration::hours(5), now), "5h");
        assert_eq!(age(now - chrono::Duration::days(3), now), "3d");
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0s");
    }
}
