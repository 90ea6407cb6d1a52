//! Envoy's own answers, in OpenAI's error shape: a client of the gateway gets
//! `{"error":{"message","type","param","code"}}` whoever answered, never a plain-text
//! `Bad Request`. The filter's answers are already in that shape and are left alone;
//! everything else Envoy answers itself (a provider that timed out or cannot be reached,
//! a request its codec refuses, a body or head over the limits, a slow client, overload)
//! is rewritten here.

use serde_json::{Value, json};

/// Matches the answers the filter did not give: the filter names its request id on
/// every answer it gives, and Envoy never does.
const NOT_THE_FILTERS: &str = "!('x-tollgate-request-id' in response.headers)";

/// One class of Envoy's own answers.
struct Class {
    /// Its status, or `None` for a range decided by `min_status`.
    status: Option<u16>,
    /// The least status of the class, for a range.
    min_status: u16,
    /// OpenAI's error `type`.
    kind: &'static str,
    code: &'static str,
    /// The error's message; `%RESPONSE_CODE_DETAILS%` names Envoy's reason
    /// (`http1.content_length_and_chunked_not_allowed`, ...).
    message: &'static str,
}

/// Envoy's own answers by status, first match first.
const CLASSES: &[Class] = &[
    Class {
        status: Some(400),
        min_status: 400,
        kind: "invalid_request_error",
        code: "invalid_http_request",
        message: "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%): a malformed request \
                  line or header, a bad Content-Length, Content-Length with Transfer-Encoding, \
                  or a forbidden character in a header.",
    },
    Class {
        status: Some(408),
        min_status: 408,
        kind: "invalid_request_error",
        code: "request_timeout",
        message: "The request did not arrive in time (%RESPONSE_CODE_DETAILS%).",
    },
    Class {
        status: Some(413),
        min_status: 413,
        kind: "invalid_request_error",
        code: "request_too_large",
        message: "The request body is larger than the gateway accepts.",
    },
    Class {
        status: Some(431),
        min_status: 431,
        kind: "invalid_request_error",
        code: "request_headers_too_large",
        message: "The request headers are larger, or more, than the gateway accepts.",
    },
    Class {
        status: Some(404),
        min_status: 404,
        kind: "invalid_request_error",
        code: "unknown_url",
        message: "The gateway has no route for this request.",
    },
    Class {
        status: Some(503),
        min_status: 503,
        kind: "api_error",
        code: "gateway_unavailable",
        message: "The gateway is overloaded or cannot reach what serves this request; retry \
                  shortly (%RESPONSE_CODE_DETAILS%).",
    },
    Class {
        status: None,
        min_status: 500,
        kind: "api_error",
        code: "gateway_error",
        message: "The gateway could not complete the request (%RESPONSE_CODE_DETAILS%).",
    },
    Class {
        status: None,
        min_status: 0,
        kind: "invalid_request_error",
        code: "invalid_request",
        message: "The gateway refused the request (%RESPONSE_CODE_DETAILS%).",
    },
];

/// The HCM's `local_reply_config`.
pub fn local_reply_config() -> Value {
    let mut mappers = vec![
        // A provider that fails is named as such, whatever status Envoy chose.
        flagged(
            &["UT"],
            504,
            "The model's provider did not answer in time.",
            "provider_timeout",
        ),
        flagged(
            &["UF", "UH", "UR", "UC", "URX"],
            502,
            "The model's provider could not be reached, or reset the connection before answering.",
            "provider_unreachable",
        ),
    ];
    mappers.extend(CLASSES.iter().map(class_mapper));
    json!({ "mappers": mappers })
}

/// A mapper for Envoy's answers with any of `flags`, as `status`.
fn flagged(flags: &[&str], status: u16, message: &str, code: &str) -> Value {
    json!({
        "filter": { "response_flag_filter": { "flags": flags } },
        "status_code": status,
        "headers_to_add": super::render::security_headers(),
        "body": { "inline_string": message },
        "body_format_override": error_format("api_error", "%LOCAL_REPLY_BODY%", code),
    })
}

fn class_mapper(class: &Class) -> Value {
    let (op, value) = match class.status {
        Some(status) => ("EQ", status),
        None => ("GE", class.min_status),
    };
    let status = json!({
        "status_code_filter": {
            "comparison": { "op": op, "value": { "default_value": value, "runtime_key": "tollgate.unused" } },
        },
    });
    json!({
        "filter": { "and_filter": { "filters": [not_the_filters(), status] } },
        "headers_to_add": super::render::security_headers(),
        "body_format_override": error_format(class.kind, class.message, class.code),
    })
}

fn not_the_filters() -> Value {
    json!({
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": NOT_THE_FILTERS,
            },
        },
    })
}

fn error_format(kind: &str, message: &str, code: &str) -> Value {
    json!({
        "content_type": "application/json",
        "json_format": {
            "error": { "message": message, "type": kind, "param": null, "code": code },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_of_envoys_answers_is_an_openai_error_and_spares_the_filters() {
        let config = local_reply_config();
        let mappers = config["mappers"].as_array().unwrap();
        assert_eq!(mappers.len(), 2 + CLASSES.len());
        for m in &mappers[2..] {
            let filters = &m["filter"]["and_filter"]["filters"];
            assert_eq!(
                filters[0]["extension_filter"]["typed_config"]["expression"],
                NOT_THE_FILTERS
            );
            let error = &m["body_format_override"]["json_format"]["error"];
            let mut keys: Vec<&String> = error.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, ["code", "message", "param", "type"]);
            assert_eq!(
                m["body_format_override"]["content_type"],
                "application/json"
            );
        }
        let last = &mappers[mappers.len() - 1]["filter"]["and_filter"]["filters"][1];
        assert_eq!(
            last["status_code_filter"]["comparison"],
            json!({ "op": "GE", "value": { "default_value": 0, "runtime_key": "tollgate.unused" } }),
            "the last class takes whatever is left"
        );
    }
}
