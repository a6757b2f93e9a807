//! A/B slots and their systemd-boot entries, pure.
//!
//! Each slot has a root partition (`root-a`, `root-b`), a kernel + initrd on the ESP
//! (`/a/…`, `/b/…`) and one Boot Loader Specification entry in `loader/entries/`:
//! `appliance-<generation>-<slot>[+<left>[-<done>]].conf`. `loader.conf` names no default,
//! so systemd-boot boots the first entry of its order: entries with no tries left last,
//! then by file name, newest version first; the highest generation wins. An update writes
//! the inactive slot's entry with the next generation and a boot counter (`+1`: try once).
//! systemd-boot counts the try down when it boots the entry (`+0-1`); if the slot comes up
//! healthy, `systemd-bless-boot.service` (after `boot-complete.target`, which
//! `appliance-healthy.service` gates on `/readyz`) drops the counter and the slot is the
//! default from then on. If not, the health check reboots the box and systemd-boot, seeing
//! no tries left, sorts that entry last: the previous slot boots again by itself.

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `a` / `b`: ESP directory, partition label suffix, entry suffix.
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The GPT partition label of its root.
    pub fn partlabel(self) -> String {
        format!("root-{}", self.letter())
    }

    fn from_letter(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// The slot the running system booted, from the kernel command line's
/// `root=PARTLABEL=root-a|root-b` (the last `root=` wins, as for the kernel).
pub fn booted_slot(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("root="))
        .next_back()
        .and_then(|r| r.strip_prefix("PARTLABEL=root-"))
        .and_then(Slot::from_letter)
}

/// A loader entry file of ours, read from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub generation: u64,
    pub slot: Slot,
    /// Boot counter: (tries left, tries done); `None` once blessed (or never counted).
    pub counter: Option<(u32, u32)>,
}

impl Entry {
    /// `appliance-<gen>-<slot>[+<left>[-<done>]].conf`; other files are not ours.
    pub fn parse(file: &str) -> Option<Entry> {
        let stem = file.strip_suffix(".conf")?.strip_prefix("appliance-")?;
        let (base, counter) = match stem.split_once('+') {
            None => (stem, None),
            Some((base, c)) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (l.parse().ok()?, d.parse().ok()?),
                    None => (c.parse().ok()?, 0),
                };
                (base, Some((left, done)))
            }
        };
        let (generation, slot) = base.split_once('-')?;
        Some(Entry {
            file: file.to_string(),
            generation: generation.parse().ok()?,
            slot: Slot::from_letter(slot)?,
            counter,
        })
    }

    /// Tried and out of tries: the loader boots it no more (it failed).
    pub fn is_bad(&self) -> bool {
        matches!(self.counter, Some((0, _)))
    }

    /// Still on trial (tries left, not yet blessed).
    pub fn on_trial(&self) -> bool {
        matches!(self.counter, Some((left, _)) if left > 0)
    }
}

/// What the loader will boot next, as systemd-boot orders our entries (no `default`).
pub fn next_boot(entries: &[Entry]) -> Option<&Entry> {
    entries.iter().max_by_key(|e| {
        (
            !e.is_bad(),
            e.generation,
            e.counter.map_or(u32::MAX, |c| c.0),
        )
    })
}

/// The entry file text for `slot`.
pub fn entry_text(slot: Slot, version: &str, options: &str) -> String {
    let s = slot.letter();
    format!(
        "title Appliance {version} (slot {slot})\nversion {version}\nlinux /{s}/vmlinuz\ninitrd /{s}/initrd.img\noptions {options}\n"
    )
}

/// The `options` line for `target`, made from the booted entry's (`root=` swapped; every
/// other kernel argument kept, so an operator's edit to the console settings survives).
pub fn options_for(booted_entry_text: &str, target: Slot) -> Option<String> {
    let line = booted_entry_text
        .lines()
        .find_map(|l| l.strip_prefix("options "))?;
    let mut saw_root = false;
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            if w.starts_with("root=") {
                saw_root = true;
                format!("root=PARTLABEL={}", target.partlabel())
            } else {
                w.to_string()
            }
        })
        .collect();
    saw_root.then(|| words.join(" "))
}

/// The entry changes an update to `target` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPlan {
    /// Entries of the target slot, removed before its partition is written (so a half
    /// written slot is never bootable).
    pub remove: Vec<String>,
    /// The new entry's file name (with its boot counter).
    pub new_file: String,
}

/// Plans the entries for an update of `target` tried `tries` times.
pub fn plan(entries: &[Entry], target: Slot, tries: u32) -> EntryPlan {
    let generation = entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
    EntryPlan {
        remove: entries
            .iter()
            .filter(|e| e.slot == target)
            .map(|e| e.file.clone())
            .collect(),
        new_file: format!("appliance-{generation}-{}+{tries}.conf", target.letter()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[&str]) -> Vec<Entry> {
        names.iter().map(|n| Entry::parse(n).unwrap()).collect()
    }

    #[test]
    fn booted_slot_reads_the_last_root_argument() {
        let c = "BOOT_IMAGE=/a/vmlinuz root=PARTLABEL=root-b rootfstype=squashfs ro quiet";
        assert_eq!(booted_slot(c), Some(Slot::B));
        assert_eq!(
            booted_slot("root=/dev/sda1 root=PARTLABEL=root-a"),
            Some(Slot::A)
        );
        assert_eq!(booted_slot("root=/dev/sda1"), None);
        assert_eq!(booted_slot("root=PARTLABEL=root-c"), None);
        assert_eq!(booted_slot("quiet"), None);
    }

    #[test]
    fn entry_names_with_and_without_counters() {
        let e = Entry::parse("appliance-7-b+1.conf").unwrap();
        assert_eq!(
            (e.generation, e.slot, e.counter),
            (7, Slot::B, Some((1, 0)))
        );
        assert!(e.on_trial() && !e.is_bad());
        let e = Entry::parse("appliance-7-b+0-1.conf").unwrap();
        assert_eq!(e.counter, Some((0, 1)));
        assert!(e.is_bad() && !e.on_trial());
        let e = Entry::parse("appliance-1-a.conf").unwrap();
        assert_eq!(e.counter, None);
        for other in [
            "appliance-a.conf",
            "appliance-1-c.conf",
            "appliance-x-a.conf",
            "appliance-1-a+x.conf",
            "debian.conf",
            "appliance-1-a.conf.tmp",
        ] {
            assert_eq!(Entry::parse(other), None, "{other}");
        }
    }

    #[test]
    fn next_boot_follows_systemd_boot_order() {
        // Fresh image: A (generation 1) over B (0).
        let fresh = entries(&["appliance-0-b.conf", "appliance-1-a.conf"]);
        assert_eq!(next_boot(&fresh).unwrap().slot, Slot::A);
        // Update written: B on trial is newest.
        let trial = entries(&["appliance-1-a.conf", "appliance-2-b+1.conf"]);
        assert_eq!(next_boot(&trial).unwrap().slot, Slot::B);
        // Booted once and not blessed: no tries left, A again.
        let failed = entries(&["appliance-1-a.conf", "appliance-2-b+0-1.conf"]);
        assert_eq!(next_boot(&failed).unwrap().slot, Slot::A);
        // Blessed.
        let good = entries(&["appliance-1-a.conf", "appliance-2-b.conf"]);
        assert_eq!(next_boot(&good).unwrap().slot, Slot::B);
    }

    #[test]
    fn plan_removes_the_target_slots_entries_and_counts_up() {
        let e = entries(&["appliance-1-a.conf", "appliance-2-b+0-1.conf"]);
        let p = plan(&e, Slot::B, 1);
        assert_eq!(p.remove, vec!["appliance-2-b+0-1.conf".to_string()]);
        assert_eq!(p.new_file, "appliance-3-b+1.conf");
        let p = plan(&e, Slot::A, 3);
        assert_eq!(p.remove, vec!["appliance-1-a.conf".to_string()]);
        assert_eq!(p.new_file, "appliance-3-a+3.conf");
        assert_eq!(plan(&[], Slot::B, 1).new_file, "appliance-1-b+1.conf");
    }

    #[test]
    fn options_swap_only_the_root() {
        let text =
            "title x\noptions root=PARTLABEL=root-a rootfstype=squashfs ro console=ttyS0,115200\n";
        assert_eq!(
            options_for(text, Slot::B).unwrap(),
            "root=PARTLABEL=root-b rootfstype=squashfs ro console=ttyS0,115200"
        );
        assert_eq!(options_for("title x\noptions quiet\n", Slot::B), None);
        assert_eq!(options_for("title x\n", Slot::B), None);
        let t = entry_text(Slot::B, "1.0", "root=PARTLABEL=root-b ro");
        assert!(t.contains(
            "linux /b/vmlinuz\ninitrd /b/initrd.img\noptions root=PARTLABEL=root-b ro\n"
        ));
    }
}
