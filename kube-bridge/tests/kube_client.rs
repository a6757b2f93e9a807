//! kube-rs, the bridge's client, against the in-test API server: CRDs and typed Sidero
//! objects by server-side apply (the Rust types read back what the server stored), a 409 for
//! a conflicting field manager, status by apply on the status subresource, and kube-runtime's
//! watcher through an outage: the server goes down, changes happen and its history is
//! compacted, it comes back, the watcher's resumed watch gets 410 Gone, it re-lists and ends up
//! with exactly the server's objects.

mod support;

use futures_util::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube_bridge::crd::metal::{Server, ServerSpec, ServerStatus};
use std::collections::BTreeSet;
use std::time::Duration;
use support::apiserver::ApiServer;
use support::apiserver::store::{FieldValidation, Write};

async fn client(server: &ApiServer, dir: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig(dir)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn server_named(name: &str, hostname: &str) -> Server {
    let mut s = Server::new(
        name,
        ServerSpec {
            hostname: Some(hostname.into()),
            accepted: true,
            ..Default::default()
        },
    );
    s.metadata.labels = Some([("box".to_string(), "rack-12".to_string())].into());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_applies_watches_and_relists_after_410() {
    let server = ApiServer::start(20);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("kube-bridge");
    for c in kube_bridge::crd::all() {
        let name = c.metadata.name.clone().unwrap();
        crds.patch(&name, &pp, &Patch::Apply(&c)).await.unwrap();
    }
    let servers: Api<Server> = Api::all(client.clone());
    for i in 0..3 {
        let s = server_named(&format!("s{i}"), &format!("node-{i}"));
        let stored = servers
            .patch(&format!("s{i}"), &pp, &Patch::Apply(&s))
            .await
            .unwrap();
        assert_eq!(
            stored.spec, s.spec,
            "the typed object reads back what it applied"
        );
        assert!(stored.metadata.managed_fields.is_some_and(|m| {
            m.iter()
                .any(|f| f.manager.as_deref() == Some("kube-bridge"))
        }));
    }
    // Another manager changing an owned field conflicts; forced, it takes the field.
    let other = PatchParams::apply("appliance");
    let err = servers
        .patch(
            "s0",
            &other,
            &Patch::Apply(&server_named("s0", "elsewhere")),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected a 409, got {other:?}"),
    }
    servers
        .patch(
            "s0",
            &other.clone().force(),
            &Patch::Apply(&server_named("s0", "elsewhere")),
        )
        .await
        .unwrap();
    // Status by apply on the status subresource (the box's side).
    let mut status = Server::new("s1", ServerSpec::default());
    status.spec = ServerSpec::default();
    status.status = Some(ServerStatus {
        power: Some("on".into()),
        is_clean: true,
        ready: true,
        ..Default::default()
    });
    let status_patch = serde_json::json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server", "metadata": {"name": "s1"}, "status": status.status});
    let after = servers
        .patch_status(
            "s1",
            &PatchParams::apply("appliance"),
            &Patch::Apply(&status_patch),
        )
        .await
        .unwrap();
    assert_eq!(
        after.status.as_ref().and_then(|s| s.power.as_deref()),
        Some("on")
    );
    assert_eq!(
        after.spec.hostname.as_deref(),
        Some("node-1"),
        "a status write leaves the spec alone"
    );

    // The watcher: initial list, then live changes.
    let cfg = watcher::Config::default().labels("box=rack-12").timeout(1);
    let mut stream = watcher(servers.clone(), cfg).default_backoff().boxed();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut relists = 0;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("watch event")
            .unwrap()
    };
    loop {
        match next().await {
            Ok(watcher::Event::Init) => seen.clear(),
            Ok(watcher::Event::InitApply(s)) => {
                seen.insert(s.metadata.name.unwrap());
            }
            Ok(watcher::Event::InitDone) => {
                relists += 1;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["s0", "s1", "s2"].map(String::from).into());
    servers
        .create(&PostParams::default(), &server_named("s3", "node-3"))
        .await
        .unwrap();
    loop {
        if let Ok(watcher::Event::Apply(s)) = next().await
            && s.metadata.name.as_deref() == Some("s3")
        {
            break;
        }
    }
    // Outage: down, then 30 changes behind the watcher's back (more than the 20 retained),
    // history compacted, back up.
    server.set_down(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.with(|st| {
        let t = st.find("metal.sidero.dev", "v1alpha2", "servers").unwrap();
        let w = Write {
            manager: "kube-bridge",
            validation: FieldValidation::Strict,
            dry_run: false,
        };
        for i in 4..34 {
            let obj = serde_json::to_value(server_named(&format!("s{i}"), "late")).unwrap();
            st.create(&t, "", obj, w, None).unwrap();
        }
        st.delete(&t, "", "s2", false).unwrap();
    });
    server.set_down(false);
    // The resumed watch from the old revision gets 410; the watcher re-lists.
    loop {
        match next().await {
            Ok(watcher::Event::Init) => seen.clear(),
            Ok(watcher::Event::InitApply(s)) => {
                seen.insert(s.metadata.name.unwrap());
            }
            Ok(watcher::Event::InitDone) => {
                relists += 1;
                break;
            }
            Ok(_) | Err(_) => {} // errors while down; nothing else changes meanwhile
        }
    }
    assert_eq!(relists, 2, "one initial list, one re-list after 410");
    assert!(
        server.with(|st| st.gone_answers) >= 1,
        "the resumed watch was answered 410 Gone"
    );
    let expected: BTreeSet<String> = server.with(|st| {
        st.objects
            .keys()
            .filter(|(g, _, _, _)| g == "metal.sidero.dev")
            .map(|(_, _, _, n)| n.clone())
            .collect()
    });
    assert_eq!(
        seen, expected,
        "after the re-list the watcher holds exactly the server's objects"
    );
    assert_eq!(seen.len(), 33);
    assert!(!seen.contains("s2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_finalizer_holds_a_metalmachine_until_cleanup() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    use kube_bridge::crd::capi::{MetalMachine, MetalMachineSpec};
    use std::sync::Arc;

    const FINALIZER: &str = "metalmachine.infrastructure.cluster.x-k8s.io";
    let server = ApiServer::start(100);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for c in kube_bridge::crd::all() {
        crds.create(&PostParams::default(), &c).await.unwrap();
    }
    let mms: Api<MetalMachine> = Api::namespaced(client.clone(), "default");
    let mm = MetalMachine::new("mm-1", MetalMachineSpec::default());
    let created = mms.create(&PostParams::default(), &mm).await.unwrap();
    // Reconcile helper: runs `finalizer` once on the current object; reports whether cleanup ran.
    let reconcile = async |obj: MetalMachine| -> bool {
        let mut cleaned = false;
        finalizer(&mms, FINALIZER, Arc::new(obj), async |e| {
            if let Event::Cleanup(_) = e {
                cleaned = true;
            }
            Ok::<_, std::io::Error>(Action::await_change())
        })
        .await
        .unwrap();
        cleaned
    };
    // First pass adds the finalizer (JSON patch: test + add).
    assert!(!reconcile(created).await);
    let got = mms.get("mm-1").await.unwrap();
    assert_eq!(
        got.metadata.finalizers.as_deref(),
        Some(&[FINALIZER.to_string()][..])
    );
    assert!(!reconcile(got).await, "an applied object is not cleaned up");
    // Delete: held by the finalizer with a deletionTimestamp.
    mms.delete("mm-1", &Default::default()).await.unwrap();
    let deleting = mms.get("mm-1").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    // Cleanup runs, then the finalizer goes (JSON patch: test + remove) and so does the object.
    assert!(reconcile(deleting).await);
    match mms.get("mm-1").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("expected NotFound, got {other:?}"),
    }
}
