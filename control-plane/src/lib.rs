//! Tollgate's control plane: keys, routes, prices and usage, served to the Envoy filter
//! over gRPC ([`gateway`]) and to people over HTTP ([`http`]).
//!
//! The `tollgate` binary (`main.rs`) is the command line around these modules.

pub mod config;
pub mod envoy_config;
pub mod gateway;
pub mod http;
pub mod keys;
pub mod store;
