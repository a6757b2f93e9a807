//! Redfish against real sushy-emulator (fake driver, HTTPS, basic auth): power and boot
//! override checked through sushy's own API with curl; TLS trust: self-signed refused
//! unless insecure, pinned on first contact, changed certificate refused; wrong password.
//! Session expiry is tested against a small session-speaking server (sushy has no
//! SessionService): a 401 on the session token leads to one re-login.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::bmc::Bmc;
use crate::bmc::testsupport::{Sushy, sushy_present};

fn admin() -> Credentials {
    Credentials {
        username: "admin".into(),
        password: "password".into(),
    }
}

fn target(base_url: String, insecure: bool, pinned: Option<String>) -> RedfishTarget {
    RedfishTarget {
        base_url,
        insecure_tls: insecure,
        pinned_sha256: pinned,
        system_id: None,
        request_timeout: Duration::from_secs(10),
    }
}

/// Polls sushy (the fake driver applies power changes 1-11 s later) until `want`.
async fn wait_power(sushy: &Sushy, want: &str) -> Duration {
    let start = crate::clock::now();
    loop {
        let s = tokio::task::block_in_place(|| sushy.system());
        if s["PowerState"] == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sushy PowerState stayed {} (want {want})",
            s["PowerState"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_and_boot_override_checked_through_sushy() {
    let Some(emu) = sushy_present("power_and_boot_override_checked_through_sushy") else {
        return;
    };
    let sushy = tokio::task::block_in_place(|| Sushy::start(&emu));
    let pins = Arc::new(Mutex::new(Vec::<String>::new()));
    let p = pins.clone();
    let bmc = RedfishBmc::new(
        target(sushy.base_url(), true, None),
        admin(),
        Some(Arc::new(move |fp| p.lock().unwrap().push(fp))),
    )
    .unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    // Trust on first use: the certificate's fingerprint was reported once, and it is the
    // emulator's certificate.
    assert_eq!(*pins.lock().unwrap(), vec![sushy.cert_sha256()]);

    bmc.set_boot(BootOverride {
        target: BootTarget::Pxe,
        firmware: Firmware::Uefi,
        persistent: false,
    })
    .await
    .unwrap();
    let boot = tokio::task::block_in_place(|| sushy.system())["Boot"].clone();
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe", "{boot}");
    assert_eq!(boot["BootSourceOverrideMode"], "UEFI", "{boot}");
    bmc.set_boot(BootOverride {
        target: BootTarget::Disk,
        firmware: Firmware::Bios,
        persistent: true,
    })
    .await
    .unwrap();
    let boot = tokio::task::block_in_place(|| sushy.system())["Boot"].clone();
    assert_eq!(boot["BootSourceOverrideTarget"], "Hdd", "{boot}");
    assert_eq!(boot["BootSourceOverrideMode"], "Legacy", "{boot}");

    bmc.power(PowerAction::On).await.unwrap();
    let on_after = wait_power(&sushy, "On").await;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    // Cycle of a running system: sushy offers no PowerCycle, so ForceRestart.
    bmc.power(PowerAction::Cycle).await.unwrap();
    wait_power(&sushy, "On").await;
    bmc.power(PowerAction::Off).await.unwrap();
    let off_after = wait_power(&sushy, "Off").await;
    println!("sushy fake driver applied On after {on_after:?}, Off after {off_after:?}");
    assert_eq!(pins.lock().unwrap().len(), 1, "pin reported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trust_self_signed_refused_pinned_and_changed() {
    let Some(emu) = sushy_present("tls_trust_self_signed_refused_pinned_and_changed") else {
        return;
    };
    let sushy = tokio::task::block_in_place(|| Sushy::start(&emu));
    // Not insecure: a self-signed certificate is refused with a hint.
    let strict = RedfishBmc::new(target(sushy.base_url(), false, None), admin(), None).unwrap();
    let err = strict.power_state().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("insecure TLS"), "{text}");

    // Pinned to the right certificate: works even without insecure.
    let pinned = sushy.cert_sha256();
    let ok = RedfishBmc::new(
        target(sushy.base_url(), false, Some(pinned.clone())),
        admin(),
        None,
    )
    .unwrap();
    assert_eq!(ok.power_state().await.unwrap(), PowerState::Off);

    // The BMC comes back with another certificate on the same port: clear error.
    let port = sushy.port;
    drop(sushy);
    let other = tokio::task::block_in_place(|| Sushy::start_on(&emu, port));
    let bmc = RedfishBmc::new(
        target(other.base_url(), true, Some(pinned.clone())),
        admin(),
        None,
    )
    .unwrap();
    let err = bmc.power_state().await.unwrap_err();
    match &err {
        BmcError::CertificateChanged {
            pinned: p, seen, ..
        } => {
            assert_eq!(p, &pinned);
            assert_eq!(seen, &other.cert_sha256());
        }
        e => panic!("expected CertificateChanged, got {e}"),
    }
    assert!(err.to_string().contains("clear the pin"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_error() {
    let Some(emu) = sushy_present("wrong_password_is_an_auth_error") else {
        return;
    };
    let sushy = tokio::task::block_in_place(|| Sushy::start(&emu));
    let creds = Credentials {
        username: "admin".into(),
        password: "wrong".into(),
    };
    let bmc = RedfishBmc::new(target(sushy.base_url(), true, None), creds, None).unwrap();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert!(!err.to_string().contains("wrong\""), "{err}");
}

#[tokio::test]
async fn unreachable_redfish_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bmc = RedfishBmc::new(
        target(format!("https://127.0.0.1:{port}"), true, None),
        admin(),
        None,
    )
    .unwrap();
    let start = crate::clock::now();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Unreachable { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// A minimal session-speaking Redfish service over plain HTTP.
#[derive(Default)]
struct SessionService {
    token: Mutex<Option<String>>,
    logins: AtomicUsize,
}

async fn session_server(state: Arc<SessionService>) -> String {
    use axum::Json;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode as S};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};

    fn authorized(state: &SessionService, headers: &HeaderMap) -> bool {
        let sent = headers.get("X-Auth-Token").and_then(|v| v.to_str().ok());
        sent.is_some() && sent == state.token.lock().unwrap().as_deref()
    }
    let app = axum::Router::new()
        .route(
            "/redfish/v1/",
            get(|| async {
                Json(json!({"Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}}))
            }),
        )
        .route(
            "/redfish/v1/SessionService/Sessions",
            post(
                |State(s): State<Arc<SessionService>>, Json(body): Json<Value>| async move {
                    if body["UserName"] != "admin" || body["Password"] != "password" {
                        return (S::UNAUTHORIZED, HeaderMap::new()).into_response();
                    }
                    let n = s.logins.fetch_add(1, Ordering::SeqCst) + 1;
                    let token = format!("token-{n}");
                    *s.token.lock().unwrap() = Some(token.clone());
                    let mut h = HeaderMap::new();
                    h.insert("X-Auth-Token", token.parse().unwrap());
                    (S::CREATED, h).into_response()
                },
            ),
        )
        .route(
            "/redfish/v1/Systems",
            get(|State(s): State<Arc<SessionService>>, h: HeaderMap| async move {
                if !authorized(&s, &h) {
                    return S::UNAUTHORIZED.into_response();
                }
                Json(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]})).into_response()
            }),
        )
        .route(
            "/redfish/v1/Systems/1",
            get(|State(s): State<Arc<SessionService>>, h: HeaderMap| async move {
                if !authorized(&s, &h) {
                    return S::UNAUTHORIZED.into_response();
                }
                Json(json!({"PowerState": "On"})).into_response()
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn expired_session_logs_in_again() {
    let state = Arc::new(SessionService::default());
    let base = session_server(state.clone()).await;
    let bmc = RedfishBmc::new(target(base.clone(), false, None), admin(), None).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    assert_eq!(state.logins.load(Ordering::SeqCst), 1, "token reused");
    // The BMC forgets the session (expiry, BMC reboot): next call re-logs in once.
    *state.token.lock().unwrap() = None;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    assert_eq!(state.logins.load(Ordering::SeqCst), 2);

    let creds = Credentials {
        username: "admin".into(),
        password: "nope".into(),
    };
    let bad = RedfishBmc::new(target(base, false, None), creds, None).unwrap();
    let err = bad.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Auth { .. }), "{err}");
}
