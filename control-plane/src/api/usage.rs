//! Usage and spend: `GET /api/usage/summary` (totals), `/api/usage/series` (per hour or
//! day), `/api/usage/calls` (the calls, newest first, paged by cursor) and
//! `/api/usage/export.csv` (the same calls as CSV, streamed).
//!
//! Admins and viewers see every call; a member only their own (calls whose key was
//! theirs when made), whatever they filter by. Totals and series read the rollups kept
//! at ingest, never the calls themselves.

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Query;
use super::state::ApiState;
use crate::store::{CallsPage, UsageRow, UsageSums};
use crate::usage::{self, Bucket, CallCursor, DAY_MS, Dimension, HourRange, Totals, UsageFilter};
use crate::users::Role;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(summary))
        .routes(routes!(series))
        .routes(routes!(calls))
        .routes(routes!(export_csv))
}

/// Groups a summary may have, or points a series: past it the caller narrows the range
/// or the filter.
const MAX_ENTRIES: usize = 10_000;
/// Buckets a series may span (83 days of hours, 5 years of days).
const MAX_BUCKETS: i64 = 2_000;
/// Calls per page, by default and at most.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;
/// Calls per store read while exporting.
const EXPORT_PAGE: u32 = 1_000;
/// The longest filter value accepted (names and ids are far shorter).
const MAX_FILTER_BYTES: usize = 256;

/// The query of `/api/usage/summary` and `/api/usage/series`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SumsParams {
    /// Start, Unix ms, rounded down to the hour (default: `to_ms` less 30 days, or 24
    /// hours for an hourly series).
    pub from_ms: Option<i64>,
    /// End (excluded), Unix ms, rounded up to the hour (default: now).
    pub to_ms: Option<i64>,
    /// Series only: `hour` or `day` (UTC; default `day`).
    pub bucket: Option<String>,
    /// `key`, `user`, `team`, `model` or `provider`: one entry per value.
    pub group_by: Option<String>,
    /// Only this key's calls (its id).
    pub key: Option<String>,
    /// Only this user's calls (ignored for members, who see only their own).
    pub user: Option<String>,
    /// Only this team's calls.
    pub team: Option<String>,
    /// Only this model's calls.
    pub model: Option<String>,
    /// Only this provider's calls.
    pub provider: Option<String>,
}

/// The query of `/api/usage/calls` and `/api/usage/export.csv`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallsParams {
    /// Only calls finished at or after this, Unix ms.
    pub from_ms: Option<i64>,
    /// Only calls finished before this, Unix ms.
    pub to_ms: Option<i64>,
    /// Calls only: how many per page (1 to 1000, default 100).
    pub limit: Option<u32>,
    /// Calls only: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this key's calls (its id).
    pub key: Option<String>,
    /// Only this user's calls (members see only their own).
    pub user: Option<String>,
    /// Only this team's calls.
    pub team: Option<String>,
    /// Only this model's calls.
    pub model: Option<String>,
    /// Only this provider's calls.
    pub provider: Option<String>,
}

/// Calls and what they used, summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TotalsView {
    /// Calls.
    pub calls: u64,
    /// Prompt tokens at the full input rate.
    pub input_uncached: u64,
    /// Prompt tokens read from cache.
    pub cache_read: u64,
    /// Prompt tokens written to cache.
    pub cache_write: u64,
    /// Generated tokens (reasoning included).
    pub output: u64,
    /// Of `output`, reasoning tokens.
    pub reasoning: u64,
    /// Cost in US dollars, exact: a decimal string with 12 decimals (pico-dollars).
    pub cost_usd: String,
    /// Calls answered with an HTTP status of 400 or more.
    pub errors: u64,
    /// Calls whose response ended early.
    pub partial: u64,
    /// Calls counted by the gateway because the provider reported no usage.
    pub estimated: u64,
}

impl From<&Totals> for TotalsView {
    fn from(t: &Totals) -> Self {
        Self {
            calls: t.calls,
            input_uncached: t.input_uncached,
            cache_read: t.cache_read,
            cache_write: t.cache_write,
            output: t.output,
            reasoning: t.reasoning,
            cost_usd: usage::dollars(t.cost_picos),
            errors: t.errors,
            partial: t.partial,
            estimated: t.estimated,
        }
    }
}

/// One group's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    /// The group's value (key id, user, team, model or provider); `null` for calls
    /// with no user or team.
    pub group: Option<String>,
    /// Its totals.
    #[serde(flatten)]
    pub totals: TotalsView,
}

/// The answer of `/api/usage/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SummaryView {
    /// Start of the hours covered, Unix ms.
    pub from_ms: i64,
    /// End of the hours covered, Unix ms.
    pub to_ms: i64,
    /// What `groups` is grouped by, if anything.
    pub group_by: Option<String>,
    /// All matching calls.
    pub totals: TotalsView,
    /// Per group, by group value (empty when not grouped).
    pub groups: Vec<GroupView>,
}

/// One bucket's (and group's) totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PointView {
    /// The bucket's start, Unix ms (UTC).
    pub bucket_start_ms: i64,
    /// The group's value when grouped (`null` for calls with no user or team).
    pub group: Option<String>,
    /// Its totals.
    #[serde(flatten)]
    pub totals: TotalsView,
}

/// The answer of `/api/usage/series`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    /// Start of the hours covered, Unix ms.
    pub from_ms: i64,
    /// End of the hours covered, Unix ms.
    pub to_ms: i64,
    /// `hour` or `day`.
    pub bucket: String,
    /// What points are grouped by, if anything.
    pub group_by: Option<String>,
    /// By bucket, then group; buckets without calls are left out.
    pub points: Vec<PointView>,
}

/// One call as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CallView {
    /// The gateway's request id (`x-tollgate-request-id`).
    pub request_id: String,
    /// The key that made the call.
    pub key_id: String,
    /// The key's user when the call was made.
    pub user: Option<String>,
    /// The key's team when the call was made.
    pub team: Option<String>,
    /// Model asked for.
    pub model: String,
    /// Provider that served it.
    pub provider: String,
    /// HTTP status the client received.
    pub status: i64,
    /// Prompt tokens at the full input rate.
    pub input_uncached: i64,
    /// Prompt tokens read from cache.
    pub cache_read: i64,
    /// Prompt tokens written to cache.
    pub cache_write: i64,
    /// Generated tokens.
    pub output: i64,
    /// Of `output`, reasoning tokens.
    pub reasoning: i64,
    /// Counted by the gateway, not the provider.
    pub estimated: bool,
    /// The response ended early.
    pub partial: bool,
    /// Cost in US dollars, exact (12 decimals).
    pub cost_usd: String,
    /// When the response finished, Unix ms.
    pub finished_at_ms: i64,
    /// How long the call took, ms.
    pub duration_ms: i64,
}

impl From<&UsageRow> for CallView {
    fn from(r: &UsageRow) -> Self {
        Self {
            request_id: r.request_id.clone(),
            key_id: r.key_id.clone(),
            user: r.user.clone(),
            team: r.team.clone(),
            model: r.model.clone(),
            provider: r.provider.clone(),
            status: r.status,
            input_uncached: r.input_uncached,
            cache_read: r.cache_read,
            cache_write: r.cache_write,
            output: r.output,
            reasoning: r.reasoning,
            estimated: r.estimated,
            partial: r.partial,
            cost_usd: usage::dollars(u128::from(r.cost_picos.unsigned_abs())),
            finished_at_ms: r.finished_at_ms,
            duration_ms: r.duration_ms,
        }
    }
}

/// A page of calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CallsView {
    /// Newest first.
    pub calls: Vec<CallView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// The filter a caller's question stands for: as asked for admins and viewers; for a
/// member, narrowed to their own calls, and a 404 when they name another user (whose
/// usage they may not see, nor learn exists).
pub fn scoped_filter(caller: &Caller, mut filter: UsageFilter) -> Result<UsageFilter, ApiError> {
    match caller.role {
        Role::Admin | Role::Viewer => Ok(filter),
        Role::Member => {
            if filter
                .user
                .as_deref()
                .is_some_and(|u| u != caller.user_name)
            {
                return Err(ApiError::NotFound);
            }
            filter.user = Some(caller.user_name.clone());
            Ok(filter)
        }
    }
}

/// The filter named by a query's five values, each checked: present, non-empty, short
/// and free of control characters.
fn filter_of(values: [(Dimension, &Option<String>); 5]) -> Result<UsageFilter, ApiError> {
    let mut filter = UsageFilter::default();
    for (dimension, value) in values {
        if let Some(v) = value {
            if v.is_empty() || v.len() > MAX_FILTER_BYTES || v.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    dimension.as_str(),
                    format!("must be 1 to {MAX_FILTER_BYTES} bytes without control characters"),
                ));
            }
            filter.set(dimension, Some(v.clone()));
        }
    }
    Ok(filter)
}

impl SumsParams {
    fn filter(&self) -> Result<UsageFilter, ApiError> {
        filter_of([
            (Dimension::Key, &self.key),
            (Dimension::User, &self.user),
            (Dimension::Team, &self.team),
            (Dimension::Model, &self.model),
            (Dimension::Provider, &self.provider),
        ])
    }

    fn group_by(&self) -> Result<Option<Dimension>, ApiError> {
        self.group_by
            .as_deref()
            .map(|g| g.parse().map_err(|e| ApiError::invalid("group_by", e)))
            .transpose()
    }

    /// The hours asked about, `default_ms` long when `from_ms` is not given.
    fn range(&self, now_ms: i64, default_ms: i64) -> Result<HourRange, ApiError> {
        let to_ms = self.to_ms.unwrap_or(now_ms);
        let from_ms = self.from_ms.unwrap_or(to_ms.saturating_sub(default_ms));
        HourRange::covering(from_ms, to_ms).map_err(|e| {
            let field = match e {
                usage::RangeError::OutOfBounds { field, .. } => field,
                usage::RangeError::Empty { .. } => "from_ms",
            };
            ApiError::invalid(field, e)
        })
    }
}

impl CallsParams {
    fn filter(&self) -> Result<UsageFilter, ApiError> {
        filter_of([
            (Dimension::Key, &self.key),
            (Dimension::User, &self.user),
            (Dimension::Team, &self.team),
            (Dimension::Model, &self.model),
            (Dimension::Provider, &self.provider),
        ])
    }

    /// `[from_ms, to_ms)`, all of time by default.
    fn window(&self) -> Result<(i64, i64), ApiError> {
        let from_ms = self.from_ms.unwrap_or(0);
        let to_ms = self.to_ms.unwrap_or(i64::MAX);
        if from_ms >= to_ms {
            return Err(ApiError::invalid(
                "from_ms",
                format!("({from_ms}) must be before to_ms ({to_ms})"),
            ));
        }
        Ok((from_ms, to_ms))
    }
}

/// `Err` when a store answer holds more than [`MAX_ENTRIES`] entries.
fn within_limit(sums: &[UsageSums], what: &str) -> Result<(), ApiError> {
    if sums.len() > MAX_ENTRIES {
        return Err(ApiError::invalid(
            "group_by",
            format!("gives more than {MAX_ENTRIES} {what}: narrow the range or filter"),
        ));
    }
    Ok(())
}

/// Totals of the calls in a range, overall and per group.
#[utoipa::path(
    get,
    path = "/api/usage/summary",
    tag = "usage",
    params(SumsParams),
    responses(
        (status = 200, description = "Totals", body = SummaryView),
        (status = 400, description = "A parameter does not parse or is unknown", body = ErrorBody),
        (status = 404, description = "A member named another user", body = ErrorBody),
        (status = 422, description = "A parameter's value is wrong", body = ErrorBody),
    )
)]
async fn summary(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<SumsParams>,
) -> Result<axum::Json<SummaryView>, ApiError> {
    if params.bucket.is_some() {
        return Err(ApiError::invalid(
            "bucket",
            "applies to /api/usage/series only",
        ));
    }
    let filter = scoped_filter(&caller, params.filter()?)?;
    let group_by = params.group_by()?;
    let range = params.range(state.clock.now_ms(), 30 * DAY_MS)?;
    let sums = state
        .store
        .usage_totals(&filter, range, group_by, MAX_ENTRIES)
        .await?;
    within_limit(&sums, "groups")?;
    let mut totals = Totals::default();
    for s in &sums {
        totals.add(&s.totals);
    }
    let groups = match group_by {
        Some(_) => sums
            .iter()
            .map(|s| GroupView {
                group: s.group.clone(),
                totals: TotalsView::from(&s.totals),
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(axum::Json(SummaryView {
        from_ms: range.from_ms(),
        to_ms: range.to_ms(),
        group_by: group_by.map(|g| g.as_str().to_owned()),
        totals: TotalsView::from(&totals),
        groups,
    }))
}

/// Totals of the calls in a range per hour or UTC day, optionally per group.
#[utoipa::path(
    get,
    path = "/api/usage/series",
    tag = "usage",
    params(SumsParams),
    responses(
        (status = 200, description = "Points by bucket, then group", body = SeriesView),
        (status = 400, description = "A parameter does not parse or is unknown", body = ErrorBody),
        (status = 404, description = "A member named another user", body = ErrorBody),
        (status = 422, description = "A parameter's value is wrong, or the range too long", body = ErrorBody),
    )
)]
async fn series(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<SumsParams>,
) -> Result<axum::Json<SeriesView>, ApiError> {
    let filter = scoped_filter(&caller, params.filter()?)?;
    let group_by = params.group_by()?;
    let bucket: Bucket = match params.bucket.as_deref() {
        None => Bucket::Day,
        Some(b) => b.parse().map_err(|e| ApiError::invalid("bucket", e))?,
    };
    let default_ms = match bucket {
        Bucket::Hour => DAY_MS,
        Bucket::Day => 30 * DAY_MS,
    };
    let range = params.range(state.clock.now_ms(), default_ms)?;
    if range.buckets(bucket) > MAX_BUCKETS {
        return Err(ApiError::invalid(
            "from_ms",
            format!(
                "spans more than {MAX_BUCKETS} buckets of a {}: shorten the range",
                if bucket == Bucket::Hour {
                    "hour"
                } else {
                    "day"
                }
            ),
        ));
    }
    let sums = state
        .store
        .usage_series(&filter, range, bucket, group_by, MAX_ENTRIES)
        .await?;
    within_limit(&sums, "points")?;
    let points = sums
        .iter()
        .map(|s| PointView {
            bucket_start_ms: s.bucket_start_ms.unwrap_or(range.from_ms()),
            group: s.group.clone(),
            totals: TotalsView::from(&s.totals),
        })
        .collect();
    Ok(axum::Json(SeriesView {
        from_ms: range.from_ms(),
        to_ms: range.to_ms(),
        bucket: match bucket {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
        .to_owned(),
        group_by: group_by.map(|g| g.as_str().to_owned()),
        points,
    }))
}

/// The calls, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/usage/calls",
    tag = "usage",
    params(CallsParams),
    responses(
        (status = 200, description = "A page of calls", body = CallsView),
        (status = 400, description = "A parameter does not parse or is unknown", body = ErrorBody),
        (status = 404, description = "A member named another user", body = ErrorBody),
        (status = 422, description = "A parameter's value is wrong", body = ErrorBody),
    )
)]
async fn calls(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<CallsParams>,
) -> Result<axum::Json<CallsView>, ApiError> {
    let filter = scoped_filter(&caller, params.filter()?)?;
    let (from_ms, to_ms) = params.window()?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    let cursor = params
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<CallCursor>()
                .map_err(|e| ApiError::invalid("cursor", e))
        })
        .transpose()?;
    let CallsPage { calls, next } = state
        .store
        .usage_calls(&filter, from_ms, to_ms, cursor.as_ref(), limit)
        .await?;
    Ok(axum::Json(CallsView {
        calls: calls.iter().map(CallView::from).collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// The CSV header, in [`csv_record`]'s order.
const CSV_HEADER: [&str; 17] = [
    "request_id",
    "finished_at_ms",
    "key_id",
    "user",
    "team",
    "model",
    "provider",
    "status",
    "input_uncached",
    "cache_read",
    "cache_write",
    "output",
    "reasoning",
    "estimated",
    "partial",
    "cost_usd",
    "duration_ms",
];

/// A text cell a spreadsheet would not run: one starting with `=`, `+`, `-`, `@`, a tab
/// or a carriage return gets a leading `'` (OWASP's advice against CSV injection; names
/// and models come from clients).
fn inert(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

/// A call's CSV cells, in [`CSV_HEADER`]'s order.
fn csv_record(r: &UsageRow) -> [String; 17] {
    [
        inert(&r.request_id),
        r.finished_at_ms.to_string(),
        inert(&r.key_id),
        inert(r.user.as_deref().unwrap_or("")),
        inert(r.team.as_deref().unwrap_or("")),
        inert(&r.model),
        inert(&r.provider),
        r.status.to_string(),
        r.input_uncached.to_string(),
        r.cache_read.to_string(),
        r.cache_write.to_string(),
        r.output.to_string(),
        r.reasoning.to_string(),
        r.estimated.to_string(),
        r.partial.to_string(),
        usage::dollars(u128::from(r.cost_picos.unsigned_abs())),
        r.duration_ms.to_string(),
    ]
}

/// `rows` as CSV lines (with the header first when `header`).
fn csv_chunk(rows: &[UsageRow], header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if header {
        writer.write_record(CSV_HEADER)?;
    }
    for r in rows {
        writer.write_record(csv_record(r))?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

/// Where an export stands between two store reads.
enum ExportState {
    /// The next page starts after this cursor.
    Next(CallCursor),
    /// Every page was sent.
    Done,
}

/// Every call the filter matches, newest first, as CSV: streamed a page at a time, so
/// neither side holds the whole export.
#[utoipa::path(
    get,
    path = "/api/usage/export.csv",
    tag = "usage",
    params(CallsParams),
    responses(
        (status = 200, description = "The calls as CSV, with a header line", content_type = "text/csv"),
        (status = 400, description = "A parameter does not parse or is unknown", body = ErrorBody),
        (status = 404, description = "A member named another user", body = ErrorBody),
        (status = 422, description = "A parameter's value is wrong", body = ErrorBody),
    )
)]
async fn export_csv(
    State(state): State<ApiState>,
    caller: Caller,
    Query(params): Query<CallsParams>,
) -> Result<Response, ApiError> {
    if params.limit.is_some() || params.cursor.is_some() {
        let field = if params.limit.is_some() {
            "limit"
        } else {
            "cursor"
        };
        return Err(ApiError::invalid(
            field,
            "applies to /api/usage/calls only: an export holds every matching call",
        ));
    }
    let filter = scoped_filter(&caller, params.filter()?)?;
    let (from_ms, to_ms) = params.window()?;
    // The first page is read before answering, so a failing store is a 500, not an
    // empty file.
    let first = state
        .store
        .usage_calls(&filter, from_ms, to_ms, None, EXPORT_PAGE)
        .await?;
    let head = csv_chunk(&first.calls, true).map_err(|e| {
        tracing::error!(error = %e, "usage export");
        ApiError::Internal
    })?;
    let store = state.store.clone();
    let rest = futures_util::stream::unfold(
        first.next.map_or(ExportState::Done, ExportState::Next),
        move |at| {
            let store = store.clone();
            let filter = filter.clone();
            async move {
                let ExportState::Next(cursor) = at else {
                    return None;
                };
                let page = store
                    .usage_calls(&filter, from_ms, to_ms, Some(&cursor), EXPORT_PAGE)
                    .await;
                let chunk = page.map_err(|e| e.to_string()).and_then(|page| {
                    let bytes = csv_chunk(&page.calls, false).map_err(|e| e.to_string())?;
                    Ok((bytes, page.next))
                });
                match chunk {
                    Ok((bytes, next)) => {
                        let state = next.map_or(ExportState::Done, ExportState::Next);
                        Some((Ok::<_, std::io::Error>(bytes), state))
                    }
                    Err(cause) => {
                        // Headers are sent: cutting the body short is the only way left
                        // to tell the client the file is incomplete.
                        tracing::error!(error = %cause, "usage export failed midway");
                        Some((
                            Err(std::io::Error::other("usage export failed")),
                            ExportState::Done,
                        ))
                    }
                }
            }
        },
    );
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(rest);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tollgate-usage.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests;
