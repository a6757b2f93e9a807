//! The console's HTTP surface against a real `appliance serve`, with plain HTTP requests:
//! what is reachable without login, session cookie flags, CSRF and Origin checks on
//! mutating calls, logout, validation errors located at the field, and login lockout.

mod console_support;

use console_support::{Appliance, Response};

const SERVER: &str = "apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: 11111111-2222-3333-4444-555555555555
spec:
  hostname: http-test
";

const CLASS: &str = "apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata:
  name: big
spec:
  qualifiers: {}
";

fn login(app: &Appliance, secret: &str) -> Response {
    let body = serde_json::json!({ "secret": secret }).to_string();
    app.request(
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        Some(&body),
    )
}

/// Logs in with the admin token; returns (cookie header value, csrf token).
fn session(app: &Appliance) -> (String, String) {
    let r = login(app, &app.token());
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    (cookie, csrf)
}

fn accepted(app: &Appliance) -> bool {
    app.ctl(
        &[
            "get",
            "server",
            "11111111-2222-3333-4444-555555555555",
            "-o",
            "json",
        ],
        None,
    )
    .contains("\"accepted\": true")
}

#[test]
fn unauthenticated_requests_are_refused_and_public_routes_stay_open() {
    let app = Appliance::start();
    app.ctl(&["apply", "-f", "-"], Some(SERVER));

    for path in [
        "/",
        "/servers",
        "/servers/x",
        "/classes",
        "/environments/default",
        "/settings",
    ] {
        let r = app.request("GET", path, &[], None);
        assert_eq!(r.status, 303, "{path}");
        assert!(
            r.header("location").unwrap().starts_with("/login"),
            "{path}"
        );
    }
    assert_eq!(
        app.request("GET", "/servers", &[], None).header("location"),
        Some("/login?next=/servers")
    );
    for (method, path) in [
        ("GET", "/api/v1/session"),
        ("GET", "/api/v1/overview"),
        ("GET", "/api/v1/servers"),
        (
            "GET",
            "/api/v1/servers/11111111-2222-3333-4444-555555555555",
        ),
        ("GET", "/api/v1/serverclasses"),
        ("GET", "/api/v1/settings"),
        ("GET", "/api/v1/events"),
        (
            "POST",
            "/api/v1/servers/11111111-2222-3333-4444-555555555555/actions/accept",
        ),
        (
            "DELETE",
            "/api/v1/servers/11111111-2222-3333-4444-555555555555",
        ),
        ("PUT", "/api/v1/serverclasses/big"),
        ("POST", "/api/v1/logout"),
    ] {
        let r = app.request(
            method,
            path,
            &[("Cookie", "appliance_session=forged")],
            None,
        );
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
    }
    assert!(!accepted(&app), "an unauthenticated accept changed nothing");

    // Public: health, the login page and the console's static assets (with ETag caching).
    assert_eq!(app.request("GET", "/healthz", &[], None).status, 200);
    let login_page = app.request("GET", "/login", &[], None);
    assert_eq!(login_page.status, 200);
    assert!(login_page.header("content-security-policy").is_some());
    let js = app.request("GET", "/console/app.js", &[], None);
    assert_eq!(js.status, 200);
    let etag = js.header("etag").unwrap().to_string();
    assert!(js.header("cache-control").unwrap().contains("max-age"));
    let again = app.request("GET", "/console/app.js", &[("If-None-Match", &etag)], None);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(js.header("content-encoding"), None, "no gzip unless asked");
    assert_eq!(js.header("vary"), Some("accept-encoding"));
    // gzip for clients that accept it: a representation of its own (own ETag); checked
    // with curl, which decompresses it to exactly the uncompressed bytes.
    let gz = app.request(
        "GET",
        "/console/app.js",
        &[("Accept-Encoding", "br, gzip;q=0.8")],
        None,
    );
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let gz_etag = gz.header("etag").unwrap().to_string();
    assert_ne!(gz_etag, etag);
    let revalidate = |tag: &str, enc: &str| {
        app.request(
            "GET",
            "/console/app.js",
            &[("If-None-Match", tag), ("Accept-Encoding", enc)],
            None,
        )
        .status
    };
    assert_eq!(revalidate(&gz_etag, "gzip"), 304);
    assert_eq!(revalidate(&gz_etag, "identity"), 200);
    assert_eq!(revalidate(&etag, "gzip;q=0"), 304);
    let url = format!("{}/console/app.js", app.base_url());
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-w", "\n%{size_download}"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, size) = text.rsplit_once('\n').unwrap();
        (body.to_string(), size.parse::<usize>().unwrap())
    };
    let (plain, plain_size) = curl(&[]);
    let (unzipped, gz_size) = curl(&["--compressed"]);
    assert_eq!(unzipped, plain, "gzip copy decompresses to the asset");
    assert!(
        gz_size * 3 < plain_size,
        "app.js: {gz_size} bytes gzip vs {plain_size}"
    );
    assert_eq!(
        app.request("GET", "/console/nope.js", &[], None).status,
        404
    );
    assert_eq!(
        app.request("GET", "/console/index.html", &[], None).status,
        404
    );
}

#[test]
fn session_csrf_origin_and_logout() {
    let app = Appliance::start();
    app.ctl(&["apply", "-f", "-"], Some(SERVER));

    let bad = login(&app, "not-the-token");
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    let not_json = app.request("POST", "/api/v1/login", &[], Some("secret=x"));
    assert_eq!(not_json.status, 415);

    let r = login(&app, &app.token());
    let set = r.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "cookie lacks {flag}: {set}");
    }
    let (cookie, csrf) = session(&app);
    let cookie = cookie.as_str();
    let ok = app.request("GET", "/api/v1/overview", &[("Cookie", cookie)], None);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["servers"], 1);
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    assert_eq!(
        app.request("GET", "/servers", &[("Cookie", cookie)], None)
            .status,
        200
    );

    let accept = "/api/v1/servers/11111111-2222-3333-4444-555555555555/actions/accept";
    // No CSRF token, a wrong one, or the right one from another origin: refused, no change.
    let r = app.request("POST", accept, &[("Cookie", cookie)], None);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = app.request(
        "POST",
        accept,
        &[("Cookie", cookie), ("X-CSRF-Token", "0000")],
        None,
    );
    assert_eq!(r.status, 403);
    let r = app.request(
        "POST",
        accept,
        &[
            ("Cookie", cookie),
            ("X-CSRF-Token", &csrf),
            ("Origin", "http://evil.example"),
        ],
        None,
    );
    assert_eq!(r.status, 403);
    let r = app.request(
        "DELETE",
        "/api/v1/servers/11111111-2222-3333-4444-555555555555",
        &[("Cookie", cookie)],
        None,
    );
    assert_eq!(r.status, 403);
    assert!(!accepted(&app), "refused calls changed nothing");

    // With the token (and a same-origin Origin, as a browser sends) it works.
    let origin = app.base_url();
    let r = app.request(
        "POST",
        accept,
        &[
            ("Cookie", cookie),
            ("X-CSRF-Token", &csrf),
            ("Origin", &origin),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(accepted(&app));
    // The servers table reflects it at once (rows follow the change feed).
    let page = app.request(
        "GET",
        "/api/v1/servers?state=accepted",
        &[("Cookie", cookie)],
        None,
    );
    assert_eq!(page.json()["page"]["matched"], 1, "{}", page.body);
    app.ctl(
        &["server", "cordon", "11111111-2222-3333-4444-555555555555"],
        None,
    );
    let page = app.request(
        "GET",
        "/api/v1/servers?state=cordoned",
        &[("Cookie", cookie)],
        None,
    );
    assert_eq!(page.json()["page"]["matched"], 1, "{}", page.body);

    // Power goes through the BMC room's Power service: a server without a BMC is refused
    // with a reason; the page says so up front. Wipe goes through the lifecycle: this server
    // is accepted (dirty, not yet wiped), so it is refused with the state machine's reason,
    // which the page shows on the disabled button. Unknown is 404.
    let r = app.request(
        "POST",
        "/api/v1/servers/11111111-2222-3333-4444-555555555555/actions/power-on",
        &[("Cookie", cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("BMC"), "{}", r.body);
    let detail = app.request(
        "GET",
        "/api/v1/servers/11111111-2222-3333-4444-555555555555",
        &[("Cookie", cookie)],
        None,
    );
    let caps = &detail.json()["capabilities"];
    assert_eq!(caps["power-on"]["enabled"], false);
    assert!(
        caps["power-on"]["reason"]
            .as_str()
            .unwrap()
            .contains("no BMC")
    );
    assert_eq!(caps["accept"]["enabled"], true);
    assert_eq!(caps["wipe"]["enabled"], false);
    let reason = caps["wipe"]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("cannot wipe a server that is accepted"),
        "{reason}"
    );
    let before = app.ctl(
        &["get", "server", "11111111-2222-3333-4444-555555555555"],
        None,
    );
    let r = app.request(
        "POST",
        "/api/v1/servers/11111111-2222-3333-4444-555555555555/actions/wipe",
        &[("Cookie", cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains(&reason), "{}", r.body);
    assert_eq!(
        app.ctl(
            &["get", "server", "11111111-2222-3333-4444-555555555555"],
            None
        ),
        before,
        "a refused wipe changed nothing"
    );
    let r = app.request(
        "POST",
        "/api/v1/servers/11111111-2222-3333-4444-555555555555/actions/explode",
        &[("Cookie", cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(r.status, 404);

    // Logout needs the CSRF token too, then the session is gone.
    assert_eq!(
        app.request("POST", "/api/v1/logout", &[("Cookie", cookie)], None)
            .status,
        403
    );
    let r = app.request(
        "POST",
        "/api/v1/logout",
        &[("Cookie", cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        app.request("GET", "/api/v1/overview", &[("Cookie", cookie)], None)
            .status,
        401
    );
}

#[test]
fn yaml_errors_are_located_and_change_nothing() {
    let app = Appliance::start();
    app.ctl(&["apply", "-f", "-"], Some(CLASS));
    let (cookie, csrf) = session(&app);
    let h = [
        ("Cookie", cookie.as_str()),
        ("X-CSRF-Token", csrf.as_str()),
        ("Content-Type", "application/json"),
    ];
    let bad = CLASS.replace("spec:\n", "spec:\n  cpus: 4\n");
    let body = serde_json::json!({ "yaml": bad }).to_string();
    let r = app.request("PUT", "/api/v1/serverclasses/big", &h, Some(&body));
    assert_eq!(r.status, 422, "{}", r.body);
    let j = r.json();
    assert_eq!(j["field"], "spec.cpus");
    assert_eq!(j["line"], 6);
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `cpus`")
    );

    let renamed =
        serde_json::json!({ "yaml": CLASS.replace("name: big", "name: other") }).to_string();
    let r = app.request("PUT", "/api/v1/serverclasses/big", &h, Some(&renamed));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["field"], "metadata.name");
    assert_eq!(r.json()["line"], 4);

    let syntax = serde_json::json!({ "yaml": "kind: [unclosed\n" }).to_string();
    assert_eq!(
        app.request("PUT", "/api/v1/serverclasses/big", &h, Some(&syntax))
            .status,
        422
    );
    assert_eq!(
        app.request("PUT", "/api/v1/serverclasses/big", &h, Some("not json"))
            .status,
        400
    );
    assert!(
        !app.ctl(&["get", "serverclass", "big", "-o", "yaml"], None)
            .contains("cpus")
    );

    let good = serde_json::json!({ "yaml": CLASS.replace("qualifiers: {}", "qualifiers: {labelSelectors: [{rack: a1}]}") }).to_string();
    let r = app.request("PUT", "/api/v1/serverclasses/big", &h, Some(&good));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"], "configured");
    assert!(
        app.ctl(&["get", "serverclass", "big", "-o", "yaml"], None)
            .contains("rack: a1")
    );
}

#[test]
fn repeated_wrong_logins_lock_the_client_out() {
    let app = Appliance::start();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(login(&app, "wrong-wrong-wrong").status);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");
    // While locked, even the right token is not looked at.
    let r = login(&app, &app.token());
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry));
}

#[test]
fn console_password_set_with_ctl_logs_in_and_ends_sessions() {
    let app = Appliance::start();
    let (cookie, _) = session(&app);
    assert_eq!(login(&app, "correct horse battery staple").status, 401);

    // Too short: refused by the box, nothing stored.
    let out = std::process::Command::new(console_support::BIN)
        .args(["ctl", "--endpoint", &app.base_url(), "--data-dir"])
        .arg(app.data_dir())
        .args(["admin", "set-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"short\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));
    // Without the admin token the console-admin gRPC service refuses.
    let out = std::process::Command::new(console_support::BIN)
        .args(["ctl", "--endpoint", &app.base_url(), "--token", "nope"])
        .args(["admin", "set-password"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));

    let said = app.ctl(
        &["admin", "set-password"],
        Some("correct horse battery staple\n"),
    );
    assert!(said.contains("1 console session(s) ended"), "{said}");
    // The session that existed before the change is gone.
    assert_eq!(
        app.request(
            "GET",
            "/api/v1/overview",
            &[("Cookie", cookie.as_str())],
            None
        )
        .status,
        401
    );
    let r = login(&app, "correct horse battery staple");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["method"], "password");
    assert_eq!(login(&app, "correct horse battery stapler").status, 401);
    // The admin token still logs in.
    assert_eq!(login(&app, &app.token()).status, 200);
}
