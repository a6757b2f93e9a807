//! The web console: static assets embedded in the binary (`assets/`), plus the pure parts
//! behind the console's HTTP API in `http::console`: login throttling (`throttle`),
//! sessions and CSRF tokens (`session`), password hashing (`password`), the projection of
//! stored objects into what the pages show (`view`) and the mapping of validation error
//! paths to editor lines (`locate`).
//!
//! Touches nothing outside itself: no IO, no clock, no RNG (callers pass `now` and random
//! bytes). The assets are plain HTML/CSS/JS with no build step; `assets()` serves them with
//! a strong ETag computed once from their bytes.

pub mod locate;
pub mod password;
pub mod session;
pub mod throttle;
pub mod view;

use std::sync::LazyLock;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    pub etag: String,
}

macro_rules! asset {
    ($path:literal, $ct:literal) => {
        (
            $path,
            $ct,
            include_bytes!(concat!("assets/", $path)).as_slice(),
        )
    };
}

const FILES: [(&str, &str, &[u8]); 6] = [
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("login.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("login.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// FNV-1a 64: a stable content hash for ETags (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(path, content_type, body)| Asset {
            path,
            content_type,
            body,
            etag: format!("\"{:016x}-{}\"", fnv1a(body), body.len()),
        })
        .collect()
});

/// The embedded asset at `path` (as under `/console/`), if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// All embedded assets.
pub fn assets() -> &'static [Asset] {
    &ASSETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_with_distinct_etag() {
        let all = assets();
        assert_eq!(all.len(), FILES.len());
        for a in all {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert_eq!(all.iter().filter(|b| b.etag == a.etag).count(), 1);
        }
        assert!(asset("app.js").is_some());
        assert!(asset("../Cargo.toml").is_none());
    }

    #[test]
    fn pages_reference_only_embedded_assets() {
        for page in ["index.html", "login.html"] {
            let text = std::str::from_utf8(asset(page).unwrap().body).unwrap();
            for part in text.split("/console/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(asset(&name).is_some(), "{page} references missing {name}");
            }
        }
    }
}
