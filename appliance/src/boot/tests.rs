//! Table tests of the boot decision, the facts read from objects, kernel args and asset
//! readiness.

use serde_json::json;

use super::args::*;
use super::assets::*;
use super::*;

fn server(
    env: Option<&str>,
    method: Option<BootFromDiskMethod>,
    pxe_booted: bool,
    always: bool,
) -> Option<ServerFacts> {
    Some(ServerFacts {
        environment_ref: env.map(str::to_string),
        boot_from_disk_method: method,
        pxe_boot_always: always,
        pxe_booted,
    })
}

fn class(env: Option<&str>, method: Option<BootFromDiskMethod>) -> Option<ClassFacts> {
    Some(ClassFacts {
        environment_ref: env.map(str::to_string),
        boot_from_disk_method: method,
    })
}

fn bound(class: Option<&str>) -> Option<BindingFacts> {
    Some(BindingFacts {
        server_class: class.map(str::to_string),
    })
}

#[test]
fn decision_table() {
    use BootFromDiskMethod::*;
    let env = |name: &str, source| BootPlan::Environment {
        name: name.into(),
        source,
    };
    let disk = |method, source| BootPlan::Disk { method, source };
    let agent = |reason| BootPlan::Agent {
        arch: Arch::Amd64,
        reason,
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Lookup, BootPlan)> = vec![
        ("unknown server", Lookup::default(), agent(AgentReason::UnknownServer)),
        ("unknown server, stray binding",
            Lookup { server: None, binding: bound(None), class: None },
            agent(AgentReason::UnknownServer)),
        ("known, not allocated",
            Lookup { server: server(Some("e1"), None, false, false), binding: None, class: None },
            agent(AgentReason::NotAllocated)),
        ("known, installed but not allocated",
            Lookup { server: server(None, Some(Http404), true, false), binding: None, class: None },
            agent(AgentReason::NotAllocated)),
        ("allocated, nothing named -> default",
            Lookup { server: server(None, None, false, false), binding: bound(None), class: None },
            env("default", EnvironmentSource::Default)),
        ("allocated, server env",
            Lookup { server: server(Some("srv-env"), None, false, false), binding: bound(Some("c")), class: class(Some("cls-env"), None) },
            env("srv-env", EnvironmentSource::Server)),
        ("allocated, class env",
            Lookup { server: server(None, None, false, false), binding: bound(Some("c")), class: class(Some("cls-env"), None) },
            env("cls-env", EnvironmentSource::ServerClass)),
        ("allocated, class without env",
            Lookup { server: server(None, None, false, false), binding: bound(Some("c")), class: class(None, Some(IpxeSanboot)) },
            env("default", EnvironmentSource::Default)),
        ("installed, config method",
            Lookup { server: server(Some("e"), None, true, false), binding: bound(None), class: None },
            disk(IpxeExit, MethodSource::Config)),
        ("installed, class method beats config",
            Lookup { server: server(None, None, true, false), binding: bound(Some("c")), class: class(None, Some(Http404)) },
            disk(Http404, MethodSource::ServerClass)),
        ("installed, server method beats class",
            Lookup { server: server(None, Some(IpxeSanboot), true, false), binding: bound(Some("c")), class: class(None, Some(Http404)) },
            disk(IpxeSanboot, MethodSource::Server)),
        ("installed, server ipxe-exit beats class",
            Lookup { server: server(None, Some(IpxeExit), true, false), binding: bound(Some("c")), class: class(None, Some(IpxeSanboot)) },
            disk(IpxeExit, MethodSource::Server)),
        ("installed but pxeBootAlways -> environment",
            Lookup { server: server(Some("e"), Some(Http404), true, true), binding: bound(None), class: None },
            env("e", EnvironmentSource::Server)),
    ];
    for (what, lookup, want) in cases {
        assert_eq!(decide(&lookup, Arch::Amd64, IpxeExit), want, "{what}");
    }
    // The config default is used as given, for each method.
    for m in BootFromDiskMethod::ALL {
        let l = Lookup {
            server: server(None, None, true, false),
            binding: bound(None),
            class: None,
        };
        assert_eq!(decide(&l, Arch::Amd64, m), disk(m, MethodSource::Config));
    }
    assert_eq!(
        decide(&Lookup::default(), Arch::Arm64, IpxeExit),
        BootPlan::Agent {
            arch: Arch::Arm64,
            reason: AgentReason::UnknownServer
        }
    );
}

#[test]
fn arch_from_query() {
    for (q, want) in [
        ("arm64", Arch::Arm64),
        ("aarch64", Arch::Arm64),
        ("x86_64", Arch::Amd64),
        ("i386", Arch::Amd64),
        ("", Arch::Amd64),
    ] {
        assert_eq!(Arch::from_query(q), want, "{q}");
    }
    assert_eq!(Arch::Arm64.agent_environment(), "agent-arm64");
    assert!(is_agent_environment("agent-amd64") && !is_agent_environment("default"));
}

#[test]
fn facts_from_typed_objects() {
    let s: crate::model::Server = serde_json::from_value(json!({
        "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server", "metadata": {"name": "s"},
        "spec": {"environmentRef": {"name": "e1"}, "bootFromDiskMethod": "http-404", "pxeBootAlways": true},
        "status": {"ready": false, "inUse": false, "isClean": false, "conditions": [
            {"type": "PowerCycle", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"},
            {"type": "PXEBooted", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
    }))
    .unwrap();
    assert_eq!(
        ServerFacts::from_server(&s),
        ServerFacts {
            environment_ref: Some("e1".into()),
            boot_from_disk_method: Some(BootFromDiskMethod::Http404),
            pxe_boot_always: true,
            pxe_booted: true
        }
    );
    // PXEBooted False, no method, empty env name: all read as absent.
    let s: crate::model::Server = serde_json::from_value(json!({
        "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server", "metadata": {"name": "s"},
        "spec": {"environmentRef": {"name": ""}},
        "status": {"conditions": [
            {"type": "PXEBooted", "status": "False", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
    }))
    .unwrap();
    assert_eq!(ServerFacts::from_server(&s), ServerFacts::default());
    let b: crate::model::ServerBinding = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "ServerBinding",
        "metadata": {"name": "s"},
        "spec": {"serverClassRef": {"name": "c"}, "metalMachineRef": {"name": "m"}}
    }))
    .unwrap();
    assert_eq!(
        BindingFacts::from_binding(&b),
        BindingFacts {
            server_class: Some("c".into())
        }
    );
    let c: crate::model::ServerClass = serde_json::from_value(json!({
        "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass", "metadata": {"name": "c"},
        "spec": {"environmentRef": {"name": "x"}, "bootFromDiskMethod": "ipxe-sanboot"}
    }))
    .unwrap();
    assert_eq!(
        ClassFacts::from_class(&c),
        ClassFacts {
            environment_ref: Some("x".into()),
            boot_from_disk_method: Some(BootFromDiskMethod::IpxeSanboot)
        }
    );
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn merge_by_key_table() {
    let base = strings(&["console=tty0", "console=ttyS0", "panic=30", "quiet"]);
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["console=tty0", "console=ttyS0", "panic=30", "quiet"]),
        (
            &["panic=0"],
            &["console=tty0", "console=ttyS0", "panic=0", "quiet"],
        ),
        (
            &["console=ttyS1,115200"],
            &["console=ttyS1,115200", "panic=30", "quiet"],
        ),
        (
            &["console=ttyS1", "console=tty1"],
            &["console=ttyS1", "console=tty1", "panic=30", "quiet"],
        ),
        (
            &["new=1"],
            &[
                "console=tty0",
                "console=ttyS0",
                "panic=30",
                "quiet",
                "new=1",
            ],
        ),
        (
            &["quiet"],
            &["console=tty0", "console=ttyS0", "panic=30", "quiet"],
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(
            merge_by_key(&base, &strings(extra)),
            strings(want),
            "{extra:?}"
        );
    }
}

#[test]
fn agent_and_environment_args() {
    let a = agent_args(
        Arch::Amd64,
        Some("52:54:00:12:34:56"),
        "10.0.0.1:8081",
        &strings(&["panic=0", "x=y"]),
    );
    assert_eq!(&a[..6], &TALOS_DEFAULT_ARGS.map(String::from));
    for want in [
        "console=tty0",
        "console=ttyS0",
        "initrd=initramfs.xz",
        "panic=0",
        "sidero.mac=52:54:00:12:34:56",
        "sidero.endpoint=10.0.0.1:8081",
        "x=y",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
    }
    assert!(!a.iter().any(|x| x == "panic=30"));
    assert!(
        !agent_args(Arch::Amd64, None, "h:1", &[])
            .iter()
            .any(|x| x.starts_with("sidero.mac"))
    );
    // ARM64: the serial console is the PL011 (ttyAMA0); there is no ttyS0 to print on.
    let arm = agent_args(Arch::Arm64, None, "h:1", &[]);
    assert!(arm.iter().any(|x| x == "console=ttyAMA0"), "{arm:?}");
    assert!(!arm.iter().any(|x| x == "console=ttyS0"), "{arm:?}");
    assert!(!a.iter().any(|x| x == "console=ttyAMA0"), "{a:?}");

    let e = environment_args(
        &strings(&["console=ttyS0", "talos.platform=metal"]),
        "h:8081",
        None,
    );
    assert_eq!(
        e,
        strings(&[
            "console=ttyS0",
            "talos.platform=metal",
            "talos.config=http://h:8081/configdata?uuid=",
            "siderolink.api=h:8081"
        ])
    );
    // Present keys are kept as the spec wrote them.
    let e = environment_args(
        &strings(&["talos.config=http://x/cfg", "siderolink.api=y:1"]),
        "h:8081",
        None,
    );
    assert_eq!(
        e,
        strings(&["talos.config=http://x/cfg", "siderolink.api=y:1"])
    );
    // With SideroLink on: Sidero's logging and event sink args, bracketed IPv6.
    let addr: std::net::Ipv6Addr = "fd0b:4902:8b54:2503::1".parse().unwrap();
    let e = environment_args(
        &strings(&["console=ttyS0", "talos.events.sink=[fd00::9]:4002"]),
        "h:8081",
        Some(addr),
    );
    assert_eq!(
        e,
        strings(&[
            "console=ttyS0",
            "talos.events.sink=[fd00::9]:4002",
            "talos.config=http://h:8081/configdata?uuid=",
            "siderolink.api=h:8081",
            "talos.logging.kernel=tcp://[fd0b:4902:8b54:2503::1]:4001",
        ])
    );
}

fn env_json(
    kernel_url: &str,
    kernel_sha: &str,
    initrd_url: &str,
    conds: serde_json::Value,
) -> serde_json::Value {
    json!({
        "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Environment", "metadata": {"name": "e"},
        "spec": {"kernel": {"url": kernel_url, "sha512": kernel_sha, "args": ["a=1"]}, "initrd": {"url": initrd_url}},
        "status": {"conditions": conds}
    })
}

#[test]
fn readiness_table() {
    let sha = "ab".repeat(64);
    let ok_k = json!({"type": "Ready", "status": "True", "url": "http://k", "sha512": sha});
    let ok_i = json!({"type": "Ready", "status": "True", "url": "http://i", "sha512": "00"});
    let bad_i = json!({"type": "Ready", "status": "False", "url": "http://i", "reason": "DownloadFailed", "message": "GET http://i: HTTP 404"});
    let up_i =
        json!({"type": "Ready", "status": "True", "url": "upload:initramfs.xz", "sha512": "11"});
    let all = |_| true;
    let cases: Vec<(&str, serde_json::Value, Result<(), &str>)> = vec![
        (
            "both ready",
            env_json("http://k", &sha, "http://i", json!([ok_k, ok_i])),
            Ok(()),
        ),
        (
            "nothing yet",
            env_json("http://k", &sha, "http://i", json!([])),
            Err("kernel from http://k is not downloaded yet"),
        ),
        (
            "initrd failed",
            env_json("http://k", &sha, "http://i", json!([ok_k, bad_i])),
            Err("initrd DownloadFailed: GET http://i: HTTP 404"),
        ),
        (
            "sha changed in spec",
            env_json(
                "http://k",
                &"cd".repeat(64),
                "http://i",
                json!([ok_k, ok_i]),
            ),
            Err("it is fetched again"),
        ),
        (
            "uploaded initrd, no url",
            env_json("http://k", &sha, "", json!([ok_k, up_i])),
            Ok(()),
        ),
        (
            "no url, not uploaded",
            env_json("http://k", &sha, "", json!([ok_k])),
            Err("initrd has no url and was not uploaded"),
        ),
    ];
    for (what, v, want) in cases {
        let env: crate::model::Environment = serde_json::from_value(v).unwrap();
        let got = readiness(&EnvSpec::from_environment(&env), &conditions(&env), all);
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(w)) => assert!(e.contains(w), "{what}: {e}"),
            (g, w) => panic!("{what}: got {g:?}, want {w:?}"),
        }
    }
    let v = env_json("http://k", &sha, "http://i", json!([ok_k, ok_i]));
    let env: crate::model::Environment = serde_json::from_value(v).unwrap();
    let e = readiness(&EnvSpec::from_environment(&env), &conditions(&env), |a| {
        a == Asset::Kernel
    })
    .unwrap_err();
    assert!(e.contains("initrd file is missing"), "{e}");
}

#[test]
fn with_condition_replaces_and_prunes() {
    let docs = crate::model::parse_documents(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Environment\nmetadata: {name: e}\nspec:\n  kernel: {url: 'http://k2', sha512: ''}\n  initrd: {url: 'http://i'}\nstatus:\n  conditions:\n  - {type: Ready, status: 'True', url: 'http://k1', sha512: 'x'}\n  - {type: Ready, status: 'False', url: 'http://i', sha512: ''}\n",
    )
    .unwrap();
    let crate::model::Object::Environment(env) = &docs[0] else {
        panic!()
    };
    let c = AssetCondition {
        url: "http://i".into(),
        sha512: "ff".into(),
        ready: true,
        reason: "Downloaded".into(),
        message: "3 bytes".into(),
    };
    let out = with_condition(env, Asset::Initrd, &c);
    let conds = conditions(&out);
    assert_eq!(
        conds,
        vec![c.clone()],
        "old http://k1 dropped, http://i replaced"
    );
    // A stale result (key no longer in the spec) changes nothing.
    let stale = AssetCondition {
        url: "http://old".into(),
        ..c
    };
    assert_eq!(&with_condition(&out, Asset::Initrd, &stale), &out);
}

#[test]
fn asset_names() {
    assert_eq!(Asset::from_file_name("initrd"), Some(Asset::Initrd));
    assert_eq!(Asset::from_file_name("initramfs.xz"), Some(Asset::Initrd));
    assert_eq!(Asset::from_file_name("vmlinuz"), Some(Asset::Kernel));
    assert_eq!(Asset::from_file_name("../x"), None);
    assert_eq!(Asset::parse("kernel"), Some(Asset::Kernel));
    let d = AssetDirs::new(std::path::Path::new("/d"), None);
    assert_eq!(
        d.file("e", Asset::Initrd),
        std::path::Path::new("/d/env/e/initramfs.xz")
    );
    let d = AssetDirs::new(std::path::Path::new("/d"), Some(std::path::Path::new("/a")));
    assert_eq!(
        d.file("agent-amd64", Asset::Kernel),
        std::path::Path::new("/a/agent-amd64/vmlinuz")
    );
    assert_eq!(
        d.file("e", Asset::Kernel),
        std::path::Path::new("/d/env/e/vmlinuz")
    );
}
