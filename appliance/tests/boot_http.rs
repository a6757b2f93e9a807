//! The network-boot routes over a real TCP socket on 127.0.0.1:0, with a real redb store and
//! real files: `/boot.ipxe`, `/ipxe` decisions, `/env` and `/tftp` streaming with Range,
//! path-traversal refusal, and 412 for environments that are not ready.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use appliance::boot::BootFromDiskMethod;
use appliance::boot::answer::Decider;
use appliance::boot::assets::AssetDirs;
use appliance::http::boot::{BootContext, routes};
use appliance::model::parse_documents;
use appliance::store::Store;

struct Box_ {
    base: String,
    store: Store,
    dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

async fn start(default_method: BootFromDiskMethod) -> Box_ {
    appliance::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let tftp = dir.path().join("tftp");
    std::fs::create_dir_all(tftp.join("sub")).unwrap();
    std::fs::write(tftp.join("undionly.kpxe"), b"pretend ipxe").unwrap();
    std::fs::write(tftp.join("sub/x.efi"), b"efi").unwrap();
    std::fs::write(dir.path().join("secret"), b"do not serve").unwrap();
    let decider = Arc::new(Decider {
        store: store.clone(),
        dirs: AssetDirs::new(dir.path(), None),
        default_method,
        // An operator's appliance.token= never replaces the box's own.
        extra_agent_args: vec!["panic=0".into(), "appliance.token=operator".into()],
        downloads: true,
        siderolink_server: None,
        first_contact: Arc::new(appliance::api::first_contact::FirstContact::new(
            &appliance::config::Config::default().agent,
        )),
    });
    let ctx = BootContext {
        store: store.clone(),
        dirs: AssetDirs::new(dir.path(), None),
        tftp: Arc::new(appliance::net::tftp_root::TftpRoot::new(tftp, Vec::new())),
        advertise: None,
        fallback_endpoint: "127.0.0.1:8081".into(),
        decider,
        admin_token: Arc::from("t0ken-for-tests-0123456789"),
        maps: Default::default(),
        timeline: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(Arc::new(ctx)).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Box_ {
        base: format!("http://{addr}"),
        store,
        dir,
        _server: server,
    }
}

fn apply(store: &Store, yaml: &str) {
    store.apply(parse_documents(yaml).unwrap()).unwrap();
}

fn write_env(dir: &Path, name: &str, kernel: &[u8], initrd: &[u8]) {
    let d = dir.join("env").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("vmlinuz"), kernel).unwrap();
    std::fs::write(d.join("initramfs.xz"), initrd).unwrap();
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

const UUID: &str = "4c4c4544-0042-3010-8050-b4c04f4d4e31";

#[tokio::test]
async fn boot_ipxe_is_the_chain_script() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    let (status, body) = get(&format!("{}/boot.ipxe", b.base)).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("#!ipxe\n"));
    let host = b.base.trim_start_matches("http://");
    assert!(body.contains(&format!(
        "chain --replace http://{host}/ipxe?uuid=${{uuid}}&mac=${{net${{idx}}/mac:hexhyp}}"
    )));
}

#[tokio::test]
async fn unknown_server_gets_the_agent_or_412_without_agent_files() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    let url = format!(
        "{}/ipxe?uuid={UUID}&mac=52-54-00-12-34-56&domain=&hostname=&serial=&arch=x86_64",
        b.base
    );
    let (status, body) = get(&url).await;
    assert_eq!(status, 412, "{body}");
    assert!(
        body.starts_with("environment \"agent-amd64\" is not ready: agent files missing"),
        "{body}"
    );

    write_env(b.dir.path(), "agent-amd64", b"k", b"i");
    let (status, body) = get(&url).await;
    assert_eq!(status, 200, "{body}");
    let host = b.base.trim_start_matches("http://");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "#!ipxe");
    assert!(
        lines[1].starts_with("kernel /env/agent-amd64/vmlinuz "),
        "{body}"
    );
    for want in [
        "console=ttyS0",
        "initrd=initramfs.xz",
        "panic=0",
        "sidero.mac=52:54:00:12:34:56",
        &format!("sidero.endpoint={host}"),
    ] {
        assert!(
            lines[1].split(' ').any(|a| a == want),
            "{want} missing: {body}"
        );
    }
    assert_eq!(lines[2], "initrd /env/agent-amd64/initramfs.xz");
    assert_eq!(lines[3], "boot");
    // The one-boot token: the last argument, 64 hex digits, the only one, new per request.
    let token = |line: &str| {
        let t: Vec<String> = line
            .split(' ')
            .filter_map(|a| a.strip_prefix("appliance.token="))
            .map(str::to_string)
            .collect();
        assert_eq!(t.len(), 1, "{line}");
        assert!(
            line.ends_with(&format!("appliance.token={}", t[0])),
            "{line}"
        );
        assert!(
            t[0].len() == 64 && t[0].bytes().all(|b| b.is_ascii_hexdigit()),
            "{line}"
        );
        t[0].clone()
    };
    let first = token(lines[1]);
    let (_, again) = get(&url).await;
    assert_ne!(token(again.lines().nth(1).unwrap()), first);
    // Without mac= there is nothing to bind a token to: none is handed out.
    let (status, body) = get(&format!("{}/ipxe?uuid={UUID}", b.base)).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("appliance.token="), "{body}");

    // arm64 asks for the arm64 agent, which is not there.
    let (status, body) = get(&format!("{}/ipxe?uuid={UUID}&arch=arm64", b.base)).await;
    assert_eq!(status, 412);
    assert!(body.contains("agent-arm64"), "{body}");
    // No query at all is an unknown server too.
    assert_eq!(get(&format!("{}/ipxe", b.base)).await.0, 200);
}

const SERVER: &str = "apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: 4c4c4544-0042-3010-8050-b4c04f4d4e31
spec:
  accepted: true
";

const BINDING: &str = "apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: ServerBinding
metadata:
  name: 4c4c4544-0042-3010-8050-b4c04f4d4e31
spec: {}
";

#[tokio::test]
async fn allocated_server_boots_default_environment_when_ready() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    write_env(b.dir.path(), "agent-amd64", b"k", b"i");
    let url = format!("{}/ipxe?uuid={UUID}&mac=52-54-00-12-34-56", b.base);
    // Known but not allocated: the agent.
    apply(&b.store, SERVER);
    let (status, body) = get(&url).await;
    assert_eq!(status, 200);
    assert!(body.contains("/env/agent-amd64/vmlinuz"), "{body}");
    // Allocated: Environment `default`, which does not exist.
    apply(&b.store, BINDING);
    let (status, body) = get(&url).await;
    assert_eq!(
        (status, body.as_str()),
        (404, "environment \"default\" not found\n")
    );
    // Exists, not downloaded: 412 with the reason.
    apply(
        &b.store,
        "apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata: {name: default}
spec:
  kernel: {url: 'http://example.invalid/vmlinuz', args: [console=ttyS0, talos.platform=metal]}
  initrd: {url: 'http://example.invalid/initramfs.xz'}
",
    );
    let (status, body) = get(&url).await;
    assert_eq!(status, 412);
    assert!(
        body.starts_with("environment \"default\" is not ready: kernel from http://example.invalid/vmlinuz is not downloaded yet"),
        "{body}"
    );
    // A failed download is the reason.
    apply(
        &b.store,
        "apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata: {name: default}
spec:
  kernel: {url: 'http://example.invalid/vmlinuz', args: [console=ttyS0, talos.platform=metal]}
  initrd: {url: 'http://example.invalid/initramfs.xz'}
status:
  conditions:
  - {type: Ready, status: 'True', url: 'http://example.invalid/vmlinuz', sha512: ''}
  - {type: Ready, status: 'False', url: 'http://example.invalid/initramfs.xz', reason: DownloadFailed, message: 'HTTP 404 Not Found'}
",
    );
    write_env(b.dir.path(), "default", b"kernel", b"initrd");
    let (status, body) = get(&url).await;
    assert_eq!(status, 412);
    assert!(
        body.contains("initrd DownloadFailed: HTTP 404 Not Found"),
        "{body}"
    );
    // Ready: the environment script with the appended Talos args.
    apply(
        &b.store,
        "apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata: {name: default}
spec:
  kernel: {url: 'http://example.invalid/vmlinuz', args: [console=ttyS0, talos.platform=metal]}
  initrd: {url: 'http://example.invalid/initramfs.xz'}
status:
  conditions:
  - {type: Ready, status: 'True', url: 'http://example.invalid/vmlinuz', sha512: ''}
  - {type: Ready, status: 'True', url: 'http://example.invalid/initramfs.xz', sha512: ''}
",
    );
    let (status, body) = get(&url).await;
    assert_eq!(status, 200, "{body}");
    let host = b.base.trim_start_matches("http://");
    assert_eq!(
        body,
        format!(
            "#!ipxe\nkernel /env/default/vmlinuz console=ttyS0 talos.platform=metal talos.config=http://{host}/configdata?uuid= siderolink.api={host}\ninitrd /env/default/initramfs.xz\nboot\n"
        )
    );
    // The script's relative URLs resolve to the files.
    assert_eq!(
        get(&format!("{}/env/default/vmlinuz", b.base)).await,
        (200, "kernel".into())
    );
    assert_eq!(
        get(&format!("{}/env/default/initrd", b.base)).await,
        (200, "initrd".into())
    );
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn env_files_stream_with_ranges() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    let data = pattern(3 * 1024 * 1024 + 17);
    write_env(b.dir.path(), "e1", b"k", &data);
    let url = format!("{}/env/e1/initramfs.xz", b.base);
    let client = reqwest::Client::new();

    let full = client.get(&url).send().await.unwrap();
    assert_eq!(full.status().as_u16(), 200);
    assert_eq!(
        full.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert!(full.bytes().await.unwrap() == data);

    let len = data.len();
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 99),
        ("bytes=1048576-2097151".into(), 1048576, 2097151),
        ("bytes=-1000".into(), len - 1000, len - 1),
        (format!("bytes={}-", len - 5), len - 5, len - 1),
        (format!("bytes=100-{}", len + 999), 100, len - 1),
    ];
    for (range, start, end) in cases {
        let r = client
            .get(&url)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{end}/{len}").as_str(),
            "{range}"
        );
        assert_eq!(
            r.headers()["content-length"],
            (end - start + 1).to_string().as_str()
        );
        assert!(r.bytes().await.unwrap() == data[start..=end], "{range}");
    }
    for range in [
        format!("bytes={len}-"),
        "bytes=-0".into(),
        format!("bytes={}-{}", len + 10, len + 20),
    ] {
        let r = client
            .get(&url)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 416, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes */{len}").as_str()
        );
    }
    // HEAD: headers only, with the real length.
    let r = client.head(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-length"], len.to_string().as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = client
        .head(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-length"], "10");
}

/// Assets are served from a memory map shared per file version: a download that started
/// before the file was replaced (by rename, as the downloader and upload do) finishes with
/// the old bytes, the next one gets the new bytes, and a removed file is a 404.
#[tokio::test]
async fn env_file_replaced_by_rename_mid_download() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    let old = pattern(8 * 1024 * 1024);
    write_env(b.dir.path(), "e2", b"k", &old);
    let url = format!("{}/env/e2/initramfs.xz", b.base);
    let client = reqwest::Client::new();
    let mut first = client.get(&url).send().await.unwrap();
    let mut got = first.chunk().await.unwrap().unwrap().to_vec();

    let new: Vec<u8> = old.iter().map(|b| b ^ 0xff).take(5 * 1024 * 1024).collect();
    let dir = b.dir.path().join("env/e2");
    std::fs::write(dir.join("initramfs.xz.tmp"), &new).unwrap();
    std::fs::rename(dir.join("initramfs.xz.tmp"), dir.join("initramfs.xz")).unwrap();

    let second = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        second == new,
        "the replaced file is served after the rename"
    );
    while let Some(c) = first.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(
        got == old,
        "a download in flight keeps the old file's bytes"
    );

    std::fs::remove_file(dir.join("initramfs.xz")).unwrap();
    assert_eq!(
        client.get(&url).send().await.unwrap().status().as_u16(),
        404
    );
}

/// Sends a raw request line (no client-side path normalisation) and returns the status.
async fn raw_status(base: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("do not serve"),
        "{path} leaked a file outside the root"
    );
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn tftp_and_env_refuse_traversal() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    assert_eq!(
        get(&format!("{}/tftp/undionly.kpxe", b.base)).await,
        (200, "pretend ipxe".into())
    );
    assert_eq!(
        get(&format!("{}/tftp/sub/x.efi", b.base)).await,
        (200, "efi".into())
    );
    assert_eq!(get(&format!("{}/tftp/missing.efi", b.base)).await.0, 404);
    // A directory is not a file.
    assert_eq!(raw_status(&b.base, "/tftp/sub").await, 404);
    for path in [
        "/tftp/../secret",
        "/tftp/..%2fsecret",
        "/tftp/%2e%2e/secret",
        "/tftp/sub/../../secret",
        "/tftp/sub/%2e%2e/%2e%2e/secret",
        "/tftp//etc/passwd",
        "/tftp/%2fetc%2fpasswd",
        "/tftp/sub%5c..%5c..%5csecret",
        "/tftp/./undionly.kpxe",
        "/env/..%2f..%2fsecret/vmlinuz",
        "/env/%2e%2e/vmlinuz",
        "/env/../secret",
        "/env/e1/..%2f..%2fsecret",
        "/env/UPPER/vmlinuz",
    ] {
        let status = raw_status(&b.base, path).await;
        assert!(status == 400 || status == 404, "{path} -> {status}");
    }
}

#[tokio::test]
async fn installed_server_boots_from_disk_by_each_method() {
    use BootFromDiskMethod::*;
    let cases: &[(BootFromDiskMethod, &str, &str, u16, &str)] = &[
        // (config default, server method, class method, status, body)
        (IpxeExit, "", "", 200, "#!ipxe\nexit\n"),
        (Http404, "", "", 404, ""),
        (
            IpxeSanboot,
            "",
            "",
            200,
            "#!ipxe\nsanboot --no-describe --drive 0x80\n",
        ),
        (IpxeExit, "", "http-404", 404, ""),
        (
            IpxeExit,
            "ipxe-sanboot",
            "http-404",
            200,
            "#!ipxe\nsanboot --no-describe --drive 0x80\n",
        ),
        (Http404, "ipxe-exit", "ipxe-sanboot", 200, "#!ipxe\nexit\n"),
        (
            IpxeExit,
            "",
            "ipxe-sanboot",
            200,
            "#!ipxe\nsanboot --no-describe --drive 0x80\n",
        ),
    ];
    for (default, server_method, class_method, status, body) in cases {
        let b = start(*default).await;
        let method_line = |m: &str| {
            if m.is_empty() {
                String::new()
            } else {
                format!("  bootFromDiskMethod: {m}\n")
            }
        };
        apply(
            &b.store,
            &format!(
                "apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata: {{name: workers}}
spec:
{}  environmentRef: {{name: talos}}
---
apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata: {{name: {UUID}}}
spec:
  accepted: true
{}status:
  conditions:
  - {{type: PXEBooted, status: 'True', lastTransitionTime: '2026-11-26T07:00:00Z'}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: ServerBinding
metadata: {{name: {UUID}}}
spec:
  serverClassRef: {{name: workers}}
  metalMachineRef: {{name: m0, namespace: default}}
",
                method_line(class_method),
                method_line(server_method)
            ),
        );
        let (got_status, got_body) = get(&format!("{}/ipxe?uuid={UUID}", b.base)).await;
        assert_eq!(
            (got_status, got_body.as_str()),
            (*status, *body),
            "default {default:?}, server {server_method:?}, class {class_method:?}"
        );
    }
}

#[tokio::test]
async fn pxe_boot_always_and_class_environment() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    apply(
        &b.store,
        &format!(
            "apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata: {{name: workers}}
spec:
  environmentRef: {{name: talos}}
---
apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata: {{name: {UUID}}}
spec:
  accepted: true
  pxeBootAlways: true
status:
  conditions:
  - {{type: PXEBooted, status: 'True', lastTransitionTime: '2026-11-26T07:00:00Z'}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: ServerBinding
metadata: {{name: {UUID}}}
spec:
  serverClassRef: {{name: workers}}
  metalMachineRef: {{name: m0, namespace: default}}
"
        ),
    );
    // pxeBootAlways: not the disk but the class's Environment (which does not exist).
    let (status, body) = get(&format!("{}/ipxe?uuid={UUID}", b.base)).await;
    assert_eq!(
        (status, body.as_str()),
        (404, "environment \"talos\" not found\n")
    );
}

/// `GET` on an upload URL runs the upload's checks without a body (what `ctl env upload`
/// asks before streaming a file).
#[tokio::test]
async fn upload_check_answers_like_the_upload_would() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    let client = reqwest::Client::new();
    let status = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{}{path}", b.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let token = Some("t0ken-for-tests-0123456789");
    assert_eq!(
        status("/api/v1/environments/agent-amd64/kernel", None).await,
        401
    );
    assert_eq!(
        status(
            "/api/v1/environments/agent-amd64/kernel",
            Some("wrong-token-wrong-token")
        )
        .await,
        401
    );
    assert_eq!(
        status("/api/v1/environments/agent-amd64/kernel", token).await,
        200
    );
    assert_eq!(
        status("/api/v1/environments/nosuch/kernel", token).await,
        404
    );
    assert_eq!(
        status("/api/v1/environments/agent-amd64/bogus", token).await,
        404
    );
    assert_eq!(
        status("/api/v1/environments/Bad_Name/kernel", token).await,
        400
    );
}

/// One UUID on two chassis (Sidero #1222), and a junk UUID: `/ipxe` boots a machine by the
/// server registered for its NIC, never another machine's Environment.
#[tokio::test]
async fn a_uuid_never_boots_another_chassis_into_its_environment() {
    let b = start(BootFromDiskMethod::IpxeExit).await;
    write_env(b.dir.path(), "agent-amd64", b"k", b"i");
    // Allocated servers (a binding each) whose Environment `default` does not exist: their
    // own boots answer 404 for it, a stranger's the agent.
    let server = |name: &str, mac: &str, label: &str| {
        format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\n  labels: {{{label}}}\nspec:\n  accepted: true\n  hardware:\n    network:\n      interfaces:\n      - {{name: eth0, mac: '{mac}'}}\n---\napiVersion: infrastructure.cluster.x-k8s.io/v1alpha3\nkind: ServerBinding\nmetadata:\n  name: {name}\nspec: {{}}\n"
        )
    };
    apply(&b.store, &server(UUID, "52:54:00:00:00:01", ""));
    let own = get(&format!(
        "{}/ipxe?uuid={UUID}&mac=52-54-00-00-00-01",
        b.base
    ))
    .await;
    assert_eq!(own, (404, "environment \"default\" not found\n".into()));
    let (status, twin) = get(&format!(
        "{}/ipxe?uuid={UUID}&mac=52-54-00-00-00-02",
        b.base
    ))
    .await;
    assert_eq!(status, 200, "{twin}");
    assert!(
        twin.contains("/env/agent-amd64/vmlinuz") && twin.contains("appliance.token="),
        "{twin}"
    );
    // Once registered by its NIC (label from the agent API), the twin boots as itself.
    apply(
        &b.store,
        &server(
            "mac-525400000002-sn2",
            "52:54:00:00:00:02",
            "appliance.sidero.dev/junk-uuid: duplicate",
        ),
    );
    let twin = get(&format!(
        "{}/ipxe?uuid={UUID}&mac=52-54-00-00-00-02",
        b.base
    ))
    .await;
    assert_eq!(twin, (404, "environment \"default\" not found\n".into()));
    // A junk UUID names no server: the machine is found by its NIC, or gets the agent.
    let zero = "00000000-0000-0000-0000-000000000000";
    apply(
        &b.store,
        &server(
            "mac-525400000007",
            "52:54:00:00:00:07",
            "appliance.sidero.dev/junk-uuid: all-zero",
        ),
    );
    let known = get(&format!(
        "{}/ipxe?uuid={zero}&mac=52-54-00-00-00-07",
        b.base
    ))
    .await;
    assert_eq!(known, (404, "environment \"default\" not found\n".into()));
    let (status, other) = get(&format!(
        "{}/ipxe?uuid={zero}&mac=52-54-00-00-00-08",
        b.base
    ))
    .await;
    assert_eq!(status, 200, "{other}");
    assert!(other.contains("/env/agent-amd64/vmlinuz"), "{other}");
}
