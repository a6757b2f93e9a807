//! The one boot answer behind every network-boot config the box renders: `/ipxe` (iPXE
//! script) and the per-client GRUB config (`boot/grub.rs`) ask the same [`Decider`], which
//! reads the store, runs the pure decision (`crate::boot::decide`), checks the Environment's
//! files and builds the kernel arguments (`crate::boot::args`, the same builder for the
//! agent, Environments and SideroLink's overlay addresses, plus the agent's one-boot token).
//! Each renderer then only turns an [`Answer`] into its own syntax.

use std::sync::Arc;

use crate::api::first_contact::FirstContact;
use crate::boot::args::{agent_args, environment_args};
use crate::boot::assets::{self, Asset, AssetDirs, EnvSpec};
use crate::boot::{
    Arch, BindingFacts, BootFromDiskMethod, BootPlan, ClassFacts, Lookup, ServerFacts, decide,
    is_agent_environment,
};
use crate::model::MacAddr;
use crate::model::{Kind, Object, meta::validate_name};
use crate::protocol::first_contact::{JUNK_LABEL, TOKEN_ARG, junk_uuid};
use crate::store::{Store, StoreError};
use crate::timeline::event::Step;

/// What the decision needs beyond the request; built once in `app.rs`.
#[derive(Debug)]
pub struct Decider {
    pub store: Store,
    pub dirs: AssetDirs,
    pub default_method: BootFromDiskMethod,
    pub extra_agent_args: Vec<String>,
    /// Whether the download task runs (config `boot.download_assets`): named in refusals.
    pub downloads: bool,
    /// The SideroLink server address (`<prefix>::1`) when SideroLink is on.
    pub siderolink_server: Option<std::net::Ipv6Addr>,
    /// Boot tokens for the agent (`[agent] first_contact`), shared with the agent API.
    pub first_contact: Arc<FirstContact>,
}

/// One network-boot request, whichever first stage sent it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// As sent (lower-cased and trimmed here).
    pub uuid: &'a str,
    pub arch: Arch,
    pub mac: Option<MacAddr>,
    /// `host:port` of this box's HTTP listener as the client reaches it.
    pub endpoint: &'a str,
}

/// What to boot, or why not (with the HTTP status `/ipxe` answers for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Installed: leave network boot.
    Disk(BootFromDiskMethod),
    /// Boot this Environment's (or the agent's) kernel and initrd with these arguments.
    Kernel {
        environment: String,
        args: Vec<String>,
    },
    /// Not now: 412 (not ready), 404 (unknown Environment), 500 (store failure).
    Refused { status: u16, message: String },
}

/// What the boot timeline learns of one answer.
#[derive(Debug, Clone)]
pub struct Note {
    /// The uuid when it names a stored Server.
    pub server: Option<String>,
    pub step: Step,
    pub detail: String,
}

impl Default for Note {
    fn default() -> Self {
        Note {
            server: None,
            step: Step::Ipxe,
            detail: String::new(),
        }
    }
}

/// The kernel and initrd paths of an Environment on the box (HTTP, and TFTP for GRUB).
pub fn asset_paths(environment: &str) -> (String, String) {
    (
        format!("/env/{environment}/{}", Asset::Kernel.file_name()),
        format!("/env/{environment}/{}", Asset::Initrd.file_name()),
    )
}

fn refused(status: u16, message: String) -> Answer {
    Answer::Refused { status, message }
}

fn not_ready(name: &str, reason: &str) -> Answer {
    refused(
        412,
        format!("environment \"{name}\" is not ready: {reason}"),
    )
}

impl Decider {
    /// The answer for `req`; `note` says what was decided (or why it refused).
    pub async fn answer(&self, req: &Request<'_>, note: &mut Note) -> Answer {
        let answer = self.decide(req, note).await;
        if let Answer::Refused { status, .. } = &answer
            && note.detail.is_empty()
        {
            note.detail = format!("answered {status}");
        }
        answer
    }

    async fn decide(&self, req: &Request<'_>, note: &mut Note) -> Answer {
        let uuid = req.uuid.trim().to_ascii_lowercase();
        let mac = req.mac.map(|m| m.to_string());
        let store = self.store.clone();
        let (uuid2, mac_addr) = (uuid.clone(), req.mac);
        let found = crate::store::blocking(move || match server_name(&store, &uuid2, mac_addr)? {
            Some(name) => lookup(&store, &name),
            None => Ok(Lookup::default()),
        })
        .await;
        let found = match found {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return internal(&e),
            Err(e) => return refused(500, format!("boot decision failed: {e}")),
        };
        if found.server.is_some() {
            note.server = Some(uuid.clone());
        }
        let plan = decide(&found, req.arch, self.default_method);
        tracing::info!(uuid = %uuid, mac = mac.as_deref().unwrap_or("-"), plan = ?plan, "boot decision");
        let env_name = match plan {
            BootPlan::Disk { method, .. } => {
                note.step = Step::DiskBoot;
                note.detail = format!("boot from disk ({method:?})");
                return Answer::Disk(method);
            }
            BootPlan::Agent { arch, .. } => arch.agent_environment().to_string(),
            BootPlan::Environment { name, .. } => name,
        };
        note.detail = format!("environment {env_name}");
        if is_agent_environment(&env_name) {
            let missing: Vec<String> = Asset::ALL
                .iter()
                .filter(|a| !self.dirs.present(&env_name, **a))
                .map(|a| self.dirs.file(&env_name, *a).display().to_string())
                .collect();
            if !missing.is_empty() {
                note.detail = format!("environment {env_name}: agent files missing");
                return not_ready(
                    &env_name,
                    &format!(
                        "agent files missing: {} (build the agent image, or appliance ctl env upload {env_name} --kernel FILE --initrd FILE)",
                        missing.join(", ")
                    ),
                );
            }
            let mut args = agent_args(
                req.arch,
                mac.as_deref(),
                req.endpoint,
                &self.extra_agent_args,
            );
            // The one-boot token is the box's alone (an operator's extra arg never sets it)
            // and goes last.
            args.retain(|a| crate::boot::args::key(a) != TOKEN_ARG);
            if self.first_contact.tokens_on() {
                match req.mac {
                    Some(m) => {
                        if let Some(t) = self.first_contact.mint(&uuid, m) {
                            args.push(format!("{TOKEN_ARG}={t}"));
                        }
                    }
                    None => {
                        tracing::warn!(uuid = %uuid, "boot request without a MAC: no boot token, so this agent cannot register ([agent] first_contact = \"token\")")
                    }
                }
            }
            return Answer::Kernel {
                environment: env_name,
                args,
            };
        }
        let store = self.store.clone();
        let name2 = env_name.clone();
        let env = match crate::store::blocking(move || store.get(Kind::Environment, &name2)).await {
            Ok(Ok(Some(s))) => match s.object {
                Object::Environment(e) => e,
                _ => return refused(500, "store returned a wrong kind".into()),
            },
            Ok(Ok(None)) => {
                note.detail = format!("environment {env_name} not found");
                return refused(404, format!("environment \"{env_name}\" not found"));
            }
            Ok(Err(e)) => return internal(&e),
            Err(e) => return refused(500, format!("environment lookup failed: {e}")),
        };
        let spec = EnvSpec::from_environment(&env);
        let conds = assets::conditions(&env);
        if let Err(reason) = assets::readiness(&spec, &conds, |a| self.dirs.present(&env_name, a)) {
            note.detail = format!("environment {env_name} not ready: {reason}");
            let hint = if self.downloads {
                ""
            } else {
                " (downloads are off: [boot] download_assets = false; use appliance ctl env upload)"
            };
            return not_ready(&env_name, &format!("{reason}{hint}"));
        }
        Answer::Kernel {
            args: environment_args(&spec.args, req.endpoint, self.siderolink_server),
            environment: env_name,
        }
    }
}

fn internal(e: &StoreError) -> Answer {
    tracing::error!(error = %crate::error_chain(e), "boot decision: store read failed");
    refused(500, format!("store read failed: {}", crate::error_chain(e)))
}

/// The Server a boot request is about: its UUID, unless that UUID cannot name one
/// machine — a junk form (all zeros, all F, …) or a registered server none of whose NICs is
/// the booting `mac` (a second chassis with the same UUID, Sidero #1222). Then it is the
/// server registered for that NIC under a `mac-` name (label
/// `appliance.sidero.dev/junk-uuid`), or none (the agent boots and registers it): never
/// another machine's Environment or disk.
fn server_name(
    store: &Store,
    uuid: &str,
    mac: Option<MacAddr>,
) -> Result<Option<String>, StoreError> {
    if validate_name(uuid).is_err() {
        return Ok(Some(uuid.to_string()));
    }
    if junk_uuid(uuid).is_none() {
        let Some(stored) = store.get(Kind::Server, uuid)? else {
            return Ok(Some(uuid.to_string()));
        };
        let nics = match &stored.object {
            Object::Server(s) => s.spec.nic_macs(),
            _ => Vec::new(),
        };
        match mac {
            Some(m) if !nics.is_empty() && !nics.contains(&m) => {}
            _ => return Ok(Some(uuid.to_string())),
        }
    }
    let Some(mac) = mac else {
        return Ok(None);
    };
    for stored in store.list(Kind::Server)? {
        if let Object::Server(s) = stored.object
            && s.metadata.labels.contains_key(JUNK_LABEL)
            && s.spec.nic_macs().contains(&mac)
        {
            return Ok(Some(s.metadata.name));
        }
    }
    Ok(None)
}

/// Reads what the decision needs for `uuid` from the store.
fn lookup(store: &Store, uuid: &str) -> Result<Lookup, StoreError> {
    if validate_name(uuid).is_err() {
        // Not a possible object name (empty, odd characters): an unknown server.
        return Ok(Lookup::default());
    }
    let server = match store.get(Kind::Server, uuid)? {
        Some(s) => match &s.object {
            Object::Server(s) => Some(ServerFacts::from_server(s)),
            _ => None,
        },
        None => None,
    };
    // The binding: a ServerBinding object named like the server (Sidero, kube-bridge), or
    // the lifecycle's allocation record for it.
    let binding = match store.get(Kind::ServerBinding, uuid)? {
        Some(b) => match &b.object {
            Object::ServerBinding(b) => Some(BindingFacts::from_binding(b)),
            _ => None,
        },
        None => store.allocation(uuid)?.map(|a| BindingFacts {
            server_class: a.server_class,
        }),
    };
    let class = match binding.as_ref().and_then(|b| b.server_class.as_deref()) {
        Some(name) => match store.get(Kind::ServerClass, name)? {
            Some(c) => match &c.object {
                Object::ServerClass(c) => Some(ClassFacts::from_class(c)),
                _ => None,
            },
            None => None,
        },
        None => None,
    };
    Ok(Lookup {
        server,
        binding,
        class,
    })
}
