//! The boot decision: what a server that asks `/ipxe` boots next (the agent, an Environment,
//! or its own disk), the kernel arguments that go with it, and the Environment asset cache
//! (download, verify, upload, readiness).
//!
//! `decide` and everything in `args`/`facts`/`assets` (except the file checks named there)
//! are pure: store objects are read by the HTTP glue and handed in as plain facts. The one
//! long-running task (asset downloads) is spawned from `app.rs`.

pub mod answer;
pub mod args;
pub mod assets;
pub mod download;
pub mod facts;
pub mod grub;

#[cfg(test)]
mod tests;

pub use crate::protocol::ipxe::BootFromDiskMethod;
pub use facts::{BindingFacts, ClassFacts, Lookup, ServerFacts};

/// CPU architecture of the booting client (iPXE `${buildarch}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// As Sidero: `arm64` (or `aarch64`) is arm64, anything else (`x86_64`, `i386`, empty)
    /// is amd64.
    pub fn from_query(s: &str) -> Arch {
        match s {
            "arm64" | "aarch64" => Arch::Arm64,
            _ => Arch::Amd64,
        }
    }

    /// The built-in agent environment for this architecture.
    pub fn agent_environment(self) -> &'static str {
        match self {
            Arch::Amd64 => AGENT_AMD64,
            Arch::Arm64 => AGENT_ARM64,
        }
    }
}

pub const AGENT_AMD64: &str = "agent-amd64";
pub const AGENT_ARM64: &str = "agent-arm64";

/// Environment used for allocated servers whose Server and ServerClass name none.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// Names of the built-in agent environments; no stored Environment may use them.
pub fn is_agent_environment(name: &str) -> bool {
    name == AGENT_AMD64 || name == AGENT_ARM64
}

/// Why the agent is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentReason {
    /// No Server with the requested UUID: discovery.
    UnknownServer,
    /// The Server exists but has no ServerBinding (not accepted, or accepted and free).
    NotAllocated,
}

/// Where an Environment choice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentSource {
    Server,
    ServerClass,
    Default,
}

/// Where the boot-from-disk method came from (precedence Server → ServerClass → config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodSource {
    Server,
    ServerClass,
    Config,
}

/// The decision for one `/ipxe` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPlan {
    /// Boot the built-in agent environment for this architecture.
    Agent { arch: Arch, reason: AgentReason },
    /// Boot a stored Environment.
    Environment {
        name: String,
        source: EnvironmentSource,
    },
    /// Installed: leave PXE and boot from disk.
    Disk {
        method: BootFromDiskMethod,
        source: MethodSource,
    },
}

/// Sidero's decision order (§2.2 of the facts):
/// 1. no Server → agent; 2. no ServerBinding → agent;
/// 3. PXEBooted and not pxeBootAlways → disk, method Server → ServerClass → config;
/// 4. Server.environmentRef; 5. the binding's ServerClass environmentRef; 6. `default`.
pub fn decide(lookup: &Lookup, arch: Arch, default_method: BootFromDiskMethod) -> BootPlan {
    let Some(server) = &lookup.server else {
        return BootPlan::Agent {
            arch,
            reason: AgentReason::UnknownServer,
        };
    };
    if lookup.binding.is_none() {
        return BootPlan::Agent {
            arch,
            reason: AgentReason::NotAllocated,
        };
    }
    let class = lookup.class.as_ref();
    if server.pxe_booted && !server.pxe_boot_always {
        let (method, source) = if let Some(m) = server.boot_from_disk_method {
            (m, MethodSource::Server)
        } else if let Some(m) = class.and_then(|c| c.boot_from_disk_method) {
            (m, MethodSource::ServerClass)
        } else {
            (default_method, MethodSource::Config)
        };
        return BootPlan::Disk { method, source };
    }
    if let Some(name) = &server.environment_ref {
        return BootPlan::Environment {
            name: name.clone(),
            source: EnvironmentSource::Server,
        };
    }
    if let Some(name) = class.and_then(|c| c.environment_ref.clone()) {
        return BootPlan::Environment {
            name,
            source: EnvironmentSource::ServerClass,
        };
    }
    BootPlan::Environment {
        name: DEFAULT_ENVIRONMENT.to_string(),
        source: EnvironmentSource::Default,
    }
}
