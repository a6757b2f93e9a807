//! The admin Watch API against the real `appliance serve`: list-then-watch without gaps
//! under concurrent writes, deletes with their last state, resume after a box restart,
//! compaction answered with OUT_OF_RANGE ("list again"), bookmarks on idle streams, no
//! stream without the admin token, stalled watchers that never hold up commits, and
//! `appliance ctl get --watch`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use appliance_rpc::admin::admin_client::AdminClient;
use appliance_rpc::admin::{
    ApplyRequest, ChangeType, DeleteRequest, GetRequest, WatchEvent, WatchRequest,
};
use support::Appliance;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = AdminClient<
    InterceptedService<
        Channel,
        Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>,
    >,
>;

async fn client(box_: &Appliance) -> Client {
    client_with(&box_.endpoint(), Some(box_.token())).await
}

async fn client_with(endpoint: &str, token: Option<String>) -> Client {
    let channel = Channel::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: Option<MetadataValue<_>> = token.map(|t| format!("Bearer {t}").parse().unwrap());
    AdminClient::with_interceptor(
        channel,
        Box::new(move |mut r: tonic::Request<()>| {
            if let Some(b) = &bearer {
                r.metadata_mut().insert("authorization", b.clone());
            }
            Ok(r)
        }),
    )
}

fn class_doc(name: &str, note: &str) -> String {
    padded_class_doc(name, note, "")
}

/// A ServerClass with label `note` and an annotation `pad` (to make it large).
fn padded_class_doc(name: &str, note: &str, pad: &str) -> String {
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: {name}\n  labels:\n    note: \"{note}\"\n  annotations:\n    pad: \"{pad}\"\nspec:\n  qualifiers: {{}}\n"
    )
}

async fn apply(c: &mut Client, doc: String) -> u64 {
    let reply = c
        .apply(ApplyRequest {
            documents: doc,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    reply.applied[0].revision
}

async fn watch(c: &mut Client, kinds: &[&str], since: Option<u64>) -> tonic::Streaming<WatchEvent> {
    c.watch(WatchRequest {
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        name: String::new(),
        since_revision: since,
        bookmark_interval_ms: 0,
    })
    .await
    .unwrap()
    .into_inner()
}

/// The next non-bookmark event, within 30 s: bookmarks (every 15 s on an idle stream) do not
/// extend the wait, so a stream on which commits stopped fails here instead of idling forever.
async fn next_change(s: &mut tonic::Streaming<WatchEvent>) -> WatchEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let e = tokio::time::timeout_at(deadline, s.message())
            .await
            .expect("a change within 30 s")
            .unwrap()
            .expect("stream open");
        if e.r#type != ChangeType::Bookmark as i32 {
            return e;
        }
    }
}

fn note_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["metadata"]["labels"]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_then_watch_misses_nothing_under_concurrent_writes() {
    let box_ = Appliance::start();
    let mut c = client(&box_).await;
    const WRITERS: usize = 4;
    const WRITES: usize = 60;
    // Writers change 10 classes over and over while the list and the watch start.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut wc = client(&box_).await;
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES {
                apply(
                    &mut wc,
                    class_doc(&format!("c{}", i % 10), &format!("w{w}-{i}")),
                )
                .await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let listed = c
        .get(GetRequest {
            kind: "serverclass".into(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.revision > 0);
    let mut seen: BTreeMap<String, (u64, String)> = listed
        .objects
        .iter()
        .map(|o| (o.name.clone(), (o.revision, note_of(&o.json))))
        .collect();
    for (name, (rev, _)) in &seen {
        assert!(*rev <= listed.revision, "{name} is newer than the list");
    }
    let mut stream = watch(&mut c, &["serverclass"], Some(listed.revision)).await;
    for w in writers {
        w.await.unwrap();
    }
    let last = c
        .get(GetRequest {
            kind: "serverclass".into(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // Apply every event after the list's revision: strictly increasing, none at or below
    // the list's revision; the result equals the final state.
    let mut prev = listed.revision;
    while prev < last.revision {
        let e = next_change(&mut stream).await;
        assert!(e.revision > prev, "revision {} after {prev}", e.revision);
        prev = e.revision;
        if e.kind == "ServerClass" {
            seen.insert(e.name.clone(), (e.revision, note_of(&e.json)));
        }
    }
    let want: BTreeMap<String, (u64, String)> = last
        .objects
        .iter()
        .map(|o| (o.name.clone(), (o.revision, note_of(&o.json))))
        .collect();
    let seen: BTreeMap<_, _> = seen
        .into_iter()
        .filter(|(n, _)| n.starts_with('c'))
        .collect();
    let want: BTreeMap<_, _> = want
        .into_iter()
        .filter(|(n, _)| n.starts_with('c'))
        .collect();
    assert_eq!(seen, want, "list + watch = the final state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_carry_the_last_state_and_bookmarks_come_on_idle_streams() {
    let box_ = Appliance::start();
    let mut c = client(&box_).await;
    apply(&mut c, class_doc("gone", "last")).await;
    let mut stream = c
        .watch(WatchRequest {
            kinds: vec!["ServerClass".into()],
            name: "gone".into(),
            since_revision: None,
            bookmark_interval_ms: 200,
        })
        .await
        .unwrap()
        .into_inner();
    // Caught up: a bookmark first, then more while nothing happens.
    let mut bookmarks = Vec::new();
    while bookmarks.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("bookmarks on an idle stream")
            .unwrap()
            .unwrap();
        assert_eq!(e.r#type, ChangeType::Bookmark as i32, "{e:?}");
        bookmarks.push(e.revision);
    }
    let deleted = c
        .delete(DeleteRequest {
            kind: "serverclass".into(),
            name: "gone".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    assert!(bookmarks.iter().all(|b| *b < deleted));
    let e = next_change(&mut stream).await;
    assert_eq!(e.r#type, ChangeType::Delete as i32);
    assert_eq!((e.kind.as_str(), e.name.as_str()), ("ServerClass", "gone"));
    assert_eq!(e.revision, deleted);
    assert_eq!(note_of(&e.json), "last", "a delete carries the last state");
    assert!(e.committed_unix_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_the_box_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut box_ = Appliance::start_in(&data);
    let mut c = client(&box_).await;
    let r1 = apply(&mut c, class_doc("before", "1")).await;
    let r2 = apply(&mut c, class_doc("before", "2")).await;
    // A watcher at r1 is cut off by the shutdown with UNAVAILABLE naming where to resume.
    let mut stream = watch(&mut c, &[], Some(r1)).await;
    let e = next_change(&mut stream).await;
    assert_eq!(e.revision, r2);
    box_.stop();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the stream ends on shutdown")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    assert!(end.message().contains(&format!("revision {r2}")), "{end:?}");
    drop(c);
    let box_ = Appliance::start_in(&data);
    let mut c = client(&box_).await;
    let r3 = apply(&mut c, class_doc("after", "3")).await;
    // From r1: the change before the restart, then the one after.
    let mut stream = watch(&mut c, &["serverclass"], Some(r1)).await;
    let a = next_change(&mut stream).await;
    let b = next_change(&mut stream).await;
    assert_eq!((a.revision, note_of(&a.json)), (r2, "2".into()));
    assert_eq!((b.revision, b.name.as_str()), (r3, "after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_revision_is_refused_with_out_of_range() {
    let box_ = Appliance::start_config("[watch]\nretention_changes = 5\n");
    let mut c = client(&box_).await;
    let first = apply(&mut c, class_doc("k", "0")).await;
    let mut last = first;
    for i in 1..20 {
        last = apply(&mut c, class_doc("k", &i.to_string())).await;
    }
    let status = c
        .watch(WatchRequest {
            kinds: vec![],
            name: String::new(),
            since_revision: Some(first),
            bookmark_interval_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("list again"), "{status:?}");
    let compacted: u64 = status
        .metadata()
        .get("appliance-compact-revision")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(compacted, last - 5, "five changes kept");
    // From the compaction point on, everything kept is delivered.
    let mut stream = watch(&mut c, &[], Some(compacted)).await;
    for want in compacted + 1..=last {
        assert_eq!(next_change(&mut stream).await.revision, want);
    }
    // A revision from the future (a store restored from a backup) is refused the same way.
    let status = c
        .watch(WatchRequest {
            kinds: vec![],
            name: String::new(),
            since_revision: Some(last + 100),
            bookmark_interval_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("newer"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_needs_the_admin_token() {
    let box_ = Appliance::start();
    for token in [None, Some("0123456789abcdef0123456789abcdef".to_string())] {
        let mut c = client_with(&box_.endpoint(), token).await;
        let status = c
            .watch(WatchRequest {
                kinds: vec![],
                name: String::new(),
                since_revision: Some(0),
                bookmark_interval_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_watchers_never_hold_up_commits_and_are_told_to_list_again() {
    let box_ = Appliance::start_config("[watch]\nretention_changes = 200\n");
    let mut c = client(&box_).await;
    let start = c
        .get(GetRequest {
            kind: "serverclass".into(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    // 40 watchers on their own connections that never read, and one that does.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut wc = client(&box_).await;
        stalled.push(watch(&mut wc, &[], Some(start)).await);
    }
    let mut reader = watch(&mut c, &[], Some(start)).await;
    // Fat objects: the stalled streams' HTTP/2 windows fill quickly.
    let pad = "x".repeat(40_000);
    let mut wc = client(&box_).await;
    // The writer hands back its first refused apply instead of panicking in its task: the
    // reader below then reports it rather than waiting for changes that never come.
    let mut writes = tokio::spawn(async move {
        let mut last = 0;
        for i in 0..600 {
            let doc = padded_class_doc(&format!("p{}", i % 20), &i.to_string(), &pad);
            let reply = wc
                .apply(ApplyRequest {
                    documents: doc,
                    dry_run: false,
                })
                .await
                .map_err(|status| format!("apply {i} refused: {status:?}"))?;
            last = reply.into_inner().applied[0].revision;
        }
        Ok::<u64, String>(last)
    });
    let mut prev = start;
    let last = loop {
        tokio::select! {
            e = next_change(&mut reader) => {
                assert_eq!(
                    e.revision,
                    prev + 1,
                    "a reading watcher sees every change in order"
                );
                prev = e.revision;
            }
            done = &mut writes => {
                let last = done.unwrap().unwrap_or_else(|e| panic!("{e}"));
                while prev < last {
                    let e = next_change(&mut reader).await;
                    assert_eq!(e.revision, prev + 1);
                    prev = e.revision;
                }
                break last;
            }
        }
    };
    assert!(last >= start + 600);
    // Each stalled watcher gets what its connection buffered, then OUT_OF_RANGE, within 60 s
    // (a watcher that caught up instead would idle on bookmarks: that fails here).
    for mut s in stalled {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut prev = start;
        let status = loop {
            match tokio::time::timeout_at(deadline, s.message())
                .await
                .expect("a stalled stream is told to list again within 60 s of being read")
            {
                Ok(Some(e)) => {
                    if e.r#type != ChangeType::Bookmark as i32 {
                        assert_eq!(e.revision, prev + 1);
                        prev = e.revision;
                    }
                }
                Ok(None) => panic!("ended without a status"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        assert!(status.message().contains("fell behind"), "{status:?}");
        assert!(prev < last - 200, "it could not have kept up");
    }
}

#[test]
fn ctl_get_watch_prints_changes_and_resumes_from_a_revision() {
    let box_ = Appliance::start();
    let token = box_.token();
    let spawn = |extra: &[&str]| {
        Command::new(support::BIN)
            .args(["ctl", "--endpoint", &box_.endpoint(), "--token", &token])
            .args(["get", "serverclass", "--watch"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let write = |name: &str, note: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), class_doc(name, note)).unwrap();
        box_.ctl_ok(&["apply", "-f", file.path().to_str().unwrap()]);
    };
    let mut watcher = spawn(&[]);
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    // The list first (the built-in `any` class), then the changes as they commit.
    assert_eq!(lines.next().unwrap().unwrap().trim(), "NAME");
    assert_eq!(lines.next().unwrap().unwrap().trim(), "any");
    write("w1", "a");
    let line = lines.next().unwrap().unwrap();
    let (rev, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, "PUT serverclass/w1", "{line}");
    box_.ctl_ok(&["delete", "serverclass", "w1"]);
    let line = lines.next().unwrap().unwrap();
    assert!(line.ends_with(" DELETE serverclass/w1"), "{line}");
    let _ = watcher.kill();
    let _ = watcher.wait();
    // Resuming from the PUT's revision prints only the DELETE (and later changes), as JSON.
    let mut resumed = spawn(&["--since-revision", rev, "-o", "json"]);
    let mut lines = BufReader::new(resumed.stdout.take().unwrap()).lines();
    let v: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(v["type"], "DELETE");
    assert_eq!(v["object"]["metadata"]["labels"]["note"], "a");
    let _ = resumed.kill();
    let _ = resumed.wait();
}
