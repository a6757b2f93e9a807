//! Fault injection (issue 16 item 5): the data dir's filesystem fills up under a running box.
//! The data dir is a tiny tmpfs of its own (root only: `mount -t tmpfs -o size=…`), filled
//! by a file the test writes until the kernel answers ENOSPC; that is the real error a full
//! disk gives redb's writes, no injection in the box. While it is full, writes are refused
//! with a clear error (admin Apply and the agent's CreateServer alike) and the box keeps
//! answering (`/healthz`, reads); once the filler is gone, writes succeed again without a
//! restart, and after a restart every acknowledged write is there and the file opens clean.

#[path = "support/prereq.rs"]
mod prereq;
mod support;
mod synthetic_agent;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use appliance_rpc::admin::ApplyRequest;
use appliance_rpc::admin::admin_client::AdminClient;
use support::{Appliance, http_get};
use synthetic_agent::SyntheticAgent;
use tonic::metadata::MetadataValue;

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the filesystem refuses with ENOSPC; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Small pieces too, so not even a page is left.
    let byte = [0x5a_u8; 512];
    while let Ok(n) = f.write(&byte) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let _ = f.sync_all();
    written
}

fn server_doc(name: &str, pad: usize) -> String {
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\n  annotations:\n    test.pad: \"{}\"\nspec:\n  hostname: {name}\n  accepted: false\n",
        "x".repeat(pad)
    )
}

type Bearer =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Admin =
    AdminClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>>;

async fn admin(a: &Appliance) -> Admin {
    let channel = tonic::transport::Channel::from_shared(a.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: MetadataValue<_> = format!("Bearer {}", a.token()).parse().unwrap();
    let f: Bearer = Box::new(move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });
    AdminClient::with_interceptor(channel, f)
}

async fn apply(client: &mut Admin, doc: String) -> Result<(), tonic::Status> {
    tokio::time::timeout(
        Duration::from_secs(30),
        client.apply(ApplyRequest {
            documents: doc,
            dry_run: false,
        }),
    )
    .await
    .expect("an apply on a full disk answers within 30 s")
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_data_disk_refuses_writes_keeps_serving_and_recovers() {
    if let Some(why) = prereq::missing_root_or(&[], "mounting a tmpfs data dir") {
        return prereq::skip(
            "full_data_disk_refuses_writes_keeps_serving_and_recovers",
            &why,
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _mount = Tmpfs::mount(&data, "24m");
    let mut box_ = Appliance::start_in(&data);
    let mut client = admin(&box_).await;
    let mut acked: Vec<String> = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        apply(&mut client, server_doc(&name, 2000)).await.unwrap();
        acked.push(name);
    }

    // Fill the disk, then write until the box refuses: pages redb already holds free in
    // its file may take a few more writes first.
    let filler = data.join("filler");
    let filled = fill(&filler);
    eprintln!("disk_full: filler {filled} bytes");
    let mut refusal = None;
    for i in 0..400 {
        let name = format!("full-{i}");
        match apply(&mut client, server_doc(&name, 30_000)).await {
            Ok(()) => acked.push(name),
            Err(status) => {
                refusal = Some((i, status));
                break;
            }
        }
    }
    let (n, status) = refusal.expect("400 writes of 30 kB were all accepted on a full disk");
    eprintln!("disk_full: refused after {n} writes on the full disk: {status:?}");
    let message = status.message().to_ascii_lowercase();
    assert!(
        message.contains("no space left on device"),
        "the refusal does not say the disk is full: {status:?}"
    );
    // Still refused (no silent half-state), with the same clear error.
    let again = apply(&mut client, server_doc("full-again", 10))
        .await
        .unwrap_err();
    assert!(
        again
            .message()
            .to_ascii_lowercase()
            .contains("no space left on device"),
        "second write on a full disk: {again:?}"
    );

    // The service stays up: health, reads, and the agent API answering (with an error).
    assert_eq!(http_get(box_.addr, "/healthz").map(|r| r.0), Some(200));
    let listed = box_.ctl_ok(&["get", "server"]);
    for name in &acked {
        assert!(
            listed.contains(name.as_str()),
            "{name} not listed while full"
        );
    }
    let mut agent = SyntheticAgent::connect(&box_.endpoint(), 7).await.unwrap();
    let reg = tokio::time::timeout(Duration::from_secs(30), agent.register("agent-7"))
        .await
        .expect("CreateServer on a full disk answers within 30 s");
    let err = reg.expect_err("a registration was acknowledged on a full disk");
    eprintln!("disk_full: CreateServer on the full disk: {err:?}");
    assert!(
        err.message()
            .to_ascii_lowercase()
            .contains("no space left on device"),
        "CreateServer on a full disk: {err:?}"
    );
    assert!(
        box_.child.try_wait().unwrap().is_none(),
        "the box exited on a full disk: {}",
        box_.log()
    );

    // Space returns: writes succeed again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if apply(&mut client, server_doc("after-space", 10))
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "writes still refused after space returned: {}",
        box_.log()
    );
    acked.push("after-space".into());
    let reg = agent.register("agent-7").await;
    assert!(reg.is_ok(), "registration after space returned: {reg:?}");
    acked.push(synthetic_agent::uuid(7));
    let log = box_.log();
    assert!(
        log.to_ascii_lowercase().contains("no space left on device"),
        "the box's log does not name the full disk: {log}"
    );

    // No corruption: a restart opens the file and finds every acknowledged write.
    box_.stop();
    let box_ = Appliance::start_in(&data);
    let listed = box_.ctl_ok(&["get", "server"]);
    for name in &acked {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "acknowledged {name} lost after restart: {listed}"
        );
    }
    // …and nothing that was refused.
    for refused in [format!("full-{n}"), "full-again".to_string()] {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(refused.as_str())),
            "refused write {refused} is in the store: {listed}"
        );
    }
    eprintln!(
        "disk_full: {} acknowledged writes checked after restart",
        acked.len()
    );
}
