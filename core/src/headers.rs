//! Which headers cross the gateway, in each direction: allow-lists, not deny-lists.
//!
//! A header a client sends can change who pays or what is billed (`OpenAI-Organization`,
//! `OpenAI-Project`, `anthropic-beta`, cookies), and a header a provider answers with can
//! name the operator's account (`openai-organization`, `set-cookie`). Anything not named
//! here is dropped, so a provider feature that needs a header is switched on by the
//! operator (`forward_headers` of a provider), never by a client.

/// Request headers every provider receives as the client sent them, and the two Envoy
/// itself sets on an edge request (`use_remote_address`): Envoy's router finds no route for
/// a request without `x-forwarded-proto`.
const REQUEST_ALLOWED: &[&str] = &[
    "accept",
    "content-length",
    "content-type",
    "transfer-encoding",
    "user-agent",
    "x-forwarded-proto",
    "x-request-id",
];

/// Response headers every client receives as the provider sent them: the body's framing,
/// and what OpenAI's SDKs read to back off and to report request ids. `cache-control` and
/// `x-content-type-options` are the gateway's own by then (Envoy's route sets them on
/// every answer before the filter sees it).
const RESPONSE_ALLOWED: &[&str] = &[
    "cache-control",
    "content-length",
    "content-type",
    "date",
    "openai-processing-ms",
    "openai-version",
    "request-id",
    "retry-after",
    "retry-after-ms",
    "transfer-encoding",
    "x-content-type-options",
    "x-request-id",
    "x-should-retry",
];

/// Response header prefixes passed for the same reason (rate-limit state for back-off).
const RESPONSE_ALLOWED_PREFIXES: &[&str] = &["x-ratelimit-", "anthropic-ratelimit-"];

/// Whether a client's request header may reach the provider. `extra` is the operator's
/// per-provider addition to the list. Pseudo-headers (`:path`, ...) are Envoy's and stay.
pub fn request_header_allowed(name: &str, extra: &[String]) -> bool {
    name.starts_with(':') || REQUEST_ALLOWED.contains(&name) || extra.iter().any(|e| e == name)
}

/// Whether a provider's response header may reach the client.
pub fn response_header_allowed(name: &str) -> bool {
    name.starts_with(':')
        || RESPONSE_ALLOWED.contains(&name)
        || RESPONSE_ALLOWED_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}

/// Headers an operator may never add to a provider's allow-list: credentials the gateway
/// replaces, and headers the gateway itself sets.
pub fn never_forwarded(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "x-api-key" | "api-key" | "cookie" | "host" | "accept-encoding"
    ) || name.starts_with(':')
        || name.starts_with("x-tollgate-")
        || name.starts_with("x-envoy-")
}

/// Whether `name` may carry the filter's routing decision (`route_header`): a private `x-`
/// header that HTTP, Envoy and providers give no meaning to, since the filter overwrites it
/// with a provider's name and Envoy routes on it.
pub fn free_for_routing(name: &str) -> bool {
    name.starts_with("x-")
        && !name.starts_with("x-envoy-")
        && !name.starts_with("x-forwarded-")
        && !matches!(name, "x-api-key" | "x-request-id" | "x-tollgate-request-id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_openai_answer_keeps_only_framing_request_ids_and_rate_limits() {
        let recorded = include_str!("../tests/fixtures/openai/response-headers.txt");
        let names: Vec<&str> = recorded
            .lines()
            .skip(1) // the status line
            .filter_map(|l| l.split_once(':').map(|(name, _)| name))
            .collect();
        assert_eq!(names.len(), 21);
        let passed: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| response_header_allowed(n))
            .collect();
        assert_eq!(
            passed,
            [
                "date",
                "content-type",
                "openai-processing-ms",
                "openai-version",
                "x-ratelimit-limit-requests",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-requests",
                "x-ratelimit-reset-tokens",
                "x-request-id",
                "x-content-type-options",
            ]
        );
    }

    #[test]
    fn account_and_credential_headers_never_pass_by_default() {
        for h in [
            "openai-organization",
            "openai-project",
            "anthropic-beta",
            "cookie",
            "authorization",
            "x-api-key",
            "api-key",
            "x-envoy-upstream-rq-timeout-ms",
            "x-tollgate-provider",
            "x-forwarded-for",
        ] {
            assert!(!request_header_allowed(h, &[]), "{h} passed");
        }
    }

    #[test]
    fn body_framing_and_pseudo_headers_pass() {
        for h in [
            ":path",
            ":authority",
            "content-type",
            "content-length",
            "accept",
        ] {
            assert!(request_header_allowed(h, &[]), "{h} dropped");
        }
    }

    #[test]
    fn operator_additions_pass_only_for_that_provider() {
        let extra = vec!["anthropic-beta".to_owned()];
        assert!(request_header_allowed("anthropic-beta", &extra));
        assert!(!request_header_allowed("anthropic-beta", &[]));
    }

    #[test]
    fn provider_account_headers_and_cookies_do_not_reach_clients() {
        for h in [
            "openai-organization",
            "openai-project",
            "set-cookie",
            "anthropic-organization-id",
            "cf-ray",
        ] {
            assert!(!response_header_allowed(h), "{h} passed");
        }
        for h in [
            ":status",
            "content-type",
            "x-ratelimit-remaining-requests",
            "retry-after",
        ] {
            assert!(response_header_allowed(h), "{h} dropped");
        }
    }

    #[test]
    fn credentials_cannot_be_allowed_by_an_operator() {
        for h in [
            "authorization",
            "x-api-key",
            "cookie",
            ":path",
            "x-tollgate-x",
        ] {
            assert!(never_forwarded(h), "{h}");
        }
        assert!(!never_forwarded("anthropic-beta"));
    }
}
