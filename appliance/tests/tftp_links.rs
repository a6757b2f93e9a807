//! What a planted symbolic link or a greedy client can get from the boot file service, with
//! the real `appliance serve` (tests/support, TFTP on a free port) and real clients: tftp-hpa
//! and HTTP `/tftp/`. Links are followed only to regular files inside the root or the
//! allowed link targets (default: Debian's iPXE files), never as directories; one client
//! address cannot take every TFTP slot.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::Appliance;

const SECRET: &str = "root:$6$planted-secret-hash:19000:0:99999:7:::\n";

fn have(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The box with TFTP on a free loopback port serving `root`; `extra` goes into `[tftp]`.
fn start(root: &Path, extra: &str) -> (Appliance, SocketAddr) {
    let port = free_udp_port();
    let config = format!(
        "[tftp]\nlisten = \"127.0.0.1:{port}\"\nroot = \"{}\"\n{extra}",
        root.display()
    );
    let app = Appliance::start_config(&config);
    (app, format!("127.0.0.1:{port}").parse().unwrap())
}

/// `tftp-hpa get`: the file's bytes, or the client's output when it got none.
fn tftp_get(addr: SocketAddr, name: &str) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = Command::new("tftp")
        .args([&addr.ip().to_string(), &addr.port().to_string()])
        .args(["-m", "binary", "-c", "get", name])
        .arg(&out)
        .output()
        .expect("tftp runs");
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    match std::fs::read(&out) {
        Ok(bytes) if !bytes.is_empty() && o.status.success() && text.trim().is_empty() => Ok(bytes),
        _ => Err(text),
    }
}

/// HTTP GET of `path`: (status, body bytes).
fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, buf[split + 4..].to_vec())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn planted_links_are_refused_over_tftp_and_http() {
    assert!(have("tftp"), "tftp-hpa missing (apt-get install tftp-hpa)");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("ok.bin"), b"boot file").unwrap();
    // An /etc/shadow stand-in outside the root, and links planted in the root.
    std::fs::write(outside.join("shadow"), SECRET).unwrap();
    symlink(outside.join("shadow"), root.join("shadow")).unwrap();
    symlink("../outside/shadow", root.join("relative-shadow")).unwrap();
    symlink(&outside, root.join("etc")).unwrap();
    symlink("ok.bin", root.join("inside.efi")).unwrap();
    // Debian's layout: the default allowed link targets are its iPXE files.
    let debian = Path::new("/usr/lib/ipxe/undionly.kpxe").is_file()
        && Path::new("/usr/lib/ipxe/ipxe.efi").is_file();
    if debian {
        symlink("/usr/lib/ipxe/undionly.kpxe", root.join("undionly.kpxe")).unwrap();
        // /usr/lib/ipxe/ipxe.efi is itself a link to /boot/ipxe.efi.
        symlink("/usr/lib/ipxe/ipxe.efi", root.join("ipxe.efi")).unwrap();
    } else {
        println!("NOTE: Debian's ipxe package is missing; its links are not checked");
    }
    let (app, tftp) = start(&root, "");

    for name in ["shadow", "relative-shadow", "etc/shadow"] {
        match tftp_get(tftp, name) {
            Ok(bytes) => panic!("TFTP served {name}: {:?}", String::from_utf8_lossy(&bytes)),
            Err(text) => assert!(
                text.contains("Access violation") || text.contains("denied"),
                "TFTP {name}: {text}"
            ),
        }
        let (code, body) = http_get(app.addr, &format!("/tftp/{name}"));
        assert_eq!(code, 403, "HTTP /tftp/{name}");
        assert!(
            !contains(&body, "planted-secret"),
            "HTTP /tftp/{name} leaked it"
        );
    }
    assert_eq!(tftp_get(tftp, "inside.efi").unwrap(), b"boot file");
    assert_eq!(
        http_get(app.addr, "/tftp/inside.efi"),
        (200, b"boot file".to_vec())
    );
    if debian {
        for (name, real) in [
            ("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe"),
            ("ipxe.efi", "/usr/lib/ipxe/ipxe.efi"),
        ] {
            let want = std::fs::read(real).unwrap();
            assert!(tftp_get(tftp, name).unwrap() == want, "TFTP {name}");
            assert!(
                http_get(app.addr, &format!("/tftp/{name}")) == (200, want),
                "HTTP {name}"
            );
        }
    }
    let log = app.log();
    assert!(!log.contains("planted-secret"), "{log}");
}

#[test]
fn configured_link_targets_are_followed_and_nothing_else() {
    assert!(have("tftp"), "tftp-hpa missing (apt-get install tftp-hpa)");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let allowed = tmp.path().join("firmware");
    let other = tmp.path().join("other");
    for d in [&root, &allowed, &other] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(allowed.join("fw.efi"), b"firmware").unwrap();
    std::fs::write(other.join("fw.efi"), SECRET).unwrap();
    symlink(allowed.join("fw.efi"), root.join("fw.efi")).unwrap();
    symlink(other.join("fw.efi"), root.join("other.efi")).unwrap();
    symlink(&allowed, root.join("fwdir")).unwrap();
    let (app, tftp) = start(
        &root,
        &format!("link_targets = [\"{}\"]\n", allowed.display()),
    );
    assert_eq!(tftp_get(tftp, "fw.efi").unwrap(), b"firmware");
    assert_eq!(
        http_get(app.addr, "/tftp/fw.efi"),
        (200, b"firmware".to_vec())
    );
    assert!(tftp_get(tftp, "other.efi").is_err());
    assert_eq!(http_get(app.addr, "/tftp/other.efi").0, 403);
    // Even into an allowed directory, a directory link is not followed.
    assert!(tftp_get(tftp, "fwdir/fw.efi").is_err());
    assert_eq!(http_get(app.addr, "/tftp/fwdir/fw.efi").0, 403);
}

#[test]
fn one_client_cannot_take_every_tftp_slot() {
    assert!(have("tftp"), "tftp-hpa missing (apt-get install tftp-hpa)");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(root.join("ok.bin"), b"boot file").unwrap();
    // Six slots in all; a transfer whose client never ACKs holds its slot for 3 s x 10
    // retries, longer than tftp-hpa waits before giving up (25 s).
    let (_app, tftp) = start(
        &root,
        "max_transfers = 6\nretransmit_ms = 3000\nmax_retries = 10\n",
    );
    // A greedy client on 127.0.0.2 asks for six transfers from six ports and never ACKs.
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(b"big.bin\0octet\0");
    let hogs: Vec<UdpSocket> = (0..6)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.2:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.send_to(&rrq, tftp).unwrap();
            s
        })
        .collect();
    let mut buf = [0u8; 1024];
    let started = hogs
        .iter()
        .filter(|s| s.recv_from(&mut buf).is_ok())
        .count();
    assert_eq!(started, 4, "transfers the box began for one client address");
    // Another client is still served while the greedy one holds its slots.
    assert_eq!(tftp_get(tftp, "ok.bin").unwrap(), b"boot file");
}
