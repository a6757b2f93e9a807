//! Shared by the SideroLink netns tests: nodes in network namespaces (names start with
//! `sl`) joined to the root namespace by veths, running Debian's `wireguard-go` configured
//! with `wg` as Talos configures its link, and a TCP sender (python3) inside them. Root only.
#![allow(dead_code)]

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use appliance::reconcile::Lifecycle;
use appliance::reconcile::apply::{AllocateInput, NewServer};
use appliance::reconcile::lifecycle::Event;

pub const PY: &str = "/usr/bin/python3";

pub fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run_in(ns: &str, cmd: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(cmd);
    run(&full)
}

/// Namespaces (and the veths inside, whose peers go with them) and wireguard-go
/// processes, removed on drop.
#[derive(Default)]
pub struct Lab {
    namespaces: Vec<String>,
    procs: Vec<Child>,
    sockets: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

pub struct Node {
    pub ns: String,
    pub ifname: String,
    pub private: String,
    pub public: String,
}

impl Lab {
    /// A namespace joined to the root namespace by a veth: `198.18.<net>.2` inside,
    /// `198.18.<net>.1` on the root side (where the endpoint listens).
    pub fn node(&mut self, tag: &str, net: u8) -> Node {
        let ns = format!("sl{tag}");
        let (outside, inside) = (format!("slo{tag}"), format!("sli{tag}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run_in(&ns, &["ip", "link", "set", "lo", "up"]);
        run(&[
            "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        run(&["ip", "link", "set", &inside, "netns", &ns]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("198.18.{net}.1/30"),
            "dev",
            &outside,
        ]);
        run(&["ip", "link", "set", &outside, "up"]);
        run_in(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("198.18.{net}.2/30"),
                "dev",
                &inside,
            ],
        );
        run_in(&ns, &["ip", "link", "set", &inside, "up"]);
        let private = run(&["wg", "genkey"]).trim().to_string();
        let public = {
            use std::io::Write;
            let mut c = Command::new("wg")
                .arg("pubkey")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin
                .take()
                .unwrap()
                .write_all(private.as_bytes())
                .unwrap();
            String::from_utf8(c.wait_with_output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_string()
        };
        Node {
            ns,
            ifname: format!("wg{tag}"),
            private,
            public,
        }
    }

    /// Starts wireguard-go in the node's namespace as Talos configures its link: peer =
    /// the box, AllowedIPs = the server address /128, keepalive 25 s, MTU 1280.
    pub fn wireguard(
        &mut self,
        n: &Node,
        dir: &Path,
        server_key: &str,
        endpoint: SocketAddr,
        addr: &str,
        server: Ipv6Addr,
    ) {
        let log = std::fs::File::create(dir.join(format!("{}.log", n.ifname))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &n.ns, "wireguard-go", "-f", &n.ifname])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.push(child);
        self.sockets
            .push(format!("/var/run/wireguard/{}.sock", n.ifname));
        let sock = format!("/var/run/wireguard/{}.sock", n.ifname);
        for _ in 0..100 {
            if Path::new(&sock).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let key_file = dir.join(format!("{}.key", n.ifname));
        std::fs::write(&key_file, &n.private).unwrap();
        run_in(
            &n.ns,
            &[
                "wg",
                "set",
                &n.ifname,
                "private-key",
                key_file.to_str().unwrap(),
                "peer",
                server_key,
                "endpoint",
                &endpoint.to_string(),
                "allowed-ips",
                &format!("{server}/128"),
                "persistent-keepalive",
                "25",
            ],
        );
        run_in(
            &n.ns,
            &["ip", "addr", "add", addr, "dev", &n.ifname, "nodad"],
        );
        run_in(
            &n.ns,
            &["ip", "link", "set", &n.ifname, "mtu", "1280", "up"],
        );
    }
}

/// Sends `payload` over TCP to `[to]:4001` from inside `ns` (source address `from` when
/// given); true if the connection was made.
pub fn send_tcp(ns: &str, from: Option<Ipv6Addr>, to: Ipv6Addr, payload: &str) -> bool {
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_INET6)\ns.settimeout(4)\n{}\ntry:\n    s.connect(('{to}',4001))\nexcept OSError:\n    sys.exit(3)\ns.sendall(sys.argv[1].encode())\ns.close()\n",
        from.map(|a| format!("s.bind(('{a}',0))"))
            .unwrap_or_default()
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, PY, "-c", &script, payload])
        .output()
        .unwrap();
    out.status.success()
}

/// Registers, accepts, wipes and allocates `name` through the real lifecycle.
pub async fn allocate(lc: &Lifecycle, name: &str) {
    lc.register(NewServer {
        name: name.into(),
        hostname: None,
        hardware: serde_json::json!({}),
    })
    .await
    .unwrap();
    for e in [Event::Accept, Event::WipeStarted, Event::Wiped] {
        lc.fire(name, e, "test").await.unwrap();
    }
    lc.allocate(AllocateInput {
        server_class: None,
        server: Some(name.into()),
        owner: format!("default/{name}"),
        bootstrap_data: String::new(),
        config_patches: vec![],
        environment: None,
    })
    .await
    .unwrap();
}
