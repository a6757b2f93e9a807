//! Self-check of the lab harness against reference peers (no appliance): dnsmasq (DHCP +
//! TFTP) and busybox httpd. If this fails, the harness or the machine is broken, not the
//! appliance; if it passes and `pxe_boot` fails, look at the appliance.

use std::time::Duration;

use qemu_tests::env::{MARKER, test_env};
use qemu_tests::peers::DnsmasqRole;
use qemu_tests::{Firmware, Lab, Needs, VmSpec, netns, require_lab};

#[test]
fn dnsmasq_bios_ipxe_boots_test_env_and_lab_cleans_up() {
    require_lab!(Needs::Bios);
    let env = test_env().expect("test env");
    let ns_name;
    {
        let mut lab = Lab::new().expect("lab");
        ns_name = lab.ns().name().to_string();
        let www = lab.path("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::copy(&env.kernel, www.join("vmlinuz")).unwrap();
        std::fs::copy(&env.initrd, www.join("initramfs.xz")).unwrap();
        std::fs::write(
            www.join("boot.ipxe"),
            "#!ipxe\nkernel vmlinuz console=ttyS0 initrd=initramfs.xz quiet panic=-1 harness=1\ninitrd initramfs.xz\nboot\n",
        )
        .unwrap();
        let http = lab.start_static_http(&www, 8081).expect("httpd");
        let script_url = format!("{}/boot.ipxe", http.base_url);
        lab.start_dnsmasq(&DnsmasqRole::Pxe {
            tftp_root: qemu_tests::IPXE_DIR.into(),
            script_url,
        })
        .expect("dnsmasq");
        let mut vm = lab.start_vm(&VmSpec::new(Firmware::Bios)).expect("vm");
        let line = vm
            .wait_for(MARKER, Duration::from_secs(180))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()));
        assert!(line.contains("harness=1"), "booted with our script: {line}");
        let httpd = lab.static_http().unwrap().log();
        for path in ["/boot.ipxe", "/vmlinuz", "/initramfs.xz"] {
            assert!(
                httpd.contains(&format!("url:{path}")),
                "httpd served {path}:\n{httpd}"
            );
        }
        vm.wait_exit(Duration::from_secs(30))
            .expect("guest powers off");
        eprintln!(
            "dnsmasq BIOS boot to marker: {:.1}s",
            vm.elapsed().as_secs_f64()
        );
    }
    // Everything is gone: no namespace left (its processes were killed with it).
    let left = netns::list_own().unwrap();
    assert!(
        !left.contains(&ns_name),
        "netns {ns_name} left behind: {left:?}"
    );
}
