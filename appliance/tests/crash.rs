//! Crash test: a real `appliance serve` takes a stream of apply writes (admin gRPC from
//! several concurrent writers, plus `appliance ctl apply` processes) and is `kill -9`ed at
//! random points, many times. After every restart each acknowledged write must be there,
//! and the redb file must open cleanly.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appliance::model::Kind;
use appliance::store::Store;
use appliance_rpc::admin::ApplyRequest;
use appliance_rpc::admin::admin_client::AdminClient;
use support::Appliance;
use tonic::metadata::MetadataValue;

const ROUNDS: u64 = 20;
const GRPC_WRITERS: usize = 4;

fn server_doc(name: &str, hostname: &str) -> String {
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  hostname: {hostname}\n  accepted: true\n"
    )
}

/// Applies objects until the first failure (the box was killed); records every ack.
async fn grpc_writer(
    endpoint: String,
    token: String,
    prefix: String,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) {
    let Ok(channel) = tonic::transport::Channel::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
    else {
        return;
    };
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut client = AdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });
    for i in 0.. {
        let name = format!("{prefix}-{i}");
        let hostname = format!("h{i}");
        let req = ApplyRequest {
            documents: server_doc(&name, &hostname),
            dry_run: false,
        };
        match client.apply(req).await {
            Ok(_) => acked.lock().unwrap().push((name, hostname)),
            Err(_) => return,
        }
    }
}

/// name -> spec.hostname from `ctl get server -o json` (an array, or one object).
fn hostnames(json: &str) -> std::collections::BTreeMap<String, String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let items = match v {
        serde_json::Value::Array(a) => a,
        one => vec![one],
    };
    items
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o["spec"]["hostname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let ctl_acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut total_checked = 0;
    for round in 0..ROUNDS {
        let mut a = Appliance::start_in(&data_dir);
        let token = a.token();

        // Everything acknowledged so far must be there after the previous kill.
        let expected: Vec<_> = acked.lock().unwrap().clone();
        let stored = hostnames(&a.ctl_ok(&["get", "server", "-o", "json"]));
        for (name, hostname) in &expected {
            assert_eq!(
                stored.get(name),
                Some(hostname),
                "round {round}: acknowledged server {name} lost or changed"
            );
        }
        let classes = a.ctl_ok(&["get", "serverclass"]);
        for class in ctl_acked.lock().unwrap().iter() {
            assert!(
                classes.lines().any(|l| l.trim() == class),
                "round {round}: acknowledged class {class} lost"
            );
        }
        total_checked = expected.len();

        let mut writers = Vec::new();
        for w in 0..GRPC_WRITERS {
            writers.push(tokio::spawn(grpc_writer(
                a.endpoint(),
                token.clone(),
                format!("crash-r{round}-w{w}"),
                acked.clone(),
            )));
        }
        // One writer through the CLI, as an operator would.
        let endpoint = a.endpoint();
        let dir = data_dir.clone();
        let ctl_acked2 = ctl_acked.clone();
        let ctl_writer = std::thread::spawn(move || {
            for i in 0.. {
                let name = format!("crash-class-r{round}-{i}");
                let doc = format!(
                    "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: {name}\nspec: {{}}\n"
                );
                let mut child = std::process::Command::new(support::BIN)
                    .args(["ctl", "--endpoint", &endpoint, "--data-dir"])
                    .arg(&dir)
                    .args(["apply", "-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                use std::io::Write;
                let _ = child.stdin.take().unwrap().write_all(doc.as_bytes());
                if child.wait().unwrap().success() {
                    ctl_acked2.lock().unwrap().push(name);
                } else {
                    return;
                }
            }
        });

        tokio::time::sleep(Duration::from_millis(100 + next() % 500)).await;
        a.kill9();
        for w in writers {
            w.await.unwrap();
        }
        ctl_writer.join().unwrap();
    }

    // The file opens cleanly in-process too, and holds exactly the acknowledged servers
    // (plus, possibly, writes committed just before the kill whose ack was lost).
    let store = Store::open(&data_dir.join("state.redb")).unwrap();
    let stored: BTreeSet<String> = store
        .list(Kind::Server)
        .unwrap()
        .into_iter()
        .map(|s| s.object.name().to_string())
        .collect();
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 100,
        "too few writes to mean anything: {}",
        acked.len()
    );
    for (name, _) in acked.iter() {
        assert!(stored.contains(name), "{name} lost in the final check");
    }
    eprintln!(
        "crash test: {ROUNDS} kill -9 rounds, {} acknowledged gRPC writes, {} ctl writes, {} checked before the last round",
        acked.len(),
        ctl_acked.lock().unwrap().len(),
        total_checked
    );
}
