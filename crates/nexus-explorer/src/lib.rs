//! The neXus provenance explorer: a read-only web page that both hosts serve at `/`
//! (`nexus serve` and the Cloudflare Worker). `assets/` holds the page (`index.html`)
//! and its style (`app.css`), and `app.js`, the bundle esbuild builds from `explorer/`
//! (committed; `scripts/test` rebuilds it and fails if the bytes differ).
//! The page loads nothing from elsewhere: its script, the TypeScript client and dagre
//! are one bundle, and [`CONTENT_SECURITY_POLICY`] lets it talk to its own origin only.
//!
//! The assets are public even on a server whose reads need a token: they hold no data,
//! and the page asks for the token (or takes it from the URL fragment) to read the API.
//! Pure and without dependencies, so it builds for `wasm32-unknown-unknown` too.

#![no_std]

/// A static asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Its bytes.
    pub body: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// The `Content-Security-Policy` every asset is served with: scripts, styles and
/// requests from this origin only, no frames, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `Cache-Control` of the assets: revalidate each time (they change with the binary).
pub const CACHE_CONTROL: &str = "no-cache";

const INDEX: Asset = Asset {
    body: include_bytes!("../assets/index.html"),
    content_type: "text/html; charset=utf-8",
};
const SCRIPT: Asset = Asset {
    body: include_bytes!("../assets/app.js"),
    content_type: "text/javascript; charset=utf-8",
};
const STYLE: Asset = Asset {
    body: include_bytes!("../assets/app.css"),
    content_type: "text/css; charset=utf-8",
};

/// The asset a `GET` (or `HEAD`) of `path` (without query) answers, if any: the page
/// at `/`, its script and style under `/explorer/`. Every other path is the API's.
pub fn asset(method: &str, path: &str) -> Option<Asset> {
    if !(method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD")) {
        return None;
    }
    match path {
        "/" | "/explorer" | "/explorer/" | "/explorer/index.html" => Some(INDEX),
        "/explorer/app.js" => Some(SCRIPT),
        "/explorer/app.css" => Some(STYLE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_and_nothing_else() {
        let page = asset("GET", "/").expect("the page");
        assert!(page.content_type.starts_with("text/html"));
        let html = core::str::from_utf8(page.body).expect("utf-8");
        assert!(html.contains("/explorer/app.js") && html.contains("/explorer/app.css"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing from elsewhere"
        );
        assert!(asset("GET", "/explorer/app.js").is_some_and(|a| a.body.len() > 1_000));
        assert!(asset("HEAD", "/explorer/app.css").is_some());
        assert_eq!(asset("POST", "/"), None);
        assert_eq!(asset("GET", "/v1/health"), None);
        assert_eq!(asset("GET", "/explorer/../Cargo.toml"), None);
    }
}
