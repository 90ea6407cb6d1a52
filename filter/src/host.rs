//! The host seam: everything the filter asks of Envoy that cannot be a plain return value.
//!
//! Streams and the root context are generic over [`Host`], so the same code runs on
//! [`ProxyWasm`] inside Envoy and on the mock host in native tests. proxy-wasm's host
//! calls are free functions acting on whichever context Envoy is calling into, so the
//! real host is a zero-sized value and every call is statically dispatched.

#[cfg(test)]
pub mod mock;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// One shared-data entry as read: its bytes and the version to compare-and-swap against.
pub type Versioned = (Option<Vec<u8>>, Option<u32>);

/// A gRPC call to dispatch.
pub struct GrpcCall<'a> {
    /// Envoy cluster of the server.
    pub cluster: &'a str,
    /// Fully qualified service name.
    pub service: &'a str,
    /// Method name.
    pub method: &'a str,
    /// Initial metadata (headers).
    pub metadata: &'a [(&'a str, &'a [u8])],
    /// The encoded request message.
    pub message: &'a [u8],
    /// Deadline of the call.
    pub timeout: Duration,
}

/// What the filter needs from its host.
pub trait Host {
    /// Milliseconds since the Unix epoch, by the host's clock; 0 if it cannot tell.
    fn now_ms(&self) -> u64;
    /// A shared-data entry and its CAS version.
    fn shared_data(&self, key: &str) -> Result<Versioned, Status>;
    /// Writes a shared-data entry; with `cas`, only if it is still at that version
    /// (`Err(Status::CasMismatch)` otherwise).
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status>;
    /// Starts a gRPC call; its answer arrives later under the returned token.
    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> Result<u32, Status>;
    /// The body of the gRPC answer being delivered.
    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Answers the client directly; the upstream is never called.
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Every request header, names lower-case.
    fn request_headers(&self) -> Vec<(String, Vec<u8>)>;
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// The buffered request body, up to `size` bytes.
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the first `size` bytes of the buffered request body.
    fn set_request_body(&self, size: usize, body: &[u8]);
    /// Every response header, names lower-case.
    fn response_headers(&self) -> Vec<(String, Vec<u8>)>;
    /// Sets (`Some`) or removes (`None`) a response header.
    fn set_response_header(&self, name: &str, value: Option<&str>);
    /// The response body bytes of this callback, up to `size`.
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the first `size` bytes of this callback's response body.
    fn set_response_body(&self, size: usize, body: &[u8]);
    /// A property of the stream, e.g. dynamic metadata.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Lets a paused request go on.
    fn resume_request(&self);
    /// Leaves `value` in the stream's filter state under `key` (Envoy names it
    /// `wasm.<key>`), where the access log reads it.
    fn set_filter_state(&self, key: &str, value: &[u8]);
    /// The id of the stat `name`, defined if new; `None` if Envoy refuses it.
    fn define_metric(&self, kind: MetricType, name: &str) -> Option<u32>;
    /// Adds `by` to a counter.
    fn increment_metric(&self, id: u32, by: i64);
    /// Records one value of a histogram.
    fn record_metric(&self, id: u32, value: u64);
}

/// The host inside Envoy.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyWasm;

/// Logs a host call that failed where nothing else can be done about it.
fn logged<T: Default>(what: &str, result: Result<T, Status>) -> T {
    result.unwrap_or_else(|status| {
        log::warn!("tollgate: host call {what} failed: {status:?}");
        T::default()
    })
}

impl Host for ProxyWasm {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn shared_data(&self, key: &str) -> Result<Versioned, Status> {
        hostcalls::get_shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
        hostcalls::set_shared_data(key, Some(value), cas)
    }

    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> Result<u32, Status> {
        hostcalls::dispatch_grpc_call(
            call.cluster,
            call.service,
            call.method,
            call.metadata.to_vec(),
            Some(call.message),
            call.timeout,
        )
    }

    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>> {
        logged(
            "get_buffer(grpc)",
            hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size),
        )
    }

    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        logged(
            "send_http_response",
            hostcalls::send_http_response(status, headers.to_vec(), Some(body)),
        );
    }

    fn request_headers(&self) -> Vec<(String, Vec<u8>)> {
        logged(
            "get_map(request)",
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders),
        )
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        logged(
            "set_map_value(request)",
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value),
        );
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        logged(
            "get_buffer(request)",
            hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size),
        )
    }

    fn set_request_body(&self, size: usize, body: &[u8]) {
        logged(
            "set_buffer(request)",
            hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, body),
        );
    }

    fn response_headers(&self) -> Vec<(String, Vec<u8>)> {
        logged(
            "get_map(response)",
            hostcalls::get_map_bytes(MapType::HttpResponseHeaders),
        )
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        logged(
            "set_map_value(response)",
            hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value),
        );
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        logged(
            "get_buffer(response)",
            hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size),
        )
    }

    fn set_response_body(&self, size: usize, body: &[u8]) {
        logged(
            "set_buffer(response)",
            hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, body),
        );
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        logged("get_property", hostcalls::get_property(path.to_vec()))
    }

    fn resume_request(&self) {
        logged("resume_http_request", hostcalls::resume_http_request());
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) {
        logged(
            "set_property",
            hostcalls::set_property(vec![key], Some(value)),
        );
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> Option<u32> {
        hostcalls::define_metric(kind, name)
            .map_err(|status| log::warn!("tollgate: cannot define metric {name}: {status:?}"))
            .ok()
    }

    fn increment_metric(&self, id: u32, by: i64) {
        logged("increment_metric", hostcalls::increment_metric(id, by));
    }

    fn record_metric(&self, id: u32, value: u64) {
        logged("record_metric", hostcalls::record_metric(id, value));
    }
}
