//! The filter's builds, served over HTTP at `GET /filter/<name>.wasm` so that an Envoy
//! sidecar on the stock `envoyproxy/envoy` image fetches the module this control plane
//! ships with (Envoy's `vm_config.code.remote`, pinned by SHA-256) instead of needing a
//! custom image with the file baked in.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The file names of the filter's two builds, as `./dev build` and the image leave them:
/// the only names served, so no request can name another file.
pub const MODULE_NAMES: [&str; 2] = ["tollgate_filter.wasm", "tollgate_filter_count.wasm"];

/// Why the builds could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FilterModulesError {
    /// A build exists but could not be read.
    #[error("`server.filter_dir`: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Neither build is in the directory.
    #[error("`server.filter_dir` is {dir}, which holds neither {} nor {}", MODULE_NAMES[0], MODULE_NAMES[1])]
    Empty {
        /// The directory.
        dir: String,
    },
}

/// The builds found in `server.filter_dir`, read once at start: the bytes served never
/// change under a running control plane, so a digest rendered from them stays true.
#[derive(Debug, Clone, Default)]
pub struct FilterModules {
    modules: Arc<BTreeMap<&'static str, Bytes>>,
}

impl FilterModules {
    /// Reads the builds present in `dir`; at least one must be.
    pub fn load(dir: &Path) -> Result<Self, FilterModulesError> {
        let mut modules = BTreeMap::new();
        for name in MODULE_NAMES {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    tracing::info!(
                        module = name,
                        sha256 = %sha256_hex(&bytes),
                        bytes = bytes.len(),
                        "serving the filter build"
                    );
                    modules.insert(name, Bytes::from(bytes));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(FilterModulesError::Read {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        if modules.is_empty() {
            return Err(FilterModulesError::Empty {
                dir: dir.display().to_string(),
            });
        }
        Ok(Self {
            modules: Arc::new(modules),
        })
    }

    /// The routes serving them.
    pub fn router(self) -> Router {
        Router::new()
            .route("/filter/{name}", get(module))
            .with_state(self)
    }
}

/// The hex SHA-256 of a module: what Envoy's remote code source is pinned to.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn module(State(modules): State<FilterModules>, UrlPath(name): UrlPath<String>) -> Response {
    match modules.modules.get(name.as_str()) {
        Some(bytes) => {
            ([(header::CONTENT_TYPE, "application/wasm")], bytes.clone()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such filter build\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, Vec<u8>) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn serves_the_builds_it_found_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tollgate_filter.wasm"), b"\0asm-default").unwrap();
        std::fs::write(dir.path().join("other.wasm"), b"not served").unwrap();
        let router = FilterModules::load(dir.path()).unwrap().router();
        assert_eq!(
            get(&router, "/filter/tollgate_filter.wasm").await,
            (StatusCode::OK, b"\0asm-default".to_vec())
        );
        for path in [
            "/filter/tollgate_filter_count.wasm",
            "/filter/other.wasm",
            "/filter/..%2Ftollgate_filter.wasm",
        ] {
            assert_eq!(get(&router, path).await.0, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn a_directory_without_builds_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let e = FilterModules::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("server.filter_dir"), "{e}");
    }

    #[test]
    fn the_digest_is_the_files_sha256() {
        // The SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
