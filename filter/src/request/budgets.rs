//! Budget time: a call whose body passed holds its worst-case cost against every budget of
//! its key before it goes on, waiting for one `LeaseBudget` call when a lease lacks the
//! money; at log time each hold is settled to what the call cost.

use super::body::Kept;
use super::{Admitted, BodyStage, Phase, Question, Request, Step, StreamCall, metering};
use crate::budget::{self, Need, Shortfall};
use crate::cache::Ticket;
use crate::host::Host;
use tollgate_core::budget::{Answer, Applied, MAX_ASK_PICOS, hold_picos};
use tollgate_core::pricing::Price;
use tollgate_core::refusal::Refusal;
use tollgate_core::settings::Unreachable;
use tollgate_proto::v1::{ModelPrice, UsageRecord};

/// The prices of a route's model, as tollgate-core prices.
pub(super) fn price_of(price: &ModelPrice) -> Price {
    Price {
        input: price.input,
        output: price.output,
        cache_read: price.cache_read,
        cache_write: price.cache_write,
    }
}

/// The call's worst-case cost, or a refusal when its model has no price to hold it at
/// (no price, or no output cap for an endpoint that generates).
fn worst_case(admitted: &Admitted, kept: &Kept) -> Result<u64, Refusal> {
    let unpriced = || Refusal::ModelNotPriced {
        model: admitted.target.model.clone(),
    };
    let price = admitted.route.price.as_ref().ok_or_else(unpriced)?;
    if kept.generates && price.max_output_tokens == 0 {
        return Err(unpriced());
    }
    Ok(hold_picos(&kept.bound, &price_of(price)))
}

impl<H: Host> Request<H> {
    /// Holds the call's worst-case cost against every budget of its key at `now`, or asks
    /// for a lease and waits.
    pub(super) fn hold_budgets(&mut self, kept: &Kept, now: u64) -> Result<Step, Refusal> {
        let Phase::Admitted(admitted) = &mut self.phase else {
            return Err(Refusal::NotAdmitted);
        };
        if admitted.budgets.is_empty() {
            return Ok(Step::Go);
        }
        let amount = worst_case(admitted, kept)?;
        let mut seen = self.shared.budgets.borrow_mut();
        for b in &admitted.budgets {
            seen.note(&b.budget_id, b, now);
        }
        drop(seen);
        admitted.budget.needs = admitted
            .budgets
            .iter()
            .map(|b| Need {
                budget: b.clone(),
                amount,
            })
            .collect();
        self.try_holds(now)
    }

    /// Takes every hold at `now`, or asks for the lease that lacks money.
    fn try_holds(&mut self, now: u64) -> Result<Step, Refusal> {
        let Phase::Admitted(admitted) = &mut self.phase else {
            return Err(Refusal::NotAdmitted);
        };
        let call = &mut admitted.budget;
        let (index, asked, missing) = match budget::hold_all(&self.host, call, now, false) {
            Ok(()) => return Ok(Step::Go),
            Err(Shortfall::Store(e)) => {
                log::warn!("tollgate: budget lease not updated ({e:?}); refused");
                return Err(Refusal::Overloaded);
            }
            Err(Shortfall::Lease {
                index,
                asked,
                missing,
                ..
            }) => (index, asked, missing),
        };
        let Some(need) = call.needs.get(index).filter(|_| call.may_ask()) else {
            log::warn!("tollgate: budget leases keep falling short for one call; refused");
            return Err(Refusal::ControlPlaneUnavailable);
        };
        if missing.max(need.amount) > MAX_ASK_PICOS {
            // More than any budget holds.
            return Err(Refusal::InsufficientQuota {
                subject: need.budget.subject.clone(),
                period: need.budget.period.clone(),
            });
        }
        if self
            .shared
            .spent
            .borrow()
            .refuses(&need.budget.budget_id, missing, now)
        {
            return Err(Refusal::InsufficientQuota {
                subject: need.budget.subject.clone(),
                period: need.budget.period.clone(),
            });
        }
        let marked = budget::claim_ask(&self.host, &need.budget.budget_id, now);
        // Only the marked call tops up the stored lease (by a share); another asks for a
        // lease of its whole hold for itself, so no other call can take the money from it
        // before it holds (the control plane closes that lease with the call's record).
        let (ask, asked) = if marked {
            (budget::Ask::Need(missing), asked)
        } else {
            (budget::Ask::Own(need.amount), String::new())
        };
        let settings = &self.shared.settings;
        match budget::ask(&self.host, settings, &need.budget, &asked, ask) {
            Some(token) => {
                call.asked = call.asked.saturating_add(1);
                call.waiting = Some((index, asked, marked));
                let question = Question {
                    kind: StreamCall::Lease,
                    ticket: Ticket(0),
                };
                self.calls.register(token, question, now);
                Ok(Step::Wait)
            }
            None => self.unreachable(),
        }
    }

    /// A lease is needed and the control plane cannot give one: the configured choice,
    /// counted and logged.
    fn unreachable(&mut self) -> Result<Step, Refusal> {
        let now = self.host.now_ms();
        let mode = self.shared.settings.budgets_on_control_plane_unreachable;
        let admitted = match (&mut self.phase, mode) {
            (Phase::Admitted(admitted), Unreachable::AdmitWithinLease) => {
                budget::hold_all(&self.host, &mut admitted.budget, now, true).is_ok()
            }
            _ => false,
        };
        self.count_unreachable("a budget lease", admitted);
        if admitted {
            Ok(Step::Go)
        } else {
            Err(Refusal::ControlPlaneUnavailable)
        }
    }

    /// The answer to this call's `LeaseBudget` call: the call goes on, waits again, or
    /// is refused.
    pub(super) fn on_lease_answer(&mut self, status: u32, size: usize) {
        let answer = budget::answer(&self.host, status, size);
        let outcome = self.lease_answered(answer);
        self.go_on_after_answer(outcome);
    }

    /// What a call paused at body time does once an answer decided its `outcome`: it
    /// goes on with its body checked, waits again, or is refused; `None`: it no longer
    /// waits.
    pub(super) fn go_on_after_answer(&mut self, outcome: Option<Result<Step, Refusal>>) {
        match outcome {
            Some(Ok(Step::Go)) => {
                if let Phase::Admitted(admitted) = &mut self.phase {
                    admitted.body = BodyStage::Checked;
                }
                self.host.resume_request();
            }
            Some(Ok(Step::Wait)) | None => {}
            Some(Err(refusal)) => self.refuse(refusal),
        }
    }

    /// Applies the answer and retries the holds; `None` when the call no longer waits.
    fn lease_answered(&mut self, answer: Option<Answer>) -> Option<Result<Step, Refusal>> {
        let now = self.host.now_ms();
        let Phase::Admitted(admitted) = &mut self.phase else {
            log::warn!("tollgate: LeaseBudget answer for a call no longer waiting; ignored");
            return None;
        };
        let call = &mut admitted.budget;
        let (index, asked, marked) = call.waiting.take()?;
        let need = call.needs.get(index)?.clone();
        let Some(answer) = answer else {
            return Some(self.unreachable());
        };
        if let Answer::Exhausted { available } = answer {
            self.shared
                .spent
                .borrow_mut()
                .note(&need.budget.budget_id, available, now);
            return Some(Err(Refusal::InsufficientQuota {
                subject: need.budget.subject,
                period: need.budget.period,
            }));
        }
        let id = &need.budget.budget_id;
        match budget::apply(&self.host, id, &asked, &answer, now, marked) {
            Ok(Applied::Apart(lease)) => call.keep_apart(id, lease),
            // The budget was deleted meanwhile: it no longer limits the call.
            Ok(Applied::Dropped) => {
                call.needs.remove(index);
            }
            Ok(Applied::Stored(_) | Applied::Unchanged) => {}
            Err(e) => {
                log::warn!("tollgate: budget lease not stored ({e:?}); refused");
                return Some(Err(Refusal::Overloaded));
            }
        }
        Some(self.try_holds(now))
    }
}

/// Settles the call's holds to its cost, from its usage record, and writes that charge
/// into the record for the control plane to draw on the leases alike, with the leases
/// the call alone drew on. A call whose usage
/// the gateway must estimate is settled to no less than it held: the local view of a
/// lease may run short, never over.
pub(super) fn settle(host: &impl Host, admitted: &mut Admitted, record: &mut UsageRecord) {
    if admitted.budget.holds.is_empty() {
        return;
    }
    let price = admitted
        .route
        .price
        .as_ref()
        .map(price_of)
        .unwrap_or_default();
    let cost = metering::settlement_cost(admitted, record, &price);
    // A lease kept apart was this call's alone and is dropped with it: the control plane
    // may close it.
    record.done_lease_ids = admitted
        .budget
        .holds
        .iter()
        .filter(|h| h.apart)
        .map(|h| h.lease_id.clone())
        .collect();
    budget::settle(host, &mut admitted.budget, cost);
    record.lease_charge_picos = cost;
}
