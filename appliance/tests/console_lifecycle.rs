//! The console's server actions go through the lifecycle, against a real `appliance serve`
//! over plain HTTP: Accept and Cordon each record their lifecycle event (seen with
//! `appliance ctl server events`), and an illegal one (a second Cordon) is refused with the
//! state machine's reason and changes nothing (same Server revision, no new event).

mod console_support;

use std::time::Duration;

use console_support::Appliance;

const NAME: &str = "11111111-2222-3333-4444-555555555555";

const SERVER: &str = "apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: 11111111-2222-3333-4444-555555555555
spec:
  hostname: lifecycle-test
";

/// Logs in with the admin token; returns (cookie header value, csrf token).
fn session(app: &Appliance) -> (String, String) {
    let body = serde_json::json!({ "secret": app.token() }).to_string();
    let r = app.request(
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    (cookie, csrf)
}

/// The lifecycle events of the server as [event, from, to, message], oldest first.
fn events(app: &Appliance) -> Vec<[String; 4]> {
    app.ctl(&["server", "events", NAME], None)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            [f[3], f[4], f[5], &f[6..].join(" ")].map(str::to_string)
        })
        .collect()
}

fn ev(event: &str, from: &str, to: &str, message: &str) -> [String; 4] {
    [event, from, to, message].map(str::to_string)
}

/// The stored Server as JSON (spec, status and the store revision).
fn server(app: &Appliance) -> serde_json::Value {
    let out = app.ctl(&["get", "server", NAME, "-o", "json"], None);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn accept_and_cordon_are_lifecycle_transitions_and_an_illegal_one_is_refused() {
    let app = Appliance::start();
    app.ctl(&["apply", "-f", "-"], Some(SERVER));
    let (cookie, csrf) = session(&app);
    let action = |what: &str| {
        app.request(
            "POST",
            &format!("/api/v1/servers/{NAME}/actions/{what}"),
            &[("Cookie", &cookie), ("x-csrf-token", &csrf)],
            Some(""),
        )
    };
    // The lifecycle adopts a Server created by apply (asynchronously, from the change feed).
    let adopted = [ev(
        "adopt",
        "-",
        "discovered",
        "state derived from accepted/inUse/isClean",
    )];
    let deadline = appliance::clock::now() + Duration::from_secs(20);
    while events(&app) != adopted {
        assert!(appliance::clock::now() < deadline, "{:?}", events(&app));
        std::thread::sleep(Duration::from_millis(50));
    }

    let r = action("accept");
    assert_eq!(r.status, 200, "{}", r.body);
    let after_accept = events(&app);
    assert_eq!(
        after_accept[1..],
        [ev("accept", "discovered", "accepted", "operator action")],
        "accept from the console is one lifecycle transition with its event"
    );
    assert_eq!(server(&app)["status"]["state"], "accepted");

    let r = action("cordon");
    assert_eq!(r.status, 200, "{}", r.body);
    let after_cordon = events(&app);
    assert_eq!(after_cordon.len(), 3, "{after_cordon:?}");
    assert_eq!(
        after_cordon[2],
        ev("cordon", "accepted", "accepted", "operator action")
    );
    let before = server(&app);
    assert_eq!(before["spec"]["cordoned"], true);

    // One transaction per action: no second event follows later from the change feed.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(events(&app), after_cordon);

    // A second Cordon is illegal: refused with the state machine's reason, nothing changes.
    let r = action("cordon");
    assert_eq!(r.status, 409, "{}", r.body);
    let reason = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("already cordoned"), "{reason}");
    assert_eq!(events(&app), after_cordon);
    assert_eq!(server(&app), before);
}
