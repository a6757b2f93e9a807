//! `lab`: the appliance plus N PXE client VMs in a private network namespace, for manual
//! play (run it through `scripts/lab`). Prints how to reach the appliance and each VM's
//! serial console; Ctrl-C (or SIGTERM) stops every process and deletes the namespace. The
//! scratch directory with the logs is kept.
//!
//! By default the test Environment (kernel + busybox initramfs that prints a marker and
//! powers off) is installed as the agent environment, so an unknown VM boots it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use qemu_tests::appliance::{ApplianceConfig, binary};
use qemu_tests::peers::DnsmasqRole;
use qemu_tests::{Firmware, Lab, Needs, VmSpec, env, skip_reason};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fw {
    Bios,
    Uefi,
    /// OVMF's UEFI HTTP boot client (PXE off).
    UefiHttp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dhcp {
    /// The appliance owns the segment (pool 10.77.0.100-149).
    Server,
    /// dnsmasq on 10.77.0.2 gives addresses only; the appliance adds PXE info.
    Proxy,
}

/// Run the appliance and PXE client VMs in a network namespace until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "lab")]
struct Args {
    /// Number of PXE client VMs.
    #[arg(long, default_value_t = 1)]
    vms: u32,
    /// Firmware of the VMs.
    #[arg(long, value_enum, default_value_t = Fw::Bios)]
    firmware: Fw,
    /// DHCP mode of the appliance.
    #[arg(long, value_enum, default_value_t = Dhcp::Server)]
    dhcp: Dhcp,
    /// Directory with vmlinuz + initramfs.xz to install as the agent environment
    /// (default: the test Environment, built by scripts/build-test-initramfs).
    #[arg(long)]
    agent_env: Option<PathBuf>,
    /// Memory per VM in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("lab: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let needs = match args.firmware {
        Fw::Bios => Needs::Bios,
        Fw::Uefi | Fw::UefiHttp => Needs::Uefi,
    };
    // The lab tool is always opted in; only the machine checks apply.
    if let Some(reason) = skip_reason(needs).filter(|r| !r.contains(qemu_tests::OPT_IN_VAR)) {
        bail!("cannot run here: {reason}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("install Ctrl-C handler")?;
    }
    let agent_env = match args.agent_env {
        Some(dir) => dir,
        None => env::test_env()?.dir.clone(),
    };
    let bin = binary()?;
    let mut lab = Lab::new()?;
    lab.keep_dir_on_drop();
    let config = match args.dhcp {
        Dhcp::Server => ApplianceConfig::server(),
        Dhcp::Proxy => {
            lab.start_dnsmasq_peer(&DnsmasqRole::AddressesOnly)?;
            ApplianceConfig::proxy()
        }
    }
    .agent_env(&agent_env);
    let appliance = lab.start_appliance(&config)?;
    let base = appliance.base_url();
    let data = appliance.data_dir().display().to_string();
    let ns = lab.ns().name().to_string();
    println!(
        "lab: netns {ns}, bridge br0 10.77.0.1/24, scratch dir {}",
        lab.dir().display()
    );
    println!(
        "appliance: {base}  log: {}",
        lab.path("appliance.log").display()
    );
    println!(
        "  ip netns exec {ns} {} ctl --endpoint {base} --data-dir {data} server list",
        bin.display()
    );
    println!("  ip netns exec {ns} curl -s {base}/boot.ipxe");
    let firmware = match args.firmware {
        Fw::Bios => Firmware::Bios,
        Fw::Uefi => Firmware::Uefi,
        Fw::UefiHttp => Firmware::UefiHttp,
    };
    let mut vms = Vec::new();
    for _ in 0..args.vms {
        let mut spec = VmSpec::new(firmware).memory(args.memory);
        spec.console_socket = true;
        let vm = lab.start_vm(&spec)?;
        println!(
            "{}: mac {}  serial log: tail -f {}  console: socat -,raw,echo=0 UNIX-CONNECT:{}",
            vm.name(),
            vm.mac(),
            vm.serial_path().display(),
            vm.console_socket().display()
        );
        vms.push(vm);
    }
    println!("Ctrl-C stops everything and deletes the namespace.");
    let mut reported = vec![false; vms.len()];
    while !stop.load(Ordering::SeqCst) {
        for (vm, done) in vms.iter_mut().zip(reported.iter_mut()) {
            if !*done && let Some(status) = vm.exited() {
                println!(
                    "{}: QEMU exited ({status}) after {:.1}s",
                    vm.name(),
                    vm.elapsed().as_secs_f64()
                );
                *done = true;
            }
        }
        if let Err(e) = lab.appliance().check_alive() {
            eprintln!("lab: {e:#}");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("lab: stopping");
    drop(vms);
    drop(lab);
    Ok(())
}
