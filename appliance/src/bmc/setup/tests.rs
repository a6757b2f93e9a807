//! Auto setup against a real ipmi_sim: the user it creates can log in with ipmitool, the
//! credentials land in the store (not in the Server), and a wrong admin password leaves a
//! clear condition.

use std::time::Duration;

use super::*;
use crate::bmc::testsupport::{IpmiSim, ipmi_tools_present};
use crate::model::meta::ConditionStatus;
use crate::model::{Kind, Object};

fn admin(pass: &str) -> Credentials {
    Credentials {
        username: "admin".into(),
        password: pass.into(),
    }
}

fn quick() -> IpmiTimeouts {
    // Generous: ipmi_sim forks its chassis script per command and CI machines are busy.
    IpmiTimeouts {
        attempt: Duration::from_millis(1000),
        retries: 2,
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let objects = crate::model::parse_documents(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nspec:\n  accepted: true\n",
    )
    .unwrap();
    store.apply(objects).unwrap();
    (dir, store)
}

fn condition(store: &Store, type_: &str) -> Option<crate::model::meta::Condition> {
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    s.status?.conditions.into_iter().find(|c| c.type_ == type_)
}

#[test]
fn generated_passwords_are_16_alphanumerics_and_differ() {
    let a = generate_password();
    let b = generate_password();
    assert_eq!(a.len(), 16);
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
    assert_ne!(a, b);
}

fn gate() -> BmcGate {
    BmcGate::new(4, Duration::from_secs(30))
}

async fn run(store: &Store, port: u16, admin: &Credentials) -> Result<Setup, SetupError> {
    auto_setup_server(store, &gate(), "s1", "127.0.0.1", port, admin, quick()).await
}

/// The id of the `sidero` user in `ipmitool user list` output.
fn sidero_id(list: &str) -> String {
    let line = list.lines().find(|l| l.contains("sidero")).unwrap();
    line.split_whitespace().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_user_that_ipmitool_can_use_and_stores_it() {
    if !ipmi_tools_present("creates_a_user_that_ipmitool_can_use_and_stores_it") {
        return;
    }
    let sim = IpmiSim::start();
    let (_d, store) = store();
    let t = crate::clock::now();
    let setup = run(&store, sim.port, &admin("password")).await.unwrap();
    println!(
        "auto setup (create + verify + store) took {:?}",
        t.elapsed()
    );
    assert_eq!(setup.outcome, SetupOutcome::Created);
    let creds = setup.creds;
    assert_eq!(creds.username, "sidero");
    let (ok, out) = tokio::task::block_in_place(|| {
        sim.ipmitool(
            "sidero",
            &creds.password,
            3,
            &["chassis", "power", "status"],
        )
    });
    assert!(ok && out.contains("Chassis Power is"), "{out}");
    let (_, list) = tokio::task::block_in_place(|| {
        sim.ipmitool("admin", "password", 3, &["user", "list", "1"])
    });
    let line = list.lines().find(|l| l.contains("sidero")).unwrap();
    assert!(line.contains("ADMINISTRATOR"), "{line}");
    // Stored: the Server refers to a secret, and the power path uses it.
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    let json = serde_json::to_string(&s).unwrap();
    assert!(!json.contains(&creds.password));
    let bmc = s.spec.bmc.unwrap();
    assert!(bmc.user.is_none() && bmc.pass.is_none());
    assert_eq!(
        store
            .resolve_credential(bmc.pass_from.as_ref().unwrap())
            .unwrap(),
        Some(creds.password.clone())
    );
    let cond = condition(&store, CONDITION_SETUP).unwrap();
    assert_eq!(cond.status, ConditionStatus::True);
    assert_eq!(cond.reason.as_deref(), Some("UserCreated"));

    // A repeat report is idempotent: the stored user still works, so nothing changes.
    let revision = store.revision().unwrap();
    let t = crate::clock::now();
    let again = run(&store, sim.port, &admin("password")).await.unwrap();
    println!("repeat report (verify stored user) took {:?}", t.elapsed());
    assert_eq!(again.outcome, SetupOutcome::Reused);
    assert_eq!(again.creds.password, creds.password);
    let (_, list) = tokio::task::block_in_place(|| {
        sim.ipmitool("admin", "password", 3, &["user", "list", "1"])
    });
    assert_eq!(list.matches("sidero").count(), 1, "{list}");
    assert_eq!(
        condition(&store, CONDITION_SETUP)
            .unwrap()
            .reason
            .as_deref(),
        Some("UserReused")
    );
    assert_eq!(
        store.revision().unwrap(),
        revision + 1,
        "only the condition changed"
    );

    // Someone changed the user's password on the BMC: the next report resets it in the
    // same slot (no second user) and the old password stops working.
    let id = sidero_id(&list);
    let (ok, out) = tokio::task::block_in_place(|| {
        sim.ipmitool(
            "admin",
            "password",
            3,
            &["user", "set", "password", &id, "Changed12345"],
        )
    });
    assert!(ok, "{out}");
    let third = run(&store, sim.port, &admin("password")).await.unwrap();
    assert_eq!(third.outcome, SetupOutcome::Created);
    assert_ne!(third.creds.password, creds.password);
    let (_, list) = tokio::task::block_in_place(|| {
        sim.ipmitool("admin", "password", 3, &["user", "list", "1"])
    });
    assert_eq!(list.matches("sidero").count(), 1, "{list}");
    assert_eq!(sidero_id(&list), id);
    let (ok, _) = tokio::task::block_in_place(|| {
        sim.ipmitool(
            "sidero",
            &creds.password,
            3,
            &["chassis", "power", "status"],
        )
    });
    assert!(!ok, "old password must no longer work");
    assert_eq!(
        store.server_bmc_secret("s1").unwrap().unwrap().1,
        third.creds.password
    );

    // An agent that set the user up itself (Sidero's in-band setup) reports `sidero`: it is
    // verified and stored as reported.
    let reported = third.creds.clone();
    let r = run(&store, sim.port, &reported).await.unwrap();
    assert_eq!(r.outcome, SetupOutcome::Reported);
}

#[tokio::test]
async fn wrong_admin_password_leaves_a_condition_and_no_credentials() {
    if !ipmi_tools_present("wrong_admin_password_leaves_a_condition_and_no_credentials") {
        return;
    }
    let sim = IpmiSim::start();
    let (_d, store) = store();
    let err = run(&store, sim.port, &admin("bad")).await.unwrap_err();
    let text = crate::error_chain(&err);
    assert!(
        text.contains("log in as the administrator") && text.contains("wrong password"),
        "{text}"
    );
    let cond = condition(&store, CONDITION_SETUP).unwrap();
    assert_eq!(cond.status, ConditionStatus::False);
    assert_eq!(cond.reason.as_deref(), Some("AdminLoginFailed"));
    assert!(cond.message.unwrap().contains("wrong password"));
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    assert!(s.spec.bmc.is_none());
}

#[tokio::test]
async fn an_unreachable_bmc_gives_a_clear_condition() {
    // Nothing listens on this UDP port: ICMP port unreachable (or silence) ends it.
    let port = crate::bmc::testsupport::free_udp_port();
    let (_d, store) = store();
    let err = run(&store, port, &admin("password")).await.unwrap_err();
    let cond = condition(&store, CONDITION_SETUP).unwrap();
    assert_eq!(cond.status, ConditionStatus::False);
    let reason = cond.reason.unwrap();
    assert!(
        reason == "Unreachable" || reason == "Timeout",
        "{reason}: {}",
        crate::error_chain(&err)
    );
}
