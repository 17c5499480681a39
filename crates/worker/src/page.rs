//! The page for people (`GET /`, its script and style) and the API's documentation (`GET /docs`,
//! rendered in the browser from `GET /openapi.json`), all built into the binary.
//!
//! The files under `src/page/` are plain HTML, CSS and JavaScript: no framework, no build step,
//! nothing fetched from elsewhere. The page uses only the API's own routes
//! (`POST /v2/repository/index` for the model picker, `POST /model_predict...` for the answer),
//! so it shows nothing the API does not. `/openapi.json` is `docs/openapi.yaml` converted at build
//! time (`build.rs`): one source of truth. Scripts are their own routes, so the HTML can be served
//! with a Content-Security-Policy that allows no inline script or style.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue};

/// `docs/openapi.yaml` as JSON, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// The Content-Security-Policy of the HTML pages: their own scripts and styles only, the photo
/// shown from a `blob:` URL (the icon is an empty `data:` one), requests to this origin only, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One built-in file of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Asset {
    /// `GET /`: the page.
    Index,
    /// `GET /page.js`: the page's script.
    Script,
    /// `GET /page.css`: the style of the page and of the documentation.
    Style,
    /// `GET /docs`: the API's documentation.
    Docs,
    /// `GET /docs.js`: the script that renders the documentation from `/openapi.json`.
    DocsScript,
}

impl Asset {
    /// The file's bytes and media type.
    pub fn content(self) -> (&'static str, &'static str) {
        match self {
            Asset::Index => (include_str!("page/index.html"), "text/html; charset=utf-8"),
            Asset::Script => (
                include_str!("page/page.js"),
                "text/javascript; charset=utf-8",
            ),
            Asset::Style => (include_str!("page/page.css"), "text/css; charset=utf-8"),
            Asset::Docs => (include_str!("page/docs.html"), "text/html; charset=utf-8"),
            Asset::DocsScript => (
                include_str!("page/docs.js"),
                "text/javascript; charset=utf-8",
            ),
        }
    }

    /// Every asset, for tests and for the page's weight.
    pub const ALL: [Asset; 5] = [
        Asset::Index,
        Asset::Script,
        Asset::Style,
        Asset::Docs,
        Asset::DocsScript,
    ];

    /// The response serving this asset, with its security headers.
    pub(crate) fn response(self) -> Response<Full<Bytes>> {
        let (body, media_type) = self.content();
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
        // Revalidated each time, so a new binary's page is never mixed with an old script.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if matches!(self, Asset::Index | Asset::Docs) {
            headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        }
        response
    }
}

/// The weight of the page a browser loads at `/` (the HTML, its script and its style), in bytes.
pub fn page_bytes() -> usize {
    [Asset::Index, Asset::Script, Asset::Style]
        .iter()
        .map(|a| a.content().0.len())
        .sum()
}
