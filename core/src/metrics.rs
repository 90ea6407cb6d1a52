//! The filter's metrics, as Envoy stats: counters of calls by outcome and refusal reason,
//! tokens by kind, key-cache hits and misses, control-plane calls and usage records, and a
//! histogram of control-plane call latency. A label is written into the stat's name
//! (`tollgate_refusals_total.reason.invalid_api_key`) and turned into a Prometheus label by
//! the tag extractors `tollgate envoy-config` renders for [`LABELS`]. Every label has a
//! small fixed set of values: none names a key, a user or a model.

/// The label names, each extracted from `.<label>.<value>` at the end of a stat's name.
pub const LABELS: &[&str] = &["outcome", "reason", "kind", "result", "state"];

/// Milliseconds from dispatching a control-plane call to its answer (a histogram).
pub const CONTROL_PLANE_LATENCY: &str = "tollgate_control_plane_call_ms";

/// A counter the filter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Calls by how they ended: `admitted`, `refused`, `answered` (by the gateway itself).
    Requests(&'static str),
    /// Refused calls by the refusal's code.
    Refusals(&'static str),
    /// Tokens of admitted calls by kind, as reported.
    Tokens(TokenKind),
    /// Key lookups answered from the shared cache (`hit`) or asking the control plane (`miss`).
    KeyCache(&'static str),
    /// Control-plane calls by result: `ok`, `failed` (an error status, or not dispatched).
    ControlPlaneCalls(&'static str),
    /// Usage records `queued`, `sent` (acknowledged) or `dropped` (outbox full, or refused
    /// on their own).
    UsageRecords(&'static str),
}

/// The token counts of a usage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Prompt tokens at the full input rate.
    InputUncached,
    /// Prompt tokens read from the provider's cache.
    CacheRead,
    /// Prompt tokens written to the provider's cache.
    CacheWrite,
    /// Generated tokens, reasoning included.
    Output,
    /// Of those, hidden reasoning.
    Reasoning,
}

impl TokenKind {
    /// Every kind, in the order of a usage record.
    pub const ALL: [TokenKind; 5] = [
        TokenKind::InputUncached,
        TokenKind::CacheRead,
        TokenKind::CacheWrite,
        TokenKind::Output,
        TokenKind::Reasoning,
    ];

    fn name(self) -> &'static str {
        match self {
            TokenKind::InputUncached => "input_uncached",
            TokenKind::CacheRead => "cache_read",
            TokenKind::CacheWrite => "cache_write",
            TokenKind::Output => "output",
            TokenKind::Reasoning => "reasoning",
        }
    }
}

impl Counter {
    /// The stat's name, its label written in.
    pub fn name(&self) -> String {
        let (metric, label, value) = match *self {
            Counter::Requests(outcome) => ("tollgate_requests_total", "outcome", outcome),
            Counter::Refusals(code) => ("tollgate_refusals_total", "reason", code),
            Counter::Tokens(kind) => ("tollgate_tokens_total", "kind", kind.name()),
            Counter::KeyCache(result) => ("tollgate_key_cache_total", "result", result),
            Counter::ControlPlaneCalls(result) => {
                ("tollgate_control_plane_calls_total", "result", result)
            }
            Counter::UsageRecords(state) => ("tollgate_usage_records_total", "state", state),
        };
        format!("{metric}.{label}.{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_end_in_a_known_label_and_a_word() {
        for counter in [
            Counter::Requests("refused"),
            Counter::Refusals("invalid_api_key"),
            Counter::Tokens(TokenKind::CacheRead),
            Counter::KeyCache("hit"),
            Counter::ControlPlaneCalls("failed"),
            Counter::UsageRecords("dropped"),
        ] {
            let name = counter.name();
            let mut parts = name.rsplitn(3, '.');
            let value = parts.next().unwrap();
            let label = parts.next().unwrap();
            let metric = parts.next().unwrap();
            assert!(LABELS.contains(&label), "{name}");
            assert!(
                metric.starts_with("tollgate_") && metric.ends_with("_total"),
                "{name}"
            );
            assert!(
                value.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}: the extractor takes a word"
            );
        }
        assert_eq!(
            Counter::Tokens(TokenKind::InputUncached).name(),
            "tollgate_tokens_total.kind.input_uncached"
        );
    }
}
