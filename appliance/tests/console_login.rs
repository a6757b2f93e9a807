//! Console login under attack, against a real `appliance serve` over plain HTTP from several
//! loopback source addresses: a concurrent burst of guesses from one address is verified at
//! most up to the per-address limit (the right password inside the burst is refused once the
//! limit is hit); at most two password verifications run at once; the global pause spares
//! the admin token and addresses that logged in before; `next` never leaves the box; a
//! configured trusted proxy's forwarded address is the client address, and only that proxy's.

mod console_support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Barrier;
use std::sync::mpsc;
use std::time::Duration;

use console_support::{Appliance, Response};

const PASSWORD: &str = "correct horse battery staple";
/// Wrong guesses an address gets before its lockout (`console::throttle::FREE_FAILURES`),
/// plus the one whose failure starts it.
const BURST_LIMIT: usize = 6;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn login_body(secret: &str) -> String {
    serde_json::json!({ "secret": secret }).to_string()
}

fn login_from(app: &Appliance, src: IpAddr, secret: &str, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    app.request_from(src, "POST", "/api/v1/login", &h, Some(&login_body(secret)))
}

fn set_password(app: &Appliance) {
    let said = app.ctl(&["admin", "set-password"], Some(&format!("{PASSWORD}\n")));
    assert!(said.contains("session(s) ended"), "{said}");
}

/// The box's log without terminal colours.
fn plain_log(app: &Appliance) -> String {
    let mut out = String::new();
    let mut rest = app.log();
    while let Some(i) = rest.find('\x1b') {
        out.push_str(&rest[..i]);
        rest = match rest[i..].find('m') {
            Some(end) => rest[i + end + 1..].to_string(),
            None => String::new(),
        };
    }
    out + &rest
}

/// Password verifications that failed, as the box logged them.
fn verified_failures(app: &Appliance) -> usize {
    plain_log(app).matches("console login failed").count()
}

/// The value of an unlabelled sample in `/metrics`.
fn metric(app: &Appliance, name: &str) -> Option<u64> {
    let r = app.request("GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    r.body.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

#[test]
fn a_concurrent_burst_from_one_address_is_verified_at_most_up_to_the_limit() {
    let app = Appliance::start();
    set_password(&app);
    let src = ip(1);
    const BURST: usize = 50;
    let start = Barrier::new(BURST);
    let (refused_tx, refused_rx) = mpsc::channel();
    let (statuses, right) = std::thread::scope(|s| {
        let guesses: Vec<_> = (0..BURST)
            .map(|i| {
                let (start, refused_tx, app) = (&start, refused_tx.clone(), &app);
                s.spawn(move || {
                    start.wait();
                    let r = login_from(app, src, &format!("wrong guess number {i}"), &[]);
                    if r.status == 429 {
                        let _ = refused_tx.send(());
                    }
                    r.status
                })
            })
            .collect();
        // The right password from the same address, once the burst has hit the limit and
        // while the rest of it is still being answered.
        refused_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("no login of the burst was refused");
        let right = login_from(&app, src, PASSWORD, &[]);
        let statuses: Vec<u16> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
        (statuses, right)
    });
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let verified = verified_failures(&app);
    eprintln!(
        "burst of {BURST}: {verified} verified, {} answered 401, {} answered 429",
        statuses.iter().filter(|s| **s == 401).count(),
        statuses.iter().filter(|s| **s == 429).count()
    );
    assert!(
        (1..=BURST_LIMIT).contains(&verified),
        "{verified} wrong guesses of one burst were verified (limit {BURST_LIMIT}); statuses {statuses:?}"
    );
    assert!(statuses.iter().filter(|s| **s == 401).count() <= BURST_LIMIT);
    assert_eq!(
        right.status, 429,
        "the right password inside the burst: {}",
        right.body
    );
    assert!(right.header("retry-after").is_some());
}

#[test]
fn at_most_two_password_verifications_run_at_once() {
    let app = Appliance::start();
    set_password(&app);
    const CLIENTS: u8 = 10;
    let start = Barrier::new(CLIENTS.into());
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let all: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (start, app) = (&start, &app);
                s.spawn(move || {
                    start.wait();
                    login_from(app, ip(10 + i), "a wrong password", &[]).status
                })
            })
            .collect();
        all.into_iter().map(|t| t.join().unwrap()).collect()
    });
    // Each client guessed once: no address is locked, so each was verified or, after
    // waiting its turn for 2 s, refused as busy.
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let verified = statuses.iter().filter(|s| **s == 401).count() as u64;
    assert_eq!(
        metric(&app, "appliance_console_login_verifications_total"),
        Some(verified)
    );
    let most = metric(&app, "appliance_console_login_verifications_max_concurrent").unwrap();
    assert!((1..=2).contains(&most), "{most} verifications ran at once");
    // Ten at once: the third and later found both slots taken and waited.
    let waited = metric(&app, "appliance_console_login_waited_total").unwrap();
    eprintln!(
        "{CLIENTS} clients at once: {verified} verified, at most {most} at once, {waited} waited"
    );
    assert!(waited >= 1, "no login waited for a verification slot");
}

#[test]
fn the_global_pause_spares_the_admin_token_and_known_addresses() {
    let app = Appliance::start();
    let token = app.token();
    let known = ip(50);
    assert_eq!(login_from(&app, known, &token, &[]).status, 200);
    // More than 100 attempts a minute from many addresses (5 each: no address is locked)
    // pause logins box-wide.
    let mut paused = false;
    'outer: for a in 0..30u8 {
        for _ in 0..5 {
            let r = login_from(&app, ip(100 + a), "guessing from everywhere", &[]);
            if r.status == 429 && r.body.contains("paused") {
                paused = true;
                break 'outer;
            }
            assert_eq!(r.status, 401, "{}", r.body);
        }
    }
    assert!(paused, "the global pause never started");
    set_password(&app);
    let stranger = ip(60);
    let r = login_from(&app, stranger, PASSWORD, &[]);
    assert_eq!(
        r.status, 429,
        "the pause still applies to others: {}",
        r.body
    );
    // The admin token logs in from anywhere.
    let r = login_from(&app, stranger, &token, &[]);
    assert_eq!(r.status, 200, "admin token during the pause: {}", r.body);
    // An address that logged in before logs in with the password.
    let r = login_from(&app, known, PASSWORD, &[]);
    assert_eq!(r.status, 200, "known address during the pause: {}", r.body);
    assert_eq!(r.json()["method"], "password");
    // But a wrong password from it is still wrong.
    assert_eq!(login_from(&app, known, "not the password", &[]).status, 401);
}

#[test]
fn next_after_login_never_leaves_the_box() {
    let app = Appliance::start();
    let token = app.token();
    let login_next = |next: &str| {
        let body = serde_json::json!({ "secret": token, "next": next }).to_string();
        let r = app.request(
            "POST",
            "/api/v1/login",
            &[("Content-Type", "application/json")],
            Some(&body),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["next"].as_str().map(str::to_string)
    };
    for hostile in [
        "/\\evil.example",
        "/\t/evil.example",
        "//evil.example",
        "https://evil.example/",
        "/%5Cevil.example",
        "/%2F/evil.example",
        "javascript:alert(1)",
    ] {
        assert_eq!(login_next(hostile).as_deref(), Some("/"), "{hostile:?}");
    }
    assert_eq!(
        login_next("/servers?state=discovered").as_deref(),
        Some("/servers?state=discovered")
    );
}

#[test]
fn a_trusted_proxy_names_the_client_and_nobody_else_does() {
    let proxy = ip(2);
    let app = Appliance::start_with(&format!("[console]\ntrusted_proxies = [\"{proxy}\"]\n"));
    let via_proxy = |client: &str| vec![("X-Forwarded-For", client.to_string())];
    let from = |src: IpAddr, xff: &[(&str, String)], secret: &str| {
        let h: Vec<(&str, &str)> = xff.iter().map(|(k, v)| (*k, v.as_str())).collect();
        login_from(&app, src, secret, &h)
    };
    // Through the proxy: the forwarded address is the client; lock out 198.51.100.7.
    let xff = via_proxy("198.51.100.7");
    let statuses: Vec<u16> = (0..BURST_LIMIT)
        .map(|_| from(proxy, &xff, "wrong").status)
        .collect();
    assert_eq!(statuses[..BURST_LIMIT - 1], [401; BURST_LIMIT - 1]);
    assert_eq!(statuses[BURST_LIMIT - 1], 429);
    assert_eq!(from(proxy, &xff, "wrong").status, 429);
    // Another client behind the same proxy is not locked out.
    assert_eq!(from(proxy, &via_proxy("198.51.100.8"), "wrong").status, 401);
    // The last hop is the one the proxy added: an address a client put first is ignored.
    let spoofed = via_proxy("198.51.100.8, 198.51.100.7");
    assert_eq!(from(proxy, &spoofed, "wrong").status, 429);
    let spoofed = via_proxy("198.51.100.7, 198.51.100.9");
    assert_eq!(from(proxy, &spoofed, "wrong").status, 401);
    // Anyone else's X-Forwarded-For is ignored: their own address is the client.
    let direct = ip(3);
    for i in 0..BURST_LIMIT {
        from(direct, &via_proxy(&format!("203.0.113.{i}")), "wrong");
    }
    let r = from(direct, &via_proxy("203.0.113.99"), &app.token());
    assert_eq!(r.status, 429, "{}", r.body);
    let log = plain_log(&app);
    assert!(
        log.contains("console login failed client=198.51.100.7"),
        "{log}"
    );
    assert!(
        log.contains("console login failed client=127.0.0.3"),
        "{log}"
    );
    assert!(!log.contains("client=203.0.113."), "{log}");
}
