//! The dashboard: the single-page app `./dev build` leaves in `dashboard/dist`, served from
//! `server.dashboard_dir` at every path outside the API. Any path that names no file gets
//! `index.html`, so the app's own routes (`/keys`, `/usage`) survive a reload; the files
//! pass through the API's layers, so its Content-Security-Policy covers them too.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use std::path::{Path, PathBuf};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// The file every app route is answered with.
const INDEX: &str = "index.html";

/// Why the dashboard cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The directory holds no `index.html` (not built, or the wrong directory).
    #[error(
        "`server.dashboard_dir` is {dir}, which holds no {INDEX} (build it with `./dev build`)"
    )]
    NotBuilt {
        /// The directory.
        dir: String,
    },
}

/// The dashboard's built files, in a directory checked at start.
#[derive(Debug, Clone)]
pub struct Dashboard {
    dir: PathBuf,
}

impl Dashboard {
    /// The dashboard in `dir`, which must hold its `index.html`.
    pub fn load(dir: &Path) -> Result<Self, DashboardError> {
        if dir.join(INDEX).is_file() {
            Ok(Self {
                dir: dir.to_path_buf(),
            })
        } else {
            Err(DashboardError::NotBuilt {
                dir: dir.display().to_string(),
            })
        }
    }

    /// Answers `request` with the file its path names, or `index.html` if it names none.
    /// `ServeDir` refuses paths that climb out of the directory (`..`).
    pub async fn serve(&self, request: Request) -> Response {
        let files = ServeDir::new(&self.dir).fallback(ServeFile::new(self.dir.join(INDEX)));
        match files.oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(never) => match never {},
        }
    }
}

/// Whether `path` belongs to the API, whose unknown paths are JSON 404s, never the app.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testing::TestApi;
    use axum::http::{Method, StatusCode, header};

    /// A built dashboard in a temporary directory: its index and one asset.
    fn built() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INDEX), "<!doctype html><p>the app</p>").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app-1.js"), "console.log(1)").unwrap();
        dir
    }

    async fn fetch(
        router: &axum::Router,
        method: Method,
        path: &str,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn serves_files_app_routes_and_leaves_the_api_its_json_404s() {
        let dir = built();
        let api = TestApi::start().await;
        let router = crate::api::router(
            api.state.clone(),
            Some(Dashboard::load(dir.path()).unwrap()),
        );

        let (status, headers, body) = fetch(&router, Method::GET, "/assets/app-1.js").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "console.log(1)"));
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .contains("javascript")
        );
        // The API's layers cover the app: its policy forbids inline scripts and styles.
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'"
        );
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");

        for app_route in ["/", "/keys", "/usage/anything"] {
            let (status, headers, body) = fetch(&router, Method::GET, app_route).await;
            assert_eq!(status, StatusCode::OK, "{app_route}");
            assert!(body.contains("the app"), "{app_route}: {body}");
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                "default-src 'self'"
            );
        }
        for outside in ["/assets/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"] {
            let (_, _, body) = fetch(&router, Method::GET, outside).await;
            assert!(!body.contains("root:"), "{outside} escaped the directory");
        }

        let (status, _, body) = fetch(&router, Method::GET, "/api/no-such-thing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"code\":\"no_route\""), "{body}");
        let (status, _, _) = fetch(&router, Method::GET, "/api/keys").await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the app's files open no API route"
        );
    }

    #[tokio::test]
    async fn without_a_dashboard_other_paths_are_json_404s() {
        let api = TestApi::start().await;
        let (status, _, body) = fetch(&api.router, Method::GET, "/keys").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"code\":\"no_route\""), "{body}");
    }

    #[test]
    fn a_directory_without_the_build_is_named() {
        let empty = tempfile::tempdir().unwrap();
        let e = Dashboard::load(empty.path()).unwrap_err().to_string();
        assert!(
            e.contains("server.dashboard_dir") && e.contains("index.html"),
            "{e}"
        );
    }
}
