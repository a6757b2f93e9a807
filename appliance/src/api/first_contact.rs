//! The box's side of authenticated first contact: the glue around the pure
//! `protocol::first_contact` core, shared by `/ipxe` (which mints a boot token for every
//! answer that boots the agent) and the agent API (which redeems tokens and checks the
//! signatures of agent calls). Randomness comes from the OS here, time from `clock`; tokens
//! and replay windows live in memory (a restarted box has none: an agent that registered
//! keeps going by its pinned key, one that had not yet registers after its next PXE boot).
//!
//! `[agent] first_contact = "sidero-compatible"` turns tokens and signatures off (Sidero's
//! own agent sends neither); the agent API's other rules stay on.

use std::collections::HashMap;
use std::sync::Mutex;

use prost::Message;
use tonic::metadata::MetadataMap;

use crate::clock;
use crate::config::{AgentConfig, FirstContactMode};
use crate::model::MacAddr;
use crate::protocol::first_contact::{
    AgentKey, AuthError, MD_KEY, MD_SEQ, MD_SIG, MD_TOKEN, ReplayWindow, TokenBook, TokenError,
    parse_signature, verify_call,
};

/// Boot tokens outstanding at most (a 10,000-machine boot storm fits).
const MAX_TOKENS: usize = 65_536;

/// First-contact state of one box.
#[derive(Debug)]
pub struct FirstContact {
    mode: FirstContactMode,
    tokens: Mutex<TokenBook>,
    /// Per server: the key its replay window belongs to, and the window.
    windows: Mutex<HashMap<String, (AgentKey, ReplayWindow)>>,
    /// Token expiry on its lease time (a wall-clock jump moves no token's end).
    clock: clock::WallClock,
}

/// A call's signature from its metadata.
#[derive(Debug, Clone)]
pub struct Signed {
    pub seq: u64,
    pub sig: [u8; 64],
    /// The encoded request, as signed.
    pub body: Vec<u8>,
}

/// What CreateServer brings besides its signature.
#[derive(Debug, Clone)]
pub struct Presented {
    pub key: AgentKey,
    pub token: Option<String>,
    pub signed: Signed,
}

fn text<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok())
}

impl FirstContact {
    pub fn new(cfg: &AgentConfig) -> FirstContact {
        FirstContact {
            mode: cfg.first_contact,
            tokens: Mutex::new(TokenBook::new(
                MAX_TOKENS,
                u64::try_from(cfg.token_ttl.as_millis()).unwrap_or(u64::MAX),
            )),
            windows: Mutex::new(HashMap::new()),
            clock: clock::WallClock::process(),
        }
    }

    /// Token expiry measured on `clock`'s lease time instead of the process's (tests: a
    /// wall-clock jump neither expires a token nor keeps one alive).
    pub fn with_clock(mut self, clock: clock::WallClock) -> Self {
        self.clock = clock;
        self
    }

    /// Tokens and signatures are required (`first_contact = "token"`).
    pub fn tokens_on(&self) -> bool {
        self.mode == FirstContactMode::Token
    }

    /// A boot token for an `/ipxe` answer that boots the agent of `uuid` from `mac`; None
    /// in Sidero-compatible mode, or when the OS has no randomness (logged).
    pub fn mint(&self, uuid: &str, mac: MacAddr) -> Option<String> {
        if !self.tokens_on() {
            return None;
        }
        let mut random = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut random) {
            tracing::error!("no boot token: the OS random source failed: {e}");
            return None;
        }
        let mut book = self.tokens.lock().expect("token book lock");
        Some(book.mint(random, uuid, mac.0, self.clock.steady_ms()))
    }

    /// Checks a token for a registration of `uuid` reporting NICs `macs` (not used up).
    pub fn check_token(
        &self,
        token: &str,
        uuid: &str,
        macs: &[[u8; 6]],
    ) -> Result<[u8; 6], TokenError> {
        let book = self.tokens.lock().expect("token book lock");
        book.check(token, uuid, macs, self.clock.steady_ms())
    }

    /// Uses a token up; false when it was used meanwhile.
    pub fn consume(&self, token: &str) -> bool {
        self.tokens.lock().expect("token book lock").consume(token)
    }

    /// A call's sequence number and signature from its metadata, with `msg` encoded.
    pub fn signed<T: Message>(md: &MetadataMap, msg: &T) -> Result<Signed, AuthError> {
        let (seq, sig) = parse_signature(text(md, MD_SEQ), text(md, MD_SIG))?;
        Ok(Signed {
            seq,
            sig,
            body: msg.encode_to_vec(),
        })
    }

    /// What a CreateServer presents: its key (required), its token (if any) and signature.
    pub fn presented<T: Message>(md: &MetadataMap, msg: &T) -> Result<Presented, AuthError> {
        let key = text(md, MD_KEY).ok_or(AuthError::Unsigned)?.parse()?;
        Ok(Presented {
            key,
            token: text(md, MD_TOKEN).map(str::to_string),
            signed: FirstContact::signed(md, msg)?,
        })
    }

    /// Verifies `signed` for `method` with `key` and takes its sequence number in `server`'s
    /// replay window (a new key starts a new window).
    pub fn accept(
        &self,
        server: &str,
        key: &AgentKey,
        method: &str,
        signed: &Signed,
    ) -> Result<(), AuthError> {
        verify_call(key, method, signed.seq, &signed.body, &signed.sig)?;
        let mut w = self.windows.lock().expect("replay windows lock");
        let entry = w
            .entry(server.to_string())
            .or_insert((*key, ReplayWindow::default()));
        if entry.0 != *key {
            *entry = (*key, ReplayWindow::default());
        }
        entry.1.accept(signed.seq)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const UUID: &str = "4c4c4544-0000-0001-8000-000000000001";
    const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];

    fn contact(clock: &clock::WallClock) -> FirstContact {
        FirstContact::new(&crate::config::Config::default().agent).with_clock(clock.clone())
    }

    /// A boot token lives its TTL of real time whatever the wall clock does: a jump forwards
    /// of a day does not expire it, a jump back of a day does not keep it alive.
    #[test]
    fn wall_clock_jumps_neither_expire_nor_prolong_a_boot_token() {
        let ttl = crate::config::Config::default().agent.token_ttl;
        let c = clock::WallClock::manual(1_800_000_000_000);
        let fc = contact(&c);
        let t = fc.mint(UUID, MacAddr(MAC)).expect("token mode mints");
        c.jump(86_400_000);
        c.advance(Duration::from_secs(1));
        assert!(
            fc.check_token(&t, UUID, &[MAC]).is_ok(),
            "+1 day: still valid"
        );

        let c = clock::WallClock::manual(1_800_000_000_000);
        let fc = contact(&c);
        let t = fc.mint(UUID, MacAddr(MAC)).expect("token mode mints");
        c.jump(-86_400_000);
        c.advance(ttl - Duration::from_secs(1));
        assert!(fc.check_token(&t, UUID, &[MAC]).is_ok(), "within its TTL");
        c.advance(Duration::from_secs(2));
        assert!(
            fc.check_token(&t, UUID, &[MAC]).is_err(),
            "-1 day: expired after its TTL of real time"
        );
    }
}
