//! Test-only helpers: a real OpenIPMI `ipmi_sim` on loopback (config generated into a
//! temp dir, unique port, killed on drop) with a chassis-control script whose state files
//! the tests read, an `ipmitool -I lanplus` runner for cross-checks, and sushy-emulator.
//! Depends on std, tempfile and serde_json only: the integration tests include this same
//! file (`tests/ipmi_sim/mod.rs`), so there is one ipmi_sim fixture.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../../tests/support/prereq.rs"]
mod prereq;

/// A free UDP port on loopback (bound then released; good enough for tests).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Returns false (after printing why) when ipmi_sim/ipmitool are missing; under
/// `APPLIANCE_E2E=1` that fails the test instead.
pub fn ipmi_tools_present(test: &str) -> bool {
    if have("ipmi_sim") && have("ipmitool") {
        true
    } else {
        prereq::skip(
            test,
            "ipmi_sim or ipmitool not installed (scripts/setup installs openipmi ipmitool)",
        );
        false
    }
}

const SCRIPT: &str = r#"#!/bin/sh
S=$(cd "$(dirname "$0")" && pwd)/state
mc=$1; op=$2; shift 2
echo "$mc $op $*" >> $S/calls.log
case $op in
  get) for p in "$@"; do
         case $p in
           power) echo "power:$(cat $S/power 2>/dev/null || echo 0)";;
           boot)  echo "boot:$(cat $S/boot 2>/dev/null || echo default)";;
           *) echo "Invalid parameter: $p"; exit 1;;
         esac; done;;
  set) while [ -n "$1" ]; do
         p=$1; v=$2; shift 2
         case $p in
           power) echo "$v" > $S/power;;
           reset) echo reset >> $S/resets;;
           boot)  echo "$v" > $S/boot;;
           shutdown) echo 0 > $S/power;;
           identify) :;;
           *) echo "Invalid parameter: $p"; exit 1;;
         esac; done;;
  check) :;;
  *) echo "bad op $op"; exit 1;;
esac
exit 0
"#;

/// A running ipmi_sim with users `admin`/`password` (administrator; see
/// [`IpmiSim::start_with`] for another password).
pub struct IpmiSim {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl IpmiSim {
    pub fn start() -> IpmiSim {
        IpmiSim::start_with("password")
    }

    /// Starts ipmi_sim with administrator `admin` / `admin_pass`.
    pub fn start_with(admin_pass: &str) -> IpmiSim {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).unwrap();
        let script = d.join("chassis_control.sh");
        std::fs::write(&script, SCRIPT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let lan = format!(
            r#"name "bmctest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{} 0x20"
  user 1 true  ""      "test"     user  10 none md2 md5 straight
  user 2 true  "admin" "{admin_pass}" admin 10 none md2 md5 straight
"#,
            script.display()
        );
        std::fs::write(d.join("lan.conf"), lan).unwrap();
        std::fs::write(
            d.join("sim.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
        )
        .unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("sim.emu"))
            .arg("-s")
            .arg(d.join("state"))
            .arg("-n")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ipmi_sim starts");
        let sim = IpmiSim { port, dir, child };
        // Ready when ipmitool can log in.
        // About 10 s of 50 ms waits (counted, not clocked: this file reads no clock).
        for _ in 0..200 {
            if sim
                .ipmitool("admin", admin_pass, 3, &["chassis", "power", "status"])
                .0
            {
                return sim;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ipmi_sim did not come up on port {port}");
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn state(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.state_dir().join(name))
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn calls(&self) -> String {
        self.state("calls.log").unwrap_or_default()
    }

    /// Runs ipmitool against this sim; returns (success, stdout+stderr).
    pub fn ipmitool(&self, user: &str, pass: &str, suite: u8, args: &[&str]) -> (bool, String) {
        ipmitool_at(&self.endpoint(), user, pass, suite, args)
    }
}

/// Runs `ipmitool -I lanplus` against `host:port`.
pub fn ipmitool_at(
    endpoint: &str,
    user: &str,
    pass: &str,
    suite: u8,
    args: &[&str],
) -> (bool, String) {
    let (host, port) = endpoint.rsplit_once(':').unwrap();
    let out = Command::new("ipmitool")
        .args([
            "-I", "lanplus", "-H", host, "-p", port, "-U", user, "-P", pass,
        ])
        .args(["-C", &suite.to_string(), "-N", "1", "-R", "2"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ipmitool runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `sushy-emulator` is: `$SUSHY_EMULATOR`, the venv `scripts/setup` creates
/// (`/opt/sushy-tools`), or `PATH`.
pub fn sushy_emulator() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SUSHY_EMULATOR") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from("/opt/sushy-tools/bin/sushy-emulator");
    if venv.exists() {
        return Some(venv);
    }
    have("sushy-emulator").then(|| PathBuf::from("sushy-emulator"))
}

/// Returns the emulator path, or None after printing why the test skips (under
/// `APPLIANCE_E2E=1`, a failure instead).
pub fn sushy_present(test: &str) -> Option<PathBuf> {
    let p = sushy_emulator();
    if p.is_none() || !have("openssl") || !have("curl") {
        prereq::skip(
            test,
            "sushy-emulator (pip install sushy-tools; scripts/setup does it), openssl or curl missing",
        );
        return None;
    }
    p
}

pub const SUSHY_SYSTEM: &str = "11111111-2222-3333-4444-555555555501";

/// A running sushy-emulator (fake driver, HTTPS with a fresh self-signed cert, basic auth
/// admin/password) on a unique loopback port; killed on drop.
pub struct Sushy {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sushy {
    pub fn start(emulator: &std::path::Path) -> Sushy {
        Sushy::start_on(emulator, free_tcp_port())
    }

    pub fn start_on(emulator: &std::path::Path, port: u16) -> Sushy {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl req failed");
        // bcrypt (cost 4: every request verifies it) with the emulator's own Python.
        let python = emulator
            .parent()
            .map(|b| b.join("python3"))
            .filter(|p| p.exists());
        let python = python.unwrap_or_else(|| PathBuf::from("python3"));
        let out = Command::new(python)
            .args([
                "-c",
                "import bcrypt;print('admin:'+bcrypt.hashpw(b'password',bcrypt.gensalt(rounds=4)).decode())",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(d.join("htpasswd"), &out.stdout).unwrap();
        let conf = format!(
            r#"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_SSL_CERT = '{d}/cert.pem'
SUSHY_EMULATOR_SSL_KEY = '{d}/key.pem'
SUSHY_EMULATOR_AUTH_FILE = '{d}/htpasswd'
SUSHY_EMULATOR_STATE_DIR = '{d}/state'
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {{'uuid': '{SUSHY_SYSTEM}', 'name': 'node-1', 'power_state': 'Off',
     'external_notifier': False, 'nics': [{{'mac': '52:54:00:12:34:01', 'ip': '10.99.0.101'}}]}},
]
"#,
            d = d.display()
        );
        std::fs::write(d.join("emulator.conf"), conf).unwrap();
        let child = Command::new(emulator)
            .arg("--config")
            .arg(d.join("emulator.conf"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sushy.log")).unwrap())
            .spawn()
            .expect("sushy-emulator starts");
        let sushy = Sushy { port, dir, child };
        // About 20 s of 100 ms waits.
        for _ in 0..200 {
            if sushy
                .curl(&[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &sushy.url("/redfish/v1/"),
                ])
                .1
                == "200"
            {
                return sushy;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sushy-emulator did not come up on port {port}");
    }

    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// curl -k -u admin:password …: (success, stdout).
    pub fn curl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("curl")
            .args(["-sS", "-k", "-u", "admin:password", "--max-time", "5"])
            .args(args)
            .output()
            .expect("curl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The system as sushy itself reports it.
    pub fn system(&self) -> serde_json::Value {
        let (ok, body) = self.curl(&[&self.url(&format!("/redfish/v1/Systems/{SUSHY_SYSTEM}"))]);
        assert!(ok, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn cert_sha256(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(self.dir.path().join("cert.pem"))
            .output()
            .unwrap();
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&out.stdout))
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
