//! The instance list: filtered, sorted and paginated in SQL, so a page of an
//! organisation with 10,000 instances reads 50 rows.

use api::DriftStatus;
use axum::extract::{Query, State as AxumState};
use chrono::Utc;
use domain::State;
use maud::{html, Markup};
use serde::Deserialize;
use sqlx::PgConnection;

use super::layout::{self, badge};
use super::session::Session;
use super::Result;
use crate::error::ApiError;
use crate::store::InstanceRow;
use crate::AppState;

/// Instances per page.
pub const PAGE_SIZE: i64 = 50;

/// The list's query string; every field is optional.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ListQuery {
    /// A substring of the name.
    #[serde(default)]
    pub q: String,
    /// One state, `all` (deleted ones too), or empty (live ones).
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub sort: String,
    #[serde(default)]
    pub dir: String,
    #[serde(default)]
    pub page: Option<i64>,
}

/// A column the list sorts by, and the SQL it sorts on (never user text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    State,
    Version,
    Owner,
    /// Youngest first when ascending.
    Age,
}

impl SortKey {
    const ALL: [SortKey; 5] = [
        SortKey::Name,
        SortKey::State,
        SortKey::Version,
        SortKey::Owner,
        SortKey::Age,
    ];

    fn param(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::State => "state",
            SortKey::Version => "version",
            SortKey::Owner => "owner",
            SortKey::Age => "age",
        }
    }

    /// The column to order by, and whether ascending means descending in it.
    fn sql(self) -> (&'static str, bool) {
        match self {
            SortKey::Name => ("name", false),
            SortKey::State => ("state", false),
            SortKey::Version => ("spec->>'postgresVersion'", false),
            SortKey::Owner => ("owner", false),
            SortKey::Age => ("created_at", true),
        }
    }

    fn parse(s: &str) -> SortKey {
        SortKey::ALL
            .into_iter()
            .find(|k| k.param() == s)
            .unwrap_or(SortKey::Name)
    }
}

/// Which states the list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    Live,
    All,
    Only(State),
}

impl StateFilter {
    fn parse(s: &str) -> Result<StateFilter> {
        match s {
            "" => Ok(StateFilter::Live),
            "all" => Ok(StateFilter::All),
            other => State::parse(other).map(StateFilter::Only).ok_or_else(|| {
                ApiError::invalid("state", format!("unknown state {other:?}")).into()
            }),
        }
    }
}

/// One page of an organisation's instances, and how many match in all.
pub struct Listing {
    pub rows: Vec<InstanceRow>,
    pub total: i64,
    pub page: i64,
}

/// Reads one page. The organisation scopes every row, as in the API.
pub async fn list_page_rows(
    conn: &mut PgConnection,
    org: &str,
    name_contains: &str,
    filter: StateFilter,
    sort: SortKey,
    descending: bool,
    page: i64,
) -> Result<Listing> {
    let (only, with_deleted) = match filter {
        StateFilter::Live => (None, false),
        StateFilter::All => (None, true),
        StateFilter::Only(s) => (Some(s.as_str()), true),
    };
    let filter_sql = "org = $1 and strpos(name, $2) > 0 \
         and ($3::text is null or state = $3) and ($4 or state <> 'Deleted')";
    let needle = name_contains.trim().to_ascii_lowercase();
    let total: i64 = sqlx::query_scalar(&format!(
        "select count(*) from instances where {filter_sql}"
    ))
    .bind(org)
    .bind(&needle)
    .bind(only)
    .bind(with_deleted)
    .fetch_one(&mut *conn)
    .await
    .map_err(ApiError::from)?;
    let last_page = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let page = page.clamp(1, last_page);
    let (column, inverted) = sort.sql();
    let dir = if descending != inverted {
        "desc"
    } else {
        "asc"
    };
    // The page is chosen on narrow rows (the sort never spills whole
    // instances to disk), then its 50 rows are read by id.
    let rows = sqlx::query_as::<_, InstanceRow>(&format!(
        "select {} from (
             select id as page_id, {column} as page_key, name as page_name,
                    created_at as page_created
             from instances where {filter_sql}
             order by page_key {dir}, page_name {dir}, page_created desc limit $5 offset $6
         ) page join instances on id = page_id
         order by page_key {dir}, page_name {dir}, page_created desc",
        crate::store::COLUMNS
    ))
    .bind(org)
    .bind(&needle)
    .bind(only)
    .bind(with_deleted)
    .bind(PAGE_SIZE)
    .bind((page - 1) * PAGE_SIZE)
    .fetch_all(&mut *conn)
    .await
    .map_err(ApiError::from)?;
    Ok(Listing { rows, total, page })
}

pub async fn list_page(
    AxumState(state): AxumState<AppState>,
    session: Session,
    Query(query): Query<ListQuery>,
) -> Result<Markup> {
    let filter = StateFilter::parse(&query.state)?;
    let sort = SortKey::parse(&query.sort);
    let descending = query.dir == "desc";
    let mut conn = state.pool.acquire().await.map_err(ApiError::from)?;
    let now: chrono::DateTime<Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&mut *conn)
        .await
        .map_err(ApiError::from)?;
    let listing = list_page_rows(
        &mut conn,
        &session.caller.org,
        &query.q,
        filter,
        sort,
        descending,
        query.page.unwrap_or(1),
    )
    .await?;
    Ok(layout::page(
        &session,
        "Instances",
        render(&query, sort, descending, &listing, now),
    ))
}

fn render(
    query: &ListQuery,
    sort: SortKey,
    descending: bool,
    listing: &Listing,
    now: chrono::DateTime<Utc>,
) -> Markup {
    let link = |page: i64, sort: SortKey, descending: bool| {
        let mut params = vec![];
        if !query.q.is_empty() {
            params.push(format!("q={}", encode(&query.q)));
        }
        if !query.state.is_empty() {
            params.push(format!("state={}", encode(&query.state)));
        }
        params.push(format!("sort={}", sort.param()));
        if descending {
            params.push("dir=desc".to_owned());
        }
        if page > 1 {
            params.push(format!("page={page}"));
        }
        format!("/instances?{}", params.join("&"))
    };
    let header = |label: &str, key: SortKey| {
        let active = key == sort;
        let next_desc = active && !descending;
        let aria = match (active, descending) {
            (true, false) => "ascending",
            (true, true) => "descending",
            (false, _) => "none",
        };
        html! {
            th scope="col" aria-sort=(aria) {
                a href=(link(1, key, next_desc)) data-sort=(key.param()) {
                    (label)
                    @if active { span.arrow aria-hidden="true" { @if descending { " ▼" } @else { " ▲" } } }
                }
            }
        }
    };
    let first = (listing.page - 1) * PAGE_SIZE + 1;
    let last = first + listing.rows.len() as i64 - 1;
    let pages = ((listing.total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    html! {
        div #instance-list data-since=(now.to_rfc3339()) {
        h1 { "Instances" }
        form.filters method="get" action="/instances" role="search" {
            label for="q" { "Name contains" }
            input #q type="search" name="q" value=(query.q);
            label for="state-filter" { "State" }
            select #state-filter name="state" {
                option value="" selected[query.state.is_empty()] { "Live (not deleted)" }
                option value="all" selected[query.state == "all"] { "All, deleted too" }
                @for s in State::ALL {
                    option value=(s.as_str()) selected[query.state == s.as_str()] { (s.as_str()) }
                }
            }
            input type="hidden" name="sort" value=(sort.param());
            @if descending { input type="hidden" name="dir" value="desc"; }
            button type="submit" { "Filter" }
            a.button.secondary href="/instances/new" { "New instance" }
        }
        p #live-note .note hidden { "Instances changed that this page does not show. " a href="" { "Reload" } }
        @if listing.rows.is_empty() {
            p #empty { "No instances match." }
        } @else {
            p.count #count {
                "Showing " (first) "–" (last) " of " (listing.total)
            }
            table.instances #instances {
                thead {
                    tr {
                        (header("Name", SortKey::Name))
                        (header("State", SortKey::State))
                        (header("Version", SortKey::Version))
                        th scope="col" { "Extensions" }
                        (header("Owner", SortKey::Owner))
                        th scope="col" { "Drift" }
                        (header("Age", SortKey::Age))
                    }
                }
                tbody {
                    @for row in &listing.rows {
                        (render_row(row, now))
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pager aria-label="Pages" {
                @if listing.page > 1 {
                    a rel="prev" href=(link(listing.page - 1, sort, descending)) { "← Previous" }
                }
                span { "Page " (listing.page) " of " (pages) }
                @if listing.page < pages {
                    a rel="next" href=(link(listing.page + 1, sort, descending)) { "Next →" }
                }
            }
        }
        }
    }
}

fn render_row(row: &InstanceRow, now: chrono::DateTime<Utc>) -> Markup {
    let extensions: Vec<&str> = row.spec.0.extension_names().collect();
    let drift = crate::drift::instance_drift(row.clone(), now);
    html! {
        tr data-id=(row.id) data-name=(row.name) {
            td { a href={ "/instances/" (row.name) } { (row.name) } }
            td { (badge(row.state())) }
            td { (row.spec.0.postgres_version) }
            td {
                @if extensions.is_empty() { (layout::none()) } @else { (extensions.join(", ")) }
            }
            td { (row.owner) }
            td {
                @match drift.status {
                    DriftStatus::Drifted => span.badge.drifted title=(drift_title(&drift)) { "drifted" },
                    DriftStatus::InSync => span.muted { "in sync" },
                    DriftStatus::Converging => span.muted { "converging" },
                    DriftStatus::Unobserved => span.muted { "not observed" },
                }
            }
            td { span title=(row.created_at.to_rfc3339()) { (layout::age(row.created_at, now)) } }
        }
    }
}

fn drift_title(drift: &api::InstanceDrift) -> String {
    drift
        .fields
        .iter()
        .map(|f| f.path.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
