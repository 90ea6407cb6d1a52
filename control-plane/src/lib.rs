//! Tollgate's control plane: keys, routes, prices and usage, served to the Envoy filter
//! over gRPC ([`gateway`]) and to people over HTTP ([`api`]).
//!
//! [`server::serve`] runs both; [`cli`] is the `tollgate` command line around it, and the
//! binary (`main.rs`) only parses arguments and calls it.

pub mod api;
pub mod audit;
pub mod budgets;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod envoy_config;
pub mod filter_modules;
pub mod gateway;
pub mod keys;
pub mod lease_sweeper;
pub mod metrics;
pub mod passwords;
pub mod reload;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod shares;
pub mod store;
pub mod usage;
pub mod users;
