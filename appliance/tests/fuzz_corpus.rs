//! Replays every cargo-fuzz target's committed inputs through the same property function the
//! fuzz target calls: the seeds from real captures (`fuzz/seeds/<target>`) and the minimised
//! corpus a campaign left (`fuzz/corpus/<target>`, written by `scripts/fuzz`). A crash the
//! fuzzer found and that was fixed stays fixed: its input is in the corpus.
//!
//! The table below must name every `[[bin]]` of `fuzz/Cargo.toml` (checked), and every target
//! must have at least one committed input (checked), so a target cannot silently drop out.

use std::path::{Path, PathBuf};

use appliance::api::agent_report;
use appliance::metadata::strategic;
use appliance::model;
use appliance::protocol::{dhcp, dhcpv6, ipmi, ipxe, siderolink as sl_core, tftp};
use appliance::siderolink::{payload, screen};

/// A fuzz target's property: panics on a violation.
type Property = fn(&[u8]);

/// Each fuzz target and the property it runs (the body of `fuzz/fuzz_targets/<name>.rs`).
const TARGETS: &[(&str, Property)] = &[
    ("agent_report", agent_report::check_report),
    ("dhcp_packet", dhcp::properties::check_datagrams),
    ("dhcp_probe", dhcp::properties::check_probe_frame),
    ("dhcpv6_packet", dhcpv6::properties::check_messages),
    ("tftp_packet", |d| {
        tftp::properties::check_packet(d);
        let _ = tftp::properties::check_transfer(d);
    }),
    ("ipmi_wire", ipmi::fuzz_decode),
    ("ipxe_query", ipxe::query::check_query),
    ("model_yaml", model::properties::check_yaml),
    ("strategic_patch", strategic::check_apply),
    ("siderolink_logline", sl_core::properties::check_logline),
    ("siderolink_event", payload::check_payload),
    ("siderolink_screen", screen::check_screen),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/<kind>/<target>/`, sorted by name.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable corpus dir").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable corpus file");
            (p, bytes)
        })
        .collect()
}

#[test]
fn every_fuzz_target_is_replayed() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            section
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = "))
                .map(|n| n.trim_matches('"'))
        })
        .collect();
    assert!(!bins.is_empty(), "no [[bin]] in fuzz/Cargo.toml");
    for bin in &bins {
        assert!(
            TARGETS.iter().any(|(t, _)| t == bin),
            "fuzz target {bin} has no replay entry in tests/fuzz_corpus.rs"
        );
    }
    for (t, _) in TARGETS {
        assert!(bins.contains(t), "replay entry {t} is not a fuzz target");
    }
}

#[test]
fn committed_inputs_replay_without_a_violation() {
    let mut replayed = 0usize;
    for (target, check) in TARGETS {
        let all: Vec<_> = inputs("seeds", target)
            .into_iter()
            .chain(inputs("corpus", target))
            .collect();
        assert!(
            !all.is_empty(),
            "fuzz target {target} has no committed input (fuzz/seeds/{target} or fuzz/corpus/{target})"
        );
        for (path, bytes) in &all {
            let outcome = std::panic::catch_unwind(|| check(bytes));
            assert!(
                outcome.is_ok(),
                "{target}: {} violates the property",
                path.display()
            );
        }
        replayed += all.len();
    }
    eprintln!("replayed {replayed} committed fuzz inputs");
}
