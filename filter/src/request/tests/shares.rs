//! Rate-limit shares on the mock host: the paused share call and its answers, the
//! refusals, all-or-nothing takes, the headers, and the renewal pass on tick.

use super::*;
use tollgate_core::settings::Unreachable;
use tollgate_core::share::Allowance;
use tollgate_proto::v1::{ShareAnswer, ShareRequest, share_answer::Outcome};

const REQUESTS_KEY: &str = "tg:v3:requests:key:key-1";
const TOKENS_KEY: &str = "tg:v3:tokens:key:key-1";
/// Leases answered in these tests expire then.
const EXPIRES: u64 = 100_000;

/// Caches an active key with `g`'s limits and a route whose model caps output at 100,
/// nothing leased yet.
fn cache_unleased(host: &MockHost, g: &KeyGrant) {
    let mut r = route("openai");
    r.price = Some(tollgate_proto::v1::ModelPrice {
        max_output_tokens: 100,
        ..Default::default()
    });
    cache::store(host, &key_hash(), "gpt-4o", g, Some(&r), CACHED);
}

fn rpm(limit: u32) -> KeyGrant {
    KeyGrant {
        requests_per_minute: Some(limit),
        ..grant(KeyStatus::Active, &[])
    }
}

/// One chat call on `host`: the stream and what its last callback answered.
fn call_on(plugin: &Plugin<MockHost>, host: &MockHost) -> (Request<MockHost>, Action) {
    chat_request(host, "gpt-4o", false);
    let mut req = Request::new(host.clone(), plugin.shared.clone(), "s".into());
    let mut action = req.on_http_request_headers(7, false);
    if action == Action::Continue {
        let body = chat_body("gpt-4o", json!({"max_tokens": 10}));
        action = send_body(&mut req, host, &body);
    }
    (req, action)
}

fn share_calls(host: &MockHost) -> Vec<(u32, ShareRequest)> {
    host.dispatches()
        .into_iter()
        .filter(|d| d.method == tollgate_proto::LEASE_SHARE_METHOD)
        .map(|d| (d.token, ShareRequest::decode(d.message.as_slice()).unwrap()))
        .collect()
}

/// An answer to this Envoy alone: everything of the limit not unassigned is its share.
fn answer(outcome: Outcome, granted: u64, limit: u64, available: u64) -> Vec<u8> {
    answer_held(outcome, granted, limit - available, limit, available)
}

/// An answer that says this Envoy's lease holds `share` (other Envoys hold the rest of
/// what is not unassigned).
fn answer_held(outcome: Outcome, granted: u64, share: u64, limit: u64, available: u64) -> Vec<u8> {
    ShareAnswer {
        outcome: outcome.into(),
        lease_id: "s1".into(),
        granted,
        share,
        expires_at_ms: i64::try_from(EXPIRES).unwrap(),
        limit,
        available,
    }
    .encode_to_vec()
}

fn deliver(req: &mut Request<MockHost>, host: &MockHost, token: u32, body: &[u8]) {
    host.set_grpc_body(body);
    req.on_grpc_call_response(token, 0, body.len());
}

fn allowance(host: &MockHost, key: &str) -> Allowance {
    Allowance::from_bytes(&host.shared_value(key).unwrap()).unwrap()
}

fn reply_header(host: &MockHost, name: &str) -> Option<String> {
    header(&host.replies()[0].headers, name).map(str::to_owned)
}

#[test]
fn a_call_without_share_pauses_for_one_share_call_then_resumes_with_exact_headers() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(100));
    let (mut req, action) = call_on(&plugin, host);
    assert_eq!(action, Action::Pause);
    let calls = share_calls(host);
    assert_eq!(calls.len(), 1);
    let (token, asked) = &calls[0];
    assert_eq!(
        (
            asked.subject.as_str(),
            asked.measure.as_str(),
            asked.need,
            asked.want,
            asked.release
        ),
        ("key:key-1", "requests", 1, 5, 0),
        "the call needs 1 and asks a twentieth of 100"
    );
    assert!(asked.holder.starts_with("envoy-"), "{}", asked.holder);
    assert_eq!(
        req.on_http_request_body(0, true),
        Action::Pause,
        "held back"
    );
    assert_eq!(allowance(host, REQUESTS_KEY).window.count(5_000), 0);
    deliver(
        &mut req,
        host,
        *token,
        &answer(Outcome::Granted, 5, 100, 95),
    );
    assert_eq!(host.resumes(), 1);
    assert!(host.replies().is_empty());
    let a = allowance(host, REQUESTS_KEY);
    assert_eq!(
        (a.lease_id.as_str(), a.share, a.window.count(5_000)),
        ("s1", 5, 1)
    );
    assert_eq!(a.marked_until_ms, 0, "the answer freed the mark");
    assert_eq!(req.on_http_request_body(0, true), Action::Continue);
    // One Envoy: 4 of its share and the 95 unassigned are left, all the limit leaves.
    let left = answered_header(&mut req, host, "x-ratelimit-remaining-requests");
    assert_eq!(left, Some(99));
    // The next call draws on the share without a round trip.
    let (_next, action) = call_on(&plugin, &host.worker());
    assert_eq!(action, Action::Continue);
    assert_eq!(share_calls(host).len(), 1);
}

#[test]
fn an_exhausted_pool_is_the_rate_limit_429_retried_after_a_tick() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(100));
    let (mut req, _) = call_on(&plugin, host);
    let (token, _) = share_calls(host).remove(0);
    deliver(
        &mut req,
        host,
        token,
        &answer_held(Outcome::Exhausted, 0, 0, 100, 0),
    );
    let (status, body) = reply_of(host);
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // Other Envoys hold the limit: shares move on their ticks.
    assert_eq!(reply_header(host, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        reply_header(host, "x-ratelimit-limit-requests").as_deref(),
        Some("100")
    );
    assert_eq!(
        reply_header(host, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    assert_eq!(host.resumes(), 0);
    req.on_log();
    assert!(outbox_records(&plugin).is_empty());
}

#[test]
fn an_exhausted_pool_behind_this_envoys_own_takes_is_retried_when_they_leave() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(10));
    crate::limits::testing::lease(host, REQUESTS_KEY, 2, 10);
    for _ in 0..2 {
        assert_eq!(call_on(&plugin, &host.worker()).1, Action::Continue);
    }
    let (mut req, action) = call_on(&plugin, host);
    assert_eq!(action, Action::Pause);
    let (token, _) = share_calls(host).remove(0);
    deliver(
        &mut req,
        host,
        token,
        &answer_held(Outcome::Exhausted, 0, 2, 10, 0),
    );
    assert_eq!(refusal_code(host), (429, "rate_limit_exceeded".into()));
    // Its own two takes at 5 s fill the share it can reach: free when slot 66 begins.
    assert_eq!(reply_header(host, "retry-after").as_deref(), Some("61"));
}

/// A client hammering a limit the other Envoys hold must not cost the control plane a
/// share call per call: for a second the answer refuses what it could not serve, at the
/// headers already.
#[test]
fn a_recent_exhausted_answer_refuses_without_asking_again() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(100));
    let (mut req, _) = call_on(&plugin, host);
    let (token, _) = share_calls(host).remove(0);
    deliver(
        &mut req,
        host,
        token,
        &answer_held(Outcome::Exhausted, 0, 0, 100, 0),
    );
    for _ in 0..5 {
        let worker = host.worker();
        chat_request(&worker, "gpt-4o", false);
        let mut next = Request::new(worker.clone(), plugin.shared.clone(), "n".into());
        assert_eq!(next.on_http_request_headers(7, false), Action::Pause);
        assert_eq!(refusal_code(&worker), (429, "rate_limit_exceeded".into()));
    }
    assert_eq!(share_calls(host).len(), 1, "no second share call");
    host.set_now(host.now_ms() + 1_000);
    let (_req, action) = call_on(&plugin, host);
    assert_eq!(action, Action::Pause);
    assert_eq!(share_calls(host).len(), 2, "a second later it asks again");
}

#[test]
fn an_unlimited_answer_admits_the_call_without_that_limit() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(1));
    let (mut req, _) = call_on(&plugin, host);
    let (token, _) = share_calls(host).remove(0);
    deliver(&mut req, host, token, &answer(Outcome::Unlimited, 0, 0, 0));
    assert_eq!(host.resumes(), 1);
    assert!(host.replies().is_empty());
    assert_eq!(req.on_http_request_body(0, true), Action::Continue);
    let taken = match &req.phase {
        Phase::Admitted(a) => a.taken.len(),
        _ => usize::MAX,
    };
    assert_eq!(taken, 0, "nothing taken from the lifted limit");
}

#[test]
fn an_unreachable_control_plane_refuses_a_call_lacking_share_with_503_counted() {
    for mode in [Unreachable::Refuse, Unreachable::AdmitWithinLease] {
        let plugin = plugin_with(FilterSettings {
            budgets_on_control_plane_unreachable: mode,
            ..FilterSettings::default()
        });
        let host = &plugin.host;
        cache_unleased(host, &rpm(100));
        let (mut req, _) = call_on(&plugin, host);
        let (token, _) = share_calls(host).remove(0);
        req.on_grpc_call_response(token, 14, 0);
        assert_eq!(
            refusal_code(host),
            (503, "control_plane_unavailable".into()),
            "{mode:?}"
        );
        assert_eq!(
            reply_header(host, "x-ratelimit-limit-requests").as_deref(),
            Some("100"),
            "a call refused while it lacks share still says where the limit stands"
        );
        assert_eq!(plugin.shared.unreachable.get(), (0, 1));
        // A call that cannot even dispatch is refused and counted alike.
        let worker = host.worker();
        worker.fail_dispatch(Status::InternalFailure);
        let (_req, action) = call_on(&plugin, &worker);
        assert_eq!(action, Action::Pause);
        assert_eq!(
            refusal_code(&worker),
            (503, "control_plane_unavailable".into())
        );
        assert_eq!(plugin.shared.unreachable.get(), (0, 2));
    }
}

/// An Envoy whose clock runs ahead of the control plane's by more than a share lives is
/// granted shares that expired before they arrived. The call used to ask again, heap share
/// it could not draw on onto the lease, and be refused 429 "rate limit reached" while its
/// limit was untouched; it is a deployment fault, refused 503 at the first answer.
#[test]
fn a_share_expired_on_arrival_refuses_503_without_asking_again() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(100));
    host.set_now(EXPIRES + 40_000);
    let (mut req, action) = call_on(&plugin, host);
    assert_eq!(action, Action::Pause);
    let (token, _) = share_calls(host).remove(0);
    deliver(&mut req, host, token, &answer(Outcome::Granted, 5, 100, 95));
    assert_eq!(share_calls(host).len(), 1, "not asked again");
    assert_eq!(
        refusal_code(host),
        (503, "control_plane_unavailable".into())
    );
    assert_eq!(plugin.shared.unreachable.get(), (0, 1));
}

#[test]
fn calls_within_a_live_share_need_no_control_plane() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(100));
    crate::limits::testing::lease(host, REQUESTS_KEY, 3, 100);
    host.fail_dispatch(Status::InternalFailure);
    for _ in 0..3 {
        assert_eq!(call_on(&plugin, host).1, Action::Continue);
    }
    assert!(host.replies().is_empty());
    assert_eq!(plugin.shared.unreachable.get(), (0, 0));
}

#[test]
fn a_call_lacking_share_of_one_limit_holds_none_of_the_others_while_it_waits() {
    let plugin = plugin();
    let host = &plugin.host;
    let g = KeyGrant {
        requests_per_minute: Some(10),
        tokens_per_minute: Some(10_000),
        ..grant(KeyStatus::Active, &[])
    };
    cache_unleased(host, &g);
    crate::limits::testing::lease(host, REQUESTS_KEY, 10, 10);
    let (mut req, action) = call_on(&plugin, host);
    assert_eq!(action, Action::Pause);
    assert_eq!(
        allowance(host, REQUESTS_KEY).window.count(5_000),
        0,
        "the request was given back while the call waits"
    );
    let (token, asked) = share_calls(host).remove(0);
    assert_eq!(asked.measure, "tokens");
    let hold = asked.need;
    assert_eq!(asked.want, hold.max(500));
    deliver(
        &mut req,
        host,
        token,
        &answer_held(Outcome::Granted, hold, hold, 10_000, 0),
    );
    assert_eq!(host.resumes(), 1);
    assert_eq!(allowance(host, REQUESTS_KEY).window.count(5_000), 1);
    assert_eq!(allowance(host, TOKENS_KEY).window.count(5_000), hold);
}

#[test]
fn calls_short_at_once_ask_one_spare_part_between_them() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(1_000));
    let _calls: Vec<_> = (0..4).map(|_| call_on(&plugin, host)).collect();
    let wants: Vec<(u64, u64)> = share_calls(host)
        .iter()
        .map(|(_, a)| (a.need, a.want))
        .collect();
    assert_eq!(wants, [(1, 50), (1, 1), (1, 1), (1, 1)]);
}

/// The control plane of one pool, as the contract describes it: grants between need and
/// want of what is unassigned, or nothing.
struct Pool {
    limit: u64,
    assigned: u64,
}

impl Pool {
    fn answer(&mut self, asked: &ShareRequest) -> Vec<u8> {
        self.assigned -= asked.release.min(self.assigned);
        let free = self.limit - self.assigned;
        if free < asked.need {
            return answer_held(Outcome::Exhausted, 0, self.assigned, self.limit, free);
        }
        let granted = asked.want.min(free);
        self.assigned += granted;
        answer(
            Outcome::Granted,
            granted,
            self.limit,
            self.limit - self.assigned,
        )
    }
}

/// A small limit leases exactly what each call needs, so a burst of calls, answered in
/// any order, admits exactly the limit.
#[test]
fn a_burst_against_a_small_limit_admits_exactly_the_limit() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_unleased(host, &rpm(10));
    let mut calls: Vec<(Request<MockHost>, MockHost)> = (0..30)
        .map(|_| {
            let worker = host.worker();
            let (req, action) = call_on(&plugin, &worker);
            assert_eq!(action, Action::Pause);
            (req, worker)
        })
        .collect();
    let mut pool = Pool {
        limit: 10,
        assigned: 0,
    };
    // Answered last to first, each call's retries answered as they come.
    for (req, worker) in calls.iter_mut().rev() {
        let mut answered = 0;
        while let Some((token, asked)) = share_calls(worker).into_iter().nth(answered) {
            answered += 1;
            deliver(req, worker, token, &pool.answer(&asked));
        }
    }
    let admitted = calls.iter().filter(|(_, w)| w.resumes() == 1).count();
    let refused: Vec<u32> = calls
        .iter()
        .flat_map(|(_, w)| w.replies())
        .map(|r| r.status)
        .collect();
    assert_eq!(admitted, 10);
    assert_eq!(refused, vec![429; 20]);
    assert_eq!(pool.assigned, 10);
    assert_eq!(allowance(host, REQUESTS_KEY).window.count(5_000), 10);
}

#[test]
fn a_call_lacking_share_and_lease_money_waits_for_both_then_resumes_once() {
    let plugin = plugin();
    let host = &plugin.host;
    let g = KeyGrant {
        budgets: vec![tollgate_proto::v1::BudgetRef {
            budget_id: "b1".into(),
            subject: "team:ml".into(),
            period: "month".into(),
            limit_picos: 1_000_000,
        }],
        ..rpm(100)
    };
    let mut r = route("openai");
    r.price = Some(tollgate_proto::v1::ModelPrice {
        output: 1_000,
        max_output_tokens: 100,
        ..Default::default()
    });
    cache::store(host, &key_hash(), "gpt-4o", &g, Some(&r), CACHED);
    let (mut req, action) = call_on(&plugin, host);
    assert_eq!(action, Action::Pause);
    let (token, _) = share_calls(host).remove(0);
    deliver(&mut req, host, token, &answer(Outcome::Granted, 5, 100, 95));
    assert_eq!(host.resumes(), 0, "the budget's lease comes next");
    let lease = host
        .dispatches()
        .into_iter()
        .find(|d| d.method == tollgate_proto::LEASE_BUDGET_METHOD)
        .expect("a lease call");
    let granted = tollgate_proto::v1::LeaseAnswer {
        outcome: tollgate_proto::v1::lease_answer::Outcome::Granted.into(),
        lease_id: "l1".into(),
        granted_picos: 50_000,
        lease_total_picos: 50_000,
        expires_at_ms: i64::try_from(LATER).unwrap(),
        ..Default::default()
    };
    deliver(&mut req, host, lease.token, &granted.encode_to_vec());
    assert_eq!(host.resumes(), 1);
    assert!(host.replies().is_empty());
    assert_eq!(allowance(host, REQUESTS_KEY).window.count(5_000), 1);
}

fn plugin_on(host: MockHost) -> Plugin<MockHost> {
    let mut plugin = Plugin::new(host);
    plugin.configure(FilterSettings::default());
    plugin
}

#[test]
fn the_tick_gives_idle_share_back_and_renews_a_busy_one_ahead_one_worker_at_a_time() {
    let mut plugin_a = plugin();
    let mut plugin_b = plugin_on(plugin_a.host.worker());
    let host = plugin_a.host.clone();
    cache_unleased(&host, &rpm(100));
    crate::limits::testing::lease(&host, REQUESTS_KEY, 50, 100);
    for p in [&plugin_a, &plugin_b] {
        assert_eq!(call_on(p, &p.host.worker()).1, Action::Continue);
    }
    // In use: 2 counted and a spare twentieth (5) kept; 43 go back, by one worker.
    plugin_a.tend_shares();
    plugin_b.tend_shares();
    let mut releases: Vec<_> = [&plugin_a, &plugin_b]
        .iter()
        .flat_map(|p| share_calls(&p.host))
        .collect();
    assert_eq!(releases.len(), 1, "{releases:?}");
    let (token, asked) = releases.remove(0);
    assert_eq!((asked.release, asked.want, asked.need), (43, 0, 0));
    assert_eq!(
        asked.lease_id, "l1",
        "a release names its lease, so it cannot come off the next one"
    );
    let a = allowance(&host, REQUESTS_KEY);
    assert_eq!(
        (a.share, a.available),
        (7, 93),
        "taken off before the control plane hears"
    );
    let tender = if share_calls(&plugin_a.host).is_empty() {
        &mut plugin_b
    } else {
        &mut plugin_a
    };
    let body = answer(Outcome::Granted, 0, 100, 93);
    tender.host.set_grpc_body(&body);
    tender.on_answer(token, 0, body.len());
    assert_eq!(allowance(&host, REQUESTS_KEY).marked_until_ms, 0);

    // Near its expiry and still in use, the share is renewed (only extended: it holds
    // the spare part).
    let near = crate::limits::testing::LEASED_UNTIL_MS - 5_000;
    host.set_now(near);
    for _ in 0..2 {
        assert_eq!(call_on(&plugin_a, &host.worker()).1, Action::Continue);
    }
    let before = share_calls(&plugin_a.host).len();
    plugin_a.tend_shares();
    let renewals = share_calls(&plugin_a.host);
    assert_eq!(renewals.len(), before + 1);
    let (_, renewal) = renewals.last().unwrap();
    assert_eq!(
        (renewal.release, renewal.want, renewal.need),
        (0, 0, 0),
        "2 counted and 5 spare: the share of 7 is only extended"
    );
}

#[test]
fn an_idle_share_goes_back_whole_once_its_window_drains() {
    let mut plugin = plugin();
    let host = plugin.host.clone();
    cache_unleased(&host, &rpm(100));
    crate::limits::testing::lease(&host, REQUESTS_KEY, 6, 100);
    assert_eq!(call_on(&plugin, &host.worker()).1, Action::Continue);
    // Idle for 10 s: the spare part goes back, what the window counts stays.
    host.set_now(15_000);
    plugin.tend_shares();
    let (_, first) = share_calls(&host).remove(0);
    assert_eq!(first.release, 5);
    let mut a = allowance(&host, REQUESTS_KEY);
    assert_eq!(a.share, 1);
    a.marked_until_ms = 0;
    host.put_shared(REQUESTS_KEY, &a.to_bytes());
    // Once the take left the window, the rest goes back too.
    host.set_now(67_000);
    plugin.tend_shares();
    let (_, second) = share_calls(&host).remove(1);
    assert_eq!(second.release, 1);
    assert_eq!(allowance(&host, REQUESTS_KEY).share, 0);
}

#[test]
fn share_granted_to_a_call_that_left_while_it_waited_is_counted_again_at_the_next_renewal() {
    let mut plugin = plugin();
    let host = plugin.host.clone();
    cache_unleased(&host, &rpm(100));
    // The client leaves while its call waits: the control plane granted the 5 it asked
    // (its lease of this Envoy holds 5), but the answer reaches no one.
    let (mut left, action) = call_on(&plugin, &host);
    assert_eq!(action, Action::Pause);
    assert_eq!(share_calls(&host)[0].1.want, 5);
    left.on_log();
    drop(left);
    // The next call asks a spare part too (the leaver freed the mark); the control
    // plane's lease now holds 10.
    let (mut next, action) = call_on(&plugin, &host);
    assert_eq!(action, Action::Pause);
    let (token, asked) = share_calls(&host).remove(1);
    assert_eq!((asked.need, asked.want), (1, 5));
    deliver(
        &mut next,
        &host,
        token,
        &answer_held(Outcome::Granted, 5, 10, 100, 90),
    );
    assert_eq!(
        allowance(&host, REQUESTS_KEY).share,
        5,
        "5 the Envoy never heard of"
    );
    // Near expiry and in use, the lease is renewed; the control plane's answer says
    // what the lease holds, and nothing else was asked since: the Envoy counts it all.
    host.set_now(EXPIRES - 5_000);
    assert_eq!(call_on(&plugin, &host).1, Action::Continue);
    plugin.tend_shares();
    let (token, renewal) = share_calls(&host).remove(2);
    assert_eq!((renewal.want, renewal.release), (1, 0));
    let body = answer_held(Outcome::Granted, 1, 11, 100, 89);
    host.set_grpc_body(&body);
    plugin.on_answer(token, 0, body.len());
    let a = allowance(&host, REQUESTS_KEY);
    assert_eq!(a.share, 11, "the Envoy counts what the control plane does");
    // So the idle pass can give the lost part back instead of keeping it leased for as
    // long as the key is busy.
    host.set_now(EXPIRES - 4_000);
    plugin.tend_shares();
    let (_, release) = share_calls(&host).remove(3);
    assert_eq!(release.release, 5);
}

#[test]
fn a_call_that_leaves_while_it_waits_holding_the_mark_frees_it() {
    let mut plugin = plugin();
    let host = plugin.host.clone();
    cache_unleased(&host, &rpm(100));
    crate::limits::testing::lease(&host, REQUESTS_KEY, 50, 100);
    for _ in 0..50 {
        assert_eq!(call_on(&plugin, &host).1, Action::Continue);
    }
    // The 51st lacks share and asks holding the mark; its client leaves.
    let (mut left, action) = call_on(&plugin, &host);
    assert_eq!(action, Action::Pause);
    assert!(allowance(&host, REQUESTS_KEY).marked_until_ms > host.now_ms());
    left.on_log();
    drop(left);
    assert_eq!(allowance(&host, REQUESTS_KEY).marked_until_ms, 0);
    // So the renewal pass is not held off: the busy share is renewed at once.
    let before = share_calls(&host).len();
    plugin.tend_shares();
    assert_eq!(share_calls(&host).len(), before + 1);
}

#[test]
fn an_idle_share_backing_counted_takes_is_renewed_before_it_lapses() {
    let mut plugin = plugin();
    let host = plugin.host.clone();
    cache_unleased(&host, &rpm(10));
    crate::limits::testing::lease(&host, REQUESTS_KEY, 1, 10);
    let mut a = allowance(&host, REQUESTS_KEY);
    a.expires_at_ms = 30_000;
    host.put_shared(REQUESTS_KEY, &a.to_bytes());
    assert_eq!(call_on(&plugin, &host.worker()).1, Action::Continue);
    // Idle from 5 s, its one unit counted until 66 s. Lapsed at 30 s, the share would
    // stay assigned until 30 s + 61 s + the skew, refusing this Envoy's next call long
    // after its window drained; renewed ahead of each expiry (30 s leases), it goes back
    // once the window drains.
    let renew = |plugin: &mut Plugin<MockHost>, now: u64, calls_before: usize| {
        host.set_now(now);
        plugin.tend_shares();
        let calls = share_calls(&host);
        assert_eq!(calls.len(), calls_before + 1, "at {now}: {calls:?}");
        let (token, renewal) = calls.last().unwrap().clone();
        assert_eq!((renewal.release, renewal.want, renewal.need), (0, 0, 0));
        let body = ShareAnswer {
            outcome: Outcome::Granted.into(),
            lease_id: "l1".into(),
            share: 1,
            expires_at_ms: i64::try_from(now + 30_000).unwrap(),
            limit: 10,
            available: 9,
            ..ShareAnswer::default()
        }
        .encode_to_vec();
        host.set_grpc_body(&body);
        plugin.on_answer(token, 0, body.len());
    };
    renew(&mut plugin, 25_000, 0);
    renew(&mut plugin, 50_000, 1);
    // The call was taken at 5 s: counted until 66 s.
    host.set_now(67_000);
    plugin.tend_shares();
    let calls = share_calls(&host);
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[2].1.release, 1, "back once the window drained");
}
