//! SideroLink's pure parts (sans-IO): the overlay prefix derived from the installation id
//! and node address allocation (`address`), the streaming decoder of the Talos JSON log
//! lines that nodes send to `[<prefix>::1]:4001` (`logline`), and the mapping of Talos
//! machine events onto ServerBinding changes (`events`, Sidero's events-manager adapter).
//!
//! No IO, clock or RNG here: random bytes and the node's tunnel address are inputs. The
//! WireGuard endpoint, the overlay's TCP/IP stack and the store writes live in
//! `crate::siderolink`. Fuzzed by `fuzz/fuzz_targets/siderolink_logline.rs` and
//! `siderolink_event.rs`, with bounded smoke runs in `cargo test`.

pub mod address;
pub mod events;
pub mod logline;
pub mod properties;
