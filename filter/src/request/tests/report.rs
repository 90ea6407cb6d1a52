//! What a call leaves for Envoy's access log and stats.

use super::*;
use tollgate_proto::v1::ModelPrice;

/// The call's access-log members, closed into an object.
fn log_line(host: &MockHost) -> Value {
    let members = host
        .filter_state(tollgate_core::access_log::FILTER_STATE_KEY)
        .expect("the call left its log fields");
    let members = String::from_utf8(members).unwrap();
    serde_json::from_str(&format!("{{\"status\":0{members}}}")).unwrap()
}

#[test]
fn a_metered_call_logs_its_usage_and_cost_and_counts_its_tokens() {
    let plugin = plugin();
    let priced = Route {
        // USD 2.50 and 10.00 per 1M tokens, in micro-dollars.
        price: Some(ModelPrice {
            input: 2_500_000,
            output: 10_000_000,
            ..ModelPrice::default()
        }),
        ..route("openai")
    };
    let mut req = admitted_on(&plugin, priced, false, json!({}));
    let host = &plugin.host;
    host.set_now(5_040);
    let answer = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":200,"total_tokens":1200}}"#;
    respond(
        &mut req,
        host,
        &[(":status", "200"), ("content-type", "application/json")],
        &[answer],
    );
    req.on_log();
    let line = log_line(host);
    assert_eq!(line["outcome"], "admitted");
    assert_eq!(line["key_id"], "key-1");
    assert_eq!(line["model"], "gpt-4o");
    assert_eq!(line["provider"], "alpha");
    assert_eq!(line["input_uncached"], 1000);
    assert_eq!(line["output"], 200);
    // 1000 × 2.50 / 1M + 200 × 10 / 1M = 0.0045 USD.
    assert_eq!(line["cost_picos"], 4_500_000_000u64);
    assert_eq!(line["cost_usd"], "$0.004500");
    assert_eq!(line["first_byte_ms"], 40);
    assert_eq!(line["streamed"], false);
    assert_eq!(line["partial"], false);
    assert!(
        !serde_json::to_string(&line).unwrap().contains(KEY),
        "never the key"
    );
    assert_eq!(
        host.metric("tollgate_requests_total.outcome.admitted"),
        Some(1)
    );
    assert_eq!(
        host.metric("tollgate_tokens_total.kind.input_uncached"),
        Some(1000)
    );
    assert_eq!(host.metric("tollgate_tokens_total.kind.output"), Some(200));
    assert_eq!(
        host.metric("tollgate_usage_records_total.state.queued"),
        Some(1)
    );
    assert_eq!(host.metric("tollgate_key_cache_total.result.hit"), Some(1));
}

#[test]
fn a_refused_call_logs_and_counts_its_reason() {
    let plugin = plugin();
    let host = &plugin.host;
    host.set_request_headers(&[(":method", "POST"), (":path", CHAT)]);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(2, false), Action::Pause);
    req.on_log();
    let line = log_line(host);
    assert_eq!(line["outcome"], "refused");
    assert_eq!(line["refusal"], "missing_api_key");
    assert_eq!(line["output"], 0);
    assert!(line.get("key_id").is_none(), "{line}");
    assert_eq!(
        host.metric("tollgate_refusals_total.reason.missing_api_key"),
        Some(1)
    );
    assert_eq!(
        host.metric("tollgate_requests_total.outcome.refused"),
        Some(1)
    );
    assert_eq!(
        host.metric("tollgate_usage_records_total.state.queued"),
        None
    );
}

#[test]
fn a_call_refused_after_admission_names_its_key_and_model() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    assert_eq!(
        send_body(&mut req, host, b"{\"model\":\"gpt-4o\"}"),
        Action::Pause
    );
    req.on_log();
    let line = log_line(host);
    assert_eq!(line["outcome"], "refused");
    assert_eq!(line["key_id"], "key-1");
    assert_eq!(line["model"], "gpt-4o");
}

#[test]
fn a_control_plane_answer_is_counted_with_its_latency() {
    let plugin = plugin();
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Pause);
    assert_eq!(host.metric("tollgate_key_cache_total.result.miss"), Some(1));
    let token = host.dispatches()[0].token;
    host.set_now(5_030);
    req.on_grpc_call_response(token, 14, 0);
    assert_eq!(
        host.metric("tollgate_control_plane_calls_total.result.failed"),
        Some(1)
    );
    assert_eq!(
        host.recorded(tollgate_core::metrics::CONTROL_PLANE_LATENCY),
        [30]
    );
}
