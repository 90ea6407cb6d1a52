//! Envoy's access log: one JSON object per line for every request, admitted or refused,
//! with what Envoy knows (time, status, duration, bytes, flags) and what the filter
//! learned (request id, key, user, team, model, provider, refusal, tokens by kind, cost,
//! time to first byte, streamed, partial, estimated), which the filter leaves in its filter
//! state (`tollgate_core::access_log`) for this format to read. Never a credential, a
//! prompt or a completion: nothing of the client's request is logged but what the filter
//! decided from it.

use serde_json::{Value, json};
use tollgate_core::access_log::FILTER_STATE_KEY;

/// The line's format. Envoy's fields are numbers or quoted values Envoy itself writes
/// (never a client's text), and the filter's part is written by the filter as the
/// object's remaining members (`,"key_id":"…",…`), JSON-escaped there, or empty for a
/// request the filter never saw (a codec error): the line is one JSON object either way,
/// with the filter's fields at its top level.
fn format() -> String {
    format!(
        "{{\"time\":\"%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%\",\"status\":%RESPONSE_CODE%,\
         \"duration_ms\":%DURATION%,\"response_flags\":\"%RESPONSE_FLAGS%\",\
         \"protocol\":\"%PROTOCOL%\",\"bytes_received\":%BYTES_RECEIVED%,\
         \"bytes_sent\":%BYTES_SENT%%FILTER_STATE(wasm.{FILTER_STATE_KEY}:PLAIN)%}}\n"
    )
}

/// The HCM's access log, written to `path`.
pub fn access_log(path: &str) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {
                "text_format_source": { "inline_string": format() },
                // A missing filter state is written as nothing rather than `-`.
                "omit_empty_values": true,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_or_without_the_filters_part() {
        // Envoy's substitutions, as it writes them.
        let envoy = |f: &str| {
            f.replace(
                "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
                "2026-12-04T15:00:00.000Z",
            )
            .replace("%RESPONSE_CODE%", "401")
            .replace("%DURATION%", "3")
            .replace("%RESPONSE_FLAGS%", "-")
            .replace("%PROTOCOL%", "HTTP/1.1")
            .replace("%BYTES_RECEIVED%", "0")
            .replace("%BYTES_SENT%", "209")
        };
        let tag = format!("%FILTER_STATE(wasm.{FILTER_STATE_KEY}:PLAIN)%");
        let without = envoy(&format()).replace(&tag, "");
        let line: Value = serde_json::from_str(&without).unwrap();
        assert_eq!(line["status"], 401);
        let with = envoy(&format()).replace(&tag, r#","refusal":"invalid_api_key""#);
        let line: Value = serde_json::from_str(&with).unwrap();
        assert_eq!(line["refusal"], "invalid_api_key");
        assert!(format().ends_with("}\n"));
    }
}
