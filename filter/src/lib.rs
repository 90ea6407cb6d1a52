//! The Tollgate filter: a proxy-wasm HTTP filter that guards every call to an LLM provider.
//!
//! Reading order, top-down:
//! 1. [`Plugin`] (this file): one per worker VM. Holds the configuration and the usage
//!    outbox, flushes the outbox on each tick, and creates a [`request::Request`] per
//!    HTTP stream.
//! 2. `request`: one stream. Its `Phase` enum says where it stands; each step is a
//!    module computing a plain decision that `request.rs` applies: `admission`
//!    (header time: who asks for what, may they, which header edits), `body` (validation
//!    and rewrite), `metering` (response modes and the usage record), `models` (the
//!    `/v1/models` answers).
//! 3. `host`: the seam to Envoy. Everything above is generic over [`host::Host`]; the
//!    proxy-wasm implementation is a zero-sized value, and native tests use
//!    `host::mock::MockHost` (a native test that reached a real proxy-wasm host call
//!    would fail to link).
//! 4. `calls` (host calls in flight, by token, each answer to its handler), `cache`
//!    (typed shared-data entries, compare-and-swap writes), `limits` (rate-limit windows
//!    and shares in shared data), `budget` (budget leases), `lease` (what both lease
//!    from the control plane under), `usage` (the outbox), `ids` (request ids).
//!
//! The decisions themselves mostly live in `tollgate-core`; this crate adapts them to
//! Envoy's callbacks.

mod budget;
mod cache;
mod calls;
mod host;
mod ids;
mod lease;
mod limits;
mod metrics;
mod request;
mod usage;

use calls::Calls;
use host::{Host, ProxyWasm};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tollgate_core::access::UnknownKeys;
use tollgate_core::inflight::InflightBytes;
use tollgate_core::metrics::Counter;
use tollgate_core::settings::FilterSettings;
use tollgate_core::share;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Plugin::new(ProxyWasm))
    });
}}

/// The kinds of call the root context makes; each answer goes to the handler of its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCall {
    /// A `ReportUsage` batch from the outbox.
    UsageReport,
    /// A `LeaseBudget` renewal ahead of need of the lease `asked` of budget `budget_id`.
    Renewal { budget_id: String, asked: String },
    /// A `LeaseShare` renewal or release of the allowance at `key`; `sync`: its ask's
    /// number, when its answer may set the share (`limits::apply`); `released`: the lease
    /// and units it gave back, until then perhaps still on their way.
    Share {
        key: String,
        sync: Option<u64>,
        released: Option<(String, u64)>,
    },
}

/// The per-VM root context: holds the settings and flushes usage to the control plane.
struct Plugin<H: Host> {
    host: H,
    shared: request::Shared,
    ids: ids::RequestIds,
    calls: Calls<RootCall>,
}

/// Unknown keys remembered per worker VM.
const UNKNOWN_KEYS_KEPT: usize = 4096;

impl<H: Host> Plugin<H> {
    fn new(host: H) -> Self {
        Self {
            host,
            shared: request::Shared::default(),
            ids: ids::RequestIds::default(),
            calls: Calls::default(),
        }
    }

    /// Validates the plugin configuration and takes it; returns the period to flush usage
    /// at, or `None` (after logging why) when the plugin must not start.
    fn start(&mut self, raw: &[u8]) -> Option<Duration> {
        // The token may be in the VM's environment (Envoy's `host_env_keys`), keeping it
        // out of the bootstrap.
        let settings =
            match FilterSettings::from_json_with_env(raw, |name| std::env::var(name).ok()) {
                Ok(settings) => settings,
                Err(e) => {
                    log::error!("tollgate: {e}");
                    return None;
                }
            };
        if settings.count_prompt_tokens && !cfg!(feature = "exact-count") {
            log::error!(
                "tollgate: invalid filter configuration: `count_prompt_tokens` needs the \
                 counting build of the filter (tollgate_filter_count.wasm, built with --features exact-count)"
            );
            return None;
        }
        match ids::RequestIds::from_os_random() {
            Ok(ids) => self.ids = ids,
            Err(e) => {
                // Ids from a known seed could be guessed, and forged usage with them.
                log::error!("tollgate: no randomness to seed request ids: {e}");
                return None;
            }
        }
        let tick = Duration::from_millis(settings.usage_flush_interval_ms);
        self.configure(settings);
        Some(tick)
    }

    /// Takes validated settings: the outbox and per-VM bounds follow from them.
    fn configure(&mut self, settings: FilterSettings) {
        self.shared = request::Shared {
            outbox: Rc::new(RefCell::new(usage::Outbox::new(&settings))),
            unknown_keys: Rc::new(RefCell::new(UnknownKeys::new(
                UNKNOWN_KEYS_KEPT,
                settings.unknown_key_cache_ms,
            ))),
            inflight: Rc::new(RefCell::new(InflightBytes::new(
                settings.max_inflight_bytes,
            ))),
            budgets: Rc::default(),
            shares: Rc::default(),
            spent: Rc::default(),
            unreachable: Rc::default(),
            metrics: Rc::default(),
            settings: Rc::new(settings),
        };
    }

    /// Sends the outbox's next batch, if one is due.
    fn flush(&mut self) {
        let Some(batch) = self.shared.outbox.borrow_mut().next_batch() else {
            return;
        };
        let sent = calls::control_plane(
            &self.host,
            &self.shared.settings,
            tollgate_proto::REPORT_USAGE_METHOD,
            &batch,
        );
        match sent {
            Ok(token) => {
                self.calls
                    .register(token, RootCall::UsageReport, self.host.now_ms());
                self.shared.outbox.borrow_mut().sent(token);
            }
            Err(status) => {
                log::warn!("tollgate: cannot dispatch usage report: {status:?}");
                self.shared.outbox.borrow_mut().unsent();
            }
        }
    }

    /// Renews ahead of need the leases of budgets this worker's calls drew on, where one
    /// runs low on money or time and no other worker renews it already.
    fn renew(&mut self) {
        let now = self.host.now_ms();
        let recent = self
            .shared
            .budgets
            .borrow_mut()
            .recent(now, budget::SEEN_FOR_MS);
        for b in recent {
            let Some((asked, remaining)) = budget::claim_renewal(&self.host, &b, now) else {
                continue;
            };
            let ask = budget::Ask::Renewal { remaining };
            // A failed dispatch leaves the mark, which lapses: another tick retries.
            if let Some(token) = budget::ask(&self.host, &self.shared.settings, &b, &asked, ask) {
                let budget_id = b.budget_id;
                self.calls
                    .register(token, RootCall::Renewal { budget_id, asked }, now);
            }
        }
    }

    /// Tends the rate-limit shares this worker's calls took from: gives back share beyond
    /// what each window holds and a spare part (none once idle), and renews ahead of need
    /// a share in use that runs low on time or share, or an idle one near expiry that
    /// still backs counted takes, one worker per share at a time.
    fn tend_shares(&mut self) {
        let now = self.host.now_ms();
        // Kept until everything taken has left the window, so an idle share goes back
        // whole as the window drains.
        let for_ms = share::IN_USE_FOR_MS
            .saturating_add(tollgate_core::limits::WINDOW_MS)
            .saturating_add(tollgate_core::limits::SLOT_MS);
        let recent = self.shared.shares.borrow_mut().recent(now, for_ms);
        for limit in recent {
            let answer_within = self.shared.settings.control_plane_timeout_ms;
            let Some(limits::Tended {
                tending,
                lease_id,
                sync,
            }) = limits::tend(&self.host, &limit, now, answer_within)
            else {
                continue;
            };
            let released = match tending {
                share::Tending::Release { units } => Some((lease_id.clone(), units)),
                share::Tending::Renew { .. } => None,
            };
            let (want, release) = match tending {
                share::Tending::Release { units } => (
                    0,
                    limits::Release {
                        units,
                        lease_id: &lease_id,
                    },
                ),
                share::Tending::Renew { want } => (want, limits::Release::default()),
            };
            // A failed dispatch leaves the mark, which lapses: another tick retries. An
            // answer not heard of (a release, or a grant to a call that left while it
            // waited) leaves the control plane counting more share than this Envoy draws
            // on: safe, and the next renewal answered with nothing asked since takes the
            // control plane's count.
            if let Some(token) =
                limits::ask(&self.host, &self.shared.settings, &limit, want, 0, release)
            {
                let key = limit.key().to_owned();
                self.calls.register(
                    token,
                    RootCall::Share {
                        key,
                        sync,
                        released,
                    },
                    now,
                );
            }
        }
    }

    /// Routes the answer to call `token` to its handler.
    fn on_answer(&mut self, token: u32, status: u32, size: usize) {
        let Some((kind, dispatched_ms)) = self.calls.take(token) else {
            return;
        };
        self.shared
            .metrics
            .borrow_mut()
            .control_plane_answered(&self.host, dispatched_ms, status);
        match kind {
            RootCall::UsageReport => {
                let ack = (status == 0)
                    .then(|| self.host.grpc_response_body(size))
                    .flatten();
                let mut outbox = self.shared.outbox.borrow_mut();
                let before = outbox.tally();
                outbox.settle(token, status, ack.as_deref());
                let after = outbox.tally();
                drop(outbox);
                let mut metrics = self.shared.metrics.borrow_mut();
                for (state, was, is) in [
                    ("sent", before.sent, after.sent),
                    ("dropped", before.dropped, after.dropped),
                ] {
                    metrics.count(
                        &self.host,
                        Counter::UsageRecords(state),
                        is.saturating_sub(was),
                    );
                }
            }
            RootCall::Renewal { budget_id, asked } => {
                let Some(answer) = budget::answer(&self.host, status, size) else {
                    return;
                };
                let now = self.host.now_ms();
                if let Err(e) = budget::apply(&self.host, &budget_id, &asked, &answer, now, true) {
                    log::warn!("tollgate: renewed lease of budget {budget_id} not stored: {e:?}");
                }
            }
            RootCall::Share {
                key,
                sync,
                released,
            } => {
                let Some(answer) = limits::answer(&self.host, status, size) else {
                    return;
                };
                let now = self.host.now_ms();
                if let Err(e) = limits::apply(
                    &self.host,
                    &key,
                    &answer,
                    now,
                    true,
                    sync,
                    released.as_ref(),
                ) {
                    log::warn!("tollgate: renewed rate-limit share {key} not stored: {e:?}");
                }
                if let Some(late_ms) = answer.lapsed_on_arrival(now) {
                    limits::warn_lapsed_on_arrival(&key, late_ms);
                }
            }
        }
    }

    /// The context of a new HTTP stream.
    fn stream(&self) -> request::Request<H>
    where
        H: Clone,
    {
        request::Request::new(self.host.clone(), self.shared.clone(), self.ids.next())
    }
}

impl Context for Plugin<ProxyWasm> {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.on_answer(token_id, status_code, response_size);
    }
}

impl RootContext for Plugin<ProxyWasm> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match self.start(&raw) {
            Some(tick) => {
                self.set_tick_period(tick);
                true
            }
            None => false,
        }
    }

    fn on_tick(&mut self) {
        self.flush();
        self.renew();
        self.tend_shares();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.stream()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
