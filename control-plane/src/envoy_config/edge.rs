//! How the gateway's listener meets the internet: timeouts for slow and idle clients,
//! header limits, the client addresses it trusts, CORS for browser apps and its access log.
//! Values follow Envoy's edge guidance ("Configuring Envoy as an edge proxy"), each one
//! settable in `[envoy]` where a deployment may need another.

use crate::config::{ConfigError, field_error};
use serde::Deserialize;
use std::path::Path;

/// `[envoy.cors]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsFile {
    allowed_origins: Vec<String>,
    allow_credentials: bool,
    allowed_headers: Option<Vec<String>>,
    max_age_s: Option<u32>,
}

/// The edge fields of `[envoy]` as written (see [`EdgeSettings`] for their meaning).
#[derive(Debug, Default)]
pub struct EdgeFile {
    /// `request_headers_timeout_ms`.
    pub request_headers_timeout_ms: Option<u64>,
    /// `request_timeout_ms`.
    pub request_timeout_ms: Option<u64>,
    /// `idle_timeout_ms`.
    pub idle_timeout_ms: Option<u64>,
    /// `max_request_headers_kb`.
    pub max_request_headers_kb: Option<u32>,
    /// `max_headers_count`.
    pub max_headers_count: Option<u32>,
    /// `trusted_proxy_hops`.
    pub trusted_proxy_hops: Option<u32>,
    /// `access_log`.
    pub access_log: Option<String>,
    /// `[envoy.cors]`.
    pub cors: Option<CorsFile>,
}

/// The validated edge settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    /// A client must send its whole request head within this (`request_headers_timeout_ms`,
    /// default 10 s): one that trickles its headers is answered 408 and closed.
    pub request_headers_timeout_ms: u64,
    /// A client must send its whole request, body included, within this
    /// (`request_timeout_ms`, default 60 s). Answers are not bounded by it.
    pub request_timeout_ms: u64,
    /// A connection with no request in flight is closed after this (`idle_timeout_ms`,
    /// default 300 s).
    pub idle_timeout_ms: u64,
    /// Most KiB of request headers (`max_request_headers_kb`, default 60, Envoy's): 431 past it.
    pub max_request_headers_kb: u32,
    /// Most request headers (`max_headers_count`, default 100, Envoy's): 431 past it.
    pub max_headers_count: u32,
    /// Proxies in front of Envoy whose `x-forwarded-for` entries are trusted to name the
    /// client (`trusted_proxy_hops`, default 0: the peer's address is the client's).
    pub trusted_proxy_hops: u32,
    /// Where Envoy writes one JSON line per request (`access_log`, default `/dev/stdout`).
    pub access_log: String,
    /// Browser access, if any origin is allowed (`[envoy.cors]`).
    pub cors: Option<CorsSettings>,
}

/// Which browser origins may call the gateway, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSettings {
    /// Origins as browsers send them (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
    /// Browsers may send cookies and read answers with them; never with `*`.
    pub allow_credentials: bool,
    /// Request headers a preflight may announce.
    pub allowed_headers: Vec<String>,
    /// How long a browser may reuse a preflight's answer.
    pub max_age_s: u32,
}

/// Request headers browsers send with OpenAI's SDKs: the key, the body's type, and the
/// SDK's own `x-stainless-*` descriptors (the gateway drops those before the provider).
const DEFAULT_ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "openai-beta",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
];

/// A duration field in milliseconds, its default and its bounds.
fn millis(
    field: &str,
    value: Option<u64>,
    default: u64,
    (min, max): (u64, u64),
) -> Result<u64, ConfigError> {
    let ms = value.unwrap_or(default);
    if !(min..=max).contains(&ms) {
        return Err(field_error(
            format!("envoy.{field}"),
            format!("must be between {min} and {max} (milliseconds)"),
        ));
    }
    Ok(ms)
}

impl EdgeSettings {
    /// Validates the edge fields; a relative `access_log` is taken from `base`.
    pub fn from_file(file: EdgeFile, base: &Path) -> Result<Self, ConfigError> {
        let request_headers_timeout_ms = millis(
            "request_headers_timeout_ms",
            file.request_headers_timeout_ms,
            10_000,
            (100, 300_000),
        )?;
        let request_timeout_ms = millis(
            "request_timeout_ms",
            file.request_timeout_ms,
            60_000,
            (1_000, 3_600_000),
        )?;
        if request_timeout_ms < request_headers_timeout_ms {
            return Err(field_error(
                "envoy.request_timeout_ms",
                "must be at least envoy.request_headers_timeout_ms: the whole request \
                 includes its headers",
            ));
        }
        let idle_timeout_ms = millis(
            "idle_timeout_ms",
            file.idle_timeout_ms,
            300_000,
            (1_000, 86_400_000),
        )?;
        let max_request_headers_kb = file.max_request_headers_kb.unwrap_or(60);
        // Envoy's own bounds for the field.
        if !(1..=8192).contains(&max_request_headers_kb) {
            return Err(field_error(
                "envoy.max_request_headers_kb",
                "must be between 1 and 8192",
            ));
        }
        let max_headers_count = file.max_headers_count.unwrap_or(100);
        if !(10..=10_000).contains(&max_headers_count) {
            return Err(field_error(
                "envoy.max_headers_count",
                "must be between 10 and 10000",
            ));
        }
        let trusted_proxy_hops = file.trusted_proxy_hops.unwrap_or(0);
        if trusted_proxy_hops > 10 {
            return Err(field_error(
                "envoy.trusted_proxy_hops",
                "must be between 0 and 10",
            ));
        }
        let access_log = match file.access_log {
            None => "/dev/stdout".to_owned(),
            Some(path) if path.trim().is_empty() => {
                return Err(field_error(
                    "envoy.access_log",
                    "must name a file (e.g. /dev/stdout)",
                ));
            }
            Some(path) => base
                .join(path)
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| field_error("envoy.access_log", "must be valid UTF-8"))?,
        };
        let cors = file
            .cors
            .map(CorsSettings::from_file)
            .transpose()?
            .flatten();
        Ok(Self {
            request_headers_timeout_ms,
            request_timeout_ms,
            idle_timeout_ms,
            max_request_headers_kb,
            max_headers_count,
            trusted_proxy_hops,
            access_log,
            cors,
        })
    }
}

impl CorsSettings {
    /// Validates `[envoy.cors]`; `None` when it allows no origin.
    fn from_file(file: CorsFile) -> Result<Option<Self>, ConfigError> {
        for (i, origin) in file.allowed_origins.iter().enumerate() {
            let field = format!("envoy.cors.allowed_origins[{i}]");
            if origin == "*" {
                // Browsers refuse a credentialed answer allowing any origin, and echoing
                // every origin instead would hand any site the user's cookies.
                if file.allow_credentials {
                    return Err(field_error(
                        field,
                        "is `*`, which cannot go with allow_credentials = true: list the origins",
                    ));
                }
                continue;
            }
            check_origin(origin).map_err(|problem| field_error(field, problem))?;
        }
        if file.allowed_origins.is_empty() {
            return Ok(None);
        }
        let allowed_headers = match file.allowed_headers {
            None => DEFAULT_ALLOWED_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            Some(list) => {
                for (i, name) in list.iter().enumerate() {
                    if name.is_empty() || !name.bytes().all(is_token_byte) || name == "*" {
                        return Err(field_error(
                            format!("envoy.cors.allowed_headers[{i}]"),
                            "must be a header name (no `*`: it never covers `authorization`)",
                        ));
                    }
                }
                list.into_iter().map(|h| h.to_ascii_lowercase()).collect()
            }
        };
        let max_age_s = file.max_age_s.unwrap_or(600);
        if max_age_s > 86_400 {
            return Err(field_error(
                "envoy.cors.max_age_s",
                "must be at most 86400 (browsers cap it lower)",
            ));
        }
        Ok(Some(Self {
            allowed_origins: file.allowed_origins,
            allow_credentials: file.allow_credentials,
            allowed_headers,
            max_age_s,
        }))
    }
}

/// An origin as a browser sends it: `http` or `https`, a host, an optional port, nothing
/// else (no path, no trailing slash), lower case; an origin written otherwise would never
/// match one.
fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    if rest.is_empty() {
        return Err("must name a host".to_owned());
    }
    if rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(
            "must be scheme://host[:port] only, as browsers send it (no path, no \
                    trailing slash)"
                .to_owned(),
        );
    }
    if origin.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("must be lower case, as browsers send it".to_owned());
    }
    Ok(())
}

/// A byte of an HTTP token (RFC 9110), what a header name is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(text: &str) -> Result<Option<CorsSettings>, String> {
        let file: CorsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        CorsSettings::from_file(file).map_err(|e| e.to_string())
    }

    fn edge(file: EdgeFile) -> Result<EdgeSettings, String> {
        EdgeSettings::from_file(file, Path::new("/srv")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_envoys_edge_guidance() {
        let e = edge(EdgeFile::default()).unwrap();
        assert_eq!(e.request_headers_timeout_ms, 10_000);
        assert_eq!(e.request_timeout_ms, 60_000);
        assert_eq!(e.idle_timeout_ms, 300_000);
        assert_eq!(e.max_request_headers_kb, 60);
        assert_eq!(e.max_headers_count, 100);
        assert_eq!(e.trusted_proxy_hops, 0);
        assert_eq!(e.access_log, "/dev/stdout");
        assert_eq!(e.cors, None);
        let relative = edge(EdgeFile {
            access_log: Some("logs/access.json".into()),
            ..EdgeFile::default()
        })
        .unwrap();
        assert_eq!(relative.access_log, "/srv/logs/access.json");
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let cases: Vec<(EdgeFile, &str)> = vec![
            (
                EdgeFile {
                    request_headers_timeout_ms: Some(0),
                    ..EdgeFile::default()
                },
                "envoy.request_headers_timeout_ms",
            ),
            (
                EdgeFile {
                    request_headers_timeout_ms: Some(20_000),
                    request_timeout_ms: Some(10_000),
                    ..EdgeFile::default()
                },
                "envoy.request_timeout_ms",
            ),
            (
                EdgeFile {
                    idle_timeout_ms: Some(10),
                    ..EdgeFile::default()
                },
                "envoy.idle_timeout_ms",
            ),
            (
                EdgeFile {
                    max_request_headers_kb: Some(9000),
                    ..EdgeFile::default()
                },
                "envoy.max_request_headers_kb",
            ),
            (
                EdgeFile {
                    max_headers_count: Some(1),
                    ..EdgeFile::default()
                },
                "envoy.max_headers_count",
            ),
            (
                EdgeFile {
                    trusted_proxy_hops: Some(11),
                    ..EdgeFile::default()
                },
                "envoy.trusted_proxy_hops",
            ),
            (
                EdgeFile {
                    access_log: Some(" ".into()),
                    ..EdgeFile::default()
                },
                "envoy.access_log",
            ),
        ];
        for (file, field) in cases {
            let e = edge(file).unwrap_err();
            assert!(e.contains(field), "expected {field} in {e}");
        }
    }

    #[test]
    fn cors_takes_exact_origins_and_refuses_a_wildcard_with_credentials() {
        let c = cors("allowed_origins = [\"https://app.example.com\", \"http://localhost:3000\"]")
            .unwrap()
            .unwrap();
        assert_eq!(c.allowed_origins.len(), 2);
        assert!(!c.allow_credentials);
        assert!(c.allowed_headers.iter().any(|h| h == "authorization"));
        assert_eq!(c.max_age_s, 600);
        assert_eq!(cors("allowed_origins = []").unwrap(), None);
        assert!(
            cors("allowed_origins = [\"*\"]").unwrap().is_some(),
            "any origin, without credentials"
        );
        for (text, field) in [
            (
                "allowed_origins = [\"*\"]\nallow_credentials = true",
                "allowed_origins[0]",
            ),
            (
                "allowed_origins = [\"https://a.example\", \"https://b.example/\"]",
                "allowed_origins[1]",
            ),
            (
                "allowed_origins = [\"app.example.com\"]",
                "allowed_origins[0]",
            ),
            (
                "allowed_origins = [\"https://App.example\"]",
                "allowed_origins[0]",
            ),
            (
                "allowed_origins = [\"https://a.example\"]\nallowed_headers = [\"*\"]",
                "allowed_headers[0]",
            ),
            (
                "allowed_origins = [\"https://a.example\"]\nmax_age_s = 100000",
                "max_age_s",
            ),
        ] {
            let e = cors(text).unwrap_err();
            assert!(e.contains(&format!("envoy.cors.{field}")), "{text}: {e}");
        }
    }
}
