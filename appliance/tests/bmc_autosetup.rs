//! Auto BMC setup end to end: the real `appliance serve`, a synthetic agent on the agent
//! gRPC API reporting a real `ipmi_sim` BMC with its administrator credentials, and
//! `ipmitool -I lanplus -C 3` cross-checking the dedicated user the appliance created.
//!
//! - auto setup on: the Server gets `BMCSetup=True`, its `spec.bmc` points at a stored
//!   secret (no password in `ctl get`, none in the log), `ctl server power status` works
//!   with the generated user, a repeat report (not asked for any more) is refused and
//!   creates no second user, and ipmitool logs in with the password read from the stopped
//!   box's store;
//! - dead BMC, then wrong administrator password: `BMCSetup=False` with a clear reason,
//!   the agent API still answers and asks the agent again; a corrected report recovers;
//! - auto setup off: the box never asks for the BMC, so a BMC report is refused and
//!   nothing is stored (an operator sets the BMC);
//! - reports are accepted only from an agent boot the box asked (`setup_bmc`).

mod ipmi_sim;
mod support;

use std::time::Duration;

use appliance::model::{Kind, Object};
use appliance::store::Store;
use appliance_rpc::agent as pb;
use appliance_rpc::agent::agent_client::AgentClient;
use ipmi_sim::{ipmi_tools_present, ipmitool_as, start_sim_with};
use serde_json::Value;
use support::Appliance;
use tonic::transport::Channel;

const UUID: &str = "4c4c4544-0042-3510-8052-b4c04f4e4d01";
/// A second server, whose BMC is dead.
const DEAD: &str = "4c4c4544-0042-3510-8052-b4c04f4e4d02";
/// Distinctive, so a leak into logs or output is found by a plain search.
const ADMIN_PASS: &str = "Adm1nOnlyPw77";

fn admin_ipmitool(sim: &ipmi_sim::Sim, args: &[&str]) -> String {
    ipmitool_as(sim.port, "admin", ADMIN_PASS, args).1
}

fn hardware(uuid: &str) -> pb::HardwareInformation {
    pb::HardwareInformation {
        system: Some(pb::SystemInformation {
            uuid: uuid.to_uppercase(),
            manufacturer: "QEMU".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn register(a: &mut AgentClient<Channel>) -> pb::CreateServerResponse {
    register_as(a, UUID).await
}

async fn register_as(a: &mut AgentClient<Channel>, uuid: &str) -> pb::CreateServerResponse {
    a.create_server(pb::CreateServerRequest {
        hardware: Some(hardware(uuid)),
        hostname: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
}

async fn report(
    a: &mut AgentClient<Channel>,
    ip: &str,
    port: u16,
    user: &str,
    pass: &str,
) -> Duration {
    report_as(a, UUID, ip, port, user, pass).await
}

async fn report_as(
    a: &mut AgentClient<Channel>,
    uuid: &str,
    ip: &str,
    port: u16,
    user: &str,
    pass: &str,
) -> Duration {
    let start = appliance::clock::now();
    a.update_bmc_info(pb::UpdateBmcInfoRequest {
        uuid: uuid.into(),
        bmc_info: Some(pb::BmcInfo {
            ip: ip.into(),
            port: port.into(),
            user: user.into(),
            pass: pass.into(),
        }),
    })
    .await
    .unwrap();
    start.elapsed()
}

fn server(app: &Appliance) -> (String, Value) {
    server_of(app, UUID)
}

fn server_of(app: &Appliance, uuid: &str) -> (String, Value) {
    let yaml = app.ctl_ok(&["get", "server", uuid, "-o", "yaml"]);
    let v = yaml_serde::from_str(&yaml).unwrap();
    (yaml, v)
}

fn setup_condition(v: &Value) -> Option<Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "BMCSetup")
        .cloned()
}

/// Polls `ctl get` until the BMCSetup condition has `reason` (≤ 30 s); returns it and the
/// time waited.
async fn wait_setup(app: &Appliance, reason: &str) -> (Value, Duration) {
    let start = appliance::clock::now();
    loop {
        let (_, v) = server(app);
        if let Some(c) = setup_condition(&v)
            && c["reason"] == reason
        {
            return (c, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no BMCSetup condition with reason {reason}: {:?}",
            setup_condition(&v)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The BMC credentials the stopped box stored for the server (user, pass), and whether the
/// Server object itself holds any password.
fn stored_credentials(app: &Appliance) -> ((String, String), bool) {
    let store = Store::open(&app.data_dir.join("state.redb")).unwrap();
    let creds = store.server_bmc_secret(UUID).unwrap().unwrap();
    let Object::Server(s) = store.get(Kind::Server, UUID).unwrap().unwrap().object else {
        panic!("not a server")
    };
    let json = serde_json::to_string(&s).unwrap();
    (
        creds.clone(),
        json.contains(&creds.1) || json.contains(ADMIN_PASS),
    )
}

async fn accepted_agent(app: &Appliance) -> AgentClient<Channel> {
    accepted_agent_as(app, UUID).await
}

/// An agent whose server was registered, then accepted (its next registration is asked for
/// the BMC when auto setup is on).
async fn accepted_agent_as(app: &Appliance, uuid: &str) -> AgentClient<Channel> {
    let mut a = AgentClient::connect(app.endpoint()).await.unwrap();
    let r = register_as(&mut a, uuid).await;
    assert!(!r.setup_bmc, "not accepted yet: no BMC setup");
    app.ctl_ok(&["server", "accept", uuid]);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_report_creates_a_dedicated_bmc_user() {
    if !ipmi_tools_present("agent_report_creates_a_dedicated_bmc_user") {
        return;
    }
    let sim = start_sim_with(ADMIN_PASS);
    let tmp = tempfile::tempdir().unwrap();
    let mut app = Appliance::start_custom(&tmp.path().join("data"), "", "info", &[]);
    let mut a = accepted_agent(&app).await;
    assert!(
        register(&mut a).await.setup_bmc,
        "accepted, no BMC: agent asked for it"
    );

    // Sidero's agent reports the address first, then the credentials.
    let t_ip = report(&mut a, "127.0.0.1", sim.port, "", "").await;
    let t_creds = report(&mut a, "", 0, "admin", ADMIN_PASS).await;
    let (cond, waited) = wait_setup(&app, "UserCreated").await;
    assert_eq!(cond["status"], "True", "{cond}");
    println!(
        "UpdateBMCInfo answered in {t_ip:?} (ip) and {t_creds:?} (credentials); BMCSetup=True {waited:?} after the credentials"
    );
    let (shown, v) = server(&app);
    let bmc = &v["spec"]["bmc"];
    assert_eq!(bmc["endpoint"], "127.0.0.1");
    assert_eq!(bmc["port"], u64::from(sim.port));
    assert_eq!(
        bmc["passFrom"]["secretKeyRef"]["name"],
        format!("{UUID}-bmc")
    );
    assert!(
        bmc.get("pass").is_none() && bmc.get("user").is_none(),
        "{shown}"
    );
    assert!(!shown.contains(ADMIN_PASS), "{shown}");
    // Power control uses the stored user.
    let out = app.ctl_ok(&["server", "power", "status", UUID]);
    assert!(out.contains("power: "), "{out}");
    assert!(
        !register(&mut a).await.setup_bmc,
        "BMC set up: not asked again"
    );

    // A repeat report, not asked for any more, is refused: no second user, nothing changes.
    let spec = server(&app).1["spec"].clone();
    let e = a
        .update_bmc_info(pb::UpdateBmcInfoRequest {
            uuid: UUID.into(),
            bmc_info: Some(pb::BmcInfo {
                ip: "127.0.0.1".into(),
                port: sim.port.into(),
                user: "admin".into(),
                pass: ADMIN_PASS.into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("setup_bmc"), "{e}");
    assert_eq!(server(&app).1["spec"], spec);
    let list = admin_ipmitool(&sim, &["user", "list", "1"]);
    assert_eq!(list.matches("sidero").count(), 1, "{list}");
    let line = list.lines().find(|l| l.contains("sidero")).unwrap();
    assert!(line.contains("ADMINISTRATOR"), "{line}");

    let log = app.stop_and_log();
    let ((user, pass), inline) = stored_credentials(&app);
    assert_eq!(user, "sidero");
    assert!(!inline, "no password inside the Server object");
    assert!(
        !shown.contains(&pass),
        "ctl get must not show the generated password"
    );
    assert!(log.contains("BMC user set up"), "{log}");
    assert!(
        !log.contains(&pass) && !log.contains(ADMIN_PASS),
        "credentials in the log: {log}"
    );
    let (ok, out) = ipmitool_as(sim.port, &user, &pass, &["chassis", "power", "status"]);
    assert!(ok && out.contains("Chassis Power is"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_password_sets_a_clear_condition_and_recovers() {
    if !ipmi_tools_present("wrong_admin_password_sets_a_clear_condition_and_recovers") {
        return;
    }
    let sim = start_sim_with(ADMIN_PASS);
    let tmp = tempfile::tempdir().unwrap();
    let mut app = Appliance::start_custom(&tmp.path().join("data"), "", "info", &[]);
    // A dead BMC (nothing on that port): the RPC answers at once, the setup fails on its
    // task with a clear reason.
    let mut d = accepted_agent_as(&app, DEAD).await;
    assert!(register_as(&mut d, DEAD).await.setup_bmc);
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let answered = report_as(&mut d, DEAD, "127.0.0.1", dead, "admin", ADMIN_PASS).await;
    let start = appliance::clock::now();
    let cond = loop {
        let (_, v) = server_of(&app, DEAD);
        if let Some(c) = setup_condition(&v) {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no BMCSetup condition"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "dead BMC: UpdateBMCInfo answered in {answered:?}; BMCSetup=False after {:?}",
        start.elapsed()
    );
    assert_eq!(cond["status"], "False", "{cond}");
    assert!(
        cond["reason"] == "Unreachable" || cond["reason"] == "Timeout",
        "{cond}"
    );
    d.heartbeat(pb::HeartbeatRequest { uuid: DEAD.into() })
        .await
        .unwrap();

    let mut a = accepted_agent(&app).await;
    assert!(register(&mut a).await.setup_bmc);
    report(&mut a, "127.0.0.1", sim.port, "admin", "Wr0ngPassw0rd").await;
    let (cond, _) = wait_setup(&app, "AdminLoginFailed").await;
    assert_eq!(cond["status"], "False", "{cond}");
    let message = cond["message"].as_str().unwrap();
    assert!(message.contains("wrong password"), "{message}");
    assert!(!message.contains("Wr0ngPassw0rd"), "{message}");
    // The agent API still answers, and asks the agent for its BMC again.
    a.heartbeat(pb::HeartbeatRequest { uuid: UUID.into() })
        .await
        .unwrap();
    assert!(register(&mut a).await.setup_bmc);
    let (_, v) = server(&app);
    assert!(v["spec"]["bmc"].get("passFrom").is_none(), "nothing stored");
    let out = app.ctl(&["server", "power", "status", UUID]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("credentials missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!admin_ipmitool(&sim, &["user", "list", "1"]).contains("sidero"));

    // The corrected report recovers.
    report(&mut a, "127.0.0.1", sim.port, "admin", ADMIN_PASS).await;
    let (cond, _) = wait_setup(&app, "UserCreated").await;
    assert_eq!(cond["status"], "True", "{cond}");
    app.ctl_ok(&["server", "power", "status", UUID]);
    let log = app.stop_and_log();
    assert!(log.contains("BMC setup failed"), "{log}");
    assert!(
        !log.contains("Wr0ngPassw0rd") && !log.contains(ADMIN_PASS),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_setup_the_box_never_asks_and_bmc_reports_are_refused() {
    if !ipmi_tools_present("without_auto_setup_the_box_never_asks_and_bmc_reports_are_refused") {
        return;
    }
    let sim = start_sim_with(ADMIN_PASS);
    let tmp = tempfile::tempdir().unwrap();
    let mut app = Appliance::start_custom(
        &tmp.path().join("data"),
        "[bmc]\nauto_setup = false\n",
        "info",
        &[],
    );
    let mut a = accepted_agent(&app).await;
    assert!(!register(&mut a).await.setup_bmc, "auto setup off");
    let (before, _) = server(&app);
    let e = a
        .update_bmc_info(pb::UpdateBmcInfoRequest {
            uuid: UUID.into(),
            bmc_info: Some(pb::BmcInfo {
                ip: "127.0.0.1".into(),
                port: sim.port.into(),
                user: "admin".into(),
                pass: ADMIN_PASS.into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("setup_bmc"), "{e}");
    let (shown, v) = server(&app);
    assert_eq!(shown, before, "a refused report changed the server");
    assert!(v["spec"].get("bmc").is_none(), "{shown}");
    assert!(!admin_ipmitool(&sim, &["user", "list", "1"]).contains("sidero"));
    let log = app.stop_and_log();
    assert!(!log.contains(ADMIN_PASS), "{log}");
    let store = Store::open(&app.data_dir.join("state.redb")).unwrap();
    assert!(
        store.server_bmc_secret(UUID).unwrap().is_none(),
        "a secret was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bmc_reports_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let app = Appliance::start_custom(&tmp.path().join("data"), "", "warn", &[]);
    let mut a = accepted_agent(&app).await;
    assert!(register(&mut a).await.setup_bmc);
    let before = app.ctl_ok(&["get", "server", UUID, "-o", "yaml"]);
    let cases = [
        (
            pb::BmcInfo {
                ip: "999.1.1.1".into(),
                ..Default::default()
            },
            "not an IP address",
        ),
        (
            pb::BmcInfo {
                ip: "127.0.0.1".into(),
                port: 70000,
                ..Default::default()
            },
            "not a UDP port",
        ),
        (
            pb::BmcInfo {
                ip: "127.0.0.1".into(),
                user: "admin".into(),
                ..Default::default()
            },
            "go together",
        ),
        (
            pb::BmcInfo {
                ip: "127.0.0.1".into(),
                user: "ad\nmin".into(),
                pass: "x".into(),
                ..Default::default()
            },
            "control characters",
        ),
        (
            pb::BmcInfo {
                user: "admin".into(),
                pass: "x".into(),
                ..Default::default()
            },
            "not known yet",
        ),
    ];
    for (info, want) in cases {
        let e = a
            .update_bmc_info(pb::UpdateBmcInfoRequest {
                uuid: UUID.into(),
                bmc_info: Some(info),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(
            e.message().contains(want),
            "{} should contain {want}",
            e.message()
        );
    }
    let e = a
        .update_bmc_info(pb::UpdateBmcInfoRequest {
            uuid: "4c4c4544-0042-3510-8052-b4c04f4e4dff".into(),
            bmc_info: Some(pb::BmcInfo {
                ip: "127.0.0.1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    assert_eq!(app.ctl_ok(&["get", "server", UUID, "-o", "yaml"]), before);
}
