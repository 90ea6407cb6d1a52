//! Host calls in flight, by token, so each answer reaches the handler of its kind.
//!
//! Envoy delivers every gRPC answer to the context that dispatched it, with only a token
//! to tell them apart. A context registers each call it makes under that token with what
//! kind of call it is; an answer whose token is not registered is logged and dropped,
//! never decoded as some other message.

use crate::host::{GrpcCall, Host};
use proxy_wasm::types::Status;
use std::time::Duration;
use tollgate_core::settings::FilterSettings;

/// Calls in flight, each with its kind `K` and when it was dispatched (Unix ms).
#[derive(Debug)]
pub struct Calls<K> {
    /// Few at a time (one or two), so a list beats a map.
    pending: Vec<(u32, K, u64)>,
}

impl<K> Default for Calls<K> {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
        }
    }
}

impl<K> Calls<K> {
    /// Remembers that call `token`, dispatched at `now_ms`, is of kind `kind`.
    pub fn register(&mut self, token: u32, kind: K, now_ms: u64) {
        self.pending.push((token, kind, now_ms));
    }

    /// The kind of call `token` and when it was dispatched, forgotten from now on; `None`
    /// (and a log line) for a token this context never registered.
    pub fn take(&mut self, token: u32) -> Option<(K, u64)> {
        match self.pending.iter().position(|(t, _, _)| *t == token) {
            Some(i) => {
                let (_, kind, dispatched_ms) = self.pending.swap_remove(i);
                Some((kind, dispatched_ms))
            }
            None => {
                log::warn!("tollgate: answer to unknown call {token} ignored");
                None
            }
        }
    }
}

/// Dispatches one call to the control plane's `Gateway` service, with the token that
/// proves it comes from this filter; returns the call's token for its answer.
pub fn control_plane(
    host: &impl Host,
    settings: &FilterSettings,
    method: &str,
    message: &[u8],
) -> Result<u32, Status> {
    let bearer = settings.control_plane_token.bearer();
    host.dispatch_grpc(&GrpcCall {
        cluster: &settings.control_plane_cluster,
        service: tollgate_proto::GATEWAY_SERVICE,
        method,
        metadata: &[("authorization", bearer.as_bytes())],
        message,
        timeout: Duration::from_millis(settings.control_plane_timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Kind {
        A,
        B,
    }

    #[test]
    fn each_token_is_answered_once_with_its_kind() {
        let mut calls = Calls::default();
        calls.register(7, Kind::A, 100);
        calls.register(9, Kind::B, 200);
        assert_eq!(calls.take(9), Some((Kind::B, 200)));
        assert_eq!(calls.take(9), None, "answered already");
        assert_eq!(calls.take(8), None, "never registered");
        assert_eq!(calls.take(7), Some((Kind::A, 100)));
        assert!(calls.pending.is_empty());
    }
}
