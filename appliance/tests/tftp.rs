//! The TFTP service on loopback against real clients (curl, tftp-hpa, atftp) and a raw UDP
//! client for the refusal paths. Each test runs its own server on a random port with its
//! own temp root; a test whose client binary is missing skips with a printed reason. The
//! netascii test runs the real `appliance serve` (tests/support) with TFTP on a free port, as
//! does the IPv6 one: the default `[::]` listener serves ::1 and 127.0.0.1 the same bytes
//! (tftp-hpa `-6`/`-4` and curl), the IPv4 client named as IPv4 in the log and the timeline.

#[path = "support/prereq.rs"]
mod prereq;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use appliance::net::tftp::{TftpCounters, TftpServer, TftpSettings};
use appliance::protocol::tftp::transfer::Limits;
use appliance::protocol::tftp::wire::{self, ErrorCode, Packet};
use tokio::net::UdpSocket;
use tokio::process::Command;
use tokio::sync::watch;

struct Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<TftpCounters>,
}

impl Server {
    async fn start(cache_bytes: u64) -> Server {
        Server::start_with(cache_bytes, 256).await
    }

    async fn start_with(cache_bytes: u64, max_transfers: usize) -> Server {
        let root = tempfile::tempdir().unwrap();
        let settings = TftpSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            root: root.path().to_path_buf(),
            link_targets: Vec::new(),
            files: Default::default(),
            limits: Limits::default(),
            max_transfers,
            // Every client here is 127.0.0.1 (fifty of them at once below, standing for a
            // rack); the per-client cap has its own test in tftp_links.rs.
            max_transfers_per_client: 256,
            cache_bytes,
        };
        let counters = Arc::new(TftpCounters::default());
        let server = TftpServer::bind_counting(settings, counters.clone())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(rx));
        Server {
            addr,
            root,
            stop,
            task,
            counters,
        }
    }

    fn put(&self, name: &str, size: usize) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Deterministic, non-repeating-ish content so misplaced blocks are caught.
        let data: Vec<u8> = (0..size)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
            .collect();
        std::fs::write(&path, data).unwrap();
        path
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("TFTP server stops on shutdown")
            .unwrap();
    }
}

fn have(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        prereq::skip(
            "tftp",
            &format!("`{bin}` not installed (scripts/setup installs curl tftp-hpa atftp)"),
        );
    }
    found
}

async fn run(cmd: &mut Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output())
        .await
        .expect("client finished within 60 s")
        .expect("client starts")
}

fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

async fn curl(addr: SocketAddr, name: &str, out: &Path, blksize: Option<u16>) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--path-as-is", "-o"]).arg(out);
    if let Some(b) = blksize {
        cmd.args(["--tftp-blksize", &b.to_string()]);
    }
    cmd.arg(format!("tftp://{addr}/{name}"));
    run(&mut cmd).await
}

#[tokio::test]
async fn curl_fetches_with_default_and_1468_blocks() {
    if !have("curl") {
        return;
    }
    let s = Server::start(64 << 20).await;
    let src = s.put("ipxe.efi", 850_528);
    let dir = tempfile::tempdir().unwrap();
    for blksize in [None, Some(1468), Some(8192)] {
        let out = dir.path().join("out");
        let o = curl(s.addr, "ipxe.efi", &out, blksize).await;
        assert!(o.status.success(), "curl {blksize:?}: {o:?}");
        assert!(same(&src, &out), "curl {blksize:?}: content differs");
    }
    // A leading slash names the same file (PXE clients send both forms).
    let out = dir.path().join("out2");
    let o = curl(s.addr, "/ipxe.efi", &out, Some(1468)).await;
    assert!(o.status.success(), "{o:?}");
    assert!(same(&src, &out));
    s.stop().await;
}

#[tokio::test]
async fn tftp_hpa_fetches_files_and_cannot_put() {
    if !have("tftp") {
        return;
    }
    let s = Server::start(64 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, size) in [("undionly.kpxe", 74_213), ("sub/empty", 0), ("exact", 1024)] {
        let src = s.put(name, size);
        let out = dir.path().join("out");
        let o = run(Command::new("tftp")
            .args([&s.addr.ip().to_string(), &s.addr.port().to_string()])
            .args(["-m", "binary", "-c", "get", name])
            .arg(&out))
        .await;
        assert!(o.status.success(), "{name}: {o:?}");
        assert!(same(&src, &out), "{name}: content differs");
    }
    // Write requests are refused; nothing appears in the root.
    let local = dir.path().join("upload");
    std::fs::write(&local, b"hello").unwrap();
    let o = run(Command::new("tftp")
        .args([&s.addr.ip().to_string(), &s.addr.port().to_string()])
        .args(["-m", "binary", "-c", "put"])
        .arg(&local)
        .arg("uploaded"))
    .await;
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("read-only"), "tftp put output: {text}");
    assert!(!s.root.path().join("uploaded").exists());
    s.stop().await;
}

#[tokio::test]
async fn atftp_fetches_with_windowsize_8() {
    if !have("atftp") {
        return;
    }
    let s = Server::start(64 << 20).await;
    let src = s.put("ipxe.efi", 850_528);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(Command::new("atftp")
        .args([
            "--trace",
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 8",
        ])
        .args(["-g", "-r", "ipxe.efi", "-l"])
        .arg(&out)
        .args([&s.addr.ip().to_string(), &s.addr.port().to_string()]))
    .await;
    assert!(o.status.success(), "{o:?}");
    assert!(same(&src, &out), "content differs");
    // atftp's trace shows the OACK; windowsize must be granted (tftpd-hpa drops it).
    let trace =
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        trace.contains("received OACK") && trace.contains("windowsize: 8"),
        "atftp trace: {}",
        &trace[..trace.len().min(2000)]
    );
    s.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_fetches_are_all_correct() {
    if !have("curl") {
        return;
    }
    let s = Server::start(64 << 20).await;
    let src = s.put("ipxe.efi", 850_528);
    let dir = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    for i in 0..50 {
        let out = dir.path().join(format!("out{i}"));
        let addr = s.addr;
        // Mix block sizes as a rack of different firmware would.
        let blksize = [None, Some(1468), Some(1432)][i % 3];
        jobs.push(tokio::spawn(async move {
            let o = curl(addr, "ipxe.efi", &out, blksize).await;
            (o, out)
        }));
    }
    for j in jobs {
        let (o, out) = j.await.unwrap();
        assert!(o.status.success(), "{o:?}");
        assert!(same(&src, &out), "{}: content differs", out.display());
    }
    s.stop().await;
}

#[tokio::test]
async fn large_file_from_disk_wraps_block_numbers() {
    if !have("atftp") {
        return;
    }
    // No cache: the file is read from disk per window. 8-byte blocks: 70,001 blocks, so
    // block numbers pass 65535 and wrap to 0; a window of 64 keeps that quick.
    let s = Server::start(0).await;
    let src = s.put("big.bin", 8 * 70_000 + 3);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(Command::new("atftp")
        .args(["--option", "blksize 8", "--option", "windowsize 64"])
        .args(["-g", "-r", "big.bin", "-l"])
        .arg(&out)
        .args([&s.addr.ip().to_string(), &s.addr.port().to_string()]))
    .await;
    assert!(o.status.success(), "{o:?}");
    assert!(same(&src, &out), "content differs");
    s.stop().await;
}

#[tokio::test]
async fn traversal_attempts_are_refused_by_real_clients() {
    let s = Server::start(64 << 20).await;
    // A secret next to the root must stay unreachable.
    let secret = s.root.path().parent().unwrap().join(format!(
        "tftp-secret-{}",
        s.root.path().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&secret, b"secret").unwrap();
    let name = secret.file_name().unwrap().to_string_lossy().to_string();
    let dir = tempfile::tempdir().unwrap();
    if have("curl") {
        for path in [
            format!("../{name}"),
            format!("/../{name}"),
            format!("..%2f{name}"),
        ] {
            let out = dir.path().join("c");
            let o = curl(s.addr, &path, &out, None).await;
            assert!(!o.status.success(), "curl {path}: {o:?}");
            assert!(!out.exists() || std::fs::read(&out).unwrap().is_empty());
        }
    }
    if have("tftp") {
        let out = dir.path().join("t");
        let o = run(Command::new("tftp")
            .args([&s.addr.ip().to_string(), &s.addr.port().to_string()])
            .args(["-m", "binary", "-c", "get", &format!("../{name}")])
            .arg(&out))
        .await;
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(text.contains(".."), "tftp-hpa output: {text}");
        assert!(!out.exists() || std::fs::read(&out).unwrap().is_empty());
    }
    std::fs::remove_file(&secret).unwrap();
    s.stop().await;
}

/// Sends `bytes` to the listener and returns the first reply.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, SocketAddr, UdpSocket) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("a reply within 5 s")
        .unwrap();
    buf.truncate(n);
    (buf, from, sock)
}

fn rrq(op: u8, name: &[u8], mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0, op];
    v.extend_from_slice(name);
    v.push(0);
    v.extend_from_slice(mode.as_bytes());
    v.push(0);
    for (k, val) in opts {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

fn error_code(reply: &[u8]) -> ErrorCode {
    match wire::decode(reply).unwrap() {
        Packet::Error { code, .. } => code,
        p => panic!("expected ERROR, got {p:?}"),
    }
}

#[tokio::test]
async fn refusals_are_tftp_errors_and_the_server_keeps_serving() {
    let s = Server::start(64 << 20).await;
    s.put("ok.bin", 100);
    std::fs::create_dir(s.root.path().join("adir")).unwrap();
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "WRQ",
            rrq(2, b"x", "octet", &[]),
            ErrorCode::AccessViolation,
        ),
        (
            "traversal",
            rrq(1, b"../etc/passwd", "octet", &[]),
            ErrorCode::AccessViolation,
        ),
        (
            "backslash traversal",
            rrq(1, b"..\\..\\etc\\passwd", "octet", &[]),
            ErrorCode::AccessViolation,
        ),
        (
            "missing file",
            rrq(1, b"nope.efi", "octet", &[]),
            ErrorCode::FileNotFound,
        ),
        (
            "directory",
            rrq(1, b"adir", "octet", &[]),
            ErrorCode::FileNotFound,
        ),
        (
            "mail mode",
            rrq(1, b"ok.bin", "mail", &[]),
            ErrorCode::IllegalOperation,
        ),
        (
            "unknown mode",
            rrq(1, b"ok.bin", "binary", &[]),
            ErrorCode::IllegalOperation,
        ),
        ("garbage", vec![0xff; 40], ErrorCode::IllegalOperation),
        ("one byte", vec![1], ErrorCode::IllegalOperation),
        (
            "unterminated",
            b"\x00\x01ok.bin".to_vec(),
            ErrorCode::IllegalOperation,
        ),
        ("stray ACK", vec![0, 4, 0, 1], ErrorCode::IllegalOperation),
    ];
    for (name, bytes, want) in cases {
        let (reply, _, _) = exchange(s.addr, &bytes).await;
        assert_eq!(error_code(&reply), want, "{name}");
    }
    // After all that, a normal transfer still works (from the same listener).
    let (reply, from, sock) = exchange(s.addr, &rrq(1, b"ok.bin", "octet", &[])).await;
    assert_ne!(from, s.addr, "transfers use their own port");
    assert!(
        matches!(wire::decode(&reply).unwrap(), Packet::Data { block: 1, data } if data.len() == 100)
    );
    sock.send_to(&[0, 4, 0, 1], from).await.unwrap();
    let counters = s.counters.clone();
    // The transfer ends when its thread has read that ACK.
    for _ in 0..200 {
        if counters.completed.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop().await;
    // `/metrics` reads these: every refusal counted, one completed transfer of 100 bytes.
    assert_eq!(counters.refused.get(), 11);
    assert_eq!(counters.completed.get(), 1);
    assert_eq!(counters.bytes_sent.get(), 100);
    assert_eq!(counters.failed.get(), 0);
}

#[tokio::test]
async fn window_of_8_arrives_before_any_ack() {
    let s = Server::start(64 << 20).await;
    s.put("f", 1468 * 20);
    let (reply, from, sock) = exchange(
        s.addr,
        &rrq(
            1,
            b"f",
            "octet",
            &[("blksize", "1468"), ("windowsize", "8"), ("tsize", "0")],
        ),
    )
    .await;
    let Packet::Oack { options } = wire::decode(&reply).unwrap() else {
        panic!("expected OACK")
    };
    let got: Vec<(String, String)> = options.into_iter().map(|o| (o.name, o.value)).collect();
    assert_eq!(
        got,
        [("blksize", "1468"), ("tsize", "29360"), ("windowsize", "8")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    sock.send_to(&[0, 4, 0, 0], from).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    for want in 1..=8u16 {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let Packet::Data { block, data } = wire::decode(&buf[..n]).unwrap() else {
            panic!()
        };
        assert_eq!((block, data.len()), (want, 1468));
    }
    // Tell the server we saw only 1..3 (a gap): it continues with 4.
    sock.send_to(&[0, 4, 0, 3], from).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        wire::decode(&buf[..n]).unwrap(),
        Packet::Data { block: 4, .. }
    ));
    // Give up as a client: the transfer ends on our ERROR.
    sock.send_to(&[0, 5, 0, 0, b'b', b'y', b'e', 0], from)
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_request_finding_every_slot_taken_is_answered_at_once_paced_then_promoted() {
    // One full-speed slot. Client A takes it and stalls after its OACK.
    let s = Server::start_with(64 << 20, 1).await;
    s.put("f", 512 * 20 + 1);
    let ask = rrq(1, b"f", "octet", &[("blksize", "512"), ("tsize", "0")]);
    let (reply, a_port, a) = exchange(s.addr, &ask).await;
    assert!(matches!(wire::decode(&reply).unwrap(), Packet::Oack { .. }));
    // Client B asks while the slot is held: its OACK comes at once (exchange waits 5 s at
    // most; A holds the slot for the whole of it), from B's own transfer port.
    let (reply, b_port, b) = exchange(s.addr, &ask).await;
    assert!(matches!(wire::decode(&reply).unwrap(), Packet::Oack { .. }));
    assert_ne!(a_port, b_port);
    let mut buf = vec![0u8; 70_000];
    let mut recv = async |sock: &UdpSocket, want: u16| {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("block {want} within 5 s"))
            .unwrap();
        let Packet::Data { block, data } = wire::decode(&buf[..n]).unwrap() else {
            panic!("DATA expected")
        };
        assert_eq!(block, want);
        data.len()
    };
    // Paced: B's blocks keep coming while A holds the slot, one per second, so its
    // firmware never gives up; a block is never sent before its interval.
    b.send_to(&[0, 4, 0, 0], b_port).await.unwrap();
    recv(&b, 1).await;
    let t1 = appliance::clock::now();
    b.send_to(&[0, 4, 0, 1], b_port).await.unwrap();
    recv(&b, 2).await;
    assert!(
        t1.elapsed() >= Duration::from_millis(500),
        "paced: block 2 waits for its interval ({:?})",
        t1.elapsed()
    );
    assert_eq!(s.counters.paced.get(), 1);
    // A gives up: the slot goes to B, whose 19 remaining blocks now come as fast as it
    // ACKs (paced they would take 19 s).
    a.send_to(&[0, 5, 0, 0, b'b', b'y', b'e', 0], a_port)
        .await
        .unwrap();
    let rest = appliance::clock::now();
    for block in 2..=20u16 {
        b.send_to(&[0, 4, (block >> 8) as u8, block as u8], b_port)
            .await
            .unwrap();
        let len = recv(&b, block + 1).await;
        assert_eq!(len, if block == 20 { 1 } else { 512 });
    }
    assert!(
        rest.elapsed() < Duration::from_secs(10),
        "promoted to full speed once A's slot freed ({:?})",
        rest.elapsed()
    );
    b.send_to(&[0, 4, 0, 21], b_port).await.unwrap();
    let counters = s.counters.clone();
    for _ in 0..200 {
        if counters.completed.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop().await;
    assert_eq!(
        (
            counters.completed.get(),
            counters.failed.get(),
            counters.paced.get()
        ),
        (1, 1, 1)
    );
}

/// A text file with every line-end shape: LF (Unix), CR LF (DOS), a lone CR, NUL and
/// bytes above 0x7f, with line ends falling on 512-byte block boundaries.
fn text(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| match (i * 7 + i / 13) % 11 {
            0 => b'\n',
            1 => b'\r',
            2 => 0,
            3 => 0xe9,
            n => b'a' + n as u8,
        })
        .collect()
}

#[tokio::test]
async fn tftp_hpa_default_netascii_mode_gets_the_file_as_it_is() {
    if !have("tftp") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "notes.txt",
            b"first line\nDOS line\r\nlone CR\rend".to_vec(),
        ),
        // 256 LFs: exactly 512 bytes on the wire, so the final DATA block is empty.
        ("lfs.txt", vec![b'\n'; 256]),
        ("empty.txt", Vec::new()),
        ("text.txt", text(40_000)),
        // Bigger than the 1 MiB cache: read from disk, window by window.
        ("big.txt", text(1_300_000)),
    ];
    for (name, data) in &files {
        std::fs::write(root.path().join(name), data).unwrap();
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let a = tokio::task::spawn_blocking({
        let config = format!(
            "[tftp]\nlisten = \"127.0.0.1:{port}\"\nroot = \"{}\"\ncache_mib = 1\n",
            root.path().display()
        );
        move || support::Appliance::start_config(&config)
    })
    .await
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in &files {
        let out = dir.path().join(name);
        // No -m: tftp-hpa's default mode, netascii (-v prints it).
        let o = run(Command::new("tftp")
            .args(["-v", &addr.ip().to_string(), &addr.port().to_string()])
            .args(["-c", "get", name])
            .arg(&out))
        .await;
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {text}");
        assert!(text.contains("[netascii]"), "{name}: not netascii: {text}");
        assert!(
            std::fs::read(&out).unwrap() == *data,
            "{name}: content differs; {text}\n{}",
            a.log()
        );
    }
    // A netascii request gets no tsize (the wire size is not the file's), other options yes.
    let (reply, from, sock) = exchange(
        addr,
        &rrq(
            1,
            b"text.txt",
            "netascii",
            &[("tsize", "0"), ("blksize", "1024")],
        ),
    )
    .await;
    let Packet::Oack { options } = wire::decode(&reply).unwrap() else {
        panic!("expected OACK, got {reply:?}")
    };
    let got: Vec<(String, String)> = options.into_iter().map(|o| (o.name, o.value)).collect();
    assert_eq!(got, [("blksize".to_string(), "1024".to_string())]);
    sock.send_to(&[0, 5, 0, 0, b'b', b'y', b'e', 0], from)
        .await
        .unwrap();
    // Every fetch completed on the box, counting file bytes (not the longer stream).
    let want = [
        format!(
            "appliance_tftp_transfers_total{{result=\"complete\"}} {}",
            files.len()
        ),
        format!(
            "appliance_tftp_sent_bytes_total {}",
            files.iter().map(|(_, d)| d.len()).sum::<usize>()
        ),
    ];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = support::http_get(a.addr, "/metrics").unwrap().1;
        if want.iter().all(|w| metrics.contains(w.as_str())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in &want {
        assert!(metrics.contains(w.as_str()), "{w} in {metrics}");
    }
}

/// Whether this host has IPv6 on loopback (a missing one is a skip, a failure under
/// `APPLIANCE_E2E=1`).
fn have_ipv6() -> bool {
    let ok = std::net::UdpSocket::bind("[::1]:0").is_ok();
    if !ok {
        prereq::skip("tftp", "no IPv6 on loopback (::1)");
    }
    ok
}

/// `text` without its ANSI colour sequences (`ESC [ … m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// tftp-hpa (`-6` for IPv6) and curl fetch `name` from `addr` in binary mode into `out`.
async fn fetch_both(addr: SocketAddr, name: &str, dir: &Path) -> [PathBuf; 2] {
    let family = if addr.is_ipv6() { "-6" } else { "-4" };
    let hpa = dir.join(format!("hpa-{}", addr.ip()));
    let o = run(Command::new("tftp")
        .args([family, &addr.ip().to_string(), &addr.port().to_string()])
        .args(["-m", "binary", "-c", "get", name])
        .arg(&hpa))
    .await;
    assert!(o.status.success(), "tftp-hpa {addr}: {o:?}");
    let via_curl = dir.join(format!("curl-{}", addr.ip()));
    let o = curl(addr, name, &via_curl, None).await;
    assert!(o.status.success(), "curl {addr}: {o:?}");
    [hpa, via_curl]
}

/// UEFI PXE over IPv6 is handed `tftp://[box]/ipxe.efi` by DHCPv6: the real `appliance serve`
/// with the default `[tftp] listen` address (`[::]`, on a free port instead of 69) serves the
/// same bytes to tftp-hpa and curl over ::1 and over 127.0.0.1, and names the IPv4 client as
/// IPv4 (never `::ffff:127.0.0.1`) in its log.
#[tokio::test]
async fn the_default_listener_serves_ipv6_and_ipv4_clients_the_same_bytes() {
    if !have("tftp") || !have("curl") || !have_ipv6() {
        return;
    }
    let default = appliance::config::Config::default().tftp.listen;
    assert_eq!(default, "[::]:69".parse().unwrap());
    let root = tempfile::tempdir().unwrap();
    // A little over 64 KiB blocks of 512 bytes: the block number wraps on neither path, but
    // every client walks many windows.
    let data: Vec<u8> = (0..300_001usize)
        .map(|i| (i.wrapping_mul(131) ^ (i >> 7)) as u8)
        .collect();
    std::fs::write(root.path().join("ipxe.efi"), &data).unwrap();
    let port = std::net::UdpSocket::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut listen = default;
    listen.set_port(port);
    let tmp = tempfile::tempdir().unwrap();
    let a = tokio::task::spawn_blocking({
        let config = format!(
            "[tftp]\nlisten = \"{listen}\"\nroot = \"{}\"\n",
            root.path().display()
        );
        let data_dir = tmp.path().join("data");
        move || support::Appliance::start_custom(&data_dir, &config, "info", &[])
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut got = Vec::new();
    for ip in ["::1", "127.0.0.1"] {
        let addr = SocketAddr::new(ip.parse().unwrap(), port);
        got.extend(fetch_both(addr, "ipxe.efi", dir.path()).await);
    }
    for path in &got {
        assert!(
            std::fs::read(path).unwrap() == data,
            "{}: content differs\n{}",
            path.display(),
            a.log()
        );
    }
    // Four transfers completed, each logged under the client's own family.
    let mut log = String::new();
    for _ in 0..100 {
        log = plain(&a.log());
        if log.matches("TFTP sent").count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent: Vec<&str> = log.lines().filter(|l| l.contains("TFTP sent")).collect();
    assert_eq!(sent.len(), 4, "{log}");
    assert_eq!(
        sent.iter().filter(|l| l.contains("peer=[::1]:")).count(),
        2,
        "{log}"
    );
    assert_eq!(
        sent.iter()
            .filter(|l| l.contains("peer=127.0.0.1:"))
            .count(),
        2,
        "{log}"
    );
    assert!(
        !log.contains("::ffff:"),
        "an IPv4-mapped address in the log: {log}"
    );
    assert!(!log.contains("no IPv6"), "fell back to IPv4: {log}");
}

/// The boot timeline of a dual-stack listener: the IPv4 client's transfer is recorded under
/// `ip:127.0.0.1` (where DHCPv4 and `/ipxe` put that client's steps), the IPv6 client's under
/// `ip:::1`, and nothing under an IPv4-mapped address.
#[tokio::test]
async fn an_ipv4_client_of_the_dual_stack_listener_is_ipv4_in_the_timeline() {
    if !have("curl") || !have_ipv6() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("ipxe.efi"), vec![9u8; 20_000]).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = appliance::store::Store::open(&store_dir.path().join("s.redb")).unwrap();
    let (rec, writer) = appliance::timeline::new(
        store.clone(),
        64,
        Arc::default(),
        Arc::new(appliance::clock::unix_ms),
    );
    let (stop_writer, writer_rx) = watch::channel(false);
    let writer = tokio::spawn(writer.run(writer_rx));
    let settings = TftpSettings {
        listen: "[::]:0".parse().unwrap(),
        root: root.path().to_path_buf(),
        link_targets: Vec::new(),
        files: Default::default(),
        limits: Limits::default(),
        max_transfers: 8,
        max_transfers_per_client: 4,
        cache_bytes: 1 << 20,
    };
    let mut server = TftpServer::bind(settings).await.unwrap();
    assert!(server.fallback().is_none(), "{:?}", server.fallback());
    server.record_to(rec);
    let port = server.local_addr().unwrap().port();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(server.run(rx));
    let dir = tempfile::tempdir().unwrap();
    for ip in ["127.0.0.1", "::1"] {
        let out = dir.path().join(ip);
        let o = curl(
            SocketAddr::new(ip.parse().unwrap(), port),
            "ipxe.efi",
            &out,
            None,
        )
        .await;
        assert!(o.status.success(), "curl {ip}: {o:?}");
        assert_eq!(std::fs::read(&out).unwrap(), vec![9u8; 20_000]);
    }
    let mut keys = Vec::new();
    for _ in 0..100 {
        keys = store.timeline_pending().unwrap();
        if keys.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    keys.sort();
    assert_eq!(keys, ["ip:127.0.0.1", "ip:::1"]);
    for key in &keys {
        let events = store.timeline(key).unwrap();
        assert_eq!(events.len(), 1, "{key}: {events:?}");
        assert_eq!(events[0].bytes, Some(20_000), "{key}: {events:?}");
        assert_eq!(events[0].outcome, "ok", "{key}: {events:?}");
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    // The writer ends by itself once the server's recorder is gone.
    let _ = stop_writer.send(true);
    writer.await.unwrap();
}
