//! Budget leases kept in Envoy's shared data, so every worker of one Envoy draws on the
//! same lease of a budget: each hold, settlement and answer is one compare-and-swap write
//! ([`cache::update`]) of a [`Lease`] (math in tollgate-core `budget`).
//!
//! A call holds its worst-case cost against every budget of its key, all or nothing. When
//! a lease lacks the money (or lapsed) the call asks the control plane for more
//! (`LeaseBudget`) and waits; the root context renews leases ahead of need on its tick, so
//! the common case never waits.

use crate::cache::{self, CasError};
use crate::host::Host;
use prost::Message;
use std::collections::BTreeMap;
use tollgate_core::budget::{self, Answer, Applied, Lease, Short};
use tollgate_core::settings::FilterSettings;
use tollgate_proto::v1::{BudgetRef, LeaseAnswer, LeaseRequest, lease_answer::Outcome};

/// A budget not drawn on by this worker for this long is no longer renewed by it, so the
/// lease of an idle budget lapses and its money returns to the budget; the next call pays
/// one round trip for a new lease.
pub const SEEN_FOR_MS: u64 = budget::RENEW_AHEAD_MS;

/// What one call must hold against one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// The budget.
    pub budget: BudgetRef,
    /// Its worst-case cost, in pico-dollars.
    pub amount: u64,
}

/// A hold a call took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The budget held against.
    pub budget_id: String,
    /// The lease the hold was drawn from.
    pub lease_id: String,
    /// Pico-dollars held.
    pub amount: u64,
    /// Drawn from a lease kept by this call alone (never stored in shared data).
    pub apart: bool,
}

/// Why a call's holds were not all taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    /// Budget `index` of the needs lacks money or a live lease; `asked` is the stored
    /// lease's id ("" for none), to top up.
    Lease {
        /// Which need.
        index: usize,
        /// The stored lease's id.
        asked: String,
        /// Why.
        short: Short,
        /// What the lease must be granted more for the hold to fit.
        missing: u64,
    },
    /// Shared data could not be written.
    Store(CasError),
}

/// A call's budget holds: what it needs, what it holds, and the leases answered to it
/// alone (see [`Applied::Apart`]).
#[derive(Debug, Default)]
pub struct CallBudget {
    /// Each budget of the call's key with its worst-case cost.
    pub needs: Vec<Need>,
    /// Holds taken; empty until all are.
    pub holds: Vec<Hold>,
    /// Leases answered to this call that could not be stored, by budget id.
    apart: Vec<(String, Lease)>,
    /// `LeaseBudget` calls this call made.
    pub asked: usize,
    /// The lease call in flight: which need, the lease id it asked about, and whether
    /// this call held the lease's mark (see [`claim_ask`]).
    pub waiting: Option<(usize, String, bool)>,
}

impl CallBudget {
    /// Lease calls one call may make: two per budget (a top-up can race another
    /// worker's), and one more.
    pub fn may_ask(&self) -> bool {
        self.asked <= self.needs.len().saturating_mul(2)
    }

    /// Keeps a lease answered to this call alone.
    pub fn keep_apart(&mut self, budget_id: &str, lease: Lease) {
        self.apart.retain(|(id, _)| id != budget_id);
        self.apart.push((budget_id.to_owned(), lease));
    }
}

/// Takes every hold of `call` at `now_ms`, or none: on a shortfall the holds taken in
/// this pass are returned. `lapsed_ok` also draws on expired leases.
pub fn hold_all(
    host: &impl Host,
    call: &mut CallBudget,
    now_ms: u64,
    lapsed_ok: bool,
) -> Result<(), Shortfall> {
    let mut taken = Vec::with_capacity(call.needs.len());
    for (index, need) in call.needs.iter().enumerate() {
        let id = &need.budget.budget_id;
        let result = match call.apart.iter_mut().find(|(b, _)| b == id) {
            Some((_, lease)) => lease
                .try_hold(need.amount, now_ms, lapsed_ok)
                .map(|()| Hold {
                    budget_id: id.clone(),
                    lease_id: lease.lease_id.clone(),
                    amount: need.amount,
                    apart: true,
                })
                .map_err(|short| shortfall(index, need.amount, lease, short)),
            None => hold_one(host, need, now_ms, lapsed_ok).map_err(|e| match e {
                Ok((lease, short)) => shortfall(index, need.amount, &lease, short),
                Err(cas) => Shortfall::Store(cas),
            }),
        };
        match result {
            Ok(hold) => taken.push(hold),
            Err(shortfall) => {
                release(host, &taken, &mut call.apart);
                return Err(shortfall);
            }
        }
    }
    call.holds = taken;
    Ok(())
}

/// The shortfall of need `index` holding `amount` on `lease`.
fn shortfall(index: usize, amount: u64, lease: &Lease, short: Short) -> Shortfall {
    let remaining = match short {
        Short::Funds => lease.remaining(),
        Short::Lapsed => 0,
    };
    Shortfall::Lease {
        index,
        asked: lease.lease_id.clone(),
        short,
        missing: budget::missing(amount, remaining),
    }
}

/// Takes one hold on the stored lease of `need`'s budget; the shortfall carries the
/// stored lease.
fn hold_one(
    host: &impl Host,
    need: &Need,
    now_ms: u64,
    lapsed_ok: bool,
) -> Result<Hold, Result<(Lease, Short), CasError>> {
    let mut outcome = Err((Lease::default(), Short::Lapsed));
    cache::update(
        host,
        &budget::lease_key(&need.budget.budget_id),
        |current| {
            let mut lease = current.and_then(Lease::from_bytes).unwrap_or_default();
            match lease.try_hold(need.amount, now_ms, lapsed_ok) {
                Ok(()) => {
                    outcome = Ok(lease.lease_id.clone());
                    Some(lease.to_bytes())
                }
                Err(short) => {
                    outcome = Err((lease, short));
                    None
                }
            }
        },
    )
    .map_err(Err)?;
    outcome
        .map(|lease_id| Hold {
            budget_id: need.budget.budget_id.clone(),
            lease_id,
            amount: need.amount,
            apart: false,
        })
        .map_err(Ok)
}

/// Gives back holds of a call that did not go on.
fn release(host: &impl Host, holds: &[Hold], apart: &mut [(String, Lease)]) {
    for hold in holds {
        settle_one(host, hold, 0, apart);
    }
}

/// Settles every hold of `call` to the call's `cost` (the same cost against each budget).
pub fn settle(host: &impl Host, call: &mut CallBudget, cost: u64) {
    let holds = std::mem::take(&mut call.holds);
    for hold in &holds {
        settle_one(host, hold, cost, &mut call.apart);
    }
}

fn settle_one(host: &impl Host, hold: &Hold, cost: u64, apart: &mut [(String, Lease)]) {
    if hold.apart {
        if let Some((_, lease)) = apart.iter_mut().find(|(b, _)| *b == hold.budget_id) {
            lease.settle(&hold.lease_id, hold.amount, cost);
        }
        return;
    }
    let written = cache::update(host, &budget::lease_key(&hold.budget_id), |current| {
        let mut lease = current.and_then(Lease::from_bytes)?;
        lease
            .settle(&hold.lease_id, hold.amount, cost)
            .then(|| lease.to_bytes())
    });
    if let Err(e) = written {
        // The control plane still settles the lease from the call's record; only this
        // Envoy's view of what is left stays short until the lease is renewed.
        log::warn!(
            "tollgate: hold on budget {} not settled ({e:?})",
            hold.budget_id
        );
    }
}

/// What a `LeaseBudget` call asks for, in pico-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A call holding the lease's mark waits for `need` more, and asks for a share.
    Need(u64),
    /// A call waits while another asks for a share: it asks a lease of its own of `need`,
    /// its whole hold.
    Own(u64),
    /// A renewal ahead of need, of a lease with `remaining` left.
    Renewal { remaining: u64 },
}

/// The `LeaseBudget` message for `ask` of `budget` on lease `asked` ("" for a new one).
pub fn request(holder: &str, budget: &BudgetRef, asked: &str, ask: Ask) -> Vec<u8> {
    let (need, want) = match ask {
        Ask::Need(need) => (need, budget::want_picos(need, budget.limit_picos)),
        Ask::Own(need) => (need, need),
        Ask::Renewal { remaining } => (0, budget::renewal_want(remaining, budget.limit_picos)),
    };
    LeaseRequest {
        budget_id: budget.budget_id.clone(),
        holder: holder.to_owned(),
        lease_id: asked.to_owned(),
        want_picos: want,
        need_picos: need,
    }
    .encode_to_vec()
}

/// Dispatches a `LeaseBudget` call; returns its token.
pub fn ask(
    host: &impl Host,
    settings: &FilterSettings,
    budget: &BudgetRef,
    asked: &str,
    ask: Ask,
) -> Option<u32> {
    let holder = crate::lease::holder(host)?;
    let message = request(&holder, budget, asked, ask);
    crate::calls::control_plane(
        host,
        settings,
        tollgate_proto::LEASE_BUDGET_METHOD,
        &message,
    )
    .map_err(|status| log::warn!("tollgate: cannot dispatch LeaseBudget: {status:?}"))
    .ok()
}

/// The answer to a `LeaseBudget` call, or `None` when there is none to act on (the call
/// failed, or the answer is undecodable or of an unknown outcome).
pub fn answer(host: &impl Host, status: u32, size: usize) -> Option<Answer> {
    if status != 0 {
        log::warn!("tollgate: LeaseBudget failed with gRPC status {status}");
        return None;
    }
    let body = host.grpc_response_body(size).unwrap_or_default();
    let decoded = LeaseAnswer::decode(body.as_slice())
        .map_err(|e| log::warn!("tollgate: undecodable LeaseBudget answer: {e}"))
        .ok()?;
    let ms = |v: i64| u64::try_from(v).unwrap_or(0);
    match decoded.outcome() {
        Outcome::Granted => Some(Answer::Granted {
            lease_id: decoded.lease_id,
            total: decoded.lease_total_picos,
            expires_at_ms: ms(decoded.expires_at_ms),
            window_end_ms: ms(decoded.window_end_ms),
        }),
        Outcome::Exhausted => Some(Answer::Exhausted {
            available: decoded.available_picos,
        }),
        Outcome::UnknownBudget => Some(Answer::UnknownBudget),
        Outcome::Unspecified => {
            log::warn!("tollgate: LeaseBudget answer without an outcome");
            None
        }
    }
}

/// Applies `answer` (to a call that asked about lease `asked`, holding the lease's mark
/// or not) to the stored lease of `budget_id`; returns what happened.
pub fn apply(
    host: &impl Host,
    budget_id: &str,
    asked: &str,
    answer: &Answer,
    now_ms: u64,
    marked: bool,
) -> Result<Applied, CasError> {
    let mut applied = Applied::Unchanged;
    cache::update(host, &budget::lease_key(budget_id), |current| {
        let lease = current.and_then(Lease::from_bytes);
        applied = budget::apply_answer(lease.as_ref(), asked, answer, now_ms, marked);
        match &applied {
            Applied::Stored(l) => Some(l.to_bytes()),
            Applied::Dropped => Some(Vec::new()),
            Applied::Apart(_) | Applied::Unchanged => None,
        }
    })?;
    Ok(applied)
}

/// Claims the mark of `budget_id`'s lease (stored empty when there is none yet) for a
/// call that must ask for money at `now_ms`; `false` when a renewal or another call holds
/// it, or shared data cannot be written. Only the holder asks for a share: without it,
/// every call short at once leased a share, and one Envoy soon held the whole budget.
pub fn claim_ask(host: &impl Host, budget_id: &str, now_ms: u64) -> bool {
    let mut claimed = false;
    let written = cache::update(host, &budget::lease_key(budget_id), |current| {
        let mut lease = current.and_then(Lease::from_bytes).unwrap_or_default();
        claimed = lease.claim_ask(now_ms);
        claimed.then(|| lease.to_bytes())
    });
    written.is_ok() && claimed
}

/// Claims the renewal of `budget`'s lease if one is due at `now_ms` (marking it, so no
/// other worker renews it too); returns the lease id to top up and what it has left.
pub fn claim_renewal(host: &impl Host, budget: &BudgetRef, now_ms: u64) -> Option<(String, u64)> {
    let low_water = budget::want_picos(0, budget.limit_picos) / 2;
    let mut claimed = None;
    let written = cache::update(host, &budget::lease_key(&budget.budget_id), |current| {
        let mut lease = current.and_then(Lease::from_bytes)?;
        if !lease.renewal_due(now_ms, low_water) {
            return None;
        }
        lease.mark_renewing(now_ms);
        claimed = Some((lease.lease_id.clone(), lease.remaining()));
        Some(lease.to_bytes())
    });
    written.ok().and(claimed)
}

/// How long a worker remembers that the control plane found a budget spent: calls short
/// of lease money meanwhile are refused without asking again, so a client hammering a
/// spent budget costs the control plane one lease call per worker a second, not one per
/// call.
const SPENT_FOR_MS: u64 = 1_000;

/// Budgets a worker recently found spent, with what was left of each then.
#[derive(Debug, Default)]
pub struct Spent {
    budgets: BTreeMap<String, (u64, u64)>,
}

impl Spent {
    /// Notes that `budget_id` had only `available` left at `now_ms`.
    pub fn note(&mut self, budget_id: &str, available: u64, now_ms: u64) {
        self.budgets
            .retain(|_, (at, _)| now_ms.saturating_sub(*at) < SPENT_FOR_MS);
        if self.budgets.len() < crate::lease::SEEN_KEPT {
            self.budgets
                .insert(budget_id.to_owned(), (now_ms, available));
        }
    }

    /// Whether a call lacking `missing` of `budget_id`'s money is refused without asking:
    /// the budget was found spent less than [`SPENT_FOR_MS`] ago with less than that left.
    pub fn refuses(&self, budget_id: &str, missing: u64, now_ms: u64) -> bool {
        self.budgets.get(budget_id).is_some_and(|(at, available)| {
            now_ms.saturating_sub(*at) < SPENT_FOR_MS && missing > *available
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;
    use proxy_wasm::types::Status;

    fn budget(id: &str, limit: u64) -> BudgetRef {
        BudgetRef {
            budget_id: id.into(),
            subject: format!("key:{id}"),
            period: "month".into(),
            limit_picos: limit,
        }
    }

    fn store(host: &MockHost, id: &str, lease: &Lease) {
        host.put_shared(&budget::lease_key(id), &lease.to_bytes());
    }

    fn stored(host: &MockHost, id: &str) -> Lease {
        Lease::from_bytes(&host.shared_value(&budget::lease_key(id)).unwrap()).unwrap()
    }

    fn lease(id: &str, granted: u64) -> Lease {
        Lease {
            lease_id: id.into(),
            expires_at_ms: 100_000,
            granted,
            ..Lease::default()
        }
    }

    fn call(needs: &[(&str, u64)]) -> CallBudget {
        CallBudget {
            needs: needs
                .iter()
                .map(|(id, amount)| Need {
                    budget: budget(id, 1_000),
                    amount: *amount,
                })
                .collect(),
            ..CallBudget::default()
        }
    }

    #[test]
    fn holds_are_all_or_nothing() {
        let host = MockHost::new();
        store(&host, "a", &lease("la", 100));
        store(&host, "b", &lease("lb", 30));
        let mut c = call(&[("a", 50), ("b", 40)]);
        assert_eq!(
            hold_all(&host, &mut c, 0, false),
            Err(Shortfall::Lease {
                index: 1,
                asked: "lb".into(),
                short: Short::Funds,
                missing: 10,
            })
        );
        assert_eq!(
            stored(&host, "a").charged,
            0,
            "the hold on `a` was given back"
        );
        assert!(c.holds.is_empty());
        store(&host, "b", &lease("lb", 40));
        hold_all(&host, &mut c, 0, false).unwrap();
        assert_eq!(
            (stored(&host, "a").charged, stored(&host, "b").charged),
            (50, 40)
        );
        assert_eq!(c.holds.len(), 2);
    }

    #[test]
    fn workers_draw_on_one_lease_and_never_past_it() {
        let worker_a = MockHost::new();
        let worker_b = worker_a.worker();
        store(&worker_a, "a", &lease("la", 100));
        let admitted: Vec<bool> = (0..5)
            .map(|i| {
                let host = if i % 2 == 0 { &worker_a } else { &worker_b };
                hold_all(host, &mut call(&[("a", 30)]), 0, false).is_ok()
            })
            .collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        assert_eq!(stored(&worker_a, "a").charged, 90);
    }

    #[test]
    fn a_lease_that_cannot_be_written_takes_no_hold() {
        let host = MockHost::new();
        store(&host, "a", &lease("la", 100));
        host.refuse_shared_writes(Status::InternalFailure);
        assert_eq!(
            hold_all(&host, &mut call(&[("a", 30)]), 0, false),
            Err(Shortfall::Store(CasError::Host(Status::InternalFailure)))
        );
        assert_eq!(stored(&host, "a").charged, 0);
    }

    #[test]
    fn settlement_moves_each_hold_to_the_cost_unless_the_lease_was_replaced() {
        let host = MockHost::new();
        store(&host, "a", &lease("la", 100));
        store(&host, "b", &lease("lb", 100));
        let mut c = call(&[("a", 50), ("b", 50)]);
        hold_all(&host, &mut c, 0, false).unwrap();
        store(&host, "b", &lease("lb2", 100));
        settle(&host, &mut c, 20);
        assert_eq!(stored(&host, "a").charged, 20);
        assert_eq!(stored(&host, "b"), lease("lb2", 100), "replaced: untouched");
        assert!(c.holds.is_empty(), "settled once");
    }

    #[test]
    fn an_answer_apart_is_drawn_on_by_its_call_alone() {
        let host = MockHost::new();
        store(&host, "a", &lease("la", 10));
        let mut c = call(&[("a", 50)]);
        let answer = Answer::Granted {
            lease_id: "lx".into(),
            total: 60,
            expires_at_ms: 100_000,
            window_end_ms: 0,
        };
        // Asked for a new lease while another worker stored `la`.
        let Applied::Apart(apart) = apply(&host, "a", "", &answer, 0, true).unwrap() else {
            panic!()
        };
        c.keep_apart("a", apart);
        hold_all(&host, &mut c, 0, false).unwrap();
        assert_eq!(c.holds[0].lease_id, "lx");
        assert_eq!(stored(&host, "a"), lease("la", 10));
    }

    #[test]
    fn an_unknown_budget_drops_the_lease() {
        let host = MockHost::new();
        store(&host, "a", &lease("la", 10));
        assert_eq!(
            apply(&host, "a", "la", &Answer::UnknownBudget, 0, true),
            Ok(Applied::Dropped)
        );
        assert_eq!(
            hold_all(&host, &mut call(&[("a", 0)]), 0, false),
            Err(Shortfall::Lease {
                index: 0,
                asked: String::new(),
                short: Short::Lapsed,
                missing: 1,
            })
        );
    }

    #[test]
    fn one_renewal_at_a_time_across_workers() {
        let worker_a = MockHost::new();
        let worker_b = worker_a.worker();
        store(&worker_a, "a", &lease("la", 20));
        let b = budget("a", 1_000);
        assert_eq!(claim_renewal(&worker_a, &b, 0), Some(("la".into(), 20)));
        assert_eq!(claim_renewal(&worker_b, &b, 0), None, "claimed");
        assert_eq!(
            claim_renewal(&worker_b, &b, budget::RENEWAL_MARK_MS),
            Some(("la".into(), 20)),
            "an answer lost frees it"
        );
        store(&worker_a, "c", &lease("lc", 1_000));
        assert_eq!(
            claim_renewal(&worker_a, &budget("c", 1_000), 0),
            None,
            "full"
        );
    }

    #[test]
    fn a_renewal_asks_only_what_brings_the_lease_back_to_its_share() {
        let ask = |remaining| {
            let message = request("h", &budget("a", 2_000), "la", Ask::Renewal { remaining });
            let decoded = LeaseRequest::decode(message.as_slice()).unwrap();
            (decoded.need_picos, decoded.want_picos)
        };
        assert_eq!(ask(20), (0, 80));
        assert_eq!(ask(100), (0, 0), "a funded lease is only extended");
    }

    #[test]
    fn the_lease_request_asks_for_a_share_and_the_need() {
        let message = request("h", &budget("a", 2_000), "la", Ask::Need(30));
        let decoded = LeaseRequest::decode(message.as_slice()).unwrap();
        assert_eq!(
            decoded,
            LeaseRequest {
                budget_id: "a".into(),
                holder: "h".into(),
                lease_id: "la".into(),
                want_picos: 100,
                need_picos: 30,
            }
        );
    }
}
