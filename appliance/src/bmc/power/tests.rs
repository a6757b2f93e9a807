//! Server-level power control: retry/backoff and conditions with a fault-injecting Bmc
//! (test-only), and the real path (Server `spec.bmc` → secrets → IPMI → ipmi_sim) for the
//! poller and the PXE+cycle hook.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::bmc::testsupport::{IpmiSim, ipmi_tools_present};
use crate::model::meta::ConditionStatus;

/// A Bmc whose calls fail as scripted, then succeed; records what it was asked.
#[derive(Debug, Default)]
struct FaultyBmc {
    script: Mutex<VecDeque<BmcError>>,
    calls: Mutex<Vec<String>>,
    attempts: AtomicUsize,
}

impl FaultyBmc {
    fn failing(errors: Vec<BmcError>) -> Arc<FaultyBmc> {
        Arc::new(FaultyBmc {
            script: Mutex::new(errors.into()),
            ..Default::default()
        })
    }

    fn next(&self, what: String) -> Result<(), BmcError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        match self.script.lock().unwrap().pop_front() {
            Some(e) => Err(e),
            None => {
                self.calls.lock().unwrap().push(what);
                Ok(())
            }
        }
    }
}

impl Bmc for FaultyBmc {
    fn endpoint(&self) -> &str {
        "faulty:623"
    }
    fn power_state(&self) -> BmcFuture<'_, PowerState> {
        Box::pin(async { self.next("status".into()).map(|_| PowerState::On) })
    }
    fn power(&self, action: PowerAction) -> BmcFuture<'_, ()> {
        Box::pin(async move { self.next(format!("power {}", action.as_str())) })
    }
    fn set_boot(&self, boot: BootOverride) -> BmcFuture<'_, ()> {
        Box::pin(async move { self.next(format!("boot {boot:?}")) })
    }
}

#[derive(Debug)]
struct Fixed(Arc<FaultyBmc>);

impl Resolve for Fixed {
    fn resolve(&self, server: &Server) -> Result<Arc<dyn Bmc>, PowerCtlError> {
        if server.spec.bmc.is_none() {
            return Err(PowerCtlError::NoBmc(server.metadata.name.clone()));
        }
        Ok(self.0.clone())
    }
}

fn timeout() -> BmcError {
    BmcError::Timeout {
        endpoint: "faulty:623".into(),
        after: Duration::from_secs(3),
        last_drop: None,
    }
}

fn store_with(server_yaml_extra: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let objects = crate::model::parse_documents(&format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nspec:\n  accepted: true\n{server_yaml_extra}"
    ))
    .unwrap();
    store.apply(objects).unwrap();
    (dir, store)
}

const BMC_SPEC: &str = "  bmc:\n    endpoint: 10.0.0.9\n    user: admin\n    pass: password\n";

fn control(store: &Store, bmc: Arc<FaultyBmc>) -> PowerControl {
    PowerControl::with_parts(
        store.clone(),
        BmcGate::new(4, Duration::from_secs(30)),
        Arc::new(Fixed(bmc)),
        RetryPolicy {
            attempts: 3,
            base: Duration::from_secs(2),
        },
        Firmware::Uefi,
    )
}

fn condition(store: &Store) -> Option<Condition> {
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    s.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == CONDITION_BMC)
}

fn power_field(store: &Store) -> Option<server::PowerState> {
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    s.status?.power
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff() {
    let (_d, store) = store_with(BMC_SPEC);
    let bmc = FaultyBmc::failing(vec![timeout(), timeout()]);
    let c = control(&store, bmc.clone());
    let start = tokio::time::Instant::now();
    c.power("s1", PowerAction::On).await.unwrap();
    // Waited 2 s then 4 s between the three attempts.
    assert_eq!(start.elapsed(), Duration::from_secs(6));
    assert_eq!(bmc.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(*bmc.calls.lock().unwrap(), vec!["power on"]);
    assert_eq!(condition(&store).unwrap().status, ConditionStatus::True);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_leave_a_condition_and_unknown_power() {
    let (_d, store) = store_with(BMC_SPEC);
    let bmc = FaultyBmc::failing(vec![timeout(), timeout(), timeout(), timeout()]);
    let c = control(&store, bmc.clone());
    let err = c.status("s1").await.unwrap_err();
    assert!(err.to_string().contains("power status failed"), "{err}");
    assert_eq!(bmc.attempts.load(Ordering::SeqCst), 3);
    let cond = condition(&store).unwrap();
    assert_eq!(cond.status, ConditionStatus::False);
    assert_eq!(cond.reason.as_deref(), Some("Timeout"));
    assert!(cond.message.unwrap().contains("faulty:623"));
    assert_eq!(power_field(&store), Some(server::PowerState::Unknown));
    // Recovery flips the condition back and records the state.
    assert_eq!(c.status("s1").await.unwrap(), PowerState::On);
    assert_eq!(condition(&store).unwrap().status, ConditionStatus::True);
    assert_eq!(power_field(&store), Some(server::PowerState::On));
}

#[tokio::test(start_paused = true)]
async fn login_failures_are_not_retried() {
    let (_d, store) = store_with(BMC_SPEC);
    let bmc = FaultyBmc::failing(vec![BmcError::Auth {
        endpoint: "faulty:623".into(),
        message: "wrong password".into(),
    }]);
    let c = control(&store, bmc.clone());
    let start = tokio::time::Instant::now();
    assert!(c.power("s1", PowerAction::Off).await.is_err());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(bmc.attempts.load(Ordering::SeqCst), 1);
    let cond = condition(&store).unwrap();
    assert_eq!(cond.reason.as_deref(), Some("AuthenticationFailed"));
}

#[tokio::test(start_paused = true)]
async fn pxe_boot_then_cycle_in_the_servers_pxe_mode() {
    let (_d, store) = store_with(&format!("{BMC_SPEC}  pxeMode: bios\n"));
    let bmc = FaultyBmc::failing(vec![]);
    let c = control(&store, bmc.clone());
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    c.pxe_boot_and_cycle(&s).await.unwrap();
    let calls = bmc.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert!(
        calls[0].contains("Pxe")
            && calls[0].contains("Bios")
            && calls[0].contains("persistent: false"),
        "{calls:?}"
    );
    assert_eq!(calls[1], "power cycle");
}

#[tokio::test]
async fn server_without_bmc_is_a_clear_error() {
    let (_d, store) = store_with("");
    let c = control(&store, FaultyBmc::failing(vec![]));
    let err = c.power("s1", PowerAction::On).await.unwrap_err();
    assert!(err.to_string().contains("has no BMC"), "{err}");
    assert!(
        c.power("nope", PowerAction::On)
            .await
            .unwrap_err()
            .to_string()
            .contains("not found")
    );
}

#[tokio::test]
async fn store_resolved_ipmi_server_is_polled_and_driven() {
    if !ipmi_tools_present("store_resolved_ipmi_server_is_polled_and_driven") {
        return;
    }
    let sim = IpmiSim::start();
    let (_d, store) = store_with("");
    // Credentials go through the secrets table, as `ctl server bmc` and auto-setup do.
    let spec = server::Bmc {
        endpoint: "127.0.0.1".into(),
        port: Some(sim.port as u32),
        ..Default::default()
    };
    store
        .set_server_bmc("s1", spec, "admin", "password")
        .unwrap();
    let config = crate::config::Config::default().bmc;
    let c = PowerControl::new(store.clone(), &config);
    assert_eq!(c.poll_once().await, 1);
    assert_eq!(power_field(&store), Some(server::PowerState::Off));
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    c.pxe_boot_and_cycle(&s).await.unwrap();
    assert_eq!(sim.state("boot").as_deref(), Some("pxe"));
    assert_eq!(sim.state("power").as_deref(), Some("1"));
    assert_eq!(c.poll_once().await, 1);
    assert_eq!(power_field(&store), Some(server::PowerState::On));
    assert_eq!(condition(&store).unwrap().status, ConditionStatus::True);
    // The negotiated suite (17 refused, 3 used) is kept in the cached Bmc: a second poll
    // does not renegotiate (no way to observe directly except it still works).
    assert_eq!(c.poll_once().await, 1);
}
