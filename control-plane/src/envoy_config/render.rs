//! The Envoy bootstrap, built as data from the validated config and written as YAML.
//!
//! Values enter as data, never as text pasted into a template, so no provider name, path
//! or header can change the file's structure; the YAML writer quotes what needs quoting.

use super::edge::CorsSettings;
use super::section::{AdminAddress, FilterToken, ResolvedFilter};
use super::upstream::{Host, Transport, Upstream};
use super::{access_log, metrics, replies};
use crate::catalog::Provider;
use crate::config::{Config, ConfigError, LimitSettings, field_error};
use serde_json::{Value, json};
use tollgate_core::settings::metadata_key;

/// Which Envoy to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The gateway: `json_to_metadata` and the Tollgate filter before the router.
    WithFilter,
    /// The same Envoy without them: the baseline benchmarks compare against.
    WithoutFilter,
}

/// Why the bootstrap could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The configuration lacks something rendering needs, or is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The YAML writer failed.
    #[error("cannot write the Envoy configuration as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// The complete Envoy bootstrap for `config`, as YAML text.
pub fn render(config: &Config, variant: Variant) -> Result<String, RenderError> {
    let token = if config.envoy.filter_token_from_env {
        FilterToken::FromEnv(&config.server.filter_token_env)
    } else {
        FilterToken::Inline(config.server.filter_token()?)
    };
    let filter = with_limits(
        config
            .envoy
            .resolve_filter(token, config.budgets.on_control_plane_unreachable)?,
        &config.limits,
    )?;
    let mut fetch_cluster = None;
    let http_filters = match variant {
        Variant::WithFilter => {
            let wasm = config.envoy.wasm.as_deref().ok_or_else(|| {
                field_error(
                    "envoy.wasm",
                    "is missing: give the path of the filter's .wasm (e.g. tollgate_filter.wasm \
                     as `./dev build` leaves it in target/wasm/), or render --without-filter",
                )
            })?;
            let code = match &config.envoy.filter_from_control_plane {
                None => json!({ "local": { "filename": wasm } }),
                Some(source) => {
                    fetch_cluster = Some(filter_source_cluster(config, source));
                    remote_code(source, wasm)?
                }
            };
            let env_keys = match token {
                FilterToken::FromEnv(var) => vec![var],
                FilterToken::Inline(_) => Vec::new(),
            };
            vec![
                json_to_metadata(&filter),
                wasm_filter(&filter, code, &env_keys),
                router(),
            ]
        }
        Variant::WithoutFilter => vec![router()],
    };
    // First, so a preflight is answered before anything asks for a key, and so its
    // headers reach the filter's own refusals too (a browser then reads their error).
    let http_filters: Vec<Value> = config
        .envoy
        .edge
        .cors
        .as_ref()
        .map(|_| cors_filter())
        .into_iter()
        .chain(http_filters)
        .collect();

    let mut providers: Vec<&Provider> = config.catalog.providers.values().collect();
    providers.sort_by(|a, b| a.name.cmp(&b.name));
    let cp_cluster = &filter.settings.control_plane_cluster;
    for (field, name) in [
        ("envoy.filter.control_plane_cluster", cp_cluster.as_str()),
        ("envoy.filter_from_control_plane", FILTER_SOURCE_CLUSTER),
    ] {
        if providers.iter().any(|p| p.name == name) {
            return Err(field_error(
                field,
                format!(
                    "uses the Envoy cluster `{name}`, which is also a provider's name: \
                     rename the provider"
                ),
            )
            .into());
        }
    }
    if cp_cluster == FILTER_SOURCE_CLUSTER {
        return Err(field_error(
            "envoy.filter.control_plane_cluster",
            format!(
                "must not be `{FILTER_SOURCE_CLUSTER}`, the cluster the filter is fetched from"
            ),
        )
        .into());
    }
    let route_header = &filter.settings.route_header;
    if let Some(p) = providers.iter().find(|p| &p.auth_header == route_header) {
        return Err(field_error(
            "envoy.filter.route_header",
            format!(
                "is `{route_header}`, the header provider `{}` gets its credential in \
                 (its auth_header): the filter would overwrite one with the other",
                p.name
            ),
        )
        .into());
    }
    let mut clusters = vec![control_plane_cluster(config, cp_cluster)];
    clusters.extend(fetch_cluster);
    clusters.extend(providers.iter().map(|p| provider_cluster(config, p)));

    let bootstrap = json!({
        "admin": { "address": admin_address(&config.envoy.admin) },
        "stats_config": metrics::stats_config(),
        "overload_manager": overload_manager(config),
        "static_resources": {
            "listeners": [listener(config, &filter, http_filters)],
            "clusters": clusters,
        },
    });
    let header = match (variant, token) {
        (Variant::WithFilter, FilterToken::Inline(_)) => HEADER_WITH_SECRET,
        (Variant::WithFilter, FilterToken::FromEnv(_)) => HEADER_TOKEN_FROM_ENV,
        (Variant::WithoutFilter, _) => HEADER_WITHOUT_FILTER,
    };
    Ok(format!("{header}{}", serde_yaml_ng::to_string(&bootstrap)?))
}

const HEADER_WITH_SECRET: &str = "\
# Envoy bootstrap for Tollgate, written by `tollgate envoy-config` from tollgate.toml:
# change that file and render again rather than editing this one.
#
# SECRET: the wasm filter's settings hold `control_plane_token`, the token the control plane
# demands on every call. Keep this file (and Envoy's admin interface, whose config_dump
# shows it) private: mode 0600, never in a repository or a world-readable ConfigMap.
";

const HEADER_TOKEN_FROM_ENV: &str = "\
# Envoy bootstrap for Tollgate, written by `tollgate envoy-config` from tollgate.toml:
# change that file and render again rather than editing this one.
#
# Holds no secret: the wasm filter reads `control_plane_token` from Envoy's environment
# (vm_config.environment_variables), which must hold the variable its settings name.
";

const HEADER_WITHOUT_FILTER: &str = "\
# Envoy bootstrap written by `tollgate envoy-config --without-filter` from tollgate.toml:
# the same Envoy as Tollgate's but without its filter (no keys, no metering), the
# baseline that benchmarks compare against. Holds no secret.
";

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

/// Envoy's own bounds, whatever the filter does: past 90% of its heap Envoy returns memory
/// to the system, past 95% it refuses new requests (503) until it is back under; and it
/// holds at most this many client connections in all.
/// The admin socket; a Unix one is the owner's only (0600), so no other user in the pod
/// that can see its path may connect either.
fn admin_address(admin: &AdminAddress) -> Value {
    match admin {
        AdminAddress::Tcp(address) => socket_address(&address.ip().to_string(), address.port()),
        AdminAddress::Unix(path) => json!({ "pipe": { "path": path, "mode": 0o600 } }),
    }
}

fn overload_manager(config: &Config) -> Value {
    json!({
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.fixed_heap",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": config.envoy.max_heap_bytes,
                },
            },
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": config.envoy.max_connections,
                },
            },
        ],
        "actions": [
            {
                "name": "envoy.overload_actions.shrink_heap",
                "triggers": [{ "name": "envoy.resource_monitors.fixed_heap", "threshold": { "value": 0.90 } }],
            },
            {
                "name": "envoy.overload_actions.stop_accepting_requests",
                "triggers": [{ "name": "envoy.resource_monitors.fixed_heap", "threshold": { "value": 0.95 } }],
            },
        ],
    })
}

fn listener(config: &Config, filter: &ResolvedFilter, http_filters: Vec<Value>) -> Value {
    let listen = config.envoy.listen;
    let edge = &config.envoy.edge;
    let mut virtual_host = json!({
        "name": "providers",
        "domains": ["*"],
        "routes": [{
            "match": { "prefix": "/" },
            "route": {
                // The filter names the provider in this header; it is also the cluster's
                // name. Same value as the filter's `route_header`, from one source.
                "cluster_header": filter.settings.route_header,
                "auto_host_rewrite": true,
                "timeout": "600s",
            },
            // It chose the cluster; the provider has no use for it.
            "request_headers_to_remove": [filter.settings.route_header],
        }],
    });
    if let (Some(cors), Value::Object(fields)) = (&edge.cors, &mut virtual_host) {
        fields.insert(
            "typed_per_filter_config".into(),
            json!({ CORS_FILTER: cors_policy(cors) }),
        );
    }
    json!({
        "name": "gateway",
        "address": socket_address(&listen.ip().to_string(), listen.port()),
        // Whole request bodies are buffered (model extraction, validation) and so are JSON
        // responses (usage); this exceeds the filter's max_body_bytes (checked) or big
        // prompts would get 413.
        "per_connection_buffer_limit_bytes": config.envoy.buffer_limit_bytes,
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "gateway",
                    "codec_type": "AUTO",
                    // The client is the peer, or the address the trusted proxies in front
                    // of Envoy name in x-forwarded-for; never what the client writes there.
                    "use_remote_address": true,
                    "xff_num_trusted_hops": edge.trusted_proxy_hops,
                    // A client-sent x-tollgate-* header never reaches routing, the filter
                    // or a provider: it could pose as one the gateway sets.
                    "early_header_mutation_extensions": [{
                        "name": "envoy.http.early_header_mutation.header_mutation",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                            "mutations": [{ "remove_on_match": { "key_matcher": { "prefix": "x-tollgate-" } } }],
                        },
                    }],
                    // Slow and idle clients: a request head must arrive whole within
                    // request_headers_timeout and the whole request within request_timeout
                    // (a slow-loris client is answered 408 and closed); a connection with
                    // nothing in flight is closed after idle_timeout.
                    "request_headers_timeout": duration(edge.request_headers_timeout_ms),
                    "request_timeout": duration(edge.request_timeout_ms),
                    // An answer in progress is ended by its provider's deadline (the
                    // filter's per-call timeout, a 504), never by a pause between tokens
                    // shorter than that.
                    "stream_idle_timeout": duration(stream_idle_timeout_ms(config)),
                    "common_http_protocol_options": {
                        "idle_timeout": duration(edge.idle_timeout_ms),
                        "max_headers_count": edge.max_headers_count,
                        // `x_api_key` and `x-api-key` must not be one header to one hop
                        // and two to the next.
                        "headers_with_underscores_action": "REJECT_REQUEST",
                    },
                    "max_request_headers_kb": edge.max_request_headers_kb,
                    "http2_protocol_options": {
                        "max_concurrent_streams": 100,
                        "initial_stream_window_size": 65536,
                        "initial_connection_window_size": 1048576,
                    },
                    "normalize_path": true,
                    "merge_slashes": true,
                    "path_with_escaped_slashes_action": "REJECT_REQUEST",
                    // Envoy names no server software; a provider's `server` is dropped.
                    "server_header_transformation": "PASS_THROUGH",
                    "local_reply_config": replies::local_reply_config(),
                    "access_log": [access_log::access_log(&edge.access_log)],
                    "route_config": {
                        "name": "providers",
                        "virtual_hosts": [virtual_host],
                        "response_headers_to_add": security_headers(),
                        "response_headers_to_remove": ["server"],
                    },
                    "http_filters": http_filters,
                },
            }],
        }],
    })
}

/// `ms` as a protobuf Duration in JSON.
fn duration(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// Envoy's stream idle timeout: Envoy's edge default of 300 s, or longer than the longest
/// provider deadline, so a call waiting for its answer ends with its provider's 504
/// rather than Envoy's idle one.
fn stream_idle_timeout_ms(config: &Config) -> u64 {
    let longest = config
        .catalog
        .providers
        .values()
        .map(|p| u64::from(p.timeout_ms))
        .max()
        .unwrap_or(0);
    longest.saturating_add(1_000).max(300_000)
}

/// Headers on every answer the gateway relays or gives: browsers must not sniff an API
/// answer into something else, and no cache may keep one (it carries a user's data). The
/// route applies them to relayed answers and the filter's own; Envoy's own answers get
/// them from `replies`.
pub(super) fn security_headers() -> Value {
    json!([
        { "header": { "key": "x-content-type-options", "value": "nosniff" }, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" },
        { "header": { "key": "cache-control", "value": "no-store" }, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" },
    ])
}

/// The name of Envoy's CORS filter, also its per-route configuration's key.
const CORS_FILTER: &str = "envoy.filters.http.cors";

fn cors_filter() -> Value {
    json!({
        "name": CORS_FILTER,
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors" },
    })
}

/// The CORS policy of the gateway's routes: Envoy answers preflights from an allowed
/// origin, and any other origin's without CORS headers (the browser refuses the call),
/// never passing them to the filter. Answers expose what a browser app needs: the request
/// id and the rate-limit state, on refusals (401, 429) too.
fn cors_policy(cors: &CorsSettings) -> Value {
    let origins: Vec<Value> = cors
        .allowed_origins
        .iter()
        .map(|o| json!({ "exact": o }))
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": origins,
        "allow_methods": "GET, POST, OPTIONS",
        "allow_headers": cors.allowed_headers.join(", "),
        "expose_headers": EXPOSED_HEADERS.join(", "),
        "max_age": cors.max_age_s.to_string(),
        "allow_credentials": cors.allow_credentials,
        "forward_not_matching_preflights": false,
    })
}

/// Answer headers a browser app may read: the call's id and what OpenAI's SDKs read to
/// back off.
const EXPOSED_HEADERS: &[&str] = &[
    "x-tollgate-request-id",
    "x-request-id",
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "openai-processing-ms",
];

/// Reads `model` from the JSON body into dynamic metadata before the Tollgate filter sees
/// the headers: routing needs the model while headers can still change. The namespace is
/// the filter's `metadata_namespace`, from one source.
fn json_to_metadata(filter: &ResolvedFilter) -> Value {
    let ns = &filter.settings.metadata_namespace;
    json!({
        "name": "envoy.filters.http.json_to_metadata",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata",
            "request_rules": {
                "allow_content_types_regex": { "regex": "(?i)application/json.*" },
                "rules": [
                    {
                        "selectors": [{ "key": "model" }],
                        "on_present": { "metadata_namespace": ns, "key": metadata_key::MODEL },
                        "on_missing": { "metadata_namespace": ns, "key": metadata_key::MODEL_MISSING, "value": { "bool_value": true } },
                        "on_error": { "metadata_namespace": ns, "key": metadata_key::BODY_ERROR, "value": { "bool_value": true } },
                    },
                    // Whether the body may be rewritten (include_usage) is known before it arrives.
                    {
                        "selectors": [{ "key": "stream" }],
                        "on_present": { "metadata_namespace": ns, "key": metadata_key::STREAM },
                    },
                ],
            },
        },
    })
}

/// The filter's settings with what `[limits]` sets for it: the failed-authentication
/// brake, which belongs with the other limits rather than in `[envoy.filter]` (where it is
/// refused, so there is one place to set it).
fn with_limits(
    mut filter: ResolvedFilter,
    limits: &LimitSettings,
) -> Result<ResolvedFilter, ConfigError> {
    const BRAKE: &str = "failed_auths_per_minute_per_ip";
    let mut json: serde_json::Map<String, Value> = serde_json::from_str(&filter.json)
        .map_err(|e| field_error("envoy.filter", e.to_string()))?;
    if json.contains_key(BRAKE) {
        return Err(field_error(
            format!("envoy.filter.{BRAKE}"),
            format!("is set in [limits] as limits.{BRAKE}"),
        ));
    }
    json.insert(
        BRAKE.into(),
        Value::from(limits.failed_auths_per_minute_per_ip),
    );
    filter.settings.failed_auths_per_minute_per_ip = limits.failed_auths_per_minute_per_ip;
    filter.json = Value::Object(json).to_string();
    Ok(filter)
}

/// The Envoy cluster the filter's `.wasm` is fetched through.
const FILTER_SOURCE_CLUSTER: &str = "tollgate_filter_source";

/// The filter's code fetched from the control plane, which serves the build named like
/// `wasm` at `/filter/<name>`; Envoy loads it only if its SHA-256 is that of the file at
/// `wasm`, so the sidecar runs exactly the bytes it was rendered for.
fn remote_code(source: &Upstream, wasm: &str) -> Result<Value, ConfigError> {
    let path = std::path::Path::new(wasm);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| crate::filter_modules::MODULE_NAMES.contains(n))
        .ok_or_else(|| {
            field_error(
                "envoy.wasm",
                format!(
                    "must be named {} (as the control plane serves them) to be fetched from it",
                    crate::filter_modules::MODULE_NAMES.join(" or ")
                ),
            )
        })?;
    let bytes = std::fs::read(path).map_err(|e| {
        field_error(
            "envoy.wasm",
            format!("cannot be read to pin its SHA-256 ({wasm}: {e})"),
        )
    })?;
    let scheme = match source.transport {
        Transport::Cleartext => "http",
        Transport::Tls => "https",
    };
    let host = match &source.host {
        Host::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        other => other.to_string(),
    };
    Ok(json!({
        "remote": {
            "http_uri": {
                "uri": format!("{scheme}://{host}:{}/filter/{name}", source.port),
                "cluster": FILTER_SOURCE_CLUSTER,
                "timeout": "10s",
            },
            "sha256": crate::filter_modules::sha256_hex(&bytes),
            // The control plane may start after the sidecar, or be rolling: keep asking
            // for about an hour. A sidecar that never gets the module answers every
            // call 503 (the plugin fails closed) until it restarts.
            "retry_policy": {
                "retry_back_off": { "base_interval": "1s", "max_interval": "10s" },
                "num_retries": 360,
            },
        },
    }))
}

/// The control plane's HTTP port, where the filter's `.wasm` is fetched.
fn filter_source_cluster(config: &Config, source: &Upstream) -> Value {
    let host = source.host.to_string();
    let mut cluster = json!({
        "name": FILTER_SOURCE_CLUSTER,
        "type": match source.host { Host::Name(_) => "STRICT_DNS", Host::Ip(_) => "STATIC" },
        "connect_timeout": "2s",
        "dns_lookup_family": "V4_PREFERRED",
        "load_assignment": {
            "cluster_name": FILTER_SOURCE_CLUSTER,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "hostname": host, "address": socket_address(&host, source.port) } }] }],
        },
    });
    if let (Transport::Tls, Value::Object(fields)) = (source.transport, &mut cluster) {
        fields.insert("transport_socket".into(), tls_socket(config, &source.host));
    }
    cluster
}

/// The wasm filter; `env_keys` are Envoy's environment variables its VM may read.
fn wasm_filter(filter: &ResolvedFilter, code: Value, env_keys: &[&str]) -> Value {
    let mut vm_config = json!({
        "vm_id": "tollgate",
        "runtime": "envoy.wasm.runtime.v8",
        "code": code,
    });
    if let (false, Value::Object(fields)) = (env_keys.is_empty(), &mut vm_config) {
        fields.insert(
            "environment_variables".into(),
            json!({ "host_env_keys": env_keys }),
        );
    }
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "tollgate",
                "root_id": "tollgate",
                // A trapped VM is replaced (requests meanwhile are refused, never let through
                // unauthenticated); FAIL_CLOSED would leave that worker answering 503 for good.
                "failure_policy": "FAIL_RELOAD",
                // Holds `control_plane_token` (see the file's header).
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": filter.json,
                },
                "vm_config": vm_config,
            },
        },
    })
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        // No x-envoy-upstream-service-time and the like: they describe the gateway's
        // insides to clients.
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": true,
        },
    })
}

/// The control plane's gRPC port; gRPC needs HTTP/2 (cleartext on loopback or in-pod).
/// With several replicas listed, a replica that stops answering is taken out of rotation
/// within a couple of seconds (a TCP health check) so calls go to the others.
fn control_plane_cluster(config: &Config, name: &str) -> Value {
    let endpoints: Vec<Value> = config
        .envoy
        .control_plane
        .iter()
        .map(|cp| json!({ "endpoint": { "address": socket_address(&cp.host.to_string(), cp.port) } }))
        .collect();
    json!({
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
        "health_checks": [{
            "timeout": "1s",
            "interval": "2s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "tcp_health_check": {},
        }],
        // A replica that refuses connections is ejected at once, before its health check.
        "outlier_detection": {
            "split_external_local_origin_errors": true,
            "consecutive_local_origin_failure": 1,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_percent": 100,
        },
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": endpoints }] },
    })
}

/// One cluster per provider, named like it (the filter routes by that name).
fn provider_cluster(config: &Config, p: &Provider) -> Value {
    let host = p.url.host.to_string();
    let mut cluster = json!({
        "name": p.name,
        // A name is resolved (and re-resolved) by Envoy; an address is used as is.
        "type": match p.url.host { Host::Name(_) => "LOGICAL_DNS", Host::Ip(_) => "STATIC" },
        "connect_timeout": "5s",
        "dns_lookup_family": "V4_PREFERRED",
        "per_connection_buffer_limit_bytes": config.envoy.buffer_limit_bytes,
        // Envoy's default of 1024 would cap concurrent streams to one provider.
        "circuit_breakers": {
            "thresholds": [{ "max_connections": 100_000, "max_pending_requests": 100_000, "max_requests": 100_000 }],
        },
        "load_assignment": {
            "cluster_name": p.name,
            "endpoints": [{
                "lb_endpoints": [{
                    // `hostname` is what auto_host_rewrite puts in the Host header.
                    "endpoint": { "hostname": host, "address": socket_address(&host, p.url.port) },
                }],
            }],
        },
    });
    if let (Transport::Tls, Value::Object(fields)) = (p.url.transport, &mut cluster) {
        fields.insert("transport_socket".into(), tls_socket(config, &p.url.host));
    }
    cluster
}

/// TLS that checks the provider's certificate against the CA bundle and its name: SNI
/// asks for the right certificate, the SAN match refuses any other.
fn tls_socket(config: &Config, host: &Host) -> Value {
    let (sni, san_type) = match host {
        Host::Name(name) => (Some(name.as_str()), "DNS"),
        // SNI carries names only; an address is matched as an IP SAN.
        Host::Ip(_) => (None, "IP_ADDRESS"),
    };
    let mut context = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "validation_context": {
                "trusted_ca": { "filename": config.envoy.ca_bundle },
                "match_typed_subject_alt_names": [{ "san_type": san_type, "matcher": { "exact": host.to_string() } }],
            },
        },
    });
    if let (Some(sni), Value::Object(fields)) = (sni, &mut context) {
        fields.insert("sni".into(), Value::String(sni.to_owned()));
    }
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": context })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tollgate_core::settings::FilterSettings;

    const TOKEN: &str = "token-token-token-token-token-token";

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[providers]]\nname = \"openai\"\nurl = \"https://api.openai.com\"\n\
             [[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:9000\"\n\
             [[models]]\nname = \"m\"\nprovider = \"openai\"\nfree = true\n{extra}"
        );
        Config::parse(&text, Path::new("/srv"), |v| {
            (v == "TOLLGATE_FILTER_TOKEN").then(|| TOKEN.to_owned())
        })
        .unwrap()
    }

    /// Renders and reads the YAML back, as Envoy would.
    fn rendered(extra: &str, variant: Variant) -> (String, serde_json::Value) {
        let text = render(&config(extra), variant).unwrap();
        let value = serde_yaml_ng::from_str(&text).unwrap();
        (text, value)
    }

    fn hcm(bootstrap: &Value) -> &Value {
        &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    fn http_filter<'a>(bootstrap: &'a Value, name: &str) -> Option<&'a Value> {
        hcm(bootstrap)["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
    }

    fn cluster<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
        bootstrap["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
    }

    #[test]
    fn the_failed_auth_brake_is_rendered_from_limits_only() {
        let (_, default) = rendered(WASM, Variant::WithFilter);
        assert_eq!(filter_settings(&default).failed_auths_per_minute_per_ip, 30);
        let (_, set) = rendered(
            &format!("{WASM}[limits]\nfailed_auths_per_minute_per_ip = 7\n"),
            Variant::WithFilter,
        );
        assert_eq!(filter_settings(&set).failed_auths_per_minute_per_ip, 7);
        let twice = config(&format!(
            "{WASM}[envoy.filter]\nfailed_auths_per_minute_per_ip = 7\n"
        ));
        let e = render(&twice, Variant::WithFilter).unwrap_err().to_string();
        assert!(
            e.contains("envoy.filter.failed_auths_per_minute_per_ip"),
            "{e}"
        );
    }

    /// The settings the wasm filter will parse, from the rendered file.
    fn filter_settings(bootstrap: &Value) -> FilterSettings {
        let wasm = http_filter(bootstrap, "envoy.filters.http.wasm").unwrap();
        let json = wasm["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap();
        FilterSettings::from_json(json.as_bytes()).unwrap()
    }

    fn namespaces(bootstrap: &Value) -> Vec<String> {
        let j2m = http_filter(bootstrap, "envoy.filters.http.json_to_metadata").unwrap();
        let mut found = Vec::new();
        for rule in j2m["typed_config"]["request_rules"]["rules"]
            .as_array()
            .unwrap()
        {
            for on in ["on_present", "on_missing", "on_error"] {
                if let Some(ns) = rule[on]["metadata_namespace"].as_str() {
                    found.push(ns.to_owned());
                }
            }
        }
        found
    }

    const WASM: &str = "[envoy]\nwasm = \"/opt/tollgate/tollgate_filter.wasm\"\n";

    #[test]
    fn the_budgets_unreachable_choice_reaches_the_filter() {
        use tollgate_core::settings::Unreachable;
        let (_, b) = rendered(WASM, Variant::WithFilter);
        assert_eq!(
            filter_settings(&b).budgets_on_control_plane_unreachable,
            Unreachable::Refuse
        );
        let admit =
            format!("{WASM}[budgets]\non_control_plane_unreachable = \"admit_within_lease\"\n");
        let (_, b) = rendered(&admit, Variant::WithFilter);
        assert_eq!(
            filter_settings(&b).budgets_on_control_plane_unreachable,
            Unreachable::AdmitWithinLease
        );
        let twice =
            format!("{WASM}[envoy.filter]\nbudgets_on_control_plane_unreachable = \"refuse\"\n");
        let e = render(&config(&twice), Variant::WithFilter)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("envoy.filter.budgets_on_control_plane_unreachable")
                && e.contains("[budgets]"),
            "{e}"
        );
        let bad = format!("{WASM}[budgets]\non_control_plane_unreachable = \"maybe\"\n");
        let e = Config::parse(&bad, std::path::Path::new("/"), |_| None)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("on_control_plane_unreachable"), "{e}");
    }

    #[test]
    fn route_header_and_namespace_agree_with_the_filter() {
        for filter in [
            "",
            "[envoy.filter]\nroute_header = \"x-up\"\nmetadata_namespace = \"meter\"\n",
        ] {
            let (_, b) = rendered(&format!("{WASM}{filter}"), Variant::WithFilter);
            let settings = filter_settings(&b);
            let route = &hcm(&b)["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
            assert_eq!(route["cluster_header"], settings.route_header.as_str());
            let removed = &hcm(&b)["route_config"]["virtual_hosts"][0]["routes"][0]["request_headers_to_remove"];
            assert_eq!(removed[0], settings.route_header.as_str());
            let ns = namespaces(&b);
            assert_eq!(ns.len(), 4, "{ns:?}");
            assert!(
                ns.iter().all(|n| *n == settings.metadata_namespace),
                "{ns:?}"
            );
            assert_eq!(settings.control_plane_token.reveal(), TOKEN);
            let cp = cluster(&b, &settings.control_plane_cluster);
            assert_eq!(cp["type"], "STRICT_DNS");
        }
        let (_, b) = rendered(
            &format!(
                "{WASM}[envoy.filter]\nroute_header = \"x-up\"\nmetadata_namespace = \"meter\"\n"
            ),
            Variant::WithFilter,
        );
        assert_eq!(filter_settings(&b).route_header, "x-up");
        assert_eq!(namespaces(&b)[0], "meter");
    }

    #[test]
    fn https_providers_get_sni_and_a_san_check() {
        let (_, b) = rendered(
            &format!("{WASM}ca_bundle = \"/etc/my-cas.pem\"\n"),
            Variant::WithFilter,
        );
        let openai = cluster(&b, "openai");
        assert_eq!(openai["type"], "LOGICAL_DNS");
        let tls = &openai["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], "api.openai.com");
        let validation = &tls["common_tls_context"]["validation_context"];
        assert_eq!(validation["trusted_ca"]["filename"], "/etc/my-cas.pem");
        assert_eq!(
            validation["match_typed_subject_alt_names"],
            serde_json::json!([{ "san_type": "DNS", "matcher": { "exact": "api.openai.com" } }])
        );
        let addr = &openai["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"];
        assert_eq!(addr["address"]["socket_address"]["port_value"], 443);
        assert_eq!(addr["hostname"], "api.openai.com");

        let local = cluster(&b, "local");
        assert_eq!(local["type"], "STATIC");
        assert!(local.get("transport_socket").is_none(), "http is cleartext");
        let addr = &local["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"];
        assert_eq!(addr["address"]["socket_address"]["port_value"], 9000);
        assert_eq!(
            local["circuit_breakers"]["thresholds"][0]["max_requests"], 100_000,
            "Envoy's default of 1024 would cap concurrent streams"
        );
    }

    #[test]
    fn values_with_yaml_specials_are_data_not_structure() {
        let namespace = "a: b # 'c\" - [x]\n{y}";
        let wasm = "/tmp/we ird: #dir/'quote\"/f.wasm";
        let extra = format!(
            "[envoy]\nwasm = {}\n[envoy.filter]\nmetadata_namespace = {}\n",
            toml_string(wasm),
            toml_string(namespace)
        );
        let (_, b) = rendered(&extra, Variant::WithFilter);
        assert_eq!(filter_settings(&b).metadata_namespace, namespace);
        assert!(namespaces(&b).iter().all(|n| n == namespace));
        let code = &http_filter(&b, "envoy.filters.http.wasm").unwrap()["typed_config"]["config"]["vm_config"]
            ["code"];
        assert_eq!(code["local"]["filename"], wasm);
    }

    fn toml_string(s: &str) -> String {
        toml::Value::String(s.to_owned()).to_string()
    }

    #[test]
    fn without_filter_has_no_filter_and_no_secret() {
        // No wasm path needed: the baseline runs no filter.
        let (text, b) = rendered("", Variant::WithoutFilter);
        let names: Vec<&Value> = hcm(&b)["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["name"])
            .collect();
        assert_eq!(names, ["envoy.filters.http.router"]);
        assert!(!text.contains(TOKEN));
        assert!(cluster(&b, "openai")["transport_socket"].is_object());

        let (text, _) = rendered(WASM, Variant::WithFilter);
        assert!(
            text.starts_with('#') && text.contains("SECRET"),
            "the header warns"
        );
    }

    #[test]
    fn a_provider_credential_in_the_route_header_is_refused() {
        // The filter sets the route header after the credential: it would overwrite it.
        let text = "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n\
                    auth_header = \"x-route\"\napi_key_env = \"K\"\n\
                    [[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n\
                    [envoy.filter]\nroute_header = \"x-route\"\n";
        let config = Config::parse(text, Path::new("/srv"), |v| match v {
            "TOLLGATE_FILTER_TOKEN" => Some(TOKEN.to_owned()),
            "K" => Some("sk-x".to_owned()),
            _ => None,
        })
        .unwrap();
        let e = render(&config, Variant::WithoutFilter)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("envoy.filter.route_header") && e.contains("auth_header"),
            "{e}"
        );
    }

    #[test]
    fn the_filter_can_be_fetched_from_the_control_plane_pinned_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("tollgate_filter.wasm");
        std::fs::write(&wasm, b"abc").unwrap();
        let extra = format!(
            "[envoy]\nwasm = {}\nfilter_from_control_plane = \"http://tollgate:8080\"\n",
            toml_string(wasm.to_str().unwrap())
        );
        let (_, b) = rendered(&extra, Variant::WithFilter);
        let code = &http_filter(&b, "envoy.filters.http.wasm").unwrap()["typed_config"]["config"]["vm_config"]
            ["code"];
        assert!(code.get("local").is_none(), "{code}");
        let remote = &code["remote"];
        assert_eq!(
            remote["http_uri"]["uri"],
            "http://tollgate:8080/filter/tollgate_filter.wasm"
        );
        // The SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            remote["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let source = cluster(&b, remote["http_uri"]["cluster"].as_str().unwrap());
        let address = &source["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(address["address"], "tollgate");
        assert_eq!(address["port_value"], 8080);
        assert_eq!(source["type"], "STRICT_DNS");

        let elsewhere = dir.path().join("filter.wasm");
        std::fs::write(&elsewhere, b"abc").unwrap();
        for (path, problem) in [
            (elsewhere, "must be named"),
            (
                dir.path().join("tollgate_filter_count.wasm"),
                "cannot be read",
            ),
        ] {
            let extra = format!(
                "[envoy]\nwasm = {}\nfilter_from_control_plane = \"http://tollgate:8080\"\n",
                toml_string(path.to_str().unwrap())
            );
            let e = render(&config(&extra), Variant::WithFilter)
                .unwrap_err()
                .to_string();
            assert!(e.contains("envoy.wasm") && e.contains(problem), "{e}");
        }
    }

    #[test]
    fn the_admin_interface_on_a_unix_socket_is_a_private_pipe() {
        let (_, b) = rendered(
            "[envoy]\nadmin = \"unix:/tmp/envoy-admin.sock\"\n",
            Variant::WithoutFilter,
        );
        assert_eq!(
            b["admin"]["address"],
            json!({ "pipe": { "path": "/tmp/envoy-admin.sock", "mode": 384 } })
        );
        let (_, b) = rendered("", Variant::WithoutFilter);
        assert_eq!(
            b["admin"]["address"],
            json!({ "socket_address": { "address": "127.0.0.1", "port_value": 9901 } })
        );
    }

    #[test]
    fn a_token_read_from_the_environment_leaves_the_bootstrap_without_a_secret() {
        let text = format!(
            "[[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:9000\"\n\
             [[models]]\nname = \"m\"\nprovider = \"local\"\nfree = true\n\
             [server]\nfilter_token_env = \"SIDECAR_TOKEN\"\n{WASM}filter_token_from_env = true\n"
        );
        // No token in this process's environment: rendering does not need it.
        let config = Config::parse(&text, Path::new("/srv"), |_| None).unwrap();
        let text = render(&config, Variant::WithFilter).unwrap();
        assert!(text.contains("Holds no secret"), "the header says so");
        let b: Value = serde_yaml_ng::from_str(&text).unwrap();
        let wasm = &http_filter(&b, "envoy.filters.http.wasm").unwrap()["typed_config"]["config"];
        assert_eq!(
            wasm["vm_config"]["environment_variables"]["host_env_keys"],
            json!(["SIDECAR_TOKEN"])
        );
        let settings: Value =
            serde_json::from_str(wasm["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(settings["control_plane_token_env"], "SIDECAR_TOKEN");
        assert!(settings.get("control_plane_token").is_none(), "{settings}");
        let token = "s".repeat(40);
        let read = FilterSettings::from_json_with_env(
            wasm["configuration"]["value"].as_str().unwrap().as_bytes(),
            |v| (v == "SIDECAR_TOKEN").then(|| token.clone()),
        )
        .unwrap();
        assert_eq!(read.control_plane_token.reveal(), token);
    }

    #[test]
    fn several_control_plane_replicas_are_one_health_checked_cluster() {
        let (_, b) = rendered(
            &format!("{WASM}control_plane = [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\n"),
            Variant::WithFilter,
        );
        let cp = cluster(&b, &filter_settings(&b).control_plane_cluster);
        let ports: Vec<&Value> = cp["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["endpoint"]["address"]["socket_address"]["port_value"])
            .collect();
        assert_eq!(ports, [7001, 7002]);
        assert!(cp["health_checks"][0]["tcp_health_check"].is_object());
    }

    #[test]
    fn the_edge_follows_the_config() {
        let (_, b) = rendered(WASM, Variant::WithFilter);
        let h = hcm(&b);
        assert_eq!(h["request_headers_timeout"], "10.000s");
        assert_eq!(h["request_timeout"], "60.000s");
        assert_eq!(
            h["stream_idle_timeout"], "601.000s",
            "a second past the default provider deadline (600 s)"
        );
        assert_eq!(
            h["common_http_protocol_options"]["idle_timeout"],
            "300.000s"
        );
        assert_eq!(
            h["common_http_protocol_options"]["headers_with_underscores_action"],
            "REJECT_REQUEST"
        );
        assert_eq!(h["max_request_headers_kb"], 60);
        assert_eq!(h["xff_num_trusted_hops"], 0);
        assert_eq!(h["normalize_path"], true);
        assert_eq!(h["merge_slashes"], true);
        assert_eq!(h["server_header_transformation"], "PASS_THROUGH");
        assert_eq!(
            h["access_log"][0]["typed_config"]["path"], "/dev/stdout",
            "logged by default"
        );
        let strip = &h["early_header_mutation_extensions"][0]["typed_config"]["mutations"][0];
        assert_eq!(
            strip["remove_on_match"]["key_matcher"]["prefix"],
            "x-tollgate-"
        );
        let names: Vec<&Value> = h["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["name"])
            .collect();
        assert_eq!(
            names[0], "envoy.filters.http.json_to_metadata",
            "no CORS unless asked"
        );
        assert_eq!(
            h["route_config"]["response_headers_to_add"][0]["header"]["key"],
            "x-content-type-options"
        );

        let (_, b) = rendered(
            &format!(
                "{WASM}request_headers_timeout_ms = 2500\nidle_timeout_ms = 4000\n\
                 trusted_proxy_hops = 1\naccess_log = \"access.json\"\n\
                 [envoy.cors]\nallowed_origins = [\"https://app.example.com\"]\n\
                 allow_credentials = true\n"
            ),
            Variant::WithFilter,
        );
        let h = hcm(&b);
        assert_eq!(h["request_headers_timeout"], "2.500s");
        assert_eq!(h["common_http_protocol_options"]["idle_timeout"], "4.000s");
        assert_eq!(h["xff_num_trusted_hops"], 1);
        assert_eq!(
            h["access_log"][0]["typed_config"]["path"],
            "/srv/access.json"
        );
        assert_eq!(
            h["http_filters"][0]["name"], CORS_FILTER,
            "first, so preflights need no key and refusals get its headers"
        );
        let policy = &h["route_config"]["virtual_hosts"][0]["typed_per_filter_config"][CORS_FILTER];
        assert_eq!(
            policy["allow_origin_string_match"],
            json!([{ "exact": "https://app.example.com" }])
        );
        assert_eq!(policy["allow_credentials"], true);
        assert_eq!(policy["forward_not_matching_preflights"], false);
        let exposed = policy["expose_headers"].as_str().unwrap();
        assert!(
            exposed.contains("x-tollgate-request-id") && exposed.contains("retry-after"),
            "{exposed}"
        );
    }

    #[test]
    fn the_stream_idle_timeout_outlasts_the_slowest_provider() {
        let idle = |timeout_ms: u32| {
            let text = format!(
                "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n\
                 timeout_ms = {timeout_ms}\n[[models]]\nname = \"m\"\nprovider = \"p\"\n\
                 free = true\n[budgets]\nreclaim_grace_ms = 1000000\n{WASM}"
            );
            let config = Config::parse(&text, Path::new("/srv"), |v| {
                (v == "TOLLGATE_FILTER_TOKEN").then(|| TOKEN.to_owned())
            })
            .unwrap();
            let b: Value =
                serde_yaml_ng::from_str(&render(&config, Variant::WithFilter).unwrap()).unwrap();
            hcm(&b)["stream_idle_timeout"].as_str().unwrap().to_owned()
        };
        assert_eq!(idle(900_000), "901.000s");
        assert_eq!(idle(5_000), "300.000s", "never below Envoy's edge default");
    }

    #[test]
    fn rendering_errors_name_the_field() {
        let e = render(&config(""), Variant::WithFilter)
            .unwrap_err()
            .to_string();
        assert!(e.contains("envoy.wasm"), "{e}");
        let e = render(
            &config(&format!(
                "{WASM}[envoy.filter]\ncontrol_plane_cluster = \"local\"\n"
            )),
            Variant::WithFilter,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("envoy.filter.control_plane_cluster"), "{e}");
    }
}
