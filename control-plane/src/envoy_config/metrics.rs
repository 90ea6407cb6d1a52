//! How the filter's metrics show in Envoy's stats: the filter defines one counter per
//! label value (`tollgate_refusals_total.reason.invalid_api_key`, see
//! `tollgate_core::metrics`), and these tag extractors turn the value into a label, so
//! `/stats/prometheus` shows `tollgate_refusals_total{reason="invalid_api_key"}`. No label
//! names a key, a user or anything a client chooses: each has a small fixed set of values.

use serde_json::{Value, json};
use tollgate_core::metrics::LABELS;

/// The bootstrap's `stats_config`.
pub fn stats_config() -> Value {
    let tags: Vec<Value> = LABELS
        .iter()
        .map(|label| {
            json!({
                "tag_name": label,
                // Envoy keeps a wasm filter's stats under `wasmcustom.`; the first group is
                // taken out of the name, the second is the label's value.
                "regex": format!(r"^wasmcustom\.tollgate_\w+(\.{label}\.(\w+))$"),
            })
        })
        .collect();
    json!({ "stats_tags": tags })
}
