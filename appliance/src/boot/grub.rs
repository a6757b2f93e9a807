//! The GRUB chain's TFTP names, rendered per request (a [`Rendered`] plugged into the TFTP
//! service by `app.rs`):
//! - `grub/grub.cfg`: the fixed chain config (`protocol::grub::chain_config`), the file
//!   Debian's GRUB network images (`grubnetx64.efi.signed` behind shim, `grubnetaa64.efi`)
//!   read from `$prefix` = `/grub` after trying `grub/<platform>/grub.cfg`;
//! - `grub/client/<grub_cpu>/<mac>/<uuid>`: this client's config, from the same
//!   [`Decider`] as `/ipxe` (agent, Environment, boot from disk, refusals);
//! - `env/<name>/{vmlinuz,initramfs.xz,initrd}`: Environment files, as HTTP `/env/`.
//!
//! Why TFTP and not HTTP: Debian's signed GRUB network image has no `http` module (checked:
//! neither `grubnetx64.efi.signed` nor `grubnetaa64.efi` carries GRUB's HTTP client) and,
//! under Secure Boot, GRUB loads no module from outside its signed image. So the per-client
//! config, kernel and initrd come over TFTP from the server GRUB was loaded from (`$root`).

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::boot::answer::{Answer, Decider, Note, Request, asset_paths};
use crate::boot::assets::Asset;
use crate::boot::{Arch, is_agent_environment};
use crate::model::MacAddr;
use crate::model::meta::validate_name;
use crate::net::tftp::{Rendered, RenderedFile};
use crate::protocol::grub::{self, CHAIN_CONFIG, CLIENT_DIR, Cpu, KernelBoot};
use crate::timeline::Recorder;
use crate::timeline::event::{Outcome, Who};

/// The GRUB chain's names; built once in `app.rs`.
#[derive(Debug)]
pub struct GrubFiles {
    pub decider: Arc<Decider>,
    /// Config `boot.advertise`: the endpoint in kernel args when set; else the address the
    /// TFTP request reached with `http_port`.
    pub advertise: Option<String>,
    pub http_port: u16,
    pub timeline: Recorder,
}

/// The GRUB CPU names (`$grub_cpu`) the box has an answer for.
fn cpu(name: &str) -> Option<(Arch, Cpu)> {
    match name {
        "x86_64" => Some((Arch::Amd64, Cpu::X86_64)),
        "arm64" => Some((Arch::Arm64, Cpu::Arm64)),
        _ => None,
    }
}

impl GrubFiles {
    fn endpoint(&self, local: IpAddr) -> String {
        if let Some(a) = &self.advertise {
            return a.clone();
        }
        match local {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{}", self.http_port),
                None => format!("[{v6}]:{}", self.http_port),
            },
            IpAddr::V4(v4) => format!("{v4}:{}", self.http_port),
        }
    }

    /// `grub/client/<cpu>/<mac>/<uuid>`.
    async fn client_config(&self, rest: &str, client: IpAddr, local: IpAddr) -> RenderedFile {
        let parts: Vec<&str> = rest.split('/').collect();
        let [cpu_name, mac, uuid] = parts[..] else {
            return RenderedFile::NotFound(format!("not a client config name: {rest:?}"));
        };
        let Some((arch, cpu)) = cpu(cpu_name) else {
            return RenderedFile::NotFound(format!("no GRUB answer for CPU {cpu_name:?}"));
        };
        let mac = mac.parse::<MacAddr>().ok();
        let endpoint = self.endpoint(local);
        let req = Request {
            uuid: if uuid == "none" { "" } else { uuid },
            arch,
            mac,
            endpoint: &endpoint,
        };
        let mut note = Note::default();
        let answer = self.decider.answer(&req, &mut note).await;
        let (text, outcome) = match answer {
            Answer::Disk(method) => (grub::boot_from_disk(method, cpu), Outcome::Ok),
            Answer::Kernel { environment, args } => {
                let (kernel, initrd) = asset_paths(&environment);
                match grub::kernel_config(&KernelBoot {
                    kernel: &kernel,
                    initrd: &initrd,
                    args: &args,
                }) {
                    Ok(text) => (text, Outcome::Ok),
                    Err(e) => {
                        note.detail = format!("environment {environment} cannot be rendered");
                        (
                            grub::refusal(&format!(
                                "environment \"{environment}\" cannot be rendered: {e}"
                            )),
                            Outcome::Failed,
                        )
                    }
                }
            }
            Answer::Refused { status, message } => (
                grub::refusal(&message),
                if status >= 500 {
                    Outcome::Failed
                } else {
                    Outcome::Refused
                },
            ),
        };
        self.timeline.record(
            Who {
                server: note.server,
                mac,
                ip: Some(client),
                ..Default::default()
            },
            note.step,
            outcome,
            format!("grub: {}", note.detail),
        );
        RenderedFile::Bytes(text.into_bytes())
    }

    /// `env/<name>/<file>`: the same files as HTTP `/env/<name>/<file>`.
    fn env_file(&self, rest: &str) -> RenderedFile {
        let Some((name, file)) = rest.split_once('/') else {
            return RenderedFile::NotFound(format!("not an environment file: {rest:?}"));
        };
        if !is_agent_environment(name) && validate_name(name).is_err() {
            return RenderedFile::NotFound(format!("refused environment name {name:?}"));
        }
        match Asset::from_file_name(file) {
            Some(asset) => RenderedFile::File(self.decider.dirs.file(name, asset)),
            None => RenderedFile::NotFound(format!("no such asset {file:?}")),
        }
    }
}

impl Rendered for GrubFiles {
    fn render<'a>(
        &'a self,
        name: &'a str,
        client: IpAddr,
        local: IpAddr,
    ) -> Pin<Box<dyn std::future::Future<Output = Option<RenderedFile>> + Send + 'a>> {
        Box::pin(async move {
            if name == CHAIN_CONFIG {
                return Some(RenderedFile::Bytes(grub::chain_config().into_bytes()));
            }
            if let Some(rest) = name
                .strip_prefix(CLIENT_DIR)
                .and_then(|r| r.strip_prefix('/'))
            {
                return Some(self.client_config(rest, client, local).await);
            }
            if let Some(rest) = name.strip_prefix("env/") {
                return Some(self.env_file(rest));
            }
            None
        })
    }
}
