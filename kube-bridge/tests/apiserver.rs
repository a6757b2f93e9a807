//! The in-test API server's protocol, byte for byte over HTTP: watch replay from a
//! resourceVersion, bookmarks, 410 Gone from a compacted revision, optimistic concurrency
//! (PUT with a stale resourceVersion → 409), Leases as leader election uses them, server-side
//! apply conflict details, and refusals of what it does not implement.

mod support;

use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::http::{Watch, get, request};

const SERVERS: &str = "/apis/metal.sidero.dev/v1alpha2/servers";

fn with_crds() -> ApiServer {
    let server = ApiServer::start(50);
    for c in kube_bridge::crd::all() {
        let (code, _, body) = request(
            server.addr,
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "application/json",
            &serde_json::to_string(&c).unwrap(),
        );
        assert_eq!(code, 201, "{body}");
    }
    server
}

fn server_obj(name: &str, hostname: &str) -> String {
    json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server", "metadata": {"name": name}, "spec": {"hostname": hostname}}).to_string()
}

fn rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn watch_replays_from_a_resource_version_then_follows_with_bookmarks() {
    let server = with_crds();
    let (code, _, a) = request(
        server.addr,
        "POST",
        SERVERS,
        "application/json",
        &server_obj("a", "one"),
    );
    assert_eq!(code, 201);
    let (_, list) = get(server.addr, SERVERS);
    let list_rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Changes after the list: a watch from the list's revision sees exactly them, in order.
    request(
        server.addr,
        "POST",
        SERVERS,
        "application/json",
        &server_obj("b", "two"),
    );
    let (_, _, b2) = request(
        server.addr,
        "PATCH",
        &format!("{SERVERS}/a"),
        "application/merge-patch+json",
        r#"{"spec":{"hostname":"uno"}}"#,
    );
    let mut w = Watch::open(
        server.addr,
        &format!("{SERVERS}?watch=true&resourceVersion={list_rv}&allowWatchBookmarks=true"),
    );
    let e1 = w.next_change().unwrap();
    assert_eq!(
        (
            e1["type"].as_str(),
            e1["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    let e2 = w.next_change().unwrap();
    assert_eq!(e2["type"], "MODIFIED");
    assert_eq!(e2["object"]["spec"]["hostname"], "uno");
    assert_eq!(rv(&e2["object"]), rv(&b2));
    assert!(rv(&b2) > rv(&a));
    // Then live: a delete arrives; bookmarks carry the latest revision.
    request(
        server.addr,
        "DELETE",
        &format!("{SERVERS}/b"),
        "application/json",
        "",
    );
    let e3 = w.next_change().unwrap();
    assert_eq!(
        (
            e3["type"].as_str(),
            e3["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("b"))
    );
    let bm = loop {
        let e = w.next().unwrap();
        if e["type"] == "BOOKMARK" {
            break e;
        }
    };
    assert_eq!(rv(&bm["object"]), rv(&e3["object"]));
    assert_eq!(bm["object"]["kind"], "Server");
    // A label-selected watch from 0 lists the current matching objects as ADDED.
    request(
        server.addr,
        "PATCH",
        &format!("{SERVERS}/a"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"box":"r12"}}}"#,
    );
    let mut w = Watch::open(
        server.addr,
        &format!("{SERVERS}?watch=1&resourceVersion=0&labelSelector=box%3Dr12&timeoutSeconds=1"),
    );
    let e = w.next_change().unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("a"))
    );
    assert!(
        w.next_change().is_none(),
        "the watch ends after timeoutSeconds"
    );
}

#[test]
fn a_watch_from_a_compacted_revision_gets_410_gone() {
    let server = with_crds();
    request(
        server.addr,
        "POST",
        SERVERS,
        "application/json",
        &server_obj("a", "one"),
    );
    let (_, list) = get(server.addr, SERVERS);
    let old_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    // More changes than the server retains (50).
    for i in 0..60 {
        let patch = format!(r#"{{"spec":{{"hostname":"h{i}"}}}}"#);
        let (code, _, _) = request(
            server.addr,
            "PATCH",
            &format!("{SERVERS}/a"),
            "application/merge-patch+json",
            &patch,
        );
        assert_eq!(code, 200);
    }
    let mut w = Watch::open(
        server.addr,
        &format!("{SERVERS}?watch=true&resourceVersion={old_rv}"),
    );
    let e = w.next().unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(w.next().is_none(), "the stream ends after the error");
    assert_eq!(server.with(|s| s.gone_answers), 1);
    // A fresh list gives a revision that watches fine.
    let (_, list) = get(server.addr, SERVERS);
    let now = list["metadata"]["resourceVersion"].as_str().unwrap();
    request(
        server.addr,
        "PATCH",
        &format!("{SERVERS}/a"),
        "application/merge-patch+json",
        r#"{"spec":{"hostname":"last"}}"#,
    );
    let mut w = Watch::open(
        server.addr,
        &format!("{SERVERS}?watch=true&resourceVersion={now}"),
    );
    assert_eq!(
        w.next_change().unwrap()["object"]["spec"]["hostname"],
        "last"
    );
    // compact() drops everything: any earlier revision is gone.
    server.with(|s| s.compact());
    let mut w = Watch::open(
        server.addr,
        &format!("{SERVERS}?watch=true&resourceVersion={now}"),
    );
    assert_eq!(w.next().unwrap()["object"]["code"], 410);
}

#[test]
fn put_with_a_stale_resource_version_conflicts_and_leases_elect_one_leader() {
    let server = ApiServer::start(100);
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-bridge-system/leases";
    // The namespace must exist first.
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "rack-12"},
        "spec": {"holderIdentity": "bridge-a", "leaseDurationSeconds": 15, "acquireTime": "2025-12-05T16:00:00.000000Z", "renewTime": "2025-12-05T16:00:00.000000Z", "leaseTransitions": 0}});
    let (code, _, body) = request(
        server.addr,
        "POST",
        leases,
        "application/json",
        &lease.to_string(),
    );
    assert_eq!(
        (code, body["reason"].as_str()),
        (404, Some("NotFound")),
        "{body}"
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-bridge-system"}});
    assert_eq!(
        request(
            server.addr,
            "POST",
            "/api/v1/namespaces",
            "application/json",
            &ns.to_string()
        )
        .0,
        201
    );
    let (code, _, created) = request(
        server.addr,
        "POST",
        leases,
        "application/json",
        &lease.to_string(),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        request(
            server.addr,
            "POST",
            leases,
            "application/json",
            &lease.to_string()
        )
        .2["reason"],
        "AlreadyExists"
    );
    // Two candidates read the same revision and both try to take over: one wins, one 409s.
    let take = |who: &str| {
        let mut l = created.clone();
        l["spec"]["holderIdentity"] = json!(who);
        l["spec"]["leaseTransitions"] = json!(1);
        request(
            server.addr,
            "PUT",
            &format!("{leases}/rack-12"),
            "application/json",
            &l.to_string(),
        )
    };
    let (c1, _, won) = take("bridge-b");
    let (c2, _, lost) = take("bridge-c");
    assert_eq!((c1, c2), (200, 409));
    assert_eq!(lost["reason"], "Conflict");
    assert!(
        lost["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{lost}"
    );
    assert_eq!(won["spec"]["holderIdentity"], "bridge-b");
    assert!(rv(&won) > rv(&created));
    let (_, now) = get(server.addr, &format!("{leases}/rack-12"));
    assert_eq!(now["spec"]["holderIdentity"], "bridge-b");
}

#[test]
fn server_side_apply_reports_conflicts_by_field_and_manager() {
    let server = with_crds();
    let apply = |manager: &str, body: &str, force: bool| {
        let path = format!(
            "{SERVERS}/s1?fieldManager={manager}{}",
            if force { "&force=true" } else { "" }
        );
        request(
            server.addr,
            "PATCH",
            &path,
            "application/apply-patch+yaml",
            body,
        )
    };
    let box_side = "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nspec:\n  accepted: true\n  bmc:\n    endpoint: 10.0.0.9\n";
    let (code, _, created) = apply("appliance", box_side, false);
    assert_eq!(code, 201, "{created}");
    let cluster_side = "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nspec:\n  accepted: false\n  bmc:\n    endpoint: 10.0.0.9\n  cordoned: true\n";
    let (code, _, conflict) = apply("kube-bridge", cluster_side, false);
    assert_eq!(code, 409, "{conflict}");
    let causes = conflict["details"]["causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "only accepted differs: {conflict}");
    assert_eq!(causes[0]["field"], ".spec.accepted");
    assert!(
        causes[0]["message"]
            .as_str()
            .unwrap()
            .contains("\"appliance\"")
    );
    let (_, s1) = get(server.addr, &format!("{SERVERS}/s1"));
    assert_eq!(
        s1["spec"]["accepted"], true,
        "a refused apply changes nothing"
    );
    // Without fieldManager an apply is refused; other patch types are refused.
    let (code, _, _) = request(
        server.addr,
        "PATCH",
        &format!("{SERVERS}/s1"),
        "application/apply-patch+yaml",
        box_side,
    );
    assert_eq!(code, 400);
    let (code, _, _) = request(
        server.addr,
        "PATCH",
        &format!("{SERVERS}/s1"),
        "application/strategic-merge-patch+json",
        "{}",
    );
    assert_eq!(code, 415);
    let (code, _, _) = request(
        server.addr,
        "GET",
        &format!("{SERVERS}?watch=true&sendBookmarksPlease=1"),
        "application/json",
        "",
    );
    assert_eq!(code, 400, "unknown query parameters are refused");
    // Status through apply on /status: only status, owned with subresource "status".
    let status = "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nstatus:\n  power: \"on\"\n  ready: true\n";
    let (code, _, after) = request(
        server.addr,
        "PATCH",
        &format!("{SERVERS}/s1/status?fieldManager=appliance"),
        "application/apply-patch+yaml",
        status,
    );
    assert_eq!(code, 200, "{after}");
    assert_eq!(
        (
            after["status"]["power"].as_str(),
            after["spec"]["accepted"].as_bool()
        ),
        (Some("on"), Some(true))
    );
    let mf = after["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        mf.iter().any(|m| m["manager"] == "appliance"
            && m["subresource"] == "status"
            && m["fieldsV1"]["f:status"]["f:power"].is_object()),
        "{mf:?}"
    );
    assert!(
        mf.iter().any(|m| m["manager"] == "appliance"
            && m.get("subresource").is_none()
            && m["fieldsV1"]["f:spec"]["f:bmc"]["f:endpoint"].is_object()),
        "{mf:?}"
    );
}

#[test]
fn json_patch_is_all_or_nothing() {
    let server = with_crds();
    request(
        server.addr,
        "POST",
        SERVERS,
        "application/json",
        &server_obj("j", "one"),
    );
    let path = format!("{SERVERS}/j");
    let jp = "application/json-patch+json";
    // A failing test in the middle: nothing of the patch lands.
    let ops = r#"[{"op":"replace","path":"/spec/hostname","value":"two"},{"op":"test","path":"/spec/cordoned","value":true}]"#;
    let (code, _, body) = request(server.addr, "PATCH", &path, jp, ops);
    assert_eq!(code, 422, "{body}");
    assert_eq!(get(server.addr, &path).1["spec"]["hostname"], "one");
    // test-null on a missing member, add to the end of a list, remove by index.
    let ops = r#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["a"]},{"op":"add","path":"/metadata/finalizers/-","value":"b"},{"op":"remove","path":"/metadata/finalizers/0"},{"op":"replace","path":"/spec/hostname","value":"two"}]"#;
    let (code, _, body) = request(server.addr, "PATCH", &path, jp, ops);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (
            body["metadata"]["finalizers"].clone(),
            body["spec"]["hostname"].clone()
        ),
        (json!(["b"]), json!("two"))
    );
    let (code, _, _) = request(
        server.addr,
        "PATCH",
        &path,
        jp,
        r#"[{"op":"move","from":"/a","path":"/b"}]"#,
    );
    assert_eq!(code, 422, "unsupported ops are refused");
}
