//! Where the browser goes after login: the `next` the login page was given, only if it stays
//! on the box.
//!
//! Pure. `next` is resolved as a browser resolves it (WHATWG URL rules, against the box's
//! own origin: `\` is `/`, tab and newline are dropped) and must come out on that origin;
//! before that, anything a browser or a proxy might read as another host is refused
//! outright: no leading `/`, `//`, backslashes, control characters or whitespace, or the
//! same once percent-decoded (`/%2F/host`, `/%5Chost`, `/%09/host`). A refused `next` is
//! `/`, the front page.

use url::{Position, Url};

/// The front page: where a refused `next` goes.
pub const HOME: &str = "/";

/// A stand-in origin to resolve against: only "same as the base" matters.
const BASE: &str = "http://box.invalid/login";

/// The path (with query and fragment) to go to after login, from the requested `next`.
pub fn safe_next(next: &str) -> String {
    fn hostile(s: &str) -> bool {
        !s.starts_with('/')
            || s.starts_with("//")
            || s.chars()
                .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
    }
    if hostile(next) {
        return HOME.into();
    }
    match percent_decode(next) {
        Some(decoded) if !hostile(&decoded) => {}
        _ => return HOME.into(),
    }
    let base = Url::parse(BASE).expect("BASE is a URL");
    match base.join(next) {
        Ok(u)
            if u.origin() == base.origin() && u.username().is_empty() && u.password().is_none() =>
        {
            u[Position::BeforePath..].to_string()
        }
        _ => HOME.into(),
    }
}

/// `s` with `%XX` escapes decoded once; None when that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_on_the_box_are_kept() {
        for (next, want) in [
            ("/", "/"),
            ("/servers", "/servers"),
            (
                "/servers?state=discovered&q=a%2Fb",
                "/servers?state=discovered&q=a%2Fb",
            ),
            ("/servers/1111-2222#history", "/servers/1111-2222#history"),
            ("/classes/../settings", "/settings"),
            ("/servers/ü", "/servers/%C3%BC"),
        ] {
            assert_eq!(safe_next(next), want, "{next:?}");
        }
    }

    #[test]
    fn anything_that_can_leave_the_box_goes_home() {
        for next in [
            "",
            "servers",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            " //evil.example",
            "/ /evil.example",
            "https://evil.example/",
            "http://box.invalid/servers",
            "javascript:alert(1)",
            "data:text/html,x",
            "/%2F/evil.example",
            "/%2f/evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%09/evil.example",
            "%2F%2Fevil.example",
            "/%ff%fe",
            "/\u{0}/evil.example",
        ] {
            assert_eq!(safe_next(next), HOME, "{next:?}");
        }
    }
}
