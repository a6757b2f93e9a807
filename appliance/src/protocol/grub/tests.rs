//! Tests of the GRUB config renderer, read back with a tokenizer that follows GRUB's word
//! rules (`grub-core/script/yylex.l`): outside quotes whitespace separates words, `\x` is
//! `x`, `;`, `|`, `&`, `<`, `>`, `{`, `}` and newlines are operators, `$` expands; inside
//! `'…'` everything is literal; inside `"…"` `$` expands and `\` escapes.

use super::*;

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    /// An operator or a variable expansion outside single quotes: where a value that
    /// broke out of its word would show.
    Special(char),
}

fn tokens(line: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        '$' => out.push(Token::Special('$')),
                        q => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            ' ' | '\t' => {
                if in_word {
                    out.push(Token::Word(std::mem::take(&mut word)));
                    in_word = false;
                }
            }
            ';' | '|' | '&' | '<' | '>' | '{' | '}' | '\n' | '$' => {
                if in_word {
                    out.push(Token::Word(std::mem::take(&mut word)));
                    in_word = false;
                }
                out.push(Token::Special(c));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(Token::Word(word));
    }
    out
}

fn words(items: &[&str]) -> Vec<Token> {
    items.iter().map(|w| Token::Word(w.to_string())).collect()
}

#[test]
fn hostile_kernel_args_stay_one_word_each() {
    let args: Vec<String> = [
        "console=ttyS0",
        "quiet",
        "a b",
        "it's",
        "x=\"quoted value\"",
        "$(reboot)",
        "${prefix}",
        "; reboot",
        "' ; reboot ; echo '",
        "back\\slash",
        "{braces}",
        "a|b&c<d>e",
        "",
        "'",
        "''",
        "\\'",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = kernel_config(&KernelBoot {
        kernel: "/env/agent-amd64/vmlinuz",
        initrd: "/env/agent-amd64/initramfs.xz",
        args: &args,
    })
    .unwrap();
    let lines: Vec<&str> = cfg.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 4, "{cfg}");
    let mut expected = vec!["linux", "/env/agent-amd64/vmlinuz"];
    expected.extend(args.iter().map(String::as_str));
    assert_eq!(tokens(lines[1]), words(&expected), "{}", lines[1]);
    assert_eq!(
        tokens(lines[2]),
        words(&["initrd", "/env/agent-amd64/initramfs.xz"])
    );
    assert_eq!(tokens(lines[3]), words(&["boot"]));
    assert_eq!(
        tokens(lines[0]),
        words(&["echo", "appliance: loading /env/agent-amd64/vmlinuz"])
    );
}

#[test]
fn control_characters_are_refused() {
    for bad in ["a\nreboot", "tab\there", "nul\0", "cr\r"] {
        let args = vec!["ok".to_string(), bad.to_string()];
        let err = kernel_config(&KernelBoot {
            kernel: "/k",
            initrd: "/i",
            args: &args,
        })
        .unwrap_err();
        assert_eq!(
            err,
            RenderConfigError::BadArg {
                index: 1,
                arg: bad.to_string()
            }
        );
    }
    for bad in ["", "/env/x\n/vmlinuz"] {
        assert!(matches!(
            kernel_config(&KernelBoot {
                kernel: bad,
                initrd: "/i",
                args: &[],
            }),
            Err(RenderConfigError::BadPath { .. })
        ));
        assert!(matches!(
            kernel_config(&KernelBoot {
                kernel: "/k",
                initrd: bad,
                args: &[],
            }),
            Err(RenderConfigError::BadPath { .. })
        ));
    }
}

#[test]
fn quote_round_trips() {
    for s in ["", "plain", "'", "a'b'c", "\"", "\\", "$x ${y}", "; } {"] {
        assert_eq!(tokens(&quote(s)), words(&[s]), "{s:?}");
    }
}

#[test]
fn disk_methods_map_to_grub_actions() {
    for m in [BootFromDiskMethod::IpxeExit, BootFromDiskMethod::Http404] {
        let cfg = boot_from_disk(m, Cpu::X86_64);
        let last = cfg.lines().last().unwrap();
        assert_eq!(last, "exit", "{m:?}: {cfg}");
        assert!(!cfg.contains("chainloader"), "{cfg}");
        assert!(cfg.contains(m.as_str()), "{cfg}");
    }
    let x = boot_from_disk(BootFromDiskMethod::IpxeSanboot, Cpu::X86_64);
    assert!(
        x.contains("search --no-floppy --file --set=appliance_esp '/EFI/BOOT/BOOTX64.EFI'\n"),
        "{x}"
    );
    assert!(x.contains("  chainloader \"($appliance_esp)\"'/EFI/BOOT/BOOTX64.EFI'\n  boot\n"));
    assert_eq!(
        x.lines().last(),
        Some("exit"),
        "no disk loader: back to the firmware"
    );
    let a = boot_from_disk(BootFromDiskMethod::IpxeSanboot, Cpu::Arm64);
    assert!(a.contains("'/EFI/BOOT/BOOTAA64.EFI'"), "{a}");
    assert!(!a.contains("BOOTX64"), "{a}");
}

#[test]
fn chain_config_sources_the_client_config_and_gives_up_after_ten() {
    let c = chain_config();
    assert!(c.contains("smbios --type 1 --get-uuid 8 --set appliance_uuid\n"));
    assert!(c.contains("for appliance_attempt in 1 2 3 4 5 6 7 8 9 10; do\n"));
    assert!(
        c.contains("  source \"($root)/grub/client/$grub_cpu/$net_default_mac/$appliance_uuid\"\n")
    );
    assert_eq!(c.lines().last(), Some("reboot"));
    // Balanced constructs: one for/done, one if/fi.
    assert_eq!(c.matches("\ndone\n").count(), 1);
    assert_eq!(c.matches("; fi\n").count(), 1);
}

#[test]
fn refusals_echo_one_word_and_return() {
    let r = refusal("environment \"x\" is not ready: it's\nnot; there $now");
    let lines: Vec<&str> = r.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 1, "{r}");
    assert_eq!(
        tokens(lines[0]),
        words(&[
            "echo",
            "appliance: environment \"x\" is not ready: it's not; there $now"
        ])
    );
}
