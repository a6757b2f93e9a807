//! TFTP (RFC 1350 with RFC 2347/2348/2349/7440 options), read-only, as a pure core:
//! `wire` (packets), `path` (requested name → path below the root), `transfer` (what to
//! do with a request, and the per-transfer state machine), `netascii` (the translated
//! stream a netascii transfer sends). Glue: `net::tftp`.

pub mod netascii;
pub mod path;
pub mod properties;
pub mod transfer;
pub mod wire;
