//! Rate limits kept in Envoy's shared data, so every worker of one Envoy draws from the
//! same windows, within the share of each limit the control plane leased this Envoy
//! (`LeaseShare`, math in tollgate-core `share`): each take, settlement, release and answer
//! is one compare-and-swap write ([`cache::update`]) of one [`Allowance`].
//!
//! A call is taken from every window that applies to it ([`Limit::of_grant`]): its key's
//! requests and tokens, its user's, its key's for its model. All or nothing: when one
//! window refuses, or lacks share and the control plane must be asked, what the others
//! gave this call is given back, so a call that does not go on costs no limit anything
//! (and one that waits for share takes again from scratch on the answer). Token takes are
//! holds (prompt + capped output, tollgate-core `hold`), settled to the call's real usage
//! when it ends.

use crate::cache::{self, CasError};
use crate::host::Host;
use prost::Message;
use tollgate_core::limits::{Decision, Measure, Quota, Window, address_subject};
use tollgate_core::refusal::Refusal;
use tollgate_core::settings::FilterSettings;
use tollgate_core::share::{self, Allowance, Answer, Take, Tending};
use tollgate_proto::v1::{KeyGrant, ShareAnswer, ShareRequest, UsageRecord, share_answer::Outcome};

/// How long a client is told to wait when the window could not be updated.
const CONTENDED_RETRY_MS: u64 = 1_000;

/// The shared-data key of one (measure, subject)'s allowance. `v3`: the layout of
/// [`Allowance::to_bytes`] (`v2` held a bare window); a new layout takes a new key, since
/// shared data outlives a VM.
fn allowance_key(measure: Measure, subject: &str) -> String {
    format!("tg:v3:{}:{subject}", measure.name())
}

/// One window a call is taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The shared-data key of its allowance.
    window: String,
    /// The limited subject, as the control plane names it (`key:<id>`, `user:<name>`, ...).
    subject: String,
    /// Whose limit, as refusals name it.
    phrase: String,
    /// What it counts.
    measure: Measure,
    /// Its limit per minute (0: every call refused).
    per_minute: u64,
}

impl Limit {
    /// Every window a call of `grant` to `model` is taken from: the key's own (unset:
    /// unlimited), then each of the grant's rate limits, a per-model one only for its
    /// model. Requests come first, so a call refused for tokens has its request given back.
    pub fn of_grant(grant: &KeyGrant, model: &str) -> Vec<Limit> {
        let mut limits = Vec::new();
        let key_subject = format!("key:{}", grant.key_id);
        let mut push = |subject: &str, phrase: &str, rpm: Option<u32>, tpm: Option<u64>| {
            for (measure, per_minute) in [
                (Measure::Requests, rpm.map(u64::from)),
                (Measure::Tokens, tpm),
            ] {
                if let Some(per_minute) = per_minute {
                    limits.push(Limit {
                        window: allowance_key(measure, subject),
                        subject: subject.to_owned(),
                        phrase: phrase.to_owned(),
                        measure,
                        per_minute,
                    });
                }
            }
        };
        push(
            &key_subject,
            "this API key",
            grant.requests_per_minute,
            grant.tokens_per_minute,
        );
        for limit in &grant.rate_limits {
            if !limit.model.is_empty() && limit.model != model {
                continue;
            }
            let phrase = match limit.subject.split_once(':') {
                Some(("user", name)) => format!("user `{name}`"),
                _ if !limit.model.is_empty() => format!("this API key on model `{}`", limit.model),
                _ => format!("`{}`", limit.subject),
            };
            push(
                &limit.subject,
                &phrase,
                limit.requests_per_minute,
                limit.tokens_per_minute,
            );
        }
        limits.sort_by_key(|l| l.measure == Measure::Tokens);
        limits
    }

    /// The shared-data key of this limit's allowance: the id the renewal pass knows it by.
    pub fn key(&self) -> &str {
        &self.window
    }

    /// The refusal of this limit for a call of `tokens`, free again after `retry_after_ms`.
    pub fn refusal(&self, tokens: u64, retry_after_ms: u64) -> Refusal {
        match self.measure {
            Measure::Requests => Refusal::RequestsPerMinute {
                subject: self.phrase.clone(),
                limit: self.per_minute,
                retry_after_ms,
            },
            Measure::Tokens => Refusal::TokensPerMinute {
                subject: self.phrase.clone(),
                limit: self.per_minute,
                requested: tokens,
                retry_after_ms,
            },
        }
    }

    /// What one call takes from this window: a request, or its tokens.
    fn amount(&self, tokens: u64) -> u64 {
        match self.measure {
            Measure::Requests => 1,
            Measure::Tokens => tokens,
        }
    }
}

/// What a call took from one window, to settle or give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    window: String,
    measure: Measure,
    held: u64,
    at_ms: u64,
}

/// The most constraining quota of each kind a call met: what its `x-ratelimit-*` headers
/// say (and `retry-after` when refused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    requests: Option<Decision>,
    tokens: Option<Decision>,
}

impl Quotas {
    /// Keeps `decision` of `measure` if it is tighter than the one kept, or a refusal.
    fn meet(&mut self, measure: Measure, decision: Decision) {
        let kept = match measure {
            Measure::Requests => &mut self.requests,
            Measure::Tokens => &mut self.tokens,
        };
        let tighter = match kept {
            None => true,
            Some(Decision::Refuse { .. }) => false,
            Some(k) => {
                matches!(decision, Decision::Refuse { .. })
                    || decision.quota().tighter_than(&k.quota())
            }
        };
        if tighter {
            *kept = Some(decision);
        }
    }

    /// The quota of `measure` once `amount` taken is given back.
    fn give_back(&mut self, measure: Measure, amount: u64) {
        let kept = match measure {
            Measure::Requests => &mut self.requests,
            Measure::Tokens => &mut self.tokens,
        };
        if let Some(Decision::Admit(q)) = kept {
            *q = q.given_back(amount);
        }
    }

    /// The response headers: `-requests` then `-tokens`, and one `retry-after`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        for (measure, decision) in [
            (Measure::Requests, self.requests),
            (Measure::Tokens, self.tokens),
        ] {
            if let Some(d) = decision {
                for header in d.response_headers(measure) {
                    if header.0 != "retry-after" || !headers.iter().any(|(n, _)| *n == header.0) {
                        headers.push(header);
                    }
                }
            }
        }
        headers
    }
}

/// Why [`take_all`] took nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A window refused the call.
    Refused(Refusal),
    /// Limit `index` lacks `need` units of share: the control plane must be asked.
    Lacks {
        /// Which limit.
        index: usize,
        /// The least more share that fits the call.
        need: u64,
    },
}

/// What [`take_all`] decided.
#[derive(Debug)]
pub struct Taking {
    /// The headers the answer carries.
    pub quotas: Quotas,
    /// Admitted: what was taken, to settle at the end; else why not.
    pub outcome: Result<Vec<Taken>, Stop>,
}

/// Takes a call holding `tokens` from every window in `limits` at `now_ms`, or from
/// none: on the first refusal or lack of share, what was taken is given back.
pub fn take_all(host: &impl Host, limits: &[Limit], tokens: u64, now_ms: u64) -> Taking {
    let mut quotas = Quotas::default();
    let mut taken: Vec<Taken> = Vec::with_capacity(limits.len());
    for (index, limit) in limits.iter().enumerate() {
        let amount = limit.amount(tokens);
        let (took, if_refused) = take(host, &limit.window, limit.per_minute, amount, now_ms);
        let stop = match took {
            Take::Decided(decision) => {
                quotas.meet(limit.measure, decision);
                match decision {
                    Decision::Admit(_) => None,
                    Decision::Refuse { retry_after_ms, .. } => {
                        Some(Stop::Refused(limit.refusal(tokens, retry_after_ms)))
                    }
                }
            }
            Take::Lacks { need } => {
                if let Some(refusal) = if_refused {
                    quotas.meet(limit.measure, refusal);
                }
                Some(Stop::Lacks { index, need })
            }
        };
        if let Some(stop) = stop {
            give_back(host, &taken, now_ms);
            // Every window of a kind took the same amount, so the tightest of each kind
            // taken gets exactly that back.
            for measure in [Measure::Requests, Measure::Tokens] {
                if let Some(t) = taken.iter().find(|t| t.measure == measure) {
                    quotas.give_back(measure, t.held);
                }
            }
            return Taking {
                quotas,
                outcome: Err(stop),
            };
        }
        taken.push(Taken {
            window: limit.window.clone(),
            measure: limit.measure,
            held: amount,
            at_ms: now_ms,
        });
    }
    Taking {
        quotas,
        outcome: Ok(taken),
    }
}

/// What taking one request from each request window would decide now, storing nothing:
/// lets a spent key be refused at its headers, before its body is buffered, while only a
/// call that passes every check is charged. Refuses only what is past the limit in this
/// Envoy's own window, or lacks share the control plane just said it cannot grant; token
/// windows wait for the body, which says how many tokens the call holds.
pub fn peek_requests(host: &impl Host, limits: &[Limit], now_ms: u64) -> Peeked {
    let mut quotas = Quotas::default();
    for limit in limits.iter().filter(|l| l.measure == Measure::Requests) {
        let decision = stored(host, &limit.window)
            .unwrap_or_default()
            .peek(limit.per_minute, now_ms);
        quotas.meet(limit.measure, decision);
        if let Decision::Refuse { retry_after_ms, .. } = decision {
            return Peeked {
                quotas,
                outcome: Err(limit.refusal(0, retry_after_ms)),
            };
        }
    }
    Peeked {
        quotas,
        outcome: Ok(()),
    }
}

/// What [`peek_requests`] decided.
#[derive(Debug)]
pub struct Peeked {
    /// The headers a refusal carries.
    pub quotas: Quotas,
    /// Why the call is refused already, if it is.
    pub outcome: Result<(), Refusal>,
}

/// Gives back everything a call took: it was refused before it reached a provider.
pub fn give_back(host: &impl Host, taken: &[Taken], now_ms: u64) {
    for t in taken {
        settle_one(host, t, 0, now_ms);
    }
}

/// Settles a call's token holds to the `used` tokens it ended with.
pub fn settle_tokens(host: &impl Host, taken: &[Taken], used: u64, now_ms: u64) {
    for t in taken.iter().filter(|t| t.measure == Measure::Tokens) {
        settle_one(host, t, used, now_ms);
    }
}

/// The tokens a call used, as its usage record tells: prompt and output when the provider
/// reported them; `None` when part of them is left to the control plane to estimate (the
/// hold then stands, an overcount rather than an undercount).
pub fn used_tokens(record: &UsageRecord) -> Option<u64> {
    if record.estimate.is_some() {
        return None;
    }
    Some(
        record
            .input_uncached
            .saturating_add(record.cache_read)
            .saturating_add(record.cache_write)
            .saturating_add(record.output),
    )
}

/// The allowance stored at `key`, if any can be read.
fn stored(host: &impl Host, key: &str) -> Option<Allowance> {
    let (bytes, _) = host.shared_data(key).ok()?;
    Allowance::from_bytes(&bytes?)
}

/// Adjusts one take to `actual` in its slot; a failed write is logged (the window then
/// keeps the hold: an overcount).
fn settle_one(host: &impl Host, taken: &Taken, actual: u64, now_ms: u64) {
    let written = cache::update(host, &taken.window, |current| {
        let mut allowance = current.and_then(Allowance::from_bytes)?;
        allowance
            .settle(taken.at_ms, taken.held, actual, now_ms)
            .then(|| allowance.to_bytes())
    });
    if let Err(e) = written {
        log::warn!(
            "tollgate: rate limit {} not settled ({e:?}); its hold stays",
            taken.window
        );
    }
}

/// Takes `amount` from the allowance at `key` of `limit` per minute at `now_ms`. Fails
/// closed: an allowance that cannot be written (contended past the CAS bound, or refused
/// by the host) refuses the call.
/// A take that lacks share also gets the refusal it would meet now, so a call refused
/// while it lacks share (no answer, or share kept going to other calls) still carries
/// that limit's `x-ratelimit-*` headers.
fn take(
    host: &impl Host,
    key: &str,
    limit: u64,
    amount: u64,
    now_ms: u64,
) -> (Take, Option<Decision>) {
    let mut outcome = None;
    let written = cache::update(host, key, |current| {
        // Only this module writes the key, in this layout: bytes of another shape can
        // only be absent ones.
        let mut allowance = current.and_then(Allowance::from_bytes).unwrap_or_default();
        let t = allowance.take(limit, amount, now_ms);
        let if_refused =
            matches!(t, Take::Lacks { .. }).then(|| allowance.exhausted(amount, now_ms));
        outcome = Some((t, if_refused));
        // Only an admitted take changes what must be kept.
        matches!(t, Take::Decided(Decision::Admit(_))).then(|| allowance.to_bytes())
    });
    match (written, outcome) {
        (Ok(_), Some(t)) => t,
        (Err(e), _) => {
            log::warn!("tollgate: rate limit {key} not updated ({e:?}); refused");
            (Take::Decided(fail_closed(limit)), None)
        }
        (Ok(_), None) => (Take::Decided(fail_closed(limit)), None),
    }
}

/// The refusal given when the window could not be read or written.
fn fail_closed(limit: u64) -> Decision {
    Decision::Refuse {
        quota: Quota {
            limit,
            remaining: 0,
            reset_ms: CONTENDED_RETRY_MS,
        },
        retry_after_ms: CONTENDED_RETRY_MS,
    }
}

/// What one call asked of the control plane about its limits.
#[derive(Debug, Default)]
pub struct CallShares {
    /// What the call holds in tokens, to take again from scratch on an answer.
    pub tokens: u64,
    /// `LeaseShare` calls this call made.
    pub asked: usize,
    /// The call in flight: which limit, and whether this call held its mark.
    pub waiting: Option<(usize, bool)>,
}

impl CallShares {
    /// Share calls one call may make among `limits` of them: two per limit (a grant can
    /// be drawn on by another call first), and one more.
    pub fn may_ask(&self, limits: usize) -> bool {
        self.asked <= limits.saturating_mul(2)
    }
}

/// Notes the ask of a call that must ask at `now_ms` in the allowance at `key` (see
/// [`Allowance::sync`]) and claims its mark, if no renewal or other call holds it;
/// `false` when it does not hold the mark. Only the holder asks for a spare part of the
/// limit; the others for their need alone.
pub fn claim_ask(host: &impl Host, key: &str, now_ms: u64) -> bool {
    let mut claimed = false;
    let written = cache::update(host, key, |current| {
        let mut allowance = current.and_then(Allowance::from_bytes).unwrap_or_default();
        claimed = allowance.claim_ask(now_ms);
        allowance.note_ask(now_ms);
        Some(allowance.to_bytes())
    });
    written.is_ok() && claimed
}

/// Frees the mark of the allowance at `key`, held by a call that will hear no answer
/// (see [`Allowance::free_mark`]).
pub fn free_mark(host: &impl Host, key: &str) {
    let written = cache::update(host, key, |current| {
        let mut allowance = current.and_then(Allowance::from_bytes)?;
        allowance.free_mark().then(|| allowance.to_bytes())
    });
    if let Err(e) = written {
        log::warn!("tollgate: rate-limit share mark {key} not freed ({e:?}); it lapses");
    }
}

/// What a `LeaseShare` call gives back: `units` of lease `lease_id` (named, so that a
/// release reaching the control plane after that lease expired is not taken off the next).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Release<'a> {
    /// Units given back.
    pub units: u64,
    /// The lease they come off; empty when nothing is given back.
    pub lease_id: &'a str,
}

/// The `LeaseShare` message of `holder` for `limit`: `want` more, at least `need`, after
/// giving back `release`.
pub fn request(holder: &str, limit: &Limit, want: u64, need: u64, release: Release) -> Vec<u8> {
    ShareRequest {
        subject: limit.subject.clone(),
        measure: limit.measure.name().to_owned(),
        holder: holder.to_owned(),
        want,
        need,
        release: release.units,
        lease_id: release.lease_id.to_owned(),
    }
    .encode_to_vec()
}

/// Dispatches a `LeaseShare` call for `limit`; returns its token.
pub fn ask(
    host: &impl Host,
    settings: &FilterSettings,
    limit: &Limit,
    want: u64,
    need: u64,
    release: Release,
) -> Option<u32> {
    let holder = crate::lease::holder(host)?;
    let message = request(&holder, limit, want, need, release);
    crate::calls::control_plane(host, settings, tollgate_proto::LEASE_SHARE_METHOD, &message)
        .map_err(|status| log::warn!("tollgate: cannot dispatch LeaseShare: {status:?}"))
        .ok()
}

/// Asks what a call lacking `need` of `limit` asks: a spare part of the limit when it
/// holds the mark, else its need alone. Returns the token and whether it was marked.
pub fn ask_need(
    host: &impl Host,
    settings: &FilterSettings,
    limit: &Limit,
    need: u64,
    now_ms: u64,
) -> Option<(u32, bool)> {
    let marked = claim_ask(host, &limit.window, now_ms);
    let want = if marked {
        share::want(need, limit.per_minute)
    } else {
        need
    };
    ask(host, settings, limit, want, need, Release::default()).map(|token| (token, marked))
}

/// The answer to a `LeaseShare` call, or `None` when there is none to act on (the call
/// failed, or the answer is undecodable or of an unknown outcome).
pub fn answer(host: &impl Host, status: u32, size: usize) -> Option<Answer> {
    if status != 0 {
        log::warn!("tollgate: LeaseShare failed with gRPC status {status}");
        return None;
    }
    let body = host.grpc_response_body(size).unwrap_or_default();
    let decoded = ShareAnswer::decode(body.as_slice())
        .map_err(|e| log::warn!("tollgate: undecodable LeaseShare answer: {e}"))
        .ok()?;
    let exhausted = match decoded.outcome() {
        Outcome::Granted => false,
        Outcome::Exhausted => true,
        Outcome::Unlimited => return Some(Answer::Unlimited),
        Outcome::Unspecified => {
            log::warn!("tollgate: LeaseShare answer without an outcome");
            return None;
        }
    };
    Some(Answer::Lease {
        lease_id: decoded.lease_id,
        granted: decoded.granted,
        expires_at_ms: u64::try_from(decoded.expires_at_ms).unwrap_or(0),
        limit: decoded.limit,
        available: decoded.available,
        share: decoded.share,
        exhausted,
    })
}

/// Logs that the share answered for `key` had expired `late_ms` before it arrived: the
/// clocks of this Envoy and the control plane disagree by more than a share lives.
pub fn warn_lapsed_on_arrival(key: &str, late_ms: u64) {
    log::warn!(
        "tollgate: rate-limit share {key} arrived {late_ms} ms past its expiry: this Envoy's \
         clock is ahead of the control plane's by more than [limits] share_ttl_ms; calls \
         that need share are refused 503 until the clocks agree"
    );
}

/// Applies `answer` (to an asker holding the mark or not) to the allowance at `key`;
/// `sync`: the answer is to the renewal of that number, which takes the control plane's
/// count of the share if nothing was asked since (see [`Allowance::sync`]); `released`:
/// the answer is to a release of those units off that lease, no longer on its way.
pub fn apply(
    host: &impl Host,
    key: &str,
    answer: &Answer,
    now_ms: u64,
    marked: bool,
    sync: Option<u64>,
    released: Option<&(String, u64)>,
) -> Result<(), CasError> {
    cache::update(host, key, |current| {
        let mut allowance = current.and_then(Allowance::from_bytes).unwrap_or_default();
        let applied = allowance.apply(answer, now_ms, marked);
        // Before the sync, which leaves off only releases still on their way.
        let heard =
            released.is_some_and(|(lease_id, units)| allowance.heard_release(lease_id, *units));
        let synced = sync.is_some_and(|ask| allowance.sync(answer, ask));
        (applied || heard || synced).then(|| allowance.to_bytes())
    })
    .map(|_| ())
}

/// What the renewal pass of one allowance tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tended {
    /// The release or renewal, already applied locally.
    pub tending: Tending,
    /// The lease it is about.
    pub lease_id: String,
    /// The ask's number when its answer may set the share (nothing asked in the
    /// `answer_within_ms` before: see [`Allowance::sync`]).
    pub sync: Option<u64>,
}

/// The renewal pass of `limit`'s allowance at `now_ms` (see [`Allowance::tend`]): what to
/// tell the control plane, already applied locally and marked, if anything.
pub fn tend(host: &impl Host, limit: &Limit, now_ms: u64, answer_within_ms: u64) -> Option<Tended> {
    let mut tended = None;
    let written = cache::update(host, &limit.window, |current| {
        let mut allowance = current.and_then(Allowance::from_bytes)?;
        let tending = allowance.tend(now_ms)?;
        let quiet = allowance.quiet(now_ms, answer_within_ms);
        let ask = allowance.note_ask(now_ms);
        tended = Some(Tended {
            tending,
            lease_id: allowance.lease_id.clone(),
            sync: quiet.then_some(ask),
        });
        Some(allowance.to_bytes())
    });
    written.ok().and(tended)
}

/// Takes `amount` from the per-Envoy window at `key` of `limit` per minute (the brake's).
fn take_window(host: &impl Host, key: &str, limit: u64, amount: u64, now_ms: u64) -> Decision {
    let mut decision = None;
    let written = cache::update(host, key, |current| {
        let mut window = current.and_then(Window::from_bytes).unwrap_or_default();
        let d = window.take(limit, amount, now_ms);
        decision = Some(d);
        matches!(d, Decision::Admit(_)).then(|| window.to_bytes())
    });
    match (written, decision) {
        (Ok(_), Some(d)) => d,
        (Err(e), _) => {
            log::warn!("tollgate: rate limit {key} not updated ({e:?}); refused");
            fail_closed(limit)
        }
        (Ok(_), None) => fail_closed(limit),
    }
}

/// What [`take_window`] of one would decide now, storing nothing. A window that cannot be
/// read is taken as empty; the take decides then.
fn peek_window(host: &impl Host, key: &str, limit: u64, now_ms: u64) -> Decision {
    let current = host.shared_data(key).ok().and_then(|(b, _)| b);
    current
        .as_deref()
        .and_then(Window::from_bytes)
        .unwrap_or_default()
        .peek(limit, 1, now_ms)
}

/// The failed-authentication brake of one client address: at most `per_minute` calls
/// with a missing, unknown or revoked key in any minute; past it, every call from the
/// address is refused before its key is looked at, so a brute force can neither go on
/// nor load the control plane. Per Envoy: it needs no key, so no share is leased for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brake {
    window: String,
    per_minute: u64,
}

impl Brake {
    /// The brake of the address in Envoy's `source.address`; `None` when it names none
    /// (an internal listener), which is then not braked.
    pub fn of_source(source: Option<&[u8]>, per_minute: u32) -> Option<Self> {
        let source = std::str::from_utf8(source?).ok()?;
        let subject = address_subject(source)?;
        Some(Self {
            window: format!("tg:v2:failed_auths:ip:{subject}"),
            per_minute: u64::from(per_minute),
        })
    }

    /// Why a call from this address is refused now, if it is, and its `retry-after`.
    pub fn check(
        &self,
        host: &impl Host,
        now_ms: u64,
    ) -> Option<(Refusal, Vec<(&'static str, String)>)> {
        match peek_window(host, &self.window, self.per_minute, now_ms) {
            Decision::Refuse { retry_after_ms, .. } => {
                let secs = tollgate_core::limits::retry_after_secs(retry_after_ms);
                Some((
                    Refusal::FailedAuthentications { retry_after_ms },
                    vec![("retry-after", secs.to_string())],
                ))
            }
            Decision::Admit(_) => None,
        }
    }

    /// Counts one failed authentication from this address.
    pub fn count_failure(&self, host: &impl Host, now_ms: u64) {
        // Refused takes store nothing: once braked, the window only drains.
        take_window(host, &self.window, self.per_minute, 1, now_ms);
    }
}

/// Shares as answers would have left them, for tests of this module and of the request
/// flow.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::host::mock::MockHost;

    /// Until when the test leases are live: before the request tests' cached keys expire.
    pub const LEASED_UNTIL_MS: u64 = 900_000;

    /// Stores a live lease `l1` of `share` at `key`, as an answer to this Envoy would have
    /// left it, the rest of the limit unassigned (one Envoy).
    pub fn lease(host: &MockHost, key: &str, share: u64, limit: u64) {
        let mut a = Allowance::default();
        a.apply(
            &Answer::Lease {
                lease_id: "l1".into(),
                granted: share,
                expires_at_ms: LEASED_UNTIL_MS,
                limit,
                available: limit.saturating_sub(share),
                share,
                exhausted: false,
            },
            0,
            false,
        );
        host.put_shared(key, &a.to_bytes());
    }

    /// Leases each of `limits` its whole limit.
    pub fn lease_all(host: &MockHost, limits: &[Limit]) {
        for l in limits {
            lease(host, &l.window, l.per_minute, l.per_minute);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::host::mock::MockHost;
    use proxy_wasm::types::Status;
    use tollgate_proto::v1::RateLimit;

    fn admits(d: Decision) -> bool {
        matches!(d, Decision::Admit(_))
    }

    fn takes((t, _): (Take, Option<Decision>)) -> bool {
        matches!(t, Take::Decided(Decision::Admit(_)))
    }

    fn key_rpm() -> String {
        allowance_key(Measure::Requests, "key:k")
    }

    fn allowance(host: &MockHost, key: &str) -> Allowance {
        Allowance::from_bytes(&host.shared_value(key).unwrap()).unwrap()
    }

    fn grant(rpm: Option<u32>, tpm: Option<u64>, rate_limits: Vec<RateLimit>) -> KeyGrant {
        KeyGrant {
            key_id: "k".into(),
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            rate_limits,
            ..KeyGrant::default()
        }
    }

    fn user_limit(rpm: Option<u32>, tpm: Option<u64>) -> RateLimit {
        RateLimit {
            subject: "user:alice".into(),
            model: String::new(),
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
        }
    }

    fn model_limit(model: &str, tpm: u64) -> RateLimit {
        RateLimit {
            subject: format!("key_model:k:{model}"),
            model: model.into(),
            requests_per_minute: None,
            tokens_per_minute: Some(tpm),
        }
    }

    fn remaining(host: &MockHost, measure: Measure, subject: &str, limit: u64, at: u64) -> u64 {
        let bytes = host.shared_value(&allowance_key(measure, subject));
        let allowance = bytes
            .as_deref()
            .and_then(Allowance::from_bytes)
            .unwrap_or_default();
        allowance.window.peek(limit, 0, at).quota().remaining
    }

    #[test]
    fn workers_share_one_window() {
        let worker_a = MockHost::new();
        let worker_b = worker_a.worker();
        lease(&worker_a, &key_rpm(), 4, 4);
        let taken: Vec<bool> = (0..6)
            .map(|i| {
                let host = if i % 2 == 0 { &worker_a } else { &worker_b };
                takes(take(host, &key_rpm(), 4, 1, 1_000))
            })
            .collect();
        assert_eq!(taken, [true, true, true, true, false, false]);
        let other = allowance_key(Measure::Requests, "key:other");
        lease(&worker_a, &other, 4, 4);
        assert!(takes(take(&worker_b, &other, 4, 1, 1_000)), "per key");
    }

    #[test]
    fn a_take_within_the_limit_but_past_the_share_lacks_it_and_takes_nothing() {
        let host = MockHost::new();
        lease(&host, &key_rpm(), 2, 10);
        assert!(takes(take(&host, &key_rpm(), 10, 1, 0)));
        assert_eq!(take(&host, &key_rpm(), 10, 3, 0).0, Take::Lacks { need: 2 });
        assert_eq!(allowance(&host, &key_rpm()).window.count(0), 1);
        assert_eq!(
            take(&host, &allowance_key(Measure::Tokens, "key:k"), 10, 3, 0).0,
            Take::Lacks { need: 3 },
            "no lease yet"
        );
    }

    #[test]
    fn a_write_between_read_and_write_is_retried_and_counted_once() {
        let host = MockHost::new();
        let key = "tg:v2:failed_auths:ip:10.0.0.1";
        host.interleave_writes(key, 1);
        assert!(admits(take_window(&host, key, 2, 1, 0)));
        assert!(admits(take_window(&host, key, 2, 1, 0)));
        assert!(!admits(take_window(&host, key, 2, 1, 0)));
    }

    #[test]
    fn a_peek_takes_nothing() {
        let host = MockHost::new();
        let key = "tg:v2:failed_auths:ip:10.0.0.1";
        for _ in 0..3 {
            assert!(admits(peek_window(&host, key, 1, 0)));
        }
        assert!(admits(take_window(&host, key, 1, 1, 0)));
        assert!(!admits(peek_window(&host, key, 1, 0)));
    }

    #[test]
    fn endless_contention_refuses() {
        let host = MockHost::new();
        let key = "tg:v2:failed_auths:ip:10.0.0.1";
        host.interleave_writes(key, usize::MAX);
        assert_eq!(
            take_window(&host, key, 100, 1, 0),
            Decision::Refuse {
                quota: Quota {
                    limit: 100,
                    remaining: 0,
                    reset_ms: CONTENDED_RETRY_MS
                },
                retry_after_ms: CONTENDED_RETRY_MS,
            }
        );
    }

    #[test]
    fn a_host_refusing_writes_refuses_the_call() {
        let host = MockHost::new();
        lease(&host, &key_rpm(), 100, 100);
        host.refuse_shared_writes(Status::InternalFailure);
        assert!(!takes(take(&host, &key_rpm(), 100, 1, 0)));
    }

    #[test]
    fn the_windows_of_a_call_are_its_keys_its_users_and_its_models() {
        let g = grant(
            Some(10),
            Some(1_000),
            vec![
                model_limit("gpt-4o", 500),
                user_limit(Some(5), None),
                model_limit("other", 1),
            ],
        );
        let windows: Vec<(String, u64)> = Limit::of_grant(&g, "gpt-4o")
            .into_iter()
            .map(|l| (l.window, l.per_minute))
            .collect();
        assert_eq!(
            windows,
            [
                ("tg:v3:requests:key:k".to_owned(), 10),
                ("tg:v3:requests:user:alice".to_owned(), 5),
                ("tg:v3:tokens:key:k".to_owned(), 1_000),
                ("tg:v3:tokens:key_model:k:gpt-4o".to_owned(), 500),
            ]
        );
        assert!(Limit::of_grant(&grant(None, None, vec![]), "m").is_empty());
    }

    #[test]
    fn a_refused_window_gives_back_what_the_others_took() {
        let host = MockHost::new();
        let g = grant(
            Some(10),
            Some(1_000),
            vec![model_limit("m", 100), user_limit(Some(20), None)],
        );
        let limits = Limit::of_grant(&g, "m");
        lease_all(&host, &limits);
        let taking = take_all(&host, &limits, 150, 0);
        let refusal = taking
            .outcome
            .expect_err("150 tokens over a model limit of 100");
        assert_eq!(
            refusal,
            Stop::Refused(Refusal::TokensPerMinute {
                subject: "this API key on model `m`".into(),
                limit: 100,
                requested: 150,
                retry_after_ms: 60_000,
            })
        );
        assert_eq!(remaining(&host, Measure::Requests, "key:k", 10, 0), 10);
        assert_eq!(remaining(&host, Measure::Requests, "user:alice", 20, 0), 20);
        assert_eq!(remaining(&host, Measure::Tokens, "key:k", 1_000, 0), 1_000);
        // The headers say where the limits stand without the refused call.
        let headers = taking.quotas.headers();
        assert!(headers.contains(&("x-ratelimit-remaining-requests", "10".into())));
        assert!(headers.contains(&("x-ratelimit-limit-tokens", "100".into())));
        assert!(headers.contains(&("retry-after", "60".into())));
    }

    #[test]
    fn the_headers_name_the_tightest_window_of_each_kind() {
        let host = MockHost::new();
        let g = grant(
            Some(100),
            Some(1_000),
            vec![user_limit(Some(3), Some(10_000))],
        );
        let limits = Limit::of_grant(&g, "m");
        lease_all(&host, &limits);
        let taking = take_all(&host, &limits, 400, 0);
        assert!(taking.outcome.is_ok());
        let headers = taking.quotas.headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("x-ratelimit-limit-requests").as_deref(), Some("3"));
        assert_eq!(get("x-ratelimit-remaining-requests").as_deref(), Some("2"));
        assert_eq!(get("x-ratelimit-limit-tokens").as_deref(), Some("1000"));
        assert_eq!(get("x-ratelimit-remaining-tokens").as_deref(), Some("600"));
        assert_eq!(get("retry-after"), None);
    }

    #[test]
    fn tokens_are_settled_to_usage_in_every_token_window() {
        let host = MockHost::new();
        let g = grant(Some(100), Some(1_000), vec![user_limit(None, Some(2_000))]);
        let limits = Limit::of_grant(&g, "m");
        lease_all(&host, &limits);
        let taken = take_all(&host, &limits, 900, 1_000).outcome.expect("fits");
        assert_eq!(
            remaining(&host, Measure::Tokens, "key:k", 1_000, 1_000),
            100
        );
        // A second call of 900 does not fit until the first is settled.
        assert!(take_all(&host, &limits, 900, 2_000).outcome.is_err());
        settle_tokens(&host, &taken, 250, 3_000);
        assert_eq!(
            remaining(&host, Measure::Tokens, "key:k", 1_000, 3_000),
            750
        );
        assert_eq!(
            remaining(&host, Measure::Tokens, "user:alice", 2_000, 3_000),
            1_750
        );
        // Requests are not settled: a request stays one request.
        assert_eq!(remaining(&host, Measure::Requests, "key:k", 100, 3_000), 99);
        assert!(take_all(&host, &limits, 700, 3_000).outcome.is_ok());
    }

    #[test]
    fn calls_on_two_workers_share_one_token_window() {
        let a = MockHost::new();
        let b = a.worker();
        let limits = Limit::of_grant(&grant(None, Some(1_000), vec![]), "m");
        lease_all(&a, &limits);
        let mut admitted = 0;
        for i in 0..10 {
            let host = if i % 2 == 0 { &a } else { &b };
            if take_all(host, &limits, 300, 500).outcome.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3);
    }

    #[test]
    fn an_estimated_record_keeps_its_hold() {
        let mut record = UsageRecord {
            input_uncached: 10,
            cache_read: 5,
            cache_write: 1,
            output: u64::MAX,
            ..UsageRecord::default()
        };
        assert_eq!(used_tokens(&record), Some(u64::MAX));
        record.output = 4;
        assert_eq!(used_tokens(&record), Some(20));
        record.estimate = Some(Default::default());
        assert_eq!(used_tokens(&record), None);
    }

    #[test]
    fn the_brake_refuses_an_address_past_its_failures_and_only_it() {
        let host = MockHost::new();
        let brake = Brake::of_source(Some(b"10.0.0.9:4242"), 2).expect("an address");
        let other = Brake::of_source(Some(b"10.0.0.10:4242"), 2).expect("an address");
        assert!(brake.check(&host, 0).is_none());
        brake.count_failure(&host, 0);
        brake.count_failure(&host, 500);
        let (refusal, headers) = brake.check(&host, 1_000).expect("braked");
        assert_eq!(
            refusal,
            Refusal::FailedAuthentications {
                retry_after_ms: 60_000
            }
        );
        assert_eq!(headers, [("retry-after", "60".to_owned())]);
        assert!(other.check(&host, 1_000).is_none());
        // Another port of the same address is the same client.
        let same = Brake::of_source(Some(b"10.0.0.9:1"), 2).expect("an address");
        assert!(same.check(&host, 1_000).is_some());
        assert!(brake.check(&host, 61_000).is_none(), "the window drained");
        assert_eq!(Brake::of_source(Some(b"envoy://internal"), 2), None);
        assert_eq!(Brake::of_source(None, 2), None);
    }
}
