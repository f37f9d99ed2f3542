//! Closing connections when their JWT expires (`RIG_CLOSE_AT_TOKEN_EXPIRY`, beyond RIG; DESIGN
//! §6.3).
//!
//! - **When.** A connection that presented a JWT (the `jwt` it connected with, the bearer tokens
//!   of its subscription updates) is closed when the last of those tokens stops being accepted:
//!   at its `exp` plus the verifier's clock-skew leeway ([`crate::auth::jwt::LEEWAY_SECS`]), the
//!   same moment from which a reconnect with that token is refused. So a client is never closed
//!   while its token would still open a new connection. A subscription update with a later token
//!   extends the deadline; one with an earlier token never shortens it (the connection is still
//!   entitled to what its later token allows, as it stays in every session it joined).
//!   Connections that never presented a JWT never expire.
//! - **How.** SSE and long-polling get `rig.session_expired` (then the stream ends, or the
//!   long-polling session ends after answering it), WebSocket gets close 1000 `Session
//!   expired.`; the same paths as a revoked session's `rig.session_killed` / `Session killed.`.
//!   Counted in `rig_connections_expired_total{transport}`.
//! - **No timer per connection.** Deadlines live in one ordered set, `(deadline, connection)`,
//!   held by the hub next to the connection table ([`Expiries`]); the hub removes a connection's
//!   entry when the connection closes, so the set holds exactly the open connections that
//!   presented a JWT. One sweeper task ([`run_sweeper`]) sleeps until the earliest deadline and
//!   closes what is due; an earlier deadline arriving meanwhile wakes it.
//! - **Clocks.** `exp` is wall-clock time; it is turned into a monotonic
//!   `tokio::time::Instant` once, when the token is presented (so tests run on paused time, and a
//!   wall-clock step later does not move deadlines already set).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::connections::hub::Hub;
use crate::events::CloudEvent;
use crate::events::frame::Frame;
use crate::metrics::{Metrics, Transport};
use crate::subscriptions::ConnId;

/// The type of the event that tells an SSE or long-polling connection its token expired (then
/// the connection ends); WebSocket connections get close 1000 [`WS_CLOSE_REASON`] instead.
pub const SESSION_EXPIRED: &str = "rig.session_expired";

/// The WebSocket close reason (code 1000) when the token expired, worded like RIG's
/// `Session killed.`.
pub const WS_CLOSE_REASON: &str = "Session expired.";

/// How long the sweeper sleeps when no deadline is pending (new deadlines wake it earlier).
const IDLE_SWEEP: Duration = Duration::from_secs(3600);

/// The deadline at which a connection that presented a token with `exp` (seconds since the Unix
/// epoch) is closed: `exp + leeway_secs` on the wall clock `wall_now`, as an instant relative to
/// `now`. Already passed: `now`. `None` when it lies beyond what an `Instant` can hold (such a
/// token never expires in this process's lifetime).
pub fn deadline(exp: u64, leeway_secs: u64, wall_now: SystemTime, now: Instant) -> Option<Instant> {
    let end = UNIX_EPOCH.checked_add(Duration::from_secs(exp.saturating_add(leeway_secs)))?;
    let left = end.duration_since(wall_now).unwrap_or(Duration::ZERO);
    now.checked_add(left)
}

#[derive(Debug, Default)]
struct Inner {
    /// `(deadline, connection)`, earliest first.
    set: BTreeSet<(Instant, ConnId)>,
    /// When the sweeper will next look (`None`: it is not waiting for a deadline). A new
    /// deadline earlier than this wakes it.
    next_wake: Option<Instant>,
}

/// The expiry index: open connections by the deadline of their JWT (module docs). Kept by the
/// hub, which keeps it in step with its connection table.
#[derive(Debug, Default)]
pub struct Expiries {
    inner: Mutex<Inner>,
    /// Wakes the sweeper when a deadline earlier than its next wake-up arrives.
    changed: Notify,
}

impl Expiries {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move connection `id` from deadline `old` (if any) to `new`.
    pub fn set(&self, id: ConnId, old: Option<Instant>, new: Instant) {
        let wake = {
            let mut inner = self.lock();
            if let Some(old) = old {
                inner.set.remove(&(old, id));
            }
            inner.set.insert((new, id));
            inner.next_wake.is_none_or(|next| new < next)
        };
        if wake {
            self.changed.notify_one();
        }
    }

    /// Forget connection `id`, whose deadline is `at` (it closed).
    pub fn remove(&self, id: ConnId, at: Instant) {
        self.lock().set.remove(&(at, id));
    }

    /// Take every entry due at `now` (deadline not after it), earliest first, and note the next
    /// deadline as the sweeper's next wake-up, which it returns.
    pub fn take_due(&self, now: Instant) -> (Vec<(Instant, ConnId)>, Option<Instant>) {
        let mut inner = self.lock();
        let mut due = Vec::new();
        while let Some(first) = inner.set.first().copied()
            && first.0 <= now
        {
            inner.set.pop_first();
            due.push(first);
        }
        let next = inner.set.first().map(|(at, _)| *at);
        inner.next_wake = next;
        (due, next)
    }

    /// Connections with a deadline.
    pub fn len(&self) -> usize {
        self.lock().set.len()
    }

    /// Whether no connection has a deadline.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when a deadline earlier than the noted next wake-up was set (or once for a
    /// notification that arrived while nobody waited).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    // A poisoned lock means a panic while holding it; every operation leaves the set consistent
    // (single inserts and removes), so keep serving.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Close every connection of `hub` whose deadline is due at `now`: SSE and long-polling get
/// `rig.session_expired`, WebSocket close 1000 `Session expired.`. Counted in
/// `rig_connections_expired_total` and logged. Returns how many were closed and the next
/// deadline.
pub fn sweep(hub: &Hub, metrics: &Metrics, now: Instant) -> (usize, Option<Instant>) {
    let event = CloudEvent::new_rig(SESSION_EXPIRED, serde_json::Value::Null);
    let frame = Arc::new(Frame::new(&event, None));
    let (closed, next) = hub.expire_due(now, &frame);
    let mut total = 0;
    for transport in Transport::ALL {
        let n = closed[transport as usize];
        if n > 0 {
            metrics.connections_expired[transport as usize].fetch_add(n as u64, Ordering::Relaxed);
            total += n;
        }
    }
    if total > 0 {
        tracing::info!(
            sse = closed[Transport::Sse as usize],
            ws = closed[Transport::Ws as usize],
            longpolling = closed[Transport::LongPolling as usize],
            "token expired: connections closed"
        );
    }
    (total, next)
}

/// The one sweeper of the process: closes connections as their deadlines pass, until `shutdown`.
pub async fn run_sweeper(
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (_, next) = sweep(&hub, &metrics, Instant::now());
        let wake = next.unwrap_or_else(|| Instant::now() + IDLE_SWEEP);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = hub.expiries().changed() => {}
            _ = crate::support::stopped(&mut shutdown) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::hub::Outbound;
    use crate::subscriptions::Extractors;

    fn hub() -> (Arc<Hub>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(Arc::new(Extractors::new()), 8, metrics.clone()));
        (hub, metrics)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn expired(metrics: &Metrics, transport: Transport) -> u64 {
        metrics.connections_expired[transport as usize].load(Ordering::Relaxed)
    }

    /// The last item of a closed queue.
    async fn last(rx: &mut crate::connections::feed::Feed) -> Option<Outbound> {
        let mut last = None;
        while let Some(item) = rx.recv().await {
            last = Some(item);
        }
        last
    }

    #[test]
    fn the_deadline_is_exp_plus_leeway_on_the_monotonic_clock() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + secs(1_000);
        assert_eq!(deadline(1_010, 5, wall, now), Some(now + secs(15)));
        assert_eq!(deadline(990, 5, wall, now), Some(now), "already passed");
        assert_eq!(deadline(996, 5, wall, now), Some(now + secs(1)));
        assert_eq!(
            deadline(u64::MAX, 5, wall, now),
            None,
            "beyond any instant: never"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn due_connections_are_closed_with_the_expired_event_others_stay() {
        let (hub, metrics) = hub();
        let t0 = Instant::now();
        let mut sse = hub.register(Transport::Sse, &[], true);
        let mut lp = hub.register(Transport::LongPolling, &[], true);
        let later = hub.register(Transport::Ws, &[], true);
        let anonymous = hub.register(Transport::Sse, &[], true);
        assert!(hub.extend_expiry(sse.id, t0 + secs(2)));
        assert!(hub.extend_expiry(lp.id, t0 + secs(2)));
        assert!(hub.extend_expiry(later.id, t0 + secs(60)));
        assert_eq!(hub.expiries().len(), 3);

        assert_eq!(sweep(&hub, &metrics, t0 + secs(1)), (0, Some(t0 + secs(2))));
        let (closed, next) = sweep(&hub, &metrics, t0 + secs(2));
        assert_eq!((closed, next), (2, Some(t0 + secs(60))));
        for reg in [&mut sse, &mut lp] {
            match last(&mut reg.rx).await {
                Some(Outbound::Close(Some(frame))) => assert_eq!(frame.event_type, SESSION_EXPIRED),
                other => panic!("expected the expiry close, got {other:?}"),
            }
            assert!(!hub.contains(reg.id));
        }
        assert!(hub.contains(later.id) && hub.contains(anonymous.id));
        assert_eq!(expired(&metrics, Transport::Sse), 1);
        assert_eq!(expired(&metrics, Transport::LongPolling), 1);
        assert_eq!(expired(&metrics, Transport::Ws), 0);
        assert_eq!(hub.expiries().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_token_extends_an_earlier_one_never_shortens() {
        let (hub, metrics) = hub();
        let t0 = Instant::now();
        let conn = hub.register(Transport::Sse, &[], true);
        assert!(hub.extend_expiry(conn.id, t0 + secs(10)));
        assert!(hub.extend_expiry(conn.id, t0 + secs(30)), "extended");
        assert!(hub.extend_expiry(conn.id, t0 + secs(5)), "kept at 30 s");
        assert_eq!(hub.expiries().len(), 1, "one entry per connection");
        assert_eq!(sweep(&hub, &metrics, t0 + secs(29)).0, 0);
        assert!(hub.contains(conn.id));
        assert_eq!(sweep(&hub, &metrics, t0 + secs(30)).0, 1);
        assert!(!hub.contains(conn.id));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_connections_leave_the_index_and_unknown_ones_never_enter() {
        let (hub, _) = hub();
        let t0 = Instant::now();
        let a = hub.register(Transport::Sse, &[], true);
        let b = hub.register(Transport::Ws, &[], true);
        let id = a.id;
        assert!(hub.extend_expiry(a.id, t0 + secs(10)));
        assert!(hub.extend_expiry(b.id, t0 + secs(10)));
        drop(a);
        assert_eq!(hub.expiries().len(), 1, "the closed connection left");
        assert!(!hub.extend_expiry(id, t0 + secs(10)), "gone");
        assert_eq!(hub.expiries().len(), 1);
        hub.close_all();
        assert!(hub.expiries().is_empty(), "shutdown empties it too");
        drop(b);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_closes_on_time_and_wakes_for_an_earlier_deadline() {
        let (hub, metrics) = hub();
        let (_stop_tx, stop) = watch::channel(false);
        let sweeper = tokio::spawn(run_sweeper(hub.clone(), metrics.clone(), stop));
        let t0 = Instant::now();
        let mut late = hub.register(Transport::Sse, &[], true);
        let mut soon = hub.register(Transport::Ws, &[], true);
        assert!(hub.extend_expiry(late.id, t0 + secs(100)));
        // Let the sweeper go to sleep until the 100 s deadline.
        tokio::time::sleep(secs(1)).await;
        assert!(hub.extend_expiry(soon.id, t0 + secs(3)));
        tokio::time::sleep(secs(1)).await;
        assert!(hub.contains(soon.id), "not before its deadline");
        tokio::time::sleep(secs(2)).await;
        assert!(
            !hub.contains(soon.id),
            "closed at its deadline, not at 100 s"
        );
        assert!(matches!(
            last(&mut soon.rx).await,
            Some(Outbound::Close(Some(_)))
        ));
        assert!(hub.contains(late.id));
        tokio::time::sleep(secs(97)).await;
        assert!(!hub.contains(late.id));
        assert!(matches!(
            last(&mut late.rx).await,
            Some(Outbound::Close(Some(_)))
        ));
        assert_eq!(expired(&metrics, Transport::Ws), 1);
        assert_eq!(expired(&metrics, Transport::Sse), 1);
        assert!(hub.expiries().is_empty());
        sweeper.abort();
    }
}
