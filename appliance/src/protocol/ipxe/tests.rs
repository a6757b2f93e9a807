//! Table tests of the script renderer.

use super::*;

#[test]
fn boot_from_disk_answers() {
    let cases = [
        (BootFromDiskMethod::IpxeExit, 200, "#!ipxe\nexit\n"),
        (BootFromDiskMethod::Http404, 404, ""),
        (
            BootFromDiskMethod::IpxeSanboot,
            200,
            "#!ipxe\nsanboot --no-describe --drive 0x80\n",
        ),
    ];
    for (method, status, body) in cases {
        let r = boot_from_disk(method);
        assert_eq!((r.status, r.body.as_str()), (status, body), "{method:?}");
    }
}

#[test]
fn method_spelling_round_trips() {
    for m in BootFromDiskMethod::ALL {
        assert_eq!(BootFromDiskMethod::parse(m.as_str()), Some(m));
    }
    for bad in ["", "exit", "IPXE-EXIT", "http-404 ", "sanboot"] {
        assert_eq!(BootFromDiskMethod::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn chain_script_shape() {
    let s = chain_script("/ipxe");
    assert!(s.starts_with("#!ipxe\n"));
    assert!(s.contains(
        "chain --replace /ipxe?uuid=${uuid}&mac=${net${idx}/mac:hexhyp}&domain=${domain}&hostname=${hostname}&serial=${serial}&arch=${buildarch} || goto next_iface\n"
    ));
    assert!(s.contains("set attempts:int32 10\n"));
    assert!(s.contains("isset ${net${idx}/mac} || goto exhausted\n"));
    assert!(
        s.contains("ifconf --configurator dhcp net${idx} || dhcp net${idx} || goto next_iface\n")
    );
    // A missing/failed iflinkwait must not skip the NIC (old iPXE has no such command).
    let lw = s.lines().find(|l| l.starts_with("iflinkwait")).unwrap();
    assert!(lw.contains(" || echo "), "{lw}");
    assert!(!lw.contains("goto"), "{lw}");
    assert!(s.trim_end().ends_with("reboot"));
    // Every label that is jumped to exists.
    for target in s
        .split("goto ")
        .skip(1)
        .map(|t| t.split_whitespace().next().unwrap())
    {
        assert!(
            s.contains(&format!("\n:{target}\n")),
            "label {target} missing"
        );
    }
    let abs = chain_script("http://10.0.0.1:8081/ipxe");
    assert!(abs.contains("chain --replace http://10.0.0.1:8081/ipxe?uuid="));
    assert!(
        s.contains("\nifconf --configurator dhcp net${idx} || dhcp net${idx} || goto next_iface\n")
    );
    // Fetched over IPv6: iPXE's ipv6 configurator (RA + DHCPv6), never DHCPv4.
    let v6 = chain_script_for("http://[fd00::1]:8081/ipxe", true);
    assert!(
        v6.contains("\nifconf --configurator ipv6 net${idx} || goto next_iface\n"),
        "{v6}"
    );
    assert!(
        !v6.contains("configurator dhcp") && !v6.contains("|| dhcp "),
        "{v6}"
    );
    assert!(
        v6.contains("chain --replace http://[fd00::1]:8081/ipxe?uuid="),
        "{v6}"
    );
    assert_eq!(
        v6.replace(
            "ipv6 net${idx} || goto",
            "dhcp net${idx} || dhcp net${idx} || goto"
        ),
        abs.replace("http://10.0.0.1:8081", "http://[fd00::1]:8081")
    );
}

#[test]
fn environment_script_renders() {
    let args = vec![
        "console=tty0".to_string(),
        "talos.platform=metal".to_string(),
    ];
    let s = environment_script(&EnvironmentBoot {
        kernel_url: "/env/default/vmlinuz",
        initrd_url: "/env/default/initramfs.xz",
        args: &args,
    })
    .unwrap();
    assert_eq!(
        s,
        "#!ipxe\nkernel /env/default/vmlinuz console=tty0 talos.platform=metal\ninitrd /env/default/initramfs.xz\nboot\n"
    );
    let none = environment_script(&EnvironmentBoot {
        kernel_url: "/k",
        initrd_url: "/i",
        args: &[],
    })
    .unwrap();
    assert_eq!(none, "#!ipxe\nkernel /k\ninitrd /i\nboot\n");
}

#[test]
fn environment_script_rejects_unsplittable_args() {
    for bad in ["a b", "", "x\ny", "tab\there", "nul\0"] {
        let args = vec!["ok=1".to_string(), bad.to_string()];
        let e = environment_script(&EnvironmentBoot {
            kernel_url: "/k",
            initrd_url: "/i",
            args: &args,
        })
        .unwrap_err();
        assert_eq!(
            e,
            RenderScriptError::BadArg {
                index: 1,
                arg: bad.into()
            }
        );
    }
    let e = environment_script(&EnvironmentBoot {
        kernel_url: "/k k",
        initrd_url: "/i",
        args: &[],
    })
    .unwrap_err();
    assert!(matches!(e, RenderScriptError::BadUrl { .. }));
}
