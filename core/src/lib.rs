//! Tollgate's protocol-free logic.
//!
//! Everything here is plain Rust that builds both natively and for `wasm32-wasip1`:
//! the Envoy filter and the control plane only adapt it to their protocols.

pub mod access;
pub mod access_log;
pub mod anthropic;
pub mod budget;
pub mod endpoints;
pub mod errors;
pub mod headers;
pub mod hold;
pub mod inflight;
pub mod json_scan;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod pricing;
pub mod providers;
pub mod refusal;
pub mod sample;
pub mod settings;
pub mod share;
pub mod sidecar;
pub mod sse;
pub mod stream;
pub mod tokens;
pub mod unmetered;
pub mod usage;
pub mod validation;
