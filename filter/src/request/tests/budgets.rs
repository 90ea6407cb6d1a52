//! Budget holds on the mock host: the hold, the paused lease call and its answer, the
//! refusals, settlement per outcome, the cut, and renewal ahead of need.

use super::*;
use tollgate_core::budget::{Lease, lease_key};
use tollgate_core::settings::Unreachable;
use tollgate_proto::v1::{BudgetRef, LeaseAnswer, LeaseRequest, ModelPrice, lease_answer::Outcome};

/// One output token costs 1,000 picos and prompt tokens nothing, so a call's hold is
/// exactly 1,000 × its output bound.
const OUTPUT_PRICE: u64 = 1_000;

fn priced_route() -> Route {
    Route {
        price: Some(ModelPrice {
            input: 0,
            output: OUTPUT_PRICE,
            cache_read: 0,
            cache_write: 0,
            max_output_tokens: 100,
        }),
        ..route("openai")
    }
}

fn monthly(id: &str) -> BudgetRef {
    BudgetRef {
        budget_id: id.into(),
        subject: format!("team:{id}"),
        period: "month".into(),
        limit_picos: 1_000_000,
    }
}

/// Caches an active key of user `alice` in team `ml` with `budgets`, and `route`.
fn cache_budgeted(host: &MockHost, budgets: &[BudgetRef], route: &Route) {
    let g = KeyGrant {
        user: "alice".into(),
        team: "ml".into(),
        budgets: budgets.to_vec(),
        ..grant(KeyStatus::Active, &[])
    };
    cache::store(host, &key_hash(), "gpt-4o", &g, Some(route), CACHED);
}

fn lease(id: &str, granted: u64) -> Lease {
    Lease {
        lease_id: id.into(),
        expires_at_ms: LATER,
        granted,
        ..Lease::default()
    }
}

fn put_lease(host: &MockHost, budget_id: &str, lease: &Lease) {
    host.put_shared(&lease_key(budget_id), &lease.to_bytes());
}

fn lease_of(host: &MockHost, budget_id: &str) -> Lease {
    Lease::from_bytes(&host.shared_value(&lease_key(budget_id)).unwrap()).unwrap()
}

/// A stream of a budgeted key whose body (asking `max_tokens`) was sent; returns it and
/// what the body callback answered.
fn budgeted_call(
    plugin: &Plugin<MockHost>,
    stream: bool,
    max_tokens: u64,
) -> (Request<MockHost>, Action) {
    let host = &plugin.host;
    chat_request(host, "gpt-4o", stream);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    let mut extra = json!({"max_tokens": max_tokens});
    if stream {
        extra["stream"] = json!(true);
    }
    let action = send_body(&mut req, host, &chat_body("gpt-4o", extra));
    (req, action)
}

fn lease_calls(host: &MockHost) -> Vec<(u32, LeaseRequest)> {
    host.dispatches()
        .into_iter()
        .filter(|d| d.method == tollgate_proto::LEASE_BUDGET_METHOD)
        .map(|d| (d.token, LeaseRequest::decode(d.message.as_slice()).unwrap()))
        .collect()
}

fn granted(lease_id: &str, total: u64) -> Vec<u8> {
    LeaseAnswer {
        outcome: Outcome::Granted.into(),
        lease_id: lease_id.into(),
        granted_picos: total,
        lease_total_picos: total,
        expires_at_ms: i64::try_from(LATER).unwrap(),
        window_end_ms: 0,
        available_picos: 0,
    }
    .encode_to_vec()
}

fn answer_lease(req: &mut Request<MockHost>, host: &MockHost, token: u32, body: &[u8]) {
    host.set_grpc_body(body);
    req.on_grpc_call_response(token, 0, body.len());
}

/// The leases a call's holds were drawn from.
fn held_leases(req: &Request<MockHost>) -> Vec<String> {
    match &req.phase {
        Phase::Admitted(a) => a.budget.holds.iter().map(|h| h.lease_id.clone()).collect(),
        _ => Vec::new(),
    }
}

const USAGE_3: &[u8] =
    br#"{"choices":[{"message":{"content":"abc"}}],"usage":{"prompt_tokens":11,"completion_tokens":3}}"#;

#[test]
fn a_funded_lease_holds_the_worst_case_without_a_round_trip_and_settles_to_the_cost() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1"), monthly("b2")], &priced_route());
    put_lease(host, "b1", &lease("l1", 100_000));
    put_lease(host, "b2", &lease("l2", 100_000));
    let (mut req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Continue);
    assert!(lease_calls(host).is_empty());
    assert_eq!(
        (lease_of(host, "b1").charged, lease_of(host, "b2").charged),
        (5_000, 5_000)
    );
    respond(&mut req, host, &[(":status", "200"), JSON], &[USAGE_3]);
    req.on_log();
    assert_eq!(
        (lease_of(host, "b1").charged, lease_of(host, "b2").charged),
        (3_000, 3_000)
    );
    let r = &outbox_records(&plugin)[0];
    assert_eq!(r.lease_ids, ["l1", "l2"]);
    assert_eq!(
        (r.user.as_str(), r.team.as_str(), r.cut),
        ("alice", "ml", false)
    );
}

#[test]
fn a_budgeted_call_reads_the_clock_once_per_callback() {
    // Each read is a host call (about 0.6 µs in Envoy's V8): headers, body, response
    // headers and log each read it once.
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1"), monthly("b2")], &priced_route());
    put_lease(host, "b1", &lease("l1", 100_000));
    put_lease(host, "b2", &lease("l2", 100_000));
    let before = host.clock_reads();
    let (mut req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Continue);
    assert_eq!(host.clock_reads() - before, 2, "request headers and body");
    respond(&mut req, host, &[(":status", "200"), JSON], &[USAGE_3]);
    req.on_log();
    assert_eq!(
        host.clock_reads() - before,
        4,
        "then response headers and log"
    );
    assert_eq!(lease_of(host, "b1").charged, 3_000, "still settled");
}

#[test]
fn a_short_lease_pauses_the_body_for_one_lease_call_then_resumes() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    put_lease(host, "b1", &lease("l1", 4_000));
    let (mut req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Pause);
    let calls = lease_calls(host);
    assert_eq!(calls.len(), 1);
    let (token, asked) = &calls[0];
    assert_eq!(
        (asked.budget_id.as_str(), asked.lease_id.as_str()),
        ("b1", "l1")
    );
    // Only what the lease lacks is needed: 5,000 held, 4,000 left.
    assert_eq!((asked.need_picos, asked.want_picos), (1_000, 50_000));
    assert!(asked.holder.starts_with("envoy-"), "{}", asked.holder);
    // The body is still held back: another body callback does not let it go.
    assert_eq!(req.on_http_request_body(0, true), Action::Pause);
    assert_eq!(host.resumes(), 0);
    answer_lease(&mut req, host, *token, &granted("l1", 54_000));
    assert_eq!(host.resumes(), 1);
    assert!(host.replies().is_empty());
    let l = lease_of(host, "b1");
    assert_eq!((l.granted, l.charged), (54_000, 5_000));
    // Replayed after the resume, the body goes on.
    assert_eq!(req.on_http_request_body(0, true), Action::Continue);
    respond(&mut req, host, &[(":status", "200"), JSON], &[USAGE_3]);
    req.on_log();
    assert_eq!(lease_of(host, "b1").charged, 3_000);
    assert_eq!(outbox_records(&plugin)[0].lease_ids, ["l1"]);
}

#[test]
fn an_exhausted_budget_is_openais_billing_429_naming_subject_and_period() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1"), monthly("ml")], &priced_route());
    put_lease(host, "b1", &lease("l1", 100_000));
    let (mut req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Pause);
    let (token, asked) = lease_calls(host).remove(0);
    assert_eq!(
        (asked.budget_id.as_str(), asked.lease_id.as_str()),
        ("ml", "")
    );
    let exhausted = LeaseAnswer {
        outcome: Outcome::Exhausted.into(),
        ..LeaseAnswer::default()
    };
    answer_lease(&mut req, host, token, &exhausted.encode_to_vec());
    let (status, body) = reply_of(host);
    assert_eq!(status, 429);
    let headers = &host.replies()[0].headers;
    assert!(
        headers.contains(&("x-should-retry".into(), "false".into())),
        "{headers:?}"
    );
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("monthly budget of team:ml"), "{message}");
    assert_eq!(
        lease_of(host, "b1").charged,
        0,
        "the hold on b1 was given back"
    );
    assert_eq!(host.resumes(), 0);
    req.on_log();
    assert!(
        outbox_records(&plugin).is_empty(),
        "a refused call leaves no record"
    );
}

/// A client hammering a spent budget must not cost the control plane a lease call (a
/// database transaction and a log line) per call: for a second after the control plane
/// found the budget spent, calls that lack more than it had left are refused at once.
#[test]
fn a_spent_budget_is_remembered_for_a_second_without_asking_again() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    let (mut req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Pause);
    let (token, _) = lease_calls(host).remove(0);
    let exhausted = LeaseAnswer {
        outcome: Outcome::Exhausted.into(),
        available_picos: 1_000,
        ..LeaseAnswer::default()
    };
    answer_lease(&mut req, host, token, &exhausted.encode_to_vec());
    assert_eq!(reply_of(host).0, 429);

    for _ in 0..5 {
        let (_req, action) = budgeted_call(&plugin, false, 5);
        assert_eq!(action, Action::Pause, "refused");
    }
    assert_eq!(lease_calls(host).len(), 1, "no second lease call");
    assert!(host.replies().iter().all(|r| r.status == 429));

    // A call that fits in what was left still asks; so does any call a second later.
    let (_req, action) = budgeted_call(&plugin, false, 1);
    assert_eq!(action, Action::Pause);
    assert_eq!(
        lease_calls(host).len(),
        2,
        "1,000 picos were left: it may fit"
    );
    host.set_now(host.now_ms() + 1_000);
    let (_req, _) = budgeted_call(&plugin, false, 5);
    assert_eq!(lease_calls(host).len(), 3);
}

#[test]
fn a_call_refused_for_its_budget_gives_its_request_back() {
    let plugin = plugin();
    let host = &plugin.host;
    let g = KeyGrant {
        requests_per_minute: Some(1),
        budgets: vec![monthly("b1")],
        ..grant(KeyStatus::Active, &[])
    };
    lease_whole(host, &g);
    cache::store(
        host,
        &key_hash(),
        "gpt-4o",
        &g,
        Some(&priced_route()),
        CACHED,
    );
    let (mut req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Pause, "waits for a lease");
    let (token, _) = lease_calls(host).remove(0);
    let exhausted = LeaseAnswer {
        outcome: Outcome::Exhausted.into(),
        ..LeaseAnswer::default()
    };
    answer_lease(&mut req, host, token, &exhausted.encode_to_vec());
    assert_eq!(reply_of(host).0, 429);

    // The key's one request a minute is still free: the next call is not refused for it.
    put_lease(host, "b1", &lease("l1", 100_000));
    let (_next, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Continue);
    assert_eq!(host.replies().len(), 1, "no second refusal");
}

#[test]
fn a_deleted_budget_no_longer_limits_the_call() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    let (mut req, _) = budgeted_call(&plugin, false, 5);
    let (token, _) = lease_calls(host).remove(0);
    let unknown = LeaseAnswer {
        outcome: Outcome::UnknownBudget.into(),
        ..LeaseAnswer::default()
    };
    answer_lease(&mut req, host, token, &unknown.encode_to_vec());
    assert_eq!(host.resumes(), 1);
    assert!(host.replies().is_empty());
}

fn unreachable_plugin(mode: Unreachable) -> Plugin<MockHost> {
    plugin_with(FilterSettings {
        budgets_on_control_plane_unreachable: mode,
        ..FilterSettings::default()
    })
}

/// A call against an expired lease with money left, whose lease call gets no answer.
fn call_while_unreachable(plugin: &Plugin<MockHost>) -> Request<MockHost> {
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    let expired = Lease {
        expires_at_ms: 1_000,
        ..lease("l1", 100_000)
    };
    put_lease(host, "b1", &expired);
    let (mut req, action) = budgeted_call(plugin, false, 5);
    assert_eq!(action, Action::Pause);
    let (token, _) = lease_calls(host).remove(0);
    req.on_grpc_call_response(token, 14, 0);
    req
}

#[test]
fn unreachable_refuses_by_default() {
    let plugin = unreachable_plugin(Unreachable::Refuse);
    let _req = call_while_unreachable(&plugin);
    assert_eq!(
        refusal_code(&plugin.host),
        (503, "control_plane_unavailable".into())
    );
    assert_eq!(lease_of(&plugin.host, "b1").charged, 0);
    assert_eq!(plugin.shared.unreachable.get(), (0, 1));
}

#[test]
fn unreachable_admits_within_what_is_leased_when_so_configured() {
    let plugin = unreachable_plugin(Unreachable::AdmitWithinLease);
    let _req = call_while_unreachable(&plugin);
    assert!(plugin.host.replies().is_empty());
    assert_eq!(plugin.host.resumes(), 1);
    assert_eq!(lease_of(&plugin.host, "b1").charged, 5_000);
    assert_eq!(plugin.shared.unreachable.get(), (1, 0));
    // Beyond the lease's money, refused all the same.
    put_lease(
        &plugin.host,
        "b1",
        &Lease {
            expires_at_ms: 1_000,
            ..lease("l1", 4_000)
        },
    );
    let worker = plugin_on(plugin.host.worker(), Unreachable::AdmitWithinLease);
    worker.host.fail_dispatch(Status::InternalFailure);
    let (_req, action) = budgeted_call(&worker, false, 5);
    assert_eq!(action, Action::Pause);
    assert_eq!(
        refusal_code(&worker.host),
        (503, "control_plane_unavailable".into())
    );
    assert_eq!(worker.shared.unreachable.get(), (0, 1));
}

fn plugin_on(host: MockHost, mode: Unreachable) -> Plugin<MockHost> {
    let mut plugin = Plugin::new(host);
    plugin.configure(FilterSettings {
        budgets_on_control_plane_unreachable: mode,
        ..FilterSettings::default()
    });
    plugin
}

#[test]
fn two_workers_draw_on_one_lease() {
    let plugin_a = plugin();
    let plugin_b = plugin_on(plugin_a.host.worker(), Unreachable::Refuse);
    cache_budgeted(&plugin_a.host, &[monthly("b1")], &priced_route());
    put_lease(&plugin_a.host, "b1", &lease("l1", 10_000));
    let (_a, first) = budgeted_call(&plugin_a, false, 5);
    let (_b, second) = budgeted_call(&plugin_b, false, 5);
    let (_c, third) = budgeted_call(&plugin_a, false, 5);
    assert_eq!(
        (first, second, third),
        (Action::Continue, Action::Continue, Action::Pause)
    );
    assert_eq!(lease_of(&plugin_a.host, "b1").charged, 10_000);
    assert_eq!(lease_calls(&plugin_a.host).len(), 1);
    assert!(lease_calls(&plugin_b.host).is_empty());
}

#[test]
fn a_budgeted_call_to_an_unpriced_model_is_refused() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &route("openai"));
    let (_req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Pause);
    assert_eq!(refusal_code(host), (500, "model_not_priced".into()));
    assert!(lease_calls(host).is_empty());
}

#[test]
fn a_key_without_budgets_needs_no_price() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[], &route("openai"));
    let (_req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Continue);
}

/// The lease's `charged` after a call holding 5,000 ends as `outcome` says.
fn charged_after(outcome: impl FnOnce(&mut Request<MockHost>, &MockHost)) -> (u64, UsageRecord) {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    put_lease(host, "b1", &lease("l1", 100_000));
    let (mut req, action) = budgeted_call(&plugin, true, 5);
    assert_eq!(action, Action::Continue);
    assert_eq!(lease_of(host, "b1").charged, 5_000);
    outcome(&mut req, host);
    req.on_log();
    let record = outbox_records(&plugin).remove(0);
    (lease_of(host, "b1").charged, record)
}

#[test]
fn settlement_for_every_outcome() {
    let done: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
    let (success, r) = charged_after(|req, host| {
        respond(req, host, &[(":status", "200"), SSE], &[done]);
    });
    assert_eq!((success, r.output), (2_000, 2));
    // Each record tells the control plane what its lease was charged, so the lease's
    // unused money there stays what this Envoy counts.
    assert_eq!(r.lease_charge_picos, 2_000);
    let (provider_error, r) = charged_after(|req, host| {
        let error: &[u8] = br#"{"error":{"message":"boom","type":"server_error"}}"#;
        respond(req, host, &[(":status", "500"), JSON], &[error]);
    });
    assert_eq!(
        (provider_error, r.status),
        (0, 500),
        "a failed call returns its hold"
    );
    let (timeout, _) = charged_after(|req, host| {
        // Envoy's own answer when the upstream times out.
        respond(
            req,
            host,
            &[(":status", "504"), ("content-type", "text/plain")],
            &[b"upstream request timeout"],
        );
    });
    assert_eq!(timeout, 0);
    let (client_gone, r) = charged_after(|req, host| {
        host.set_response_headers(&[(":status", "200"), SSE]);
        req.on_http_response_headers(2, false);
        let first: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\n";
        host.set_response_chunk(first);
        req.on_http_response_body(first.len(), false);
    });
    assert!(r.partial && r.estimate.is_some(), "{r:?}");
    assert_eq!(
        client_gone, 5_000,
        "an estimated call keeps at least its hold"
    );
    assert_eq!(r.lease_charge_picos, 5_000);
    let (reset, r) = charged_after(|_, _| {});
    assert_eq!(r.status, 0);
    assert_eq!(
        reset, 5_000,
        "no answer: what the provider billed is unknown"
    );
    assert_eq!(r.lease_charge_picos, 5_000);
}

#[test]
fn a_stream_past_its_held_output_is_cut_with_an_error_event() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    put_lease(host, "b1", &lease("l1", 100_000));
    let (mut req, action) = budgeted_call(&plugin, true, 2);
    assert_eq!(action, Action::Continue);
    let delta =
        |t: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n");
    let first = delta("a") + &delta("b");
    let over = delta("c");
    let usage =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":9}}\n\n";
    let later = delta("d") + usage + "data: [DONE]\n\n";
    respond(
        &mut req,
        host,
        &[(":status", "200"), SSE],
        &[first.as_bytes(), over.as_bytes(), later.as_bytes()],
    );
    let out = String::from_utf8(host.response_out()).unwrap();
    let (passed, error) = out.split_at(first.len());
    assert_eq!(passed, first);
    let data = error
        .strip_prefix("data: ")
        .unwrap()
        .strip_suffix("\n\n")
        .unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["error"]["type"], "insufficient_quota");
    assert_eq!(event["error"]["code"], "insufficient_quota");
    assert!(event["error"]["param"].is_null());
    assert!(
        host.response_edits()
            .contains(&("content-length".into(), None))
    );
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert!(r.cut && r.partial, "{r:?}");
    assert_eq!(r.lease_ids, ["l1"]);
    // Still metered after the cut: the provider's count of what it generated is kept,
    // and charged.
    assert_eq!(r.output, 9);
    assert_eq!(lease_of(host, "b1").charged, 9_000);
}

#[test]
fn a_stream_within_its_hold_is_never_cut() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    put_lease(host, "b1", &lease("l1", 100_000));
    let (mut req, _) = budgeted_call(&plugin, true, 2);
    let stream: &[u8] =
        b"data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\ndata: [DONE]\n\n";
    respond(&mut req, host, &[(":status", "200"), SSE], &[stream]);
    assert_eq!(host.response_out(), stream);
    req.on_log();
    assert!(!outbox_records(&plugin)[0].cut);
}

#[test]
fn leases_are_renewed_ahead_of_need_by_one_worker_at_a_time() {
    let mut plugin_a = plugin();
    let mut plugin_b = plugin_on(plugin_a.host.worker(), Unreachable::Refuse);
    cache_budgeted(&plugin_a.host, &[monthly("b1")], &priced_route());
    put_lease(&plugin_a.host, "b1", &lease("l1", 30_000));
    for p in [&plugin_a, &plugin_b] {
        let (_req, action) = budgeted_call(p, false, 5);
        assert_eq!(action, Action::Continue);
    }
    // 20,000 left, under half of the 50,000 share (a twentieth of the limit): both
    // workers' ticks see it, one asks for the 30,000 that bring it back to the share.
    plugin_a.renew();
    plugin_b.renew();
    let renewals: Vec<_> = [&plugin_a, &plugin_b]
        .iter()
        .flat_map(|p| lease_calls(&p.host))
        .collect();
    assert_eq!(renewals.len(), 1, "{renewals:?}");
    let (token, asked) = &renewals[0];
    assert_eq!(
        (asked.lease_id.as_str(), asked.need_picos, asked.want_picos),
        ("l1", 0, 30_000)
    );
    let renewing = if lease_calls(&plugin_a.host).is_empty() {
        &mut plugin_b
    } else {
        &mut plugin_a
    };
    let body = granted("l1", 60_000);
    renewing.host.set_grpc_body(&body);
    renewing.on_answer(*token, 0, body.len());
    let l = lease_of(&plugin_a.host, "b1");
    assert_eq!(
        (l.granted, l.charged, l.renewing_until_ms),
        (60_000, 10_000, 0)
    );
}

#[test]
fn a_body_ending_in_trailers_waits_for_its_lease_there_and_is_replayed() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    let body = chat_body("gpt-4o", json!({"max_tokens": 5}));
    host.set_request_body_bytes(&body);
    assert_eq!(req.on_http_request_body(body.len(), false), Action::Pause);
    assert_eq!(req.on_http_request_trailers(1), Action::Pause);
    assert_eq!(host.resumes(), 0, "not before the lease");
    let (token, _) = lease_calls(host).remove(0);
    answer_lease(&mut req, host, token, &granted("l1", 50_000));
    assert_eq!(
        host.resumes(),
        1,
        "resumed so Envoy replays body and trailers"
    );
    assert!(host.replies().is_empty());
    assert_eq!(req.on_http_request_body(body.len(), true), Action::Continue);
    assert_eq!(req.on_http_request_trailers(1), Action::Continue);
    assert_eq!(lease_of(host, "b1").charged, 5_000);
}

/// Calls that find their Envoy's lease short at once must not each lease a share of the
/// budget: twenty of them leased all of it to one Envoy (its spare leases kept apart by
/// single calls, stranded until TTL + grace), and every other Envoy was refused while
/// the money sat unused. One call asks for a share, the others for what they lack, and
/// only the share's answer is stored for every worker to draw on, whatever the order.
#[test]
fn concurrent_calls_short_of_money_ask_for_one_share_between_them() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (req, action) = budgeted_call(&plugin, false, 5);
        assert_eq!(action, Action::Pause);
        calls.push(req);
    }
    let asks = lease_calls(host);
    assert_eq!(asks.len(), 20);
    // A share is a twentieth of 1,000,000; each call holds 5,000.
    let wants: Vec<u64> = asks.iter().map(|(_, a)| a.want_picos).collect();
    assert_eq!(
        wants.iter().filter(|w| **w == 50_000).count(),
        1,
        "{wants:?}"
    );
    assert_eq!(
        wants.iter().filter(|w| **w == 5_000).count(),
        19,
        "{wants:?}"
    );
    // A call that asked for its need alone is answered first: it draws on its own lease,
    // and the stored lease stays free for the share.
    let (share_at, _) = asks
        .iter()
        .enumerate()
        .find(|(_, (_, a))| a.want_picos == 50_000)
        .unwrap();
    let other = (share_at + 1) % asks.len();
    answer_lease(
        &mut calls[other],
        host,
        asks[other].0,
        &granted("own", 5_000),
    );
    assert_eq!(held_leases(&calls[other]), ["own"]);
    answer_lease(
        &mut calls[share_at],
        host,
        asks[share_at].0,
        &granted("share", 50_000),
    );
    let l = lease_of(host, "b1");
    assert_eq!(
        (
            l.lease_id.as_str(),
            l.granted,
            l.charged,
            l.renewing_until_ms
        ),
        ("share", 50_000, 5_000, 0)
    );
    // The lease kept apart is named done in its call's record, for the control plane to
    // close and free what the call left of it; the shared one is not.
    for at in [other, share_at] {
        assert_eq!(
            calls[at].on_http_request_body(0, true),
            Action::Continue,
            "replayed"
        );
        respond(
            &mut calls[at],
            host,
            &[(":status", "200"), JSON],
            &[USAGE_3],
        );
        calls[at].on_log();
    }
    let done: Vec<(Vec<String>, Vec<String>)> = outbox_records(&plugin)
        .iter()
        .map(|r| (r.lease_ids.clone(), r.done_lease_ids.clone()))
        .collect();
    assert_eq!(
        done,
        [
            (vec!["own".to_owned()], vec!["own".to_owned()]),
            (vec!["share".to_owned()], Vec::<String>::new())
        ]
    );
}

/// While one call tops up the stored lease, another short of money asks a lease of its
/// whole hold for itself: a top-up of the shared lease could be taken by other calls
/// before it held, and it was refused after three tries (503) under load.
#[test]
fn a_second_call_short_of_money_asks_a_lease_of_its_own() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    put_lease(host, "b1", &lease("l1", 4_000));
    let (_first, a) = budgeted_call(&plugin, false, 5);
    let (mut second, b) = budgeted_call(&plugin, false, 5);
    assert_eq!((a, b), (Action::Pause, Action::Pause));
    let asks: Vec<(String, u64, u64)> = lease_calls(host)
        .into_iter()
        .map(|(_, r)| (r.lease_id, r.need_picos, r.want_picos))
        .collect();
    assert_eq!(
        asks,
        [
            ("l1".to_owned(), 1_000, 50_000),
            (String::new(), 5_000, 5_000)
        ]
    );
    // Its own lease is its alone, whatever other calls take from the stored one.
    let token = lease_calls(host)[1].0;
    put_lease(host, "b1", &lease("l1", 0));
    answer_lease(&mut second, host, token, &granted("own", 5_000));
    assert_eq!(held_leases(&second), ["own"]);
}

/// The body a budgeted call of `kind` sends its provider, the client's carrying `extra`.
fn sent_upstream(kind: &str, extra: Value) -> Value {
    let plugin = plugin();
    let host = &plugin.host;
    let route = Route {
        kind: kind.into(),
        ..priced_route()
    };
    cache_budgeted(host, &[monthly("b1")], &route);
    put_lease(host, "b1", &lease("l1", 1_000_000));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    // The body may be rewritten only once its length is gone.
    assert!(
        host.request_edits()
            .contains(&("content-length".into(), None))
    );
    let action = send_body(&mut req, host, &chat_body("gpt-4o", extra));
    assert_eq!(action, Action::Continue);
    serde_json::from_slice(&host.request_body_set().expect("body rewritten")).unwrap()
}

#[test]
fn a_budgeted_call_asks_its_provider_for_no_more_output_than_it_held() {
    // The hold caps the output at the model's 100 tokens; a provider told a larger cap
    // (or none) may bill past the hold in an answer that is never cut.
    let sent = sent_upstream("openai", json!({"max_tokens": 1_000_000}));
    assert_eq!(sent["max_tokens"], 100);
    let sent = sent_upstream(
        "openai",
        json!({"max_tokens": 7, "max_completion_tokens": 4_000}),
    );
    assert_eq!(
        (&sent["max_tokens"], &sent["max_completion_tokens"]),
        (&json!(7), &json!(100))
    );
    let sent = sent_upstream("openai", json!({}));
    assert_eq!(sent["max_completion_tokens"], 100);
    let sent = sent_upstream("anthropic", json!({}));
    assert_eq!(sent["max_tokens"], 100);
    let sent = sent_upstream("anthropic", json!({"max_completion_tokens": 5_000}));
    assert_eq!(sent["max_tokens"], 100);
}

#[test]
fn a_budgeted_body_goes_upstream_as_the_gateway_read_it() {
    // A duplicated key is read last-wins here; a provider reading it first-wins would be
    // asked for 100,000 tokens on a hold of 5. The body it gets has each key once.
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    put_lease(host, "b1", &lease("l1", 1_000_000));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    let body = br#"{"model":"gpt-4o","max_tokens":100000,"messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;
    assert_eq!(send_body(&mut req, host, body), Action::Continue);
    assert_eq!(lease_of(host, "b1").charged, 5 * OUTPUT_PRICE);
    let sent = host.request_body_set().expect("body rewritten");
    let text = String::from_utf8(sent).unwrap();
    assert_eq!(text.matches("max_tokens").count(), 1, "{text}");
    assert!(text.contains(r#""max_tokens":5"#), "{text}");
}

#[test]
fn a_budgeted_call_may_not_reference_input_stored_at_its_provider() {
    // An earlier response's input is billed again in full, and nothing in the body bounds
    // it: the hold would be a few bytes' worth.
    let plugin = plugin();
    let host = &plugin.host;
    cache_budgeted(host, &[monthly("b1")], &priced_route());
    put_lease(host, "b1", &lease("l1", 1_000_000));
    let body = chat_body(
        "gpt-4o",
        json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-9"}}]}]}),
    );
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    assert_eq!(send_body(&mut req, host, &body), Action::Pause);
    let (status, e) = reply_of(host);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("unmetered_option"))
    );
    assert_eq!(lease_of(host, "b1").charged, 0);
}

#[test]
fn a_call_abandoned_while_it_waits_for_a_lease_costs_nothing_and_leaves_no_record() {
    // Its body never reached a provider: nothing may be charged, held or recorded.
    let plugin = plugin();
    let host = &plugin.host;
    let g = KeyGrant {
        budgets: vec![monthly("b1"), monthly("ml")],
        requests_per_minute: Some(1),
        ..grant(KeyStatus::Active, &[])
    };
    lease_whole(host, &g);
    cache::store(
        host,
        &key_hash(),
        "gpt-4o",
        &g,
        Some(&priced_route()),
        CACHED,
    );
    put_lease(host, "b1", &lease("l1", 100_000));
    let (mut req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Pause);
    assert_eq!(lease_calls(host).len(), 1);
    // The client goes away before the lease is answered.
    req.on_log();
    drop(req);
    assert_eq!(lease_of(host, "b1").charged, 0);
    assert!(outbox_records(&plugin).is_empty());
    // Its request was given back: the key's 1 RPM still admits a call.
    put_lease(host, "ml", &lease("l2", 100_000));
    let (_req, action) = budgeted_call(&plugin, false, 5);
    assert_eq!(action, Action::Continue);
}
