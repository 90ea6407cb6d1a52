//! The `[envoy]` section of `tollgate.toml`: how the Envoy in front of the filter is set up.

use super::edge::{CorsFile, EdgeFile, EdgeSettings};
use super::upstream::{self, Host, Upstream};
use crate::config::{ConfigError, field_error};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use tollgate_core::settings::{FilterSettings, SettingsError, Unreachable};
use tollgate_core::sidecar::SidecarToken;

/// Debian's and Ubuntu's bundle of the system's trusted CAs.
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The section as written; see [`EnvoySection`] for the meaning of each field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoyFile {
    listen: Option<String>,
    admin: Option<String>,
    wasm: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
    control_plane: Option<OneOrMany>,
    filter_from_control_plane: Option<String>,
    filter_token_from_env: bool,
    buffer_limit_bytes: Option<u32>,
    max_heap_bytes: Option<u64>,
    max_connections: Option<u64>,
    request_headers_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_request_headers_kb: Option<u32>,
    max_headers_count: Option<u32>,
    trusted_proxy_hops: Option<u32>,
    access_log: Option<String>,
    cors: Option<CorsFile>,
    filter: toml::Table,
}

/// `control_plane`: one address, or several replicas' addresses.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Where Envoy reaches the control plane's gRPC port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneAddress {
    /// Name or address.
    pub host: Host,
    /// Port.
    pub port: u16,
}

/// Where Envoy's admin interface listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddress {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket (`unix:/abs/path`), reachable only by whoever can see the path: in a
    /// pod, not by an application container that shares Envoy's loopback.
    Unix(String),
}

impl AdminAddress {
    /// Parses `admin`: `unix:` and an absolute path, or an address like 127.0.0.1:9901.
    fn parse(value: &str) -> Result<Self, ConfigError> {
        let invalid = || {
            field_error(
                "envoy.admin",
                "must be an address like 127.0.0.1:9901 or unix: and an absolute path",
            )
        };
        match value.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') && !path.contains('\0') => {
                Ok(Self::Unix(path.to_owned()))
            }
            Some(_) => Err(invalid()),
            None => value.parse().map(Self::Tcp).map_err(|_| invalid()),
        }
    }
}

/// The validated `[envoy]` section.
#[derive(Debug, Clone)]
pub struct EnvoySection {
    /// Where the gateway's listener accepts clients (`listen`, default 127.0.0.1:10000).
    pub listen: SocketAddr,
    /// Envoy's admin interface (`admin`, default 127.0.0.1:9901): a loopback address, or
    /// `unix:/abs/path`. It shows the whole configuration, the filter's token included,
    /// and can stop Envoy.
    pub admin: AdminAddress,
    /// The filter's `.wasm` (`wasm`); required to render Envoy with the filter.
    pub wasm: Option<String>,
    /// CA bundle that https providers' certificates are checked against (`ca_bundle`).
    pub ca_bundle: String,
    /// The control plane's gRPC addresses as Envoy reaches them (`control_plane`: one, or
    /// a list of replicas; default `server.grpc_listen`, with an unspecified address
    /// replaced by loopback). Never empty.
    pub control_plane: Vec<ControlPlaneAddress>,
    /// The control plane's HTTP address Envoy fetches the filter's `.wasm` from
    /// (`filter_from_control_plane`, e.g. `http://tollgate:8080`) instead of reading
    /// `wasm` from its own disk; the digest of `wasm` pins what it may load.
    pub filter_from_control_plane: Option<Upstream>,
    /// The filter reads its token from Envoy's environment, in the variable
    /// `server.filter_token_env` names, so the bootstrap holds no secret
    /// (`filter_token_from_env`).
    pub filter_token_from_env: bool,
    /// Bytes Envoy buffers per connection (`buffer_limit_bytes`); must exceed the filter's
    /// `max_body_bytes`, since whole request bodies and JSON answers are buffered.
    pub buffer_limit_bytes: u32,
    /// Envoy's heap at which its overload manager acts (`max_heap_bytes`, default 2 GiB).
    pub max_heap_bytes: u64,
    /// Client connections Envoy holds at most in all (`max_connections`, default 50000).
    pub max_connections: u64,
    /// Timeouts, header limits, trusted proxies, CORS and the access log.
    pub edge: EdgeSettings,
    /// `[envoy.filter]` as written: the filter's settings, without its token.
    filter: Map<String, Value>,
}

/// The filter's settings ready to render: checked by the filter's own parser.
#[derive(Debug, Clone)]
pub struct ResolvedFilter {
    /// The settings as the filter will read them.
    pub settings: FilterSettings,
    /// The JSON handed to the filter; holds the token.
    pub json: String,
}

impl EnvoySection {
    /// Validates the section; `grpc_listen` is the default control-plane address and
    /// relative paths are taken from `base` (the config file's directory).
    pub fn from_file(
        file: EnvoyFile,
        grpc_listen: SocketAddr,
        base: &Path,
    ) -> Result<Self, ConfigError> {
        let address = |field: &str, value: Option<String>, default: &str| {
            value
                .as_deref()
                .unwrap_or(default)
                .parse::<SocketAddr>()
                .map_err(|_| {
                    field_error(
                        format!("envoy.{field}"),
                        format!("must be an address like {default}"),
                    )
                })
        };
        let listen = address("listen", file.listen, "127.0.0.1:10000")?;
        let admin = AdminAddress::parse(file.admin.as_deref().unwrap_or("127.0.0.1:9901"))?;
        // Envoy validates such a file, then cannot bind the second at start.
        if admin == AdminAddress::Tcp(listen) {
            return Err(field_error(
                "envoy.admin",
                "must differ from envoy.listen: both are Envoy listeners",
            ));
        }
        if matches!(admin, AdminAddress::Tcp(address) if !address.ip().is_loopback()) {
            return Err(field_error(
                "envoy.admin",
                "must be a loopback address (127.0.0.1 or ::1): the admin interface shows \
                 the filter's token and can stop Envoy",
            ));
        }
        let path = |field: &str, value: PathBuf| {
            base.join(value)
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| field_error(format!("envoy.{field}"), "must be valid UTF-8"))
        };
        let wasm = file.wasm.map(|p| path("wasm", p)).transpose()?;
        let ca_bundle = path(
            "ca_bundle",
            file.ca_bundle
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_BUNDLE)),
        )?;
        let endpoint = |field: String, text: &str| {
            let (host, port) =
                upstream::parse_endpoint(text).map_err(|problem| field_error(field, problem))?;
            Ok::<_, ConfigError>(ControlPlaneAddress { host, port })
        };
        let control_plane = match file.control_plane {
            Some(OneOrMany::One(text)) => vec![endpoint("envoy.control_plane".into(), &text)?],
            Some(OneOrMany::Many(list)) if list.is_empty() => {
                return Err(field_error(
                    "envoy.control_plane",
                    "must name at least one address",
                ));
            }
            Some(OneOrMany::Many(list)) => list
                .iter()
                .enumerate()
                .map(|(i, text)| endpoint(format!("envoy.control_plane[{i}]"), text))
                .collect::<Result<_, _>>()?,
            None => vec![ControlPlaneAddress {
                host: Host::Ip(reachable(grpc_listen.ip())),
                port: grpc_listen.port(),
            }],
        };
        let filter_from_control_plane = file
            .filter_from_control_plane
            .map(|text| {
                Upstream::parse(&text)
                    .map_err(|problem| field_error("envoy.filter_from_control_plane", problem))
            })
            .transpose()?;
        let buffer_limit_bytes = file.buffer_limit_bytes.unwrap_or(16 << 20);
        if buffer_limit_bytes < 1 << 20 {
            return Err(field_error(
                "envoy.buffer_limit_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        let max_heap_bytes = file.max_heap_bytes.unwrap_or(2 << 30);
        if max_heap_bytes < 256 << 20 {
            return Err(field_error(
                "envoy.max_heap_bytes",
                "must be at least 268435456 (256 MiB)",
            ));
        }
        let max_connections = file.max_connections.unwrap_or(50_000);
        if max_connections == 0 {
            return Err(field_error(
                "envoy.max_connections",
                "must be greater than 0",
            ));
        }
        let edge = EdgeSettings::from_file(
            EdgeFile {
                request_headers_timeout_ms: file.request_headers_timeout_ms,
                request_timeout_ms: file.request_timeout_ms,
                idle_timeout_ms: file.idle_timeout_ms,
                max_request_headers_kb: file.max_request_headers_kb,
                max_headers_count: file.max_headers_count,
                trusted_proxy_hops: file.trusted_proxy_hops,
                access_log: file.access_log,
                cors: file.cors,
            },
            base,
        )?;
        if file.filter.contains_key("control_plane_token") {
            return Err(field_error(
                "envoy.filter.control_plane_token",
                "must not be written in the file: the token is read from the environment \
                 variable named by `server.filter_token_env`",
            ));
        }
        let filter = match serde_json::to_value(file.filter) {
            Ok(Value::Object(map)) => map,
            Ok(_) | Err(_) => {
                return Err(field_error(
                    "envoy.filter",
                    "must hold only JSON-like values (no dates)",
                ));
            }
        };
        Ok(Self {
            listen,
            admin,
            wasm,
            ca_bundle,
            control_plane,
            filter_from_control_plane,
            filter_token_from_env: file.filter_token_from_env,
            buffer_limit_bytes,
            max_heap_bytes,
            max_connections,
            edge,
            filter,
        })
    }

    /// `[envoy.filter]` with `token`, validated by the filter's own parser, and the JSON
    /// the filter gets. The names Envoy's side must agree on (route header, metadata
    /// namespace, control-plane cluster) are written out even where they are defaults,
    /// so the filter reads exactly what the rest of the file was rendered with.
    pub fn resolve_filter(
        &self,
        token: FilterToken<'_>,
        unreachable: Unreachable,
    ) -> Result<ResolvedFilter, ConfigError> {
        let mut json = self.filter.clone();
        // One place to set it, with the other `[budgets]` settings.
        if json.contains_key(UNREACHABLE_FIELD) {
            return Err(field_error(
                format!("envoy.filter.{UNREACHABLE_FIELD}"),
                "is set in [budgets] as `on_control_plane_unreachable`",
            ));
        }
        json.insert(
            UNREACHABLE_FIELD.into(),
            serde_json::to_value(unreachable).unwrap_or(Value::Null),
        );
        if json.contains_key(TOKEN_ENV_FIELD) {
            return Err(field_error(
                format!("envoy.filter.{TOKEN_ENV_FIELD}"),
                "is set by `envoy.filter_token_from_env`, from `server.filter_token_env`",
            ));
        }
        match token {
            FilterToken::Inline(token) => json.insert(
                "control_plane_token".into(),
                Value::String(token.reveal().to_owned()),
            ),
            FilterToken::FromEnv(var) => {
                json.insert(TOKEN_ENV_FIELD.into(), Value::String(var.to_owned()))
            }
        };
        let text = Value::Object(json.clone()).to_string();
        // A token read from Envoy's environment is checked by the filter when it starts;
        // here a well-formed stand-in lets the rest of the settings be checked.
        let stand_in = |_: &str| Some("t".repeat(tollgate_core::sidecar::MIN_TOKEN_BYTES));
        let settings =
            FilterSettings::from_json_with_env(text.as_bytes(), stand_in).map_err(|e| match e {
                SettingsError::Field { field, problem } => {
                    field_error(format!("envoy.filter.{field}"), problem)
                }
                SettingsError::Parse(message) => field_error("envoy.filter", message),
            })?;
        if usize::try_from(self.buffer_limit_bytes).is_ok_and(|b| b <= settings.max_body_bytes) {
            return Err(field_error(
                "envoy.buffer_limit_bytes",
                format!(
                    "must exceed envoy.filter.max_body_bytes ({}), or big prompts get 413",
                    settings.max_body_bytes
                ),
            ));
        }
        for (key, value) in [
            ("route_header", &settings.route_header),
            ("metadata_namespace", &settings.metadata_namespace),
            ("control_plane_cluster", &settings.control_plane_cluster),
        ] {
            json.insert(key.into(), Value::String(value.clone()));
        }
        Ok(ResolvedFilter {
            settings,
            json: Value::Object(json).to_string(),
        })
    }
}

/// How the rendered filter gets its token.
#[derive(Debug, Clone, Copy)]
pub enum FilterToken<'a> {
    /// Written into its settings (the bootstrap is then a secret).
    Inline(&'a SidecarToken),
    /// Read from this variable of Envoy's environment (the bootstrap holds no secret).
    FromEnv(&'a str),
}

/// The filter setting naming the variable that holds its token.
const TOKEN_ENV_FIELD: &str = "control_plane_token_env";

/// The filter setting `[budgets] on_control_plane_unreachable` is rendered into.
const UNREACHABLE_FIELD: &str = "budgets_on_control_plane_unreachable";

/// An address to connect to for one the control plane listens on: "all interfaces" is
/// reached through loopback.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::AdminAddress;
    use crate::config::Config;
    use std::path::Path;

    const TOKEN: &str = "token-token-token-token-token-token";
    const PROVIDERS: &str = "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n\
                             [[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n";

    fn load(envoy: &str) -> Result<Config, String> {
        let text = format!("{PROVIDERS}{envoy}");
        Config::parse(&text, Path::new("/etc/tollgate"), |v| {
            (v == "TOLLGATE_FILTER_TOKEN").then(|| TOKEN.to_owned())
        })
        .map_err(|e| e.to_string())
    }

    /// The error of loading `envoy`, or of resolving its filter settings.
    fn error(envoy: &str) -> String {
        match load(envoy) {
            Err(e) => e,
            Ok(c) => match c.server.filter_token() {
                Ok(token) => c
                    .envoy
                    .resolve_filter(
                        super::FilterToken::Inline(token),
                        tollgate_core::settings::Unreachable::Refuse,
                    )
                    .expect_err("must be refused")
                    .to_string(),
                Err(e) => e.to_string(),
            },
        }
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c =
            load("[server]\ngrpc_listen = \"0.0.0.0:7000\"\n[envoy]\nwasm = \"f.wasm\"\n").unwrap();
        let e = &c.envoy;
        assert_eq!(e.listen.to_string(), "127.0.0.1:10000");
        assert_eq!(e.admin, AdminAddress::Tcp(([127, 0, 0, 1], 9901).into()));
        assert_eq!(e.wasm.as_deref(), Some("/etc/tollgate/f.wasm"));
        assert_eq!(e.ca_bundle, super::DEFAULT_CA_BUNDLE);
        assert_eq!(
            e.control_plane[0].host.to_string(),
            "127.0.0.1",
            "0.0.0.0 is dialed as loopback"
        );
        assert_eq!(e.control_plane.len(), 1);
        assert_eq!(e.control_plane[0].port, 7000);
        assert_eq!(e.filter_from_control_plane, None);
        assert!(!e.filter_token_from_env);
        assert_eq!(e.buffer_limit_bytes, 16 << 20);
        let no_section = load("").unwrap();
        assert_eq!(no_section.envoy.wasm, None);
        assert_eq!(no_section.envoy.control_plane[0].port, 50051);
        let replicas =
            load("[envoy]\ncontrol_plane = [\"cp-0:50051\", \"10.0.0.2:50052\"]\n").unwrap();
        let ports: Vec<u16> = replicas
            .envoy
            .control_plane
            .iter()
            .map(|a| a.port)
            .collect();
        assert_eq!(ports, [50051, 50052]);
        assert_eq!(replicas.envoy.control_plane[0].host.to_string(), "cp-0");
    }

    #[test]
    fn relative_paths_are_written_absolute() {
        // Envoy resolves a relative path from its own working directory, not from the
        // directory `tollgate --config conf/tollgate.toml envoy-config` was run in.
        let text = format!("{PROVIDERS}[envoy]\nwasm = \"f.wasm\"\nca_bundle = \"cas.pem\"\n");
        let c = Config::parse(&text, Path::new("conf"), |_| None).unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            c.envoy.wasm.as_deref().map(Path::new),
            Some(here.join("conf/f.wasm").as_path())
        );
        assert_eq!(Path::new(&c.envoy.ca_bundle), here.join("conf/cas.pem"));
    }

    #[test]
    fn filter_settings_are_checked_by_the_filter_parser() {
        let c =
            load("[envoy.filter]\nroute_header = \"x-route\"\nmax_body_bytes = 1000\n").unwrap();
        let resolved = c
            .envoy
            .resolve_filter(
                super::FilterToken::Inline(c.server.filter_token().unwrap()),
                tollgate_core::settings::Unreachable::Refuse,
            )
            .unwrap();
        assert_eq!(resolved.settings.route_header, "x-route");
        assert_eq!(resolved.settings.max_body_bytes, 1000);
        let json: serde_json::Value = serde_json::from_str(&resolved.json).unwrap();
        assert_eq!(json["control_plane_token"], TOKEN);
        assert_eq!(
            json["metadata_namespace"], "tollgate",
            "defaults are written out"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        for (envoy, field) in [
            ("[envoy]\nlisten = \"10000\"", "envoy.listen"),
            ("[envoy]\nadmin = \"localhost:9901\"", "envoy.admin"),
            ("[envoy]\nadmin = \"unix:admin.sock\"", "envoy.admin"),
            ("[envoy]\nadmin = \"0.0.0.0:9901\"", "envoy.admin"),
            ("[envoy]\nadmin = \"10.0.0.3:9901\"", "envoy.admin"),
            ("[envoy]\nidle_timeout_ms = 5", "envoy.idle_timeout_ms"),
            (
                "[envoy.cors]\nallowed_origins = [\"*\"]\nallow_credentials = true",
                "envoy.cors.allowed_origins[0]",
            ),
            ("[envoy.cors]\nallowed_origin = []", "allowed_origin"),
            (
                "[envoy]\nlisten = \"127.0.0.1:9901\"\nadmin = \"127.0.0.1:9901\"",
                "envoy.admin",
            ),
            ("[envoy]\ncontrol_plane = \"cp\"", "envoy.control_plane"),
            ("[envoy]\ncontrol_plane = []", "envoy.control_plane"),
            (
                "[envoy]\ncontrol_plane = [\"cp:1\", \"cp\"]",
                "envoy.control_plane[1]",
            ),
            (
                "[envoy]\nfilter_from_control_plane = \"tollgate:8080\"",
                "envoy.filter_from_control_plane",
            ),
            (
                "[envoy.filter]\ncontrol_plane_token_env = \"X\"",
                "envoy.filter.control_plane_token_env",
            ),
            (
                "[envoy]\nbuffer_limit_bytes = 1000",
                "envoy.buffer_limit_bytes",
            ),
            ("[envoy]\nmax_heap_bytes = 1000", "envoy.max_heap_bytes"),
            ("[envoy]\nmax_connections = 0", "envoy.max_connections"),
            ("[envoy]\nwasm_path = \"x\"", "wasm_path"),
            (
                "[envoy.filter]\ncontrol_plane_token = \"x\"",
                "envoy.filter.control_plane_token",
            ),
            ("[envoy.filter]\nmax_body_bytez = 1", "max_body_bytez"),
            (
                "[envoy.filter]\nroute_header = \"X-Up\"",
                "envoy.filter.route_header",
            ),
            (
                "[envoy]\nbuffer_limit_bytes = 2000000\n[envoy.filter]\nmax_body_bytes = 2000000",
                "envoy.buffer_limit_bytes",
            ),
        ] {
            let e = error(envoy);
            assert!(e.contains(field), "expected `{field}` in: {e}");
        }
        let e = error("[envoy.filter]\nmax_body_bytes = \"big\"");
        assert!(
            e.contains("envoy.filter") && e.contains("max_body_bytes"),
            "{e}"
        );
    }
}
