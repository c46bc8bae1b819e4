//! The instance list: filtered, sorted and paginated in SQL, so a page of an
//! organisation with 10,000 instances reads 50 rows.

use api::DriftStatus;
use axum::extract::{Query, State as AxumState};
use chrono::{DateTime, Utc};
use domain::State;
use maud::{html, Markup};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

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
    /// A page number (a direct link, read by offset) or `last`.
    #[serde(default)]
    pub page: Option<String>,
    /// The pager's links: the page just after (or before) a row, read
    /// through the sort order's index instead of counted past. `page` then
    /// only numbers it.
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
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

    /// The sort order's columns, most significant first: the key, then
    /// name, creation time and id, so that every row has one place.
    fn columns(self) -> Vec<&'static str> {
        match self {
            SortKey::Name => vec!["name", "created_at", "id"],
            SortKey::Age => vec!["created_at", "id"],
            key => vec![key.sql().0, "name", "created_at", "id"],
        }
    }

    /// The parameters a [`Cursor`] binds for [`SortKey::columns`]: `$6`
    /// key, `$7` name, `$8` created, `$9` id.
    fn cursor_params(self) -> &'static str {
        match self {
            SortKey::Name => "($7, $8, $9)",
            SortKey::Age => "($8, $9)",
            _ => "($6, $7, $8, $9)",
        }
    }

    /// A row's value of the sort key, as the SQL compares it.
    fn key_of(self, row: &InstanceRow) -> String {
        match self {
            SortKey::State => row.state.clone(),
            SortKey::Version => row.spec.0.postgres_version.clone(),
            SortKey::Owner => row.owner.clone(),
            SortKey::Name | SortKey::Age => String::new(),
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

/// A row's place in a sort order, carried by the pager's links.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    key: String,
    name: String,
    created: DateTime<Utc>,
    id: Uuid,
}

impl Cursor {
    fn of(row: &InstanceRow, sort: SortKey) -> Cursor {
        Cursor {
            key: sort.key_of(row),
            name: row.name.clone(),
            created: row.created_at,
            id: row.id,
        }
    }

    /// `MICROS.ID.NAME.KEY` (names never hold a dot; the key comes last).
    fn encode(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.created.timestamp_micros(),
            self.id,
            self.name,
            self.key
        )
    }

    fn parse(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(4, '.');
        let created = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
        let id = Uuid::parse_str(parts.next()?).ok()?;
        let name = parts.next()?.to_owned();
        let key = parts.next()?.to_owned();
        Some(Cursor {
            key,
            name,
            created,
            id,
        })
    }
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Anchor {
    /// The n-th page, counted from the first (a direct link).
    Page(i64),
    /// The page after this row; its number, for display.
    After(Cursor, i64),
    /// The page before this row; its number, for display.
    Before(Cursor, i64),
    Last,
}

impl Anchor {
    /// From the query string; a malformed value names its parameter.
    pub fn parse(query: &ListQuery) -> Result<Anchor> {
        let number = || -> Result<i64> {
            match query.page.as_deref().map(str::trim) {
                None | Some("") => Ok(1),
                Some(n) => n.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::invalid("page", format!("{n:?} is not a page number or \"last\""))
                        .into()
                }),
            }
        };
        let cursor = |field: &str, value: &str| -> Result<Cursor> {
            Cursor::parse(value).ok_or_else(|| {
                ApiError::invalid(
                    field,
                    "not a position in this list; start from the first page",
                )
                .into()
            })
        };
        if query.page.as_deref() == Some("last") {
            return Ok(Anchor::Last);
        }
        match (&query.after, &query.before) {
            (Some(a), _) => Ok(Anchor::After(cursor("after", a)?, number()?)),
            (None, Some(b)) => Ok(Anchor::Before(cursor("before", b)?, number()?)),
            (None, None) => Ok(Anchor::Page(number()?)),
        }
    }
}

/// What every read of one list shares: the organisation, the filters and
/// the order.
struct Selection<'a> {
    org: &'a str,
    needle: String,
    only: Option<&'static str>,
    with_deleted: bool,
    sort: SortKey,
    /// Whether the display order is ascending in [`SortKey::columns`].
    ascending: bool,
}

const FILTER_SQL: &str = "org = $1 and strpos(name, $2) > 0 \
     and ($3::text is null or state = $3) and ($4 or state <> 'Deleted')";

impl Selection<'_> {
    async fn count(&self, conn: &mut PgConnection) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!(
            "select count(*) from instances where {FILTER_SQL}"
        ))
        .bind(self.org)
        .bind(&self.needle)
        .bind(self.only)
        .bind(self.with_deleted)
        .fetch_one(&mut *conn)
        .await
        .map_err(ApiError::from)?)
    }

    /// Up to `limit` rows in display order: after `offset` rows from the
    /// start (`forward`) or the end, or just after (`forward`) or before
    /// `from`. The page is chosen on ids alone, so the sort never carries
    /// whole instances, then its rows are read by id.
    async fn read(
        &self,
        conn: &mut PgConnection,
        forward: bool,
        limit: i64,
        from: Option<&Cursor>,
        offset: i64,
    ) -> Result<Vec<InstanceRow>> {
        let columns = self.sort.columns();
        let inner_asc = self.ascending == forward;
        let order = |asc: bool| {
            let dir = if asc { "asc" } else { "desc" };
            columns
                .iter()
                .map(|c| format!("{c} {dir}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let seek = match from {
            Some(_) => format!(
                " and ({}) {} {}",
                columns.join(", "),
                if inner_asc { ">" } else { "<" },
                self.sort.cursor_params()
            ),
            None => String::new(),
        };
        let sql = format!(
            "select {} from (
                 select id from instances where {FILTER_SQL}{seek}
                 order by {} limit $5 offset $10
             ) page join instances using (id)
             order by {}",
            crate::store::COLUMNS,
            order(inner_asc),
            order(self.ascending)
        );
        Ok(sqlx::query_as::<_, InstanceRow>(&sql)
            .bind(self.org)
            .bind(&self.needle)
            .bind(self.only)
            .bind(self.with_deleted)
            .bind(limit)
            .bind(from.map(|c| c.key.as_str()))
            .bind(from.map(|c| c.name.as_str()))
            .bind(from.map(|c| c.created))
            .bind(from.map(|c| c.id))
            .bind(offset)
            .fetch_all(&mut *conn)
            .await
            .map_err(ApiError::from)?)
    }
}

/// Reads one page. The organisation scopes every row, as in the API.
/// The pager's links (next, previous, last) are read from a place in the
/// sort order, so their cost does not grow with depth; only a direct
/// `?page=N` link counts rows past an offset.
pub async fn list_page_rows(
    conn: &mut PgConnection,
    org: &str,
    name_contains: &str,
    filter: StateFilter,
    sort: SortKey,
    descending: bool,
    anchor: Anchor,
) -> Result<Listing> {
    let (only, with_deleted) = match filter {
        StateFilter::Live => (None, false),
        StateFilter::All => (None, true),
        StateFilter::Only(s) => (Some(s.as_str()), true),
    };
    let selection = Selection {
        org,
        needle: name_contains.trim().to_ascii_lowercase(),
        only,
        with_deleted,
        sort,
        ascending: descending == sort.sql().1,
    };
    let total = selection.count(conn).await?;
    let last_page = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let on_last = total - (last_page - 1) * PAGE_SIZE;
    let first = |page: i64| (page.clamp(1, last_page) - 1) * PAGE_SIZE;
    let (rows, page) = match anchor {
        Anchor::Page(n) => {
            let rows = selection
                .read(conn, true, PAGE_SIZE, None, first(n))
                .await?;
            (rows, n.clamp(1, last_page))
        }
        Anchor::Last => (
            selection.read(conn, false, on_last, None, 0).await?,
            last_page,
        ),
        Anchor::After(cursor, n) => {
            let rows = selection
                .read(conn, true, PAGE_SIZE, Some(&cursor), 0)
                .await?;
            if rows.is_empty() {
                // Past the end now (rows went away): the last page.
                (
                    selection.read(conn, false, on_last, None, 0).await?,
                    last_page,
                )
            } else {
                let last = rows.len() < PAGE_SIZE as usize;
                (
                    rows,
                    if last {
                        last_page
                    } else {
                        n.clamp(1, last_page)
                    },
                )
            }
        }
        Anchor::Before(cursor, n) => {
            let rows = selection
                .read(conn, false, PAGE_SIZE, Some(&cursor), 0)
                .await?;
            if rows.len() < PAGE_SIZE as usize {
                // At the start (or rows went away): the first page.
                (selection.read(conn, true, PAGE_SIZE, None, 0).await?, 1)
            } else {
                (rows, n.clamp(1, last_page))
            }
        }
    };
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
        Anchor::parse(&query)?,
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
    // `place`: the pager's `after=`/`before=` cursor; `page`: the number
    // shown, or `last`.
    let link = |page: &str, place: Option<(&str, Cursor)>, sort: SortKey, descending: bool| {
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
        if let Some((name, cursor)) = place {
            params.push(format!("{name}={}", encode(&cursor.encode())));
        }
        if page != "1" {
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
                a href=(link("1", None, key, next_desc)) data-sort=(key.param()) {
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
                @if let (true, Some(top)) = (listing.page > 1, listing.rows.first()) {
                    a rel="first" href=(link("1", None, sort, descending)) { "« First" }
                    a rel="prev" href=(link(
                        &(listing.page - 1).to_string(),
                        Some(("before", Cursor::of(top, sort))),
                        sort,
                        descending,
                    )) { "← Previous" }
                }
                span { "Page " (listing.page) " of " (pages) }
                @if let (true, Some(bottom)) = (listing.page < pages, listing.rows.last()) {
                    a rel="next" href=(link(
                        &(listing.page + 1).to_string(),
                        Some(("after", Cursor::of(bottom, sort))),
                        sort,
                        descending,
                    )) { "Next →" }
                    a rel="last" href=(link("last", None, sort, descending)) { "Last »" }
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
