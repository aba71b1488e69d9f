//! Static files, compiled into the binary (one binary to deploy). Served with an ETag
//! and a day of caching; templates add `?v=<hash>` so a new build is fetched at once.

use std::sync::OnceLock;

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::AppError;

/// The htmx build vendored under static/vendor (see static/vendor/README.md).
pub const HTMX: &str = "vendor/htmx-2.0.11.min.js";

const FILES: &[(&str, &[u8], &str)] = &[
    (
        "app.css",
        include_bytes!("../../static/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        HTMX,
        include_bytes!("../../static/vendor/htmx-2.0.11.min.js"),
        "text/javascript; charset=utf-8",
    ),
];

fn etags() -> &'static Vec<String> {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, bytes, _)| format!("\"{}\"", &hex(&Sha256::digest(bytes))[..16]))
            .collect()
    })
}

/// A short hash of all assets, for cache-busting URLs.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h = Sha256::new();
        for e in etags() {
            h.update(e.as_bytes());
        }
        hex(&h.finalize())[..10].to_string()
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    let i = FILES
        .iter()
        .position(|(name, _, _)| *name == path)
        .ok_or(AppError::NotFound)?;
    let (_, bytes, mime) = FILES[i];
    let etag = &etags()[i];
    let cache = HeaderValue::from_static("public, max-age=86400");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (
                    header::ETAG,
                    HeaderValue::from_str(etag).unwrap_or(cache.clone()),
                ),
                (header::CACHE_CONTROL, cache),
            ],
        )
            .into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, cache),
            (header::ETAG, HeaderValue::from_str(etag).expect("hex etag")),
        ],
        bytes,
    )
        .into_response())
}
