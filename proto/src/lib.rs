//! The `tollgate.v1` API between the Envoy filter and the control plane.
//!
//! Built from `proto/tollgate/v1/gateway.proto`; this is the only definition of these types.

#![allow(clippy::all, missing_docs)]

/// Generated messages (and, with the `server` feature, the tonic service).
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tollgate.v1.rs"));
}

/// Fully qualified gRPC service name, as the filter addresses it.
pub const GATEWAY_SERVICE: &str = "tollgate.v1.Gateway";
/// Method name of `Gateway.Authorize`.
pub const AUTHORIZE_METHOD: &str = "Authorize";
/// Method name of `Gateway.ReportUsage`.
pub const REPORT_USAGE_METHOD: &str = "ReportUsage";
