//! Signed A/B updates of a flashed box (`appliance update …`; the console's update form).
//!
//! - `bundle`: the bundle format and its checks (ed25519 signature over a manifest naming
//!   each component's size and SHA-256; arch; exact length), pure.
//! - `keys`: the signing keys as PEM (OpenSSL's format), pure.
//! - `slots`: slots and their systemd-boot entries with boot counting, pure.
//! - `install`: the IO: verify a bundle file, write the inactive slot (root partition,
//!   kernel + initrd on the ESP, a try-once loader entry), read the box's update status,
//!   create and sign bundles (`scripts/sign-bundle`).
//! - `health`: the trial boot's health gate (`/readyz` within a deadline).
//!
//! The privileged path: `appliance serve` runs unprivileged, so the console only stores an
//! uploaded bundle in `<data_dir>/update/bundle` (after checking it itself, for a clear
//! answer) and creates `<data_dir>/update/request`; `appliance-update.path` then starts
//! `appliance-update.service` (root), which runs `appliance update apply --request …`:
//! verifies the bundle again, writes the slot, records `update/result` and reboots.

pub mod bundle;
pub mod health;
pub mod install;
pub mod keys;
pub mod slots;

pub use bundle::BundleError;
pub use install::UpdateError;

/// The public key a flashed box checks bundles with (baked into the root at build time).
pub const DEFAULT_PUBLIC_KEY: &str = "/usr/share/appliance/update-key.pub.pem";
/// The directory below the data dir where the console leaves a bundle for the privileged
/// path.
pub const REQUEST_DIR: &str = "update";
