//! `GET /v1/webhooks/{id}/stats?window=24h`: what a webhook's page shows about its endpoint,
//! from its attempts in the window.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use hookrelay_core::Invalid;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiPath, ApiQuery};
use crate::webhooks::{find_webhook, parse_id};
use crate::{ApiError, AppState};

/// Logs (and their attempts) are kept 30 days by default: a longer window would only read
/// what retention has not removed yet.
const MAX_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How far back: `1m` to `90d`; `24h` if absent.
    #[param(example = "24h")]
    window: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Stats {
    webhook_id: Uuid,
    /// The window as asked, e.g. `24h`.
    window: String,
    /// Attempts started from this time on are counted.
    since: DateTime<Utc>,
    attempts: u64,
    successes: u64,
    failures: u64,
    /// Successes over attempts, `null` without attempts.
    success_rate: Option<f64>,
    p50_duration_ms: Option<f64>,
    p95_duration_ms: Option<f64>,
    /// The last attempt answered 2xx in the window, and the last one not.
    last_success_at: Option<DateTime<Utc>>,
    last_failure_at: Option<DateTime<Utc>>,
    /// The window in 24 equal intervals, oldest first: for a chart.
    series: Vec<Interval>,
}

/// One interval of the window.
#[derive(Serialize, ToSchema)]
pub struct Interval {
    start: DateTime<Utc>,
    attempts: u64,
    successes: u64,
    failures: u64,
    p95_duration_ms: Option<f64>,
}

/// Intervals of a window's series.
const INTERVALS: u32 = 24;

/// Attempts, successes and durations of one webhook over a window.
#[utoipa::path(get, path = "/v1/webhooks/{id}/stats", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook's id"), StatsQuery),
    responses((status = 200, description = "The figures", body = Stats)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<Stats>, ApiError> {
    let id = parse_id(&id)?;
    // A day by default: what "how is my endpoint doing" usually means.
    let raw = q.window.unwrap_or_else(|| "24h".into());
    let window =
        hookrelay_core::parse_duration(&raw).map_err(|e| ApiError::invalid("window", e))?;
    if window < Duration::from_secs(60) || window > MAX_WINDOW {
        return Err(ApiError::invalid(
            "window",
            Invalid::new("out_of_range", "window must be between 1m and 90d"),
        ));
    }
    find_webhook(&state, &caller, id).await?;
    let s = state.store().attempt_stats(id, window).await?;
    let series = state
        .store()
        .attempt_series(id, window, INTERVALS)
        .await?
        .into_iter()
        .map(|b| Interval {
            start: b.start,
            attempts: b.attempts,
            successes: b.successes,
            failures: b.attempts - b.successes,
            p95_duration_ms: b.p95_duration_ms,
        })
        .collect();
    Ok(Json(Stats {
        webhook_id: id,
        window: raw,
        since: s.since,
        attempts: s.attempts,
        successes: s.successes,
        failures: s.attempts - s.successes,
        success_rate: (s.attempts > 0).then(|| s.successes as f64 / s.attempts as f64),
        p50_duration_ms: s.p50_duration_ms,
        p95_duration_ms: s.p95_duration_ms,
        last_success_at: s.last_success_at,
        last_failure_at: s.last_failure_at,
        series,
    }))
}
