//! The control plane's metrics, aggregates only (counters and histograms, never a
//! per-request sample), served in Prometheus's text format at `/metrics`.
//!
//! Names follow OpenTelemetry's GenAI semantic conventions where they have one
//! (`gen_ai_client_token_usage`, `gen_ai_client_operation_duration_seconds`); the rest are
//! `tollgate_*`. One set per process: every part records into [`global`].

use crate::store::UsageRow;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

/// The metrics of this process.
pub struct Metrics {
    registry: Registry,
    /// Calls metered, by model, provider and status class (`2xx`, `4xx`, `5xx`).
    requests: IntCounterVec,
    /// Calls `Authorize` refused, by the refusal's stable code.
    refusals: IntCounterVec,
    /// Tokens by kind (`input_uncached`, `cache_read`, `cache_write`, `output`,
    /// `reasoning`) and model.
    tokens: IntCounterVec,
    /// GenAI semconv: tokens per call by type (`input`, `output`) and model.
    token_usage: HistogramVec,
    /// GenAI semconv: a call's duration by model.
    operation_duration: HistogramVec,
    /// Spend in pico-dollars by model.
    spend: IntCounterVec,
    /// Usage records by outcome: `stored`, `duplicate` (a retried batch).
    records: IntCounterVec,
    /// From a call's end to its usage stored.
    ingest_lag: HistogramVec,
    /// Store operations' latency by operation.
    store_latency: HistogramVec,
}

/// The metrics every part of this process records into; `None` only if they could not be
/// built (a bad name in this file, which its tests catch), so metrics never stop a call.
pub fn global() -> Option<&'static Metrics> {
    static METRICS: LazyLock<Result<Metrics, prometheus::Error>> = LazyLock::new(|| {
        Metrics::new().inspect_err(|e| tracing::error!(error = %e, "metrics not built"))
    });
    METRICS.as_ref().ok()
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Result<HistogramVec, prometheus::Error> {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        let seconds = vec![
            0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
        ];
        let tokens = vec![
            1.0,
            4.0,
            16.0,
            64.0,
            256.0,
            1024.0,
            4096.0,
            16384.0,
            65536.0,
            262_144.0,
            1_048_576.0,
        ];
        Ok(Self {
            requests: counter(
                r,
                "tollgate_requests_total",
                "Calls metered, by model, provider and status class.",
                &["model", "provider", "status_class"],
            )?,
            refusals: counter(
                r,
                "tollgate_refusals_total",
                "Calls Authorize refused, by reason.",
                &["reason"],
            )?,
            tokens: counter(
                r,
                "tollgate_tokens_total",
                "Tokens by kind and model.",
                &["kind", "model"],
            )?,
            token_usage: histogram(
                r,
                "gen_ai_client_token_usage",
                "Tokens per call by type (GenAI semantic conventions).",
                &["gen_ai_token_type", "gen_ai_request_model"],
                tokens,
            )?,
            operation_duration: histogram(
                r,
                "gen_ai_client_operation_duration_seconds",
                "Call duration (GenAI semantic conventions).",
                &["gen_ai_request_model"],
                seconds.clone(),
            )?,
            spend: counter(
                r,
                "tollgate_spend_picodollars_total",
                "Spend in pico-dollars (1e-12 USD) by model.",
                &["model"],
            )?,
            records: counter(
                r,
                "tollgate_usage_records_total",
                "Usage records received, by outcome.",
                &["outcome"],
            )?,
            ingest_lag: histogram(
                r,
                "tollgate_usage_ingest_lag_seconds",
                "From a call's end to its usage stored.",
                &[],
                seconds.clone(),
            )?,
            store_latency: histogram(
                r,
                "tollgate_store_operation_duration_seconds",
                "Store operations' latency.",
                &["operation"],
                seconds,
            )?,
            registry,
        })
    }

    /// Counts a refusal by its stable code.
    pub fn refused(&self, reason: &str) {
        self.refusals.with_label_values(&[reason]).inc();
    }

    /// Times a store operation.
    pub fn store_latency(&self, operation: &str, seconds: f64) {
        self.store_latency
            .with_label_values(&[operation])
            .observe(seconds);
    }

    /// Counts a usage batch of which `stored` rows were new at `now_ms`. Tokens and spend
    /// are counted for wholly new batches only: a retried batch's rows were counted when
    /// first stored (the store, idempotent by request id, is the record of spend).
    pub fn usage_stored(&self, rows: &[UsageRow], stored: u64, now_ms: i64) {
        let total = rows.len() as u64;
        self.records.with_label_values(&["stored"]).inc_by(stored);
        self.records
            .with_label_values(&["duplicate"])
            .inc_by(total.saturating_sub(stored));
        if stored != total {
            return;
        }
        for row in rows {
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            let class = match row.status {
                200..=299 => "2xx",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            };
            self.requests
                .with_label_values(&[&row.model, &row.provider, class])
                .inc();
            for (kind, n) in [
                ("input_uncached", row.input_uncached),
                ("cache_read", row.cache_read),
                ("cache_write", row.cache_write),
                ("output", row.output),
                ("reasoning", row.reasoning),
            ] {
                self.tokens
                    .with_label_values(&[kind, &row.model])
                    .inc_by(count(n));
            }
            let input = row
                .input_uncached
                .saturating_add(row.cache_read)
                .saturating_add(row.cache_write);
            self.token_usage
                .with_label_values(&["input", &row.model])
                .observe(count(input) as f64);
            self.token_usage
                .with_label_values(&["output", &row.model])
                .observe(count(row.output) as f64);
            self.operation_duration
                .with_label_values(&[&row.model])
                .observe(count(row.duration_ms) as f64 / 1000.0);
            self.spend
                .with_label_values(&[&row.model])
                .inc_by(count(row.cost_picos));
            let lag = now_ms.saturating_sub(row.finished_at_ms).max(0);
            self.ingest_lag
                .with_label_values::<&str>(&[])
                .observe(lag as f64 / 1000.0);
        }
    }

    /// Every metric in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics not encoded");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, status: i64) -> UsageRow {
        UsageRow {
            request_id: "r".into(),
            key_id: "key_secret_id".into(),
            model: model.into(),
            provider: "p".into(),
            status,
            input_uncached: 10,
            cache_read: 2,
            cache_write: 0,
            output: 5,
            reasoning: 1,
            estimated: false,
            partial: false,
            cost_picos: 1_000,
            finished_at_ms: 1_000,
            duration_ms: 250,
            user: Some("alice".into()),
            team: None,
            lease_ids: Vec::new(),
            lease_charge_picos: 0,
            done_lease_ids: Vec::new(),
        }
    }

    /// The value of the sample line starting with `prefix`.
    fn sample(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn new_batches_count_tokens_spend_and_lag_retried_ones_only_records() {
        let m = Metrics::new().unwrap();
        m.usage_stored(&[row("m1", 200), row("m1", 502)], 2, 3_000);
        m.usage_stored(&[row("m1", 200)], 0, 3_000);
        m.refused("api_key_revoked");
        m.store_latency("insert_usage", 0.002);
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                "tollgate_requests_total{model=\"m1\",provider=\"p\",status_class=\"2xx\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                "tollgate_requests_total{model=\"m1\",provider=\"p\",status_class=\"5xx\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(&text, "tollgate_tokens_total{kind=\"output\",model=\"m1\"}"),
            10.0
        );
        assert_eq!(
            sample(&text, "tollgate_spend_picodollars_total{model=\"m1\"}"),
            2_000.0
        );
        assert_eq!(
            sample(&text, "tollgate_usage_records_total{outcome=\"duplicate\"}"),
            1.0
        );
        assert_eq!(
            sample(&text, "tollgate_usage_records_total{outcome=\"stored\"}"),
            2.0
        );
        assert_eq!(
            sample(&text, "tollgate_refusals_total{reason=\"api_key_revoked\"}"),
            1.0
        );
        assert_eq!(
            sample(&text, "tollgate_usage_ingest_lag_seconds_sum"),
            4.0,
            "2 s each"
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_token_usage_sum{gen_ai_request_model=\"m1\",gen_ai_token_type=\"input\"}"
            ),
            24.0
        );
        assert_eq!(
            sample(
                &text,
                "gen_ai_client_operation_duration_seconds_count{gen_ai_request_model=\"m1\"}"
            ),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                "tollgate_store_operation_duration_seconds_count{operation=\"insert_usage\"}"
            ),
            1.0
        );
        // Aggregates only: no key, user or request id is a label.
        for private in ["key_secret_id", "alice", "request_id"] {
            assert!(!text.contains(private), "{private} in metrics");
        }
    }
}
