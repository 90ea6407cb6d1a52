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
/// Method name of `Gateway.LeaseBudget`.
pub const LEASE_BUDGET_METHOD: &str = "LeaseBudget";
/// Method name of `Gateway.LeaseShare`.
pub const LEASE_SHARE_METHOD: &str = "LeaseShare";

/// Largest message the control plane's gRPC server decodes (its `max_decoding_message_size`);
/// a larger one is refused with OUT_OF_RANGE.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Most bytes of records the filter puts in one `ReportUsage` batch: a quarter of
/// [`MAX_MESSAGE_BYTES`]. A record larger than this goes alone, so a batch of several
/// records always fits, and so does any single record the filter makes (estimate texts
/// are cut to a few hundred KiB), with room to spare.
pub const USAGE_BATCH_BYTES: usize = MAX_MESSAGE_BYTES / 4;
