//! What a call leaves besides its usage record: its part of Envoy's access-log line (left
//! in its filter state, see `tollgate_core::access_log`) and its counts in the filter's
//! metrics. Written once, when Envoy logs the call.

use super::budgets::price_of;
use super::{Admitted, metering};
use crate::host::Host;
use crate::metrics::Metrics;
use tollgate_core::access_log::{FILTER_STATE_KEY, LogFields};
use tollgate_core::metrics::{Counter, TokenKind};
use tollgate_core::pricing::format_dollars;
use tollgate_core::refusal::Refusal;
use tollgate_core::usage::Usage;
use tollgate_proto::v1::UsageRecord;

/// How a call ended, for its line and its counts.
pub(super) enum Ending<'a> {
    /// Admitted and sent to its provider, with its usage record.
    Metered {
        admitted: &'a Admitted,
        record: &'a UsageRecord,
    },
    /// Admitted, but the client left before its body went on: no provider saw it.
    Abandoned { admitted: &'a Admitted },
    /// Refused by the gateway; `who` is the key's id and the model, when it was admitted
    /// before it was refused.
    Refused {
        refusal: &'a Refusal,
        who: Option<&'a (String, String)>,
    },
    /// Answered by the gateway itself (the models endpoints).
    Answered,
}

/// What a call's log line and metrics are computed from.
pub(super) struct Facts<'a> {
    /// The call's request id.
    pub(super) request_id: &'a str,
    /// From the request's start to the answer's headers.
    pub(super) first_byte_ms: Option<u64>,
}

/// The call's access-log fields.
fn fields<'a>(facts: &Facts<'a>, ending: &Ending<'a>) -> LogFields<'a> {
    let base = LogFields {
        request_id: facts.request_id,
        first_byte_ms: facts.first_byte_ms,
        cost_usd: format_dollars(0),
        ..LogFields::default()
    };
    match *ending {
        Ending::Metered { admitted, record } => {
            let usage = Usage {
                input_uncached: record.input_uncached,
                cache_read: record.cache_read,
                cache_write: record.cache_write,
                output: record.output,
                ..Usage::default()
            };
            let cost_picos = admitted
                .route
                .price
                .as_ref()
                .map_or(0, |p| price_of(p).cost_picos(&usage));
            LogFields {
                outcome: "admitted",
                key_id: &admitted.key_id,
                user: &admitted.user,
                team: &admitted.team,
                model: &admitted.target.model,
                provider: &admitted.route.provider,
                input_uncached: record.input_uncached,
                cache_read: record.cache_read,
                cache_write: record.cache_write,
                output: record.output,
                reasoning: record.reasoning,
                cost_picos,
                cost_usd: format_dollars(cost_picos),
                streamed: metering::streamed(admitted),
                partial: record.partial,
                estimated: record.estimated || record.estimate.is_some(),
                ..base
            }
        }
        Ending::Abandoned { admitted } => LogFields {
            outcome: "abandoned",
            key_id: &admitted.key_id,
            user: &admitted.user,
            team: &admitted.team,
            model: &admitted.target.model,
            provider: &admitted.route.provider,
            ..base
        },
        Ending::Refused { refusal, who } => LogFields {
            outcome: "refused",
            refusal: Some(refusal.code()),
            key_id: who.map_or("", |(key, _)| key),
            model: who.map_or("", |(_, model)| model),
            ..base
        },
        Ending::Answered => LogFields {
            outcome: "answered",
            ..base
        },
    }
}

/// Leaves the call's access-log fields in its filter state and counts it.
pub(super) fn report(
    host: &impl Host,
    metrics: &mut Metrics,
    facts: &Facts<'_>,
    ending: Ending<'_>,
) {
    let fields = fields(facts, &ending);
    host.set_filter_state(FILTER_STATE_KEY, fields.members().as_bytes());
    metrics.count(host, Counter::Requests(fields.outcome), 1);
    if let Some(code) = fields.refusal {
        metrics.count(host, Counter::Refusals(code), 1);
    }
    if let Ending::Metered { .. } = ending {
        metrics.count(host, Counter::UsageRecords("queued"), 1);
        for (kind, tokens) in TokenKind::ALL.into_iter().zip([
            fields.input_uncached,
            fields.cache_read,
            fields.cache_write,
            fields.output,
            fields.reasoning,
        ]) {
            metrics.count(host, Counter::Tokens(kind), tokens);
        }
    }
}
