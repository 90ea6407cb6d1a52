//! `[api]`: the HTTP API for people: its session secret and lifetime, the origins allowed
//! to call it from a browser, its body limit, and the token that guards `/metrics`.

use super::raw::ApiFile;
use super::{ConfigError, Env, field_error};
use crate::sessions::SessionSecret;
use tollgate_core::sidecar::SidecarToken;

/// Shortest session lifetime: a minute (anything shorter logs people out mid-task).
const MIN_SESSION_TTL_MS: u64 = 60_000;
/// Longest session lifetime: 30 days.
const MAX_SESSION_TTL_MS: u64 = 30 * 24 * 3_600_000;
/// Largest request body the API accepts: 16 MiB.
const MAX_BODY_LIMIT_BYTES: usize = 16 << 20;

/// The validated `[api]` section; applied only when the process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// The environment variable holding the session secret (`api.session_secret_env`).
    pub session_secret_env: String,
    /// The key sessions are signed with, if its variable is set; `serve` needs it
    /// (see [`ApiSettings::session_secret`]).
    pub session_secret: Option<SessionSecret>,
    /// How long a session lasts after login (or its latest refresh), in ms.
    pub session_ttl_ms: u64,
    /// Browser origins allowed to call the API (CORS); none: same origin only.
    pub cors_origins: Vec<String>,
    /// The largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// Failed logins allowed per user name in `login_window_ms` before further tries wait.
    pub login_failures_per_user: u32,
    /// Failed logins allowed per client IP in `login_window_ms`.
    pub login_failures_per_ip: u32,
    /// The window failed logins are counted in, in ms.
    pub login_window_ms: u64,
    /// The environment variable holding the `/metrics` bearer token (`api.metrics_token_env`).
    pub metrics_token_env: String,
    /// The token `/metrics` requires, if its variable is set; unset: `/metrics` is off.
    pub metrics_token: Option<SidecarToken>,
}

impl ApiSettings {
    /// The session secret; serving without one could not sign in anyone, and a default
    /// secret would let anyone forge sessions.
    pub fn session_secret(&self) -> Result<&SessionSecret, ConfigError> {
        self.session_secret.as_ref().ok_or_else(|| {
            field_error(
                "api.session_secret_env",
                format!(
                    "names the environment variable `{}`, which is not set: it must hold at \
                     least 32 random bytes (e.g. `openssl rand -hex 32`) that sign sessions",
                    self.session_secret_env
                ),
            )
        })
    }
}

/// Validates `[api]`; `env` resolves the secrets' variables.
pub(super) fn validate(file: ApiFile, env: &Env<'_>) -> Result<ApiSettings, ConfigError> {
    let session_secret = match env(&file.session_secret_env) {
        None => None,
        Some(value) => Some(SessionSecret::new(value.into_bytes()).map_err(|problem| {
            field_error(
                "api.session_secret_env",
                format!("names `{}`, whose value {problem}", file.session_secret_env),
            )
        })?),
    };
    if !(MIN_SESSION_TTL_MS..=MAX_SESSION_TTL_MS).contains(&file.session_ttl_ms) {
        return Err(field_error(
            "api.session_ttl_ms",
            format!(
                "must be from {MIN_SESSION_TTL_MS} (a minute) to {MAX_SESSION_TTL_MS} (30 days)"
            ),
        ));
    }
    for (i, origin) in file.cors_origins.iter().enumerate() {
        if let Some(problem) = origin_problem(origin) {
            return Err(field_error(format!("api.cors_origins[{i}]"), problem));
        }
    }
    if file.body_limit_bytes == 0 || file.body_limit_bytes > MAX_BODY_LIMIT_BYTES {
        return Err(field_error(
            "api.body_limit_bytes",
            format!("must be from 1 to {MAX_BODY_LIMIT_BYTES} (16 MiB)"),
        ));
    }
    if file.login_window_ms == 0 {
        return Err(field_error("api.login_window_ms", "must be more than 0"));
    }
    let metrics_token = env(&file.metrics_token_env).map(SidecarToken::from);
    if let Some(problem) = metrics_token.as_ref().and_then(SidecarToken::problem) {
        return Err(field_error(
            "api.metrics_token_env",
            format!("names `{}`, whose value {problem}", file.metrics_token_env),
        ));
    }
    Ok(ApiSettings {
        session_secret_env: file.session_secret_env,
        session_secret,
        session_ttl_ms: file.session_ttl_ms,
        cors_origins: file.cors_origins,
        body_limit_bytes: file.body_limit_bytes,
        login_failures_per_user: file.login_failures_per_user,
        login_failures_per_ip: file.login_failures_per_ip,
        login_window_ms: file.login_window_ms,
        metrics_token_env: file.metrics_token_env,
        metrics_token,
    })
}

/// Why `origin` is not a browser origin (`scheme://host[:port]`, nothing after), if it is not.
fn origin_problem(origin: &str) -> Option<String> {
    let Ok(url) = url::Url::parse(origin) else {
        return Some(format!(
            "`{origin}` is not a URL like https://dash.example.com"
        ));
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Some(format!("`{origin}` must be an http or https origin"));
    }
    // An origin is exactly scheme, host and port: a browser never sends a path.
    if url.origin().ascii_serialization() != origin {
        return Some(format!(
            "`{origin}` must be an origin alone, like `{}`",
            url.origin().ascii_serialization()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn env(var: &str) -> Option<String> {
        (var == "TOLLGATE_SESSION_SECRET").then(|| SECRET.to_owned())
    }

    #[test]
    fn defaults_need_only_the_secret() {
        let s = validate(ApiFile::default(), &env).unwrap();
        assert!(s.session_secret().is_ok());
        assert_eq!(s.session_ttl_ms, 12 * 3_600_000);
        assert!(s.cors_origins.is_empty());
        assert_eq!(s.metrics_token, None);
        assert!(!format!("{s:?}").contains(SECRET), "Debug shows the secret");
    }

    #[test]
    fn a_missing_or_short_secret_is_named() {
        let unset = validate(ApiFile::default(), &|_| None).unwrap();
        let e = unset.session_secret().unwrap_err().to_string();
        assert!(
            e.contains("api.session_secret_env") && e.contains("TOLLGATE_SESSION_SECRET"),
            "{e}"
        );
        let e = validate(ApiFile::default(), &|_| Some("short".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("api.session_secret_env") && e.contains("32 bytes"),
            "{e}"
        );
        assert!(!e.contains("short`"), "the value is not shown: {e}");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(ApiFile, &str); 5] = [
            (
                ApiFile {
                    session_ttl_ms: 59_999,
                    ..ApiFile::default()
                },
                "api.session_ttl_ms",
            ),
            (
                ApiFile {
                    cors_origins: vec![
                        "https://ok.example".into(),
                        "https://x.example/path".into(),
                    ],
                    ..ApiFile::default()
                },
                "api.cors_origins[1]",
            ),
            (
                ApiFile {
                    cors_origins: vec!["*".into()],
                    ..ApiFile::default()
                },
                "api.cors_origins[0]",
            ),
            (
                ApiFile {
                    body_limit_bytes: 0,
                    ..ApiFile::default()
                },
                "api.body_limit_bytes",
            ),
            (
                ApiFile {
                    login_window_ms: 0,
                    ..ApiFile::default()
                },
                "api.login_window_ms",
            ),
        ];
        for (file, field) in cases {
            let e = validate(file, &env).unwrap_err().to_string();
            assert!(e.contains(field), "expected `{field}` in: {e}");
        }
        let e = validate(ApiFile::default(), &|v| {
            (v == "TOLLGATE_METRICS_TOKEN")
                .then(|| "tiny".to_owned())
                .or_else(|| env(v))
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("api.metrics_token_env"), "{e}");
    }
}
