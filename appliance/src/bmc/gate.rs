//! Bounds on BMC calls: at most one call in flight per BMC endpoint (BMCs serialise badly
//! and some lock up under parallel sessions), at most `max_concurrent` overall, and an
//! overall deadline per call. A call waiting for its endpoint holds no global slot, so a
//! dead BMC delays only calls to itself.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::BmcError;

/// How many calls may queue for one endpoint before new ones are refused as `Busy`.
const MAX_QUEUED_PER_ENDPOINT: usize = 64;

#[derive(Debug, Clone)]
pub struct BmcGate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    global: Semaphore,
    per_endpoint: Mutex<HashMap<String, Arc<Semaphore>>>,
    call_timeout: Duration,
}

impl BmcGate {
    pub fn new(max_concurrent: usize, call_timeout: Duration) -> BmcGate {
        BmcGate {
            inner: Arc::new(Inner {
                global: Semaphore::new(max_concurrent.max(1)),
                per_endpoint: Mutex::new(HashMap::new()),
                call_timeout,
            }),
        }
    }

    pub fn call_timeout(&self) -> Duration {
        self.inner.call_timeout
    }

    /// Runs `call` against `endpoint` within the limits.
    pub async fn run<T>(
        &self,
        endpoint: &str,
        call: impl Future<Output = Result<T, BmcError>>,
    ) -> Result<T, BmcError> {
        let sem = {
            let mut map = self.inner.per_endpoint.lock().expect("gate lock");
            // Forget idle endpoints so the map does not grow without bound.
            map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() == 0);
            map.entry(endpoint.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(1)))
                .clone()
        };
        if Arc::strong_count(&sem) > MAX_QUEUED_PER_ENDPOINT + 1 {
            return Err(BmcError::Busy {
                endpoint: endpoint.to_string(),
            });
        }
        let _mine = sem.acquire().await.expect("never closed");
        let _global = self.inner.global.acquire().await.expect("never closed");
        match tokio::time::timeout(self.inner.call_timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(BmcError::Timeout {
                endpoint: endpoint.to_string(),
                after: self.inner.call_timeout,
                last_drop: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_hanging_bmc_does_not_block_others_and_times_out() {
        let gate = BmcGate::new(4, Duration::from_secs(30));
        let g = gate.clone();
        let stuck = tokio::spawn(async move {
            g.run("dead:623", std::future::pending::<Result<(), BmcError>>())
                .await
        });
        tokio::task::yield_now().await;
        let start = crate::clock::now();
        gate.run("alive:623", async { Ok(()) }).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        let err = stuck.await.unwrap().unwrap_err();
        assert!(matches!(err, BmcError::Timeout { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_call_per_endpoint_and_bounded_overall() {
        let gate = BmcGate::new(3, Duration::from_secs(30));
        let running = Arc::new(AtomicUsize::new(0));
        let peak_total = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (gate, running, peak) = (gate.clone(), running.clone(), peak_total.clone());
            tasks.push(tokio::spawn(async move {
                let endpoint = format!("bmc{}:623", i % 4);
                gate.run(&endpoint, async {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak_total.load(Ordering::SeqCst), 3);
    }
}
