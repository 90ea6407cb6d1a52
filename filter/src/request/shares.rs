//! Rate-limit time: a call whose body passed is taken from every limit of its key, within
//! the share of each limit this Envoy leased; when one lacks share the call waits for one
//! `LeaseShare` call and then takes again from scratch (all or nothing), and is refused
//! when the control plane cannot grant it or cannot be reached.

use super::{Phase, Question, Request, Step, StreamCall};
use crate::cache::Ticket;
use crate::host::Host;
use crate::limits::{self, Stop};
use tollgate_core::refusal::Refusal;
use tollgate_core::share::{Answer, SHARE_MOVES_MS};

impl<H: Host> Request<H> {
    /// Takes an admitted call whose body passed, holding `tokens`, from its limits at
    /// `now`, or asks for the share one lacks and waits.
    pub(super) fn take_limits(&mut self, tokens: u64, now: u64) -> Result<Step, Refusal> {
        let Phase::Admitted(admitted) = &mut self.phase else {
            return Err(Refusal::NotAdmitted);
        };
        if admitted.limits.is_empty() {
            return Ok(Step::Go);
        }
        admitted.shares.tokens = tokens;
        let mut seen = self.shared.shares.borrow_mut();
        for limit in &admitted.limits {
            seen.note(limit.key(), limit, now);
        }
        drop(seen);
        self.retake_limits(now)
    }

    /// Takes the call from every limit at `now`, from scratch.
    fn retake_limits(&mut self, now: u64) -> Result<Step, Refusal> {
        let Phase::Admitted(admitted) = &mut self.phase else {
            return Err(Refusal::NotAdmitted);
        };
        let tokens = admitted.shares.tokens;
        let taking = limits::take_all(&self.host, &admitted.limits, tokens, now);
        self.rate_headers = taking.quotas.headers();
        let (index, need) = match taking.outcome {
            Ok(taken) => {
                admitted.taken = taken;
                return Ok(Step::Go);
            }
            Err(Stop::Refused(refusal)) => return Err(refusal),
            Err(Stop::Lacks { index, need }) => (index, need),
        };
        let Some(limit) = admitted.limits.get(index) else {
            return Err(Refusal::NotAdmitted);
        };
        if !admitted.shares.may_ask(admitted.limits.len()) {
            // Each grant was drawn on by other calls first: the limit is that busy.
            log::info!(
                "tollgate: request {} kept lacking rate-limit share; refused",
                self.request_id
            );
            return Err(limit.refusal(tokens, SHARE_MOVES_MS));
        }
        let settings = &self.shared.settings;
        match limits::ask_need(&self.host, settings, limit, need, now) {
            Some((token, marked)) => {
                admitted.shares.asked = admitted.shares.asked.saturating_add(1);
                admitted.shares.waiting = Some((index, marked));
                let question = Question {
                    kind: StreamCall::Share,
                    ticket: Ticket(0),
                };
                self.calls.register(token, question, now);
                Ok(Step::Wait)
            }
            None => {
                self.count_unreachable("a rate-limit share", false);
                Err(Refusal::ControlPlaneUnavailable)
            }
        }
    }

    /// The answer to this call's `LeaseShare` call: the call goes on, waits again, or is
    /// refused.
    pub(super) fn on_share_answer(&mut self, status: u32, size: usize) {
        let answer = limits::answer(&self.host, status, size);
        let outcome = self.share_answered(answer);
        self.go_on_after_answer(outcome);
    }

    /// Applies the answer, takes again from scratch, then holds the budgets; `None` when
    /// the call no longer waits.
    fn share_answered(&mut self, answer: Option<Answer>) -> Option<Result<Step, Refusal>> {
        let now = self.host.now_ms();
        let Phase::Admitted(admitted) = &mut self.phase else {
            log::warn!("tollgate: LeaseShare answer for a call no longer waiting; ignored");
            return None;
        };
        let (index, marked) = admitted.shares.waiting.take()?;
        let Some(answer) = answer else {
            self.count_unreachable("a rate-limit share", false);
            return Some(Err(Refusal::ControlPlaneUnavailable));
        };
        let key = admitted.limits.get(index)?.key().to_owned();
        if let Err(e) = limits::apply(&self.host, &key, &answer, now, marked, None, None) {
            log::warn!("tollgate: rate-limit share not stored ({e:?}); refused");
            return Some(Err(Refusal::Overloaded));
        }
        if let Some(late_ms) = answer.lapsed_on_arrival(now) {
            // Asking again would only pile share this Envoy cannot draw on onto its lease.
            limits::warn_lapsed_on_arrival(&key, late_ms);
            self.count_unreachable("a rate-limit share", false);
            return Some(Err(Refusal::ControlPlaneUnavailable));
        }
        if answer == Answer::Unlimited {
            // The limit was lifted: it no longer limits this call; the key's next grant
            // says so for the calls after it.
            admitted.limits.remove(index);
        }
        // An exhausted answer is remembered in the allowance: the take refuses from it.
        match self.retake_limits(now) {
            Ok(Step::Go) => {}
            other => return Some(other),
        }
        let Phase::Admitted(admitted) = &mut self.phase else {
            return None;
        };
        let kept = admitted.checked.take()?;
        let step = self.hold_budgets(&kept, now);
        if let Phase::Admitted(admitted) = &mut self.phase {
            admitted.checked = Some(kept);
        }
        Some(step)
    }
}
