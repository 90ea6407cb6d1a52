//! `[server]`: where the control plane listens and the token the filter must send.

use super::raw::ServerFile;
use super::{ConfigError, Env, field_error};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tollgate_core::sidecar::SidecarToken;

/// The validated `[server]` section; applied only when the process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where the filter's gRPC API listens.
    pub grpc_listen: SocketAddr,
    /// Where the HTTP API (health, later the dashboard) listens.
    pub http_listen: SocketAddr,
    /// The environment variable holding the filter's token (`server.filter_token_env`).
    pub filter_token_env: String,
    /// The token every gRPC call from the filter must carry, if its variable is set;
    /// only `serve` needs it (see [`ServerSettings::filter_token`]).
    pub filter_token: Option<SidecarToken>,
    /// The directory holding the filter's builds that `GET /filter/<name>.wasm` serves
    /// (`server.filter_dir`), so Envoys fetch the module this control plane shipped with.
    pub filter_dir: Option<PathBuf>,
    /// The directory holding the dashboard's build (`server.dashboard_dir`), served at
    /// every path outside the API; none: no dashboard.
    pub dashboard_dir: Option<PathBuf>,
}

impl ServerSettings {
    /// The token the filter must send; serving without one would leave the gRPC API open.
    pub fn filter_token(&self) -> Result<&SidecarToken, ConfigError> {
        self.filter_token.as_ref().ok_or_else(|| {
            field_error(
                "server.filter_token_env",
                format!(
                    "names the environment variable `{}`, which is not set: it must hold the \
                     token the filter sends (its `control_plane_token`)",
                    self.filter_token_env
                ),
            )
        })
    }
}

/// Validates `[server]`; `env` resolves `filter_token_env`, and a relative `filter_dir` or
/// `dashboard_dir` is taken from `base`.
pub(super) fn validate(
    file: ServerFile,
    env: &Env<'_>,
    base: &Path,
) -> Result<ServerSettings, ConfigError> {
    let grpc_listen = file.grpc_listen.parse().map_err(|_| {
        field_error(
            "server.grpc_listen",
            "must be an address like 127.0.0.1:50051",
        )
    })?;
    let http_listen = file.http_listen.parse().map_err(|_| {
        field_error(
            "server.http_listen",
            "must be an address like 127.0.0.1:8080",
        )
    })?;
    let filter_token_env = file.filter_token_env;
    let filter_token = env(&filter_token_env).map(SidecarToken::from);
    if let Some(problem) = filter_token.as_ref().and_then(SidecarToken::problem) {
        return Err(field_error(
            "server.filter_token_env",
            format!("names `{filter_token_env}`, whose value {problem}"),
        ));
    }
    Ok(ServerSettings {
        grpc_listen,
        http_listen,
        filter_token_env,
        filter_token,
        filter_dir: file.filter_dir.map(|dir| base.join(dir)),
        dashboard_dir: file.dashboard_dir.map(|dir| base.join(dir)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(grpc: &str, http: &str) -> ServerFile {
        ServerFile {
            grpc_listen: grpc.into(),
            http_listen: http.into(),
            ..ServerFile::default()
        }
    }

    #[test]
    fn addresses_are_parsed_and_bad_ones_named() {
        let ok = validate(file("127.0.0.1:0", "[::1]:8080"), &|_| None, Path::new("/")).unwrap();
        assert_eq!(ok.grpc_listen.port(), 0);
        assert!(ok.http_listen.is_ipv6());
        assert_eq!(ok.filter_token, None);
        let e = validate(file("localhost", "127.0.0.1:1"), &|_| None, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("server.grpc_listen"), "{e}");
        let e = validate(file("127.0.0.1:1", "8080"), &|_| None, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("server.http_listen"), "{e}");
    }

    #[test]
    fn the_token_is_read_from_the_named_variable() {
        let token = "k".repeat(32);
        let env = |v: &str| (v == "TOLLGATE_FILTER_TOKEN").then(|| token.clone());
        let s = validate(ServerFile::default(), &env, Path::new("/")).unwrap();
        assert!(
            s.filter_token()
                .unwrap()
                .accepts(format!("Bearer {token}").as_bytes())
        );
    }
}
