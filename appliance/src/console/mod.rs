//! The web console: static assets embedded in the binary (`assets/`), plus the pure parts
//! behind the console's HTTP API in `http::console`: login throttling and the client
//! address behind a trusted proxy (`throttle`), where to go after login (`redirect`),
//! sessions and CSRF tokens (`session`), password hashing (`password`), the projection of
//! stored objects into what the pages show (`view`) and the mapping of validation error
//! paths to editor lines (`locate`).
//!
//! No IO, no clock, no RNG (callers pass `now` and random bytes); besides the model it reads
//! only plain data of other rooms (config, DHCP leases, lifecycle events) and asks the
//! lifecycle's pure state machine why a wipe is refused. The assets are plain HTML/CSS/JS
//! with no build step; `assets()` serves them with a strong ETag computed once from their
//! bytes, and a gzip copy (compressed once, in memory, on first use) for clients that
//! accept it (`accepts_gzip`).

pub mod locate;
pub mod password;
pub mod redirect;
pub mod session;
pub mod throttle;
pub mod view;

use std::io::Write;
use std::sync::LazyLock;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    pub etag: String,
    /// The body gzip-compressed, when that is smaller (a separate representation with its
    /// own strong ETag `etag_gzip`).
    pub gzip: Option<Vec<u8>>,
    pub etag_gzip: String,
}

/// gzip (best compression) of `body`, if it saves anything.
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3),
        flate2::Compression::best(),
    );
    enc.write_all(body).ok()?;
    let out = enc.finish().ok()?;
    (out.len() < body.len()).then_some(out)
}

/// Whether an `Accept-Encoding` value allows gzip (RFC 9110 §12.5.3): `gzip` or `x-gzip`
/// listed, or `*`, with a non-zero q-value (an explicit `gzip;q=0` wins over `*`).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut star = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts.any(|p| {
            let p = p.trim();
            let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) else {
                return false;
            };
            v.trim().parse::<f32>().map(|q| q <= 0.0).unwrap_or(true)
        });
        match coding.as_str() {
            "gzip" | "x-gzip" => return !q_zero,
            "*" => star = !q_zero,
            _ => {}
        }
    }
    star
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
        .map(|(path, content_type, body)| {
            let tag = format!("{:016x}-{}", fnv1a(body), body.len());
            Asset {
                path,
                content_type,
                body,
                etag: format!("\"{tag}\""),
                gzip: gzip(body),
                etag_gzip: format!("\"{tag}-gz\""),
            }
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
    fn gzip_copies_decompress_to_the_asset_and_are_smaller() {
        use std::io::Read;
        for a in assets() {
            let Some(gz) = &a.gzip else {
                assert!(a.body.len() < 600, "{} should be compressed", a.path);
                continue;
            };
            assert!(gz.len() < a.body.len());
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, a.body, "{}", a.path);
            assert_ne!(a.etag, a.etag_gzip);
        }
        // The big ones shrink a lot.
        let js = asset("app.js").unwrap();
        assert!(js.gzip.as_ref().unwrap().len() * 3 < js.body.len());
    }

    #[test]
    fn accept_encoding_parsing() {
        for yes in [
            "gzip",
            "gzip, deflate, br, zstd",
            "br;q=1.0, GZIP;q=0.5",
            "x-gzip",
            "*",
            "deflate, *;q=0.1",
            " gzip ; q=0.001",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip; q=0.000",
            "*;q=0",
            "gzip;q=0, *",
            "gzip;q=nonsense",
            "gzipx",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
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
