//! Leader election of an HA pair of bridges for one box: a coordination.k8s.io/v1 Lease
//! named after the box id in `--lease-namespace`. Only the holder syncs (and so writes).
//!
//! As client-go's leader election: a candidate creates the Lease, or takes it over once the
//! holder has not renewed it for `leaseDurationSeconds` as this candidate observed (its own
//! monotonic clock since the Lease last changed, never the holder's timestamps); every write
//! is a replace with the resourceVersion read, so of two candidates one wins and the other
//! gets 409. The holder renews every third of the duration and stops syncing when a renewal
//! has not succeeded for the duration (another may hold it by then); on shutdown it releases
//! the Lease (holder cleared) so its partner takes over at once.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::time::Instant;

/// Who elects and for how long a Lease holds.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    /// The Lease's name: the box id.
    pub name: String,
    /// This bridge's identity (host name and process id).
    pub identity: String,
    pub duration: Duration,
}

/// One candidate.
pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
    /// The Lease's resourceVersion as last read, and when this candidate saw it change.
    observed: Option<(String, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    pub fn new(client: kube::Client, settings: Settings) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    fn secs(&self) -> i32 {
        self.settings.duration.as_secs().clamp(1, i32::MAX as u64) as i32
    }

    /// One attempt to hold the Lease: `Ok(true)` when this candidate holds it now (created,
    /// renewed, or taken over after it expired), `Ok(false)` when another holds it.
    pub async fn try_hold(&mut self) -> Result<bool, kube::Error> {
        let me = self.settings.identity.clone();
        let current = match self.api.get_opt(&self.settings.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me),
                        lease_duration_seconds: Some(self.secs()),
                        acquire_time: Some(now()),
                        renew_time: Some(now()),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(l) => {
                        self.observe(&l);
                        Ok(true)
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Some(l) => l,
        };
        self.observe(&current);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == me;
        let duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(self.secs()).max(1) as u64);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, seen)| seen.elapsed() >= duration);
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let mut next = current.clone();
        let mut new_spec = spec.clone();
        if !mine {
            new_spec.acquire_time = Some(now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            tracing::info!(previous = %holder, lease = %self.settings.name, "taking over the lease");
        }
        new_spec.holder_identity = Some(me);
        new_spec.lease_duration_seconds = Some(self.secs());
        new_spec.renew_time = Some(now());
        next.spec = Some(new_spec);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => {
                self.observe(&l);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, l: &Lease) {
        let rv = l.metadata.resource_version.clone().unwrap_or_default();
        match &self.observed {
            Some((seen, _)) if *seen == rv => {}
            _ => self.observed = Some((rv, Instant::now())),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        let retry = self.settings.duration / 3;
        let mut failing = false;
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "holding the lease: syncing");
                    return;
                }
                Ok(false) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "lease: cannot read or write it; retrying");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the Lease every third of its duration; returns when it was lost (another
    /// holds it, or no renewal succeeded for the duration).
    pub async fn keep(&mut self) {
        let period = self.settings.duration / 3;
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(period).await;
            match self.try_hold().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.settings.name, "another bridge holds the lease: standing by");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease: renewal failed");
                    if last_ok.elapsed() + period >= self.settings.duration {
                        tracing::warn!(lease = %self.settings.name, "the lease could not be renewed in time: standing by");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up (holder cleared) if this candidate holds it, so another takes over
    /// without waiting for it to expire.
    pub async fn release(&mut self) {
        let Ok(Some(mut l)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let Some(spec) = l.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &l)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.settings.name, "lease released"),
            Err(e) => tracing::warn!(error = %e, "lease: release failed; it expires by itself"),
        }
    }
}
