//! The GRUB chain over the real TFTP service on loopback, fetched with curl (a real TFTP
//! client): the fixed `grub/grub.cfg`, a per-client config from the same boot decision as
//! `/ipxe` (same agent arguments and boot token; an operator's argument with spaces and
//! quotes that iPXE must refuse stays one quoted GRUB word), a refusal GRUB can print,
//! Environment files and a `tftp.files` name (the signed shim's slot) beside the root.

#[path = "support/prereq.rs"]
mod prereq;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use appliance::boot::BootFromDiskMethod;
use appliance::boot::answer::Decider;
use appliance::boot::assets::AssetDirs;
use appliance::boot::grub::GrubFiles;
use appliance::net::tftp::{RenderedSlot, TftpServer, TftpSettings};
use appliance::protocol::tftp::transfer::Limits;
use appliance::store::Store;
use tokio::process::Command;
use tokio::sync::watch;

const MAC: &str = "52:54:00:12:34:56";
const UUID: &str = "4c4c4544-0051-3410-8051-b5c04f375931";

struct Box_ {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    decider: Arc<Decider>,
}

async fn start(extra_agent_args: Vec<String>) -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tftp");
    std::fs::create_dir_all(&root).unwrap();
    let shim = dir.path().join("elsewhere/shimx64.efi.signed");
    std::fs::create_dir_all(shim.parent().unwrap()).unwrap();
    std::fs::write(&shim, b"pretend signed shim").unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let decider = Arc::new(Decider {
        store,
        dirs: AssetDirs::new(dir.path(), None),
        default_method: BootFromDiskMethod::IpxeExit,
        extra_agent_args,
        downloads: true,
        siderolink_server: None,
        first_contact: Arc::new(appliance::api::first_contact::FirstContact::new(
            &appliance::config::Config::default().agent,
        )),
    });
    let settings = TftpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        root,
        link_targets: Vec::new(),
        files: [("shimx64.efi".to_string(), shim)].into_iter().collect(),
        limits: Limits::default(),
        max_transfers: 16,
        max_transfers_per_client: 4,
        cache_bytes: 1 << 20,
    };
    let mut server = TftpServer::bind(settings).await.unwrap();
    let slot = RenderedSlot::default();
    server.render_from(slot.clone());
    slot.set(Arc::new(GrubFiles {
        decider: decider.clone(),
        advertise: None,
        http_port: 8081,
        timeline: Default::default(),
    }))
    .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(server.run(rx));
    Box_ {
        addr,
        dir,
        stop,
        decider,
    }
}

fn put_agent(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let env = dir.join("env/agent-amd64");
    std::fs::create_dir_all(&env).unwrap();
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let initrd: Vec<u8> = (0..70_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(env.join("vmlinuz"), &kernel).unwrap();
    std::fs::write(env.join("initramfs.xz"), &initrd).unwrap();
    (kernel, initrd)
}

/// The file's bytes, or curl's failure output.
async fn fetch(addr: SocketAddr, name: &str) -> Result<Vec<u8>, String> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let o = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("curl")
            .args(["-s", "-S", "--path-as-is", "-o"])
            .arg(out.path())
            .arg(format!("tftp://{addr}/{name}"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl within 60 s")
    .expect("curl starts");
    if o.status.success() {
        Ok(std::fs::read(out.path()).unwrap())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn have_curl() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("curl").is_file()));
    if !found {
        prereq::skip(
            "grub_tftp",
            "`curl` not installed (scripts/setup installs it)",
        );
    }
    found
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn grub_chain_config_client_config_and_files_over_tftp() {
    if !have_curl() {
        return;
    }
    let b = start(vec!["panic=0".into()]).await;

    // The fixed config GRUB reads from its prefix.
    let chain = text(fetch(b.addr, "grub/grub.cfg").await.unwrap());
    assert_eq!(chain, appliance::protocol::grub::chain_config());
    // GRUB asks for grub/x86_64-efi/grub.cfg first: not found, so it reads grub/grub.cfg.
    assert!(fetch(b.addr, "grub/x86_64-efi/grub.cfg").await.is_err());

    // Agent files missing: a refusal GRUB prints, naming why (and the loop asks again).
    let client = format!("grub/client/x86_64/{MAC}/{UUID}");
    let refused = text(fetch(b.addr, &client).await.unwrap());
    assert!(
        refused.contains(
            "echo 'appliance: environment \"agent-amd64\" is not ready: agent files missing"
        ),
        "{refused}"
    );
    assert!(!refused.contains("linux "), "{refused}");

    // With the agent files: the agent's kernel args as /ipxe builds them, and a boot token
    // bound to this UUID and MAC that the agent API accepts.
    let (kernel, initrd) = put_agent(b.dir.path());
    let cfg = text(fetch(b.addr, &client).await.unwrap());
    let linux = cfg.lines().find(|l| l.starts_with("linux ")).unwrap();
    assert!(
        linux.starts_with("linux '/env/agent-amd64/vmlinuz' 'init_on_alloc=1' "),
        "{linux}"
    );
    for arg in [
        "'console=ttyS0'",
        "'initrd=initramfs.xz'",
        "'panic=0'",
        &format!("'sidero.mac={MAC}'"),
        "'sidero.endpoint=127.0.0.1:8081'",
    ] {
        assert!(linux.contains(arg), "{arg} missing: {linux}");
    }
    assert!(
        !linux.contains("'panic=30'"),
        "extra args merge by key: {linux}"
    );
    let token = linux
        .split_whitespace()
        .last()
        .and_then(|w| w.trim_matches('\'').strip_prefix("appliance.token="))
        .expect("the boot token goes last");
    let mac: appliance::model::MacAddr = MAC.parse().unwrap();
    assert!(
        b.decider
            .first_contact
            .check_token(token, UUID, &[mac.0])
            .is_ok(),
        "the token is bound to this UUID and MAC"
    );
    assert!(
        cfg.contains("\ninitrd '/env/agent-amd64/initramfs.xz'\nboot\n"),
        "{cfg}"
    );

    // The kernel and initrd GRUB then loads, over the same TFTP server.
    assert_eq!(
        fetch(b.addr, "env/agent-amd64/vmlinuz").await.unwrap(),
        kernel
    );
    assert_eq!(
        fetch(b.addr, "env/agent-amd64/initramfs.xz").await.unwrap(),
        initrd
    );
    assert!(fetch(b.addr, "env/agent-amd64/secret").await.is_err());
    assert!(
        fetch(b.addr, "env/..%2f..%2fstate.redb/vmlinuz")
            .await
            .is_err()
    );

    // arm64 GRUB asks for the arm64 agent; an unknown CPU gets nothing.
    let arm = text(
        fetch(b.addr, &format!("grub/client/arm64/{MAC}/{UUID}"))
            .await
            .unwrap(),
    );
    assert!(arm.contains("agent-arm64"), "{arm}");
    assert!(
        fetch(b.addr, &format!("grub/client/i386/{MAC}/{UUID}"))
            .await
            .is_err()
    );

    // A `tftp.files` name is served from its own path, outside the root.
    assert_eq!(
        fetch(b.addr, "shimx64.efi").await.unwrap(),
        b"pretend signed shim"
    );
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn hostile_extra_arg_stays_one_grub_word() {
    if !have_curl() {
        return;
    }
    // iPXE has no quoting, so /ipxe refuses this argument; GRUB quotes it.
    let hostile = "x='a b'; reboot $prefix\" \\".to_string();
    let b = start(vec![hostile.clone()]).await;
    put_agent(b.dir.path());
    let cfg = text(
        fetch(b.addr, &format!("grub/client/x86_64/{MAC}/none"))
            .await
            .unwrap(),
    );
    let linux = cfg.lines().find(|l| l.starts_with("linux ")).unwrap();
    assert!(
        linux.contains(" 'x='\\''a b'\\''; reboot $prefix\" \\' "),
        "{linux}"
    );
    assert_eq!(
        cfg.lines().filter(|l| l.contains("reboot")).count(),
        1,
        "{cfg}"
    );
    let _ = b.stop.send(true);
}
