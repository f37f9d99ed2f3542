//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder writes status.
//!
//! Every replica polls the Lease. The holder renews it every few seconds; a follower takes it
//! over once it has seen no renewal for the lease duration. Expiry is judged by *when this replica
//! last saw the record change* (its own clock), not by the `renewTime` written by another host, so
//! clock skew between replicas does not matter (client-go does the same). Every write carries the
//! `resourceVersion` that was read, so two replicas racing for the Lease cannot both win: the loser
//! gets 409 Conflict and stays a follower. A leader that cannot renew for the lease duration steps
//! down on its own before anyone else can take over. On shutdown the leader clears the holder so a
//! follower takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Errors talking to the apiserver about the Lease (retried on the next poll).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or could not be reached.
    #[error("Lease {op} failed")]
    Api {
        /// What was attempted.
        op: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// What to do with the Lease as last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a live Lease: wait.
    Follow,
}

/// The part of the Lease that shows whether its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
}

/// When this replica last saw the Lease record change.
#[derive(Debug)]
pub struct Observer {
    last: Option<(Record, Instant)>,
}

impl Default for Observer {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer {
    /// Nothing observed yet.
    pub fn new() -> Self {
        Self { last: None }
    }

    /// Record the Lease as read at `now` and decide what `me` should do. `duration` is the lease
    /// duration (the Lease's own `leaseDurationSeconds` when set).
    pub fn decide(
        &mut self,
        lease: Option<&LeaseSpec>,
        me: &str,
        now: Instant,
        duration: Duration,
    ) -> Action {
        let Some(spec) = lease else {
            self.last = None;
            return Action::Create;
        };
        let record = Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
        };
        let seen_at = match &self.last {
            Some((last, at)) if *last == record => *at,
            _ => now,
        };
        self.last = Some((record.clone(), seen_at));
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(duration, Duration::from_secs);
        match record.holder.as_deref() {
            Some(holder) if holder == me => Action::Renew,
            None => Action::Acquire,
            Some(_) if now >= seen_at + duration => Action::Acquire,
            Some(_) => Action::Follow,
        }
    }
}

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// Validity of the Lease without renewal.
    pub duration: Duration,
    /// Renewal interval of the leader.
    pub renew_every: Duration,
    /// Poll interval of a follower.
    pub follower_poll: Duration,
}

/// Run the election until `shutdown` turns true, publishing whether this replica leads.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut observer = Observer::new();
    let mut last_renewal: Option<Instant> = None;
    loop {
        let now = Instant::now();
        match attempt(&api, &settings, &mut observer, now).await {
            Ok(true) => last_renewal = Some(now),
            Ok(false) => last_renewal = None,
            Err(error) => tracing::warn!(error = %error_chain(&error), "leader election"),
        }
        // Step down before the Lease can expire: after a failed renewal we may no longer hold it.
        let lead = last_renewal.is_some_and(|at| now < at + settings.duration);
        leading.send_if_modified(|old| {
            let changed = *old != lead;
            if changed {
                tracing::info!(identity = %settings.identity, leading = lead, "leadership changed");
            }
            *old = lead;
            changed
        });
        let wait = if lead {
            settings.renew_every
        } else {
            settings.follower_poll
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::stream::stopped(&mut shutdown) => break,
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        if let Err(error) = release(&api, &settings).await {
            tracing::warn!(error = %error_chain(&error), "releasing the Lease");
        }
    }
}

/// One read-decide-write round. `Ok(true)`: we hold the Lease now.
async fn attempt(
    api: &Api<Lease>,
    settings: &Settings,
    observer: &mut Observer,
    now: Instant,
) -> Result<bool, Error> {
    let current = api
        .get_opt(&settings.name)
        .await
        .map_err(|source| Error::Api { op: "read", source })?;
    let action = observer.decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &settings.identity,
        now,
        settings.duration,
    );
    let stamp = MicroTime(Timestamp::now());
    let seconds = i32::try_from(settings.duration.as_secs()).unwrap_or(i32::MAX);
    let result = match (action, current) {
        (Action::Follow, _) => return Ok(false),
        (Action::Create, _) | (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(settings.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(stamp.clone()),
                    renew_time: Some(stamp),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (action, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if action == Action::Acquire {
                spec.holder_identity = Some(settings.identity.clone());
                spec.acquire_time = Some(stamp.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(stamp);
            // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
            api.replace(&settings.name, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Api {
            op: "write",
            source,
        }),
    }
}

/// Clear the holder (guarded by resourceVersion) so a follower takes over without waiting.
async fn release(api: &Api<Lease>, settings: &Settings) -> Result<(), Error> {
    let Some(mut lease) = api
        .get_opt(&settings.name)
        .await
        .map_err(|source| Error::Api { op: "read", source })?
    else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Api {
            op: "release",
            source,
        }),
    }
}

/// An error with its sources, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn spec(holder: Option<&str>, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(renewed.parse().expect("time"))),
            ..LeaseSpec::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn missing_free_and_own_leases() {
        let mut o = Observer::new();
        let now = Instant::now();
        assert_eq!(o.decide(None, "me", now, D), Action::Create);
        let free = spec(None, "2026-01-01T00:00:00Z");
        assert_eq!(o.decide(Some(&free), "me", now, D), Action::Acquire);
        let empty = spec(Some(""), "2026-01-01T00:00:00Z");
        assert_eq!(o.decide(Some(&empty), "me", now, D), Action::Acquire);
        let mine = spec(Some("me"), "2026-01-01T00:00:00Z");
        assert_eq!(o.decide(Some(&mine), "me", now, D), Action::Renew);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewing_holder_is_followed_a_silent_one_replaced() {
        let mut o = Observer::new();
        let start = Instant::now();
        // The other replica's clock is far off: only our own observation times count.
        let a = spec(Some("other"), "1999-01-01T00:00:00Z");
        assert_eq!(o.decide(Some(&a), "me", start, D), Action::Follow);
        tokio::time::advance(Duration::from_secs(10)).await;
        let b = spec(Some("other"), "1999-01-01T00:00:05Z");
        assert_eq!(o.decide(Some(&b), "me", Instant::now(), D), Action::Follow);
        // No change for almost the full duration since the last renewal we saw: still follow.
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(o.decide(Some(&b), "me", Instant::now(), D), Action::Follow);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(o.decide(Some(&b), "me", Instant::now(), D), Action::Acquire);
    }

    #[tokio::test(start_paused = true)]
    async fn the_leases_own_duration_wins() {
        let mut o = Observer::new();
        let mut short = spec(Some("other"), "2026-01-01T00:00:00Z");
        short.lease_duration_seconds = Some(2);
        assert_eq!(
            o.decide(Some(&short), "me", Instant::now(), D),
            Action::Follow
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            o.decide(Some(&short), "me", Instant::now(), D),
            Action::Acquire
        );
    }
}
