//! The metadata service: `GET /configdata?uuid=<uuid>` serves a server's machine config
//! (bootstrap data of its allocation with ServerClass, then Server, then allocation config
//! patches applied, as Sidero does).

pub mod patch;
