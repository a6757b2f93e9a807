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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_user_that_ipmitool_can_use_and_stores_it() {
    if !ipmi_tools_present("creates_a_user_that_ipmitool_can_use_and_stores_it") {
        return;
    }
    let sim = IpmiSim::start();
    let (_d, store) = store();
    let creds = auto_setup_server(
        &store,
        "s1",
        "127.0.0.1",
        sim.port,
        &admin("password"),
        quick(),
    )
    .await
    .unwrap();
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
    assert_eq!(
        store
            .resolve_credential(bmc.pass_from.as_ref().unwrap())
            .unwrap(),
        Some(creds.password.clone())
    );
    assert_eq!(
        condition(&store, CONDITION_SETUP).unwrap().status,
        ConditionStatus::True
    );

    // Running it again reuses the slot and rotates the password.
    let again = auto_setup_server(
        &store,
        "s1",
        "127.0.0.1",
        sim.port,
        &admin("password"),
        quick(),
    )
    .await
    .unwrap();
    assert_ne!(again.password, creds.password);
    let (_, list) = tokio::task::block_in_place(|| {
        sim.ipmitool("admin", "password", 3, &["user", "list", "1"])
    });
    assert_eq!(list.matches("sidero").count(), 1, "{list}");
    let (ok, _) = tokio::task::block_in_place(|| {
        sim.ipmitool(
            "sidero",
            &creds.password,
            3,
            &["chassis", "power", "status"],
        )
    });
    assert!(!ok, "old password must no longer work");
}

#[tokio::test]
async fn wrong_admin_password_leaves_a_condition_and_no_credentials() {
    if !ipmi_tools_present("wrong_admin_password_leaves_a_condition_and_no_credentials") {
        return;
    }
    let sim = IpmiSim::start();
    let (_d, store) = store();
    let err = auto_setup_server(&store, "s1", "127.0.0.1", sim.port, &admin("bad"), quick())
        .await
        .unwrap_err();
    let text = crate::error_chain(&err);
    assert!(
        text.contains("log in as the administrator") && text.contains("wrong password"),
        "{text}"
    );
    let cond = condition(&store, CONDITION_SETUP).unwrap();
    assert_eq!(cond.status, ConditionStatus::False);
    assert!(cond.message.unwrap().contains("wrong password"));
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    assert!(s.spec.bmc.is_none());
}
