//! The gate in front of console password verification: at most `MAX_VERIFICATIONS` argon2
//! verifications run at once (each holds 19 MiB and a core for tens of milliseconds, so an
//! unbounded burst would cost memory and starve the box); a login that finds every slot
//! taken waits up to `VERIFY_WAIT` for one and is then refused (429). Also the login
//! counters `/metrics` shows.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Counter, Gauge, Labeled, Registry};

/// Password verifications running at once, at most.
pub const MAX_VERIFICATIONS: usize = 2;
/// How long a login waits for a verification slot before it is refused.
pub const VERIFY_WAIT: Duration = Duration::from_secs(2);

/// Console login counters (rendered by `http::metrics`).
#[derive(Debug, Default)]
pub struct LoginStats {
    /// Password verifications run (a slot was granted).
    pub verifications: Counter,
    /// Verifications running now, and the most that ever ran at once.
    running: std::sync::atomic::AtomicU64,
    pub max_concurrent: Gauge,
    /// Logins that found every slot taken and waited.
    pub waited: Counter,
    /// Logins refused before their secret was looked at, by reason.
    pub refused_client: Counter,
    pub refused_global: Counter,
    pub refused_busy: Counter,
}

impl LoginStats {
    /// Adds the console login families to `/metrics`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "appliance_console_login_verifications",
            "Console password verifications run",
            self.verifications.clone(),
        );
        r.register(
            "appliance_console_login_verifications_max_concurrent",
            "Most console password verifications that ran at once",
            self.max_concurrent.clone(),
        );
        r.register(
            "appliance_console_login_waited",
            "Console logins that waited for a password verification slot",
            self.waited.clone(),
        );
        r.register(
            "appliance_console_login_refused",
            "Console logins refused before their secret was looked at, by reason",
            Labeled::new(
                "reason",
                [
                    ("client", self.refused_client.clone()),
                    ("global", self.refused_global.clone()),
                    ("busy", self.refused_busy.clone()),
                ],
            ),
        );
    }
}

/// Bounds concurrent password verifications.
#[derive(Debug)]
pub struct VerifyGate {
    slots: Arc<Semaphore>,
    wait: Duration,
    stats: Arc<LoginStats>,
}

/// A verification slot; freed on drop. Move it into the blocking task that verifies, so
/// the slot is held for exactly as long as the work runs (even if the client went away).
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<LoginStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for VerifyGate {
    fn default() -> Self {
        VerifyGate::new(MAX_VERIFICATIONS, VERIFY_WAIT)
    }
}

impl VerifyGate {
    pub fn new(slots: usize, wait: Duration) -> Self {
        VerifyGate {
            slots: Arc::new(Semaphore::new(slots)),
            wait,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &LoginStats {
        &self.stats
    }

    /// A slot, at once or within the wait; None when none came free in time.
    pub async fn enter(&self) -> Option<Slot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.stats.waited.inc();
                tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        self.stats.verifications.inc();
        let now = 1 + self
            .stats
            .running
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::high_water(&self.stats.max_concurrent, now);
        Some(Slot {
            _permit: permit,
            stats: self.stats.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_third_verification_waits_its_turn_or_is_refused() {
        let gate = Arc::new(VerifyGate::default());
        let first = gate.enter().await.unwrap();
        let second = gate.enter().await.unwrap();
        // Both slots taken: the third waits the full VERIFY_WAIT (virtual time), then gives up.
        let start = tokio::time::Instant::now();
        assert!(gate.enter().await.is_none());
        assert_eq!(start.elapsed(), VERIFY_WAIT);
        // A slot that comes free while the third waits goes to it.
        let g = gate.clone();
        let third = tokio::spawn(async move { g.enter().await.is_some() });
        tokio::time::sleep(VERIFY_WAIT / 2).await;
        assert!(!third.is_finished());
        drop(first);
        assert!(third.await.unwrap());
        drop(second);
        let s = gate.stats();
        assert_eq!(s.verifications.get(), 3);
        assert_eq!(s.waited.get(), 2);
        assert_eq!(s.max_concurrent.get(), MAX_VERIFICATIONS as u64);
    }

    #[tokio::test]
    async fn many_at_once_never_run_more_than_the_limit() {
        let gate = Arc::new(VerifyGate::new(MAX_VERIFICATIONS, Duration::from_secs(60)));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let g = gate.clone();
                tokio::spawn(async move {
                    let slot = g.enter().await.unwrap();
                    tokio::task::spawn_blocking(move || {
                        let _slot = slot;
                        std::thread::sleep(Duration::from_millis(2));
                    })
                    .await
                    .unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = gate.stats();
        assert_eq!(s.verifications.get(), 20);
        assert_eq!(s.max_concurrent.get(), MAX_VERIFICATIONS as u64);
        assert!(s.waited.get() >= 1);
    }
}
