//! The Tollgate filter: a proxy-wasm HTTP filter that guards every call to an LLM provider.
//!
//! Reading order: [`Plugin`] (one per worker VM: configuration, the usage outbox) creates a
//! [`request::Request`] per HTTP stream, which authorizes, validates, routes and meters it.
//! The decisions themselves live in `tollgate-core`; this crate only adapts Envoy's callbacks.

mod cache;
mod clock;
mod ids;
mod request;
mod usage;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, Status};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tollgate_core::access::UnknownKeys;
use tollgate_core::inflight::InflightBytes;
use tollgate_core::settings::FilterSettings;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Plugin::default()) });
}}

/// The per-VM root context: holds the settings and flushes usage to the control plane.
#[derive(Default)]
struct Plugin {
    settings: Rc<FilterSettings>,
    outbox: Rc<RefCell<usage::Outbox>>,
    unknown_keys: Rc<RefCell<UnknownKeys>>,
    inflight: Rc<RefCell<InflightBytes>>,
    ids: ids::RequestIds,
}

/// Unknown keys remembered per worker VM.
const UNKNOWN_KEYS_KEPT: usize = 4096;

/// Dispatches one call to the control plane's `Gateway` service, with the token that
/// proves it comes from this filter; returns the call's token for its answer.
fn call_control_plane(
    context: &impl Context,
    settings: &FilterSettings,
    method: &str,
    message: &[u8],
) -> Result<u32, Status> {
    let bearer = settings.control_plane_token.bearer();
    context.dispatch_grpc_call(
        &settings.control_plane_cluster,
        tollgate_proto::GATEWAY_SERVICE,
        method,
        vec![("authorization", bearer.as_bytes())],
        Some(message),
        Duration::from_millis(settings.control_plane_timeout_ms),
    )
}

impl Context for Plugin {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let ack = (status_code == 0)
            .then(|| self.get_grpc_call_response_body(0, response_size))
            .flatten();
        self.outbox
            .borrow_mut()
            .settle(token_id, status_code, ack.as_deref());
    }
}

impl RootContext for Plugin {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match FilterSettings::from_json(&raw) {
            Ok(settings) if settings.count_prompt_tokens && !cfg!(feature = "exact-count") => {
                log::error!(
                    "tollgate: invalid filter configuration: `count_prompt_tokens` needs the \
                     counting build of the filter (tollgate_filter_count.wasm, built with --features exact-count)"
                );
                false
            }
            Ok(settings) => {
                match ids::RequestIds::from_os_random() {
                    Ok(ids) => self.ids = ids,
                    Err(e) => {
                        // Ids from a known seed could be guessed, and forged usage with them.
                        log::error!("tollgate: no randomness to seed request ids: {e}");
                        return false;
                    }
                }
                self.set_tick_period(Duration::from_millis(settings.usage_flush_interval_ms));
                self.outbox = Rc::new(RefCell::new(usage::Outbox::new(&settings)));
                self.unknown_keys = Rc::new(RefCell::new(UnknownKeys::new(
                    UNKNOWN_KEYS_KEPT,
                    settings.unknown_key_cache_ms,
                )));
                self.inflight = Rc::new(RefCell::new(InflightBytes::new(
                    settings.max_inflight_bytes,
                )));
                self.settings = Rc::new(settings);
                true
            }
            Err(e) => {
                log::error!("tollgate: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(batch) = self.outbox.borrow_mut().next_batch() else {
            return;
        };
        let sent = call_control_plane(
            self,
            &self.settings,
            tollgate_proto::REPORT_USAGE_METHOD,
            &batch,
        );
        match sent {
            Ok(token) => self.outbox.borrow_mut().sent(token),
            Err(status) => {
                log::warn!("tollgate: cannot dispatch usage report: {status:?}");
                self.outbox.borrow_mut().unsent();
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(request::Request::new(
            Rc::clone(&self.settings),
            Rc::clone(&self.outbox),
            Rc::clone(&self.unknown_keys),
            Rc::clone(&self.inflight),
            self.ids.next(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
