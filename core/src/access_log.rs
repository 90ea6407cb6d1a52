//! What the filter tells Envoy's access log about a call: its part of the call's JSON
//! line, written as the object's remaining members (`,"request_id":"…",…`) so Envoy's
//! format (rendered by `tollgate envoy-config`) can close the object around it. Only what
//! the gateway decided or measured: never the key, a prompt or a completion.

use serde::Serialize;

/// The filter state key (Envoy stores it as `wasm.<key>`) the filter's part is left under.
pub const FILTER_STATE_KEY: &str = "tollgate_log";

/// What a call's line says, from the filter.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LogFields<'a> {
    /// The id its usage is stored under.
    pub request_id: &'a str,
    /// `admitted`, `refused` or `answered` (the gateway answered it itself).
    pub outcome: &'static str,
    /// The refusal's stable code, for a refused call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<&'static str>,
    /// The key's id (never its secret), once the control plane named it.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub key_id: &'a str,
    /// The key's user and team, if it has them.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub team: &'a str,
    /// The model asked for, and the provider that served it.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub model: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub provider: &'a str,
    /// Tokens by kind, as the provider reported them (0 until counted, for an estimated call).
    pub input_uncached: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    /// What those tokens cost at the model's prices, in pico-dollars (exact), and as dollars.
    pub cost_picos: u64,
    pub cost_usd: String,
    /// From the request's first byte to the answer's headers from the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<u64>,
    /// The answer was an event stream.
    pub streamed: bool,
    /// The answer ended early; the counts are those seen until then.
    pub partial: bool,
    /// The provider reported no usage: the control plane counts the call (the counts here
    /// are not yet final).
    pub estimated: bool,
}

impl LogFields<'_> {
    /// The members to append to Envoy's part of the line: `,"request_id":"…",…`.
    pub fn members(&self) -> String {
        let object = serde_json::to_string(self).unwrap_or_default();
        match object.strip_prefix('{').and_then(|o| o.strip_suffix('}')) {
            Some(inner) if !inner.is_empty() => format!(",{inner}"),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn members_close_into_one_object_and_escape_what_they_carry() {
        let fields = LogFields {
            request_id: "ab12",
            outcome: "admitted",
            key_id: "key_\"1\"\n",
            model: "gpt-4o-mini",
            provider: "openai",
            output: 7,
            cost_picos: 4_200_000,
            cost_usd: "0.000004".into(),
            first_byte_ms: Some(12),
            streamed: true,
            ..LogFields::default()
        };
        let line = format!("{{\"status\":200{}}}", fields.members());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["key_id"], "key_\"1\"\n");
        assert_eq!(v["output"], 7);
        assert_eq!(v["cost_picos"], 4_200_000);
        assert_eq!(v["first_byte_ms"], 12);
        assert_eq!(v["streamed"], true);
        assert!(
            v.get("refusal").is_none() && v.get("user").is_none(),
            "{line}"
        );
    }
}
