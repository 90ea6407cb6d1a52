//! The filter's metrics in Envoy's stats (what they count: `tollgate_core::metrics`). A
//! stat is defined once per VM and name, on first use; Envoy adds up every VM's counts
//! under one name.

use crate::host::Host;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;
use tollgate_core::metrics::{CONTROL_PLANE_LATENCY, Counter};

/// The stat ids this VM defined.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: HashMap<Counter, u32>,
    latency: Option<u32>,
}

impl Metrics {
    /// Adds `by` to `counter`.
    pub fn count(&mut self, host: &impl Host, counter: Counter, by: u64) {
        if by == 0 {
            return;
        }
        let id = match self.counters.get(&counter) {
            Some(id) => *id,
            None => {
                let Some(id) = host.define_metric(MetricType::Counter, &counter.name()) else {
                    return;
                };
                self.counters.insert(counter, id);
                id
            }
        };
        host.increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }

    /// A control-plane call dispatched at `dispatched_ms` was answered with gRPC `status`.
    pub fn control_plane_answered(&mut self, host: &impl Host, dispatched_ms: u64, status: u32) {
        let result = if status == 0 { "ok" } else { "failed" };
        self.count(host, Counter::ControlPlaneCalls(result), 1);
        let id = match self.latency {
            Some(id) => id,
            None => {
                let Some(id) = host.define_metric(MetricType::Histogram, CONTROL_PLANE_LATENCY)
                else {
                    return;
                };
                self.latency = Some(id);
                id
            }
        };
        host.record_metric(id, host.now_ms().saturating_sub(dispatched_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;
    use tollgate_core::metrics::TokenKind;

    #[test]
    fn counts_add_up_under_one_definition_per_name() {
        let host = MockHost::new();
        let mut metrics = Metrics::default();
        metrics.count(&host, Counter::Refusals("invalid_api_key"), 1);
        metrics.count(&host, Counter::Refusals("invalid_api_key"), 2);
        metrics.count(&host, Counter::Tokens(TokenKind::Output), 0);
        assert_eq!(
            host.metric("tollgate_refusals_total.reason.invalid_api_key"),
            Some(3)
        );
        assert_eq!(host.metric("tollgate_tokens_total.kind.output"), None);
        assert_eq!(host.metric_definitions(), 1);
    }

    #[test]
    fn a_control_plane_answer_counts_its_result_and_latency() {
        let host = MockHost::new();
        let mut metrics = Metrics::default();
        host.set_now(1_000);
        metrics.control_plane_answered(&host, 975, 0);
        metrics.control_plane_answered(&host, 990, 14);
        assert_eq!(
            host.metric("tollgate_control_plane_calls_total.result.ok"),
            Some(1)
        );
        assert_eq!(
            host.metric("tollgate_control_plane_calls_total.result.failed"),
            Some(1)
        );
        assert_eq!(host.recorded(CONTROL_PLANE_LATENCY), [25, 10]);
    }
}
