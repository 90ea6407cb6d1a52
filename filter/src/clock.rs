//! Time as the host sees it.

use proxy_wasm::hostcalls;
use std::time::UNIX_EPOCH;

/// Milliseconds since the Unix epoch, by the host's clock; 0 if the host cannot tell.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}
