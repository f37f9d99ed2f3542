//! Long-polling sessions: a hub registration whose frames wait in a bounded buffer until a poll
//! takes them.
//!
//! - **Buffer.** A small forwarding task per session moves frames from the hub queue into a ring
//!   of at most `capacity` frames (RIG: 200). The hub closes a connection whose queue is full;
//!   forwarding into the ring instead keeps an absent poller's session alive and drops only the
//!   *oldest* frames, counted in `rig_longpolling_dropped_events_total` and logged. The task waits
//!   on the queue, never on a timer: an idle session costs no timer at all.
//! - **Acknowledgement.** Every frame gets a session-local sequence number. A poll carries the
//!   number of the newest frame the client has (the `last_event_id` cookie, set by the previous
//!   answer); frames up to it are released, the rest are answered. So an answer lost on the way
//!   (a dropped mobile connection) is simply answered again, as in RIG's ring buffer.
//! - **Loss.** When frames the client has not acknowledged were dropped, the answer starts with
//!   `rig.connection.gap`, until the client acknowledges past the loss.
//! - **Waiting.** A poll with nothing to answer waits on the session's [`Notify`] with a timeout on
//!   that request only; frames (or the hub closing the session) wake it at once.
//! - **Expiry.** Sessions not polled for `timeout` (RIG: 1 h) are removed by one shared sweeper
//!   task ([`Sessions::run_sweeper`]); dropping a session unregisters it from the hub.

use crate::support::{read, write};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::connections::hub::{Guard, Outbound, Registration};
use crate::events::CloudEvent;
use crate::events::frame::Frame;
use crate::metrics::Metrics;
use crate::subscriptions::ConnId;

/// Frames moved from the hub queue into the ring under one lock.
const FORWARD_BATCH: usize = 64;
/// Longest hold honoured: far beyond any proxy's idle timeout, and it keeps deadlines finite.
const MAX_HOLD: Duration = Duration::from_secs(3600);
/// Bounds of the sweeper's period: expiry is accurate to about a quarter of the timeout, within
/// these limits (a sweep walks every session, so it should not run much more often than needed).
const MIN_SWEEP_PERIOD: Duration = Duration::from_secs(1);
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// Every long-polling session of this process, by connection id.
#[derive(Debug)]
pub struct Sessions {
    map: RwLock<HashMap<ConnId, Arc<Session>>>,
    capacity: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// One long-polling session.
#[derive(Debug)]
pub struct Session {
    id: ConnId,
    capacity: usize,
    inner: Mutex<Inner>,
    notify: Notify,
    /// Woken when acknowledged frames leave the buffer (a replay waits for room).
    room: Notify,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Inner {
    /// Frames not yet acknowledged, oldest first, with their sequence numbers (consecutive).
    ring: VecDeque<(u64, Arc<Frame>)>,
    /// The sequence number of the next frame; numbers start at 1 (0 = "nothing received").
    next_seq: u64,
    /// The highest sequence number dropped because the ring was full (0: none).
    dropped_upto: u64,
    /// The highest sequence number answered at least once (drops below it are not counted as
    /// lost in the metric: the client very likely has them).
    answered_upto: u64,
    /// Whether the current loss was logged (one log line per loss, not per dropped frame).
    loss_logged: bool,
    /// The resume token of the newest acknowledged frame that has one, with its sequence number.
    acked_token: Option<(u64, String)>,
    /// The same for the last answer (its `last_event_id` and sequence number): an acknowledged
    /// frame may have been dropped from the ring before the acknowledgement came.
    answered_token: Option<(u64, String)>,
    /// When a poll last started or ended (for expiry).
    last_poll: Instant,
    /// Polls in progress (a waiting session never expires).
    polling: u32,
    /// The hub closed the session (shutdown, session killed, ...); no frames will follow.
    closed: bool,
    /// Unregisters from the hub when dropped (taken when the hub closes the session).
    guard: Option<Guard>,
}

/// What a poll answers.
#[derive(Debug)]
pub enum Polled {
    /// Frames for the client (possibly none, after the hold).
    Batch(Batch),
    /// The hub closed the session (shutdown, session killed) and the client has acknowledged
    /// everything: the session is over. The batch is empty; the client's next GET, naming a
    /// session that no longer exists, opens a new one.
    Ended(Batch),
}

/// The frames of one answer.
#[derive(Debug, Default)]
pub struct Batch {
    /// Oldest first; `rig.connection.gap` first when unacknowledged frames were dropped.
    pub frames: Vec<Arc<Frame>>,
    /// The sequence number of the newest frame the client has once it read this answer (the next
    /// `last_event_id` cookie).
    pub seq: u64,
    /// The resume token of the newest event the client has once it read this answer, if any (the
    /// body's `last_event_id`, usable as `?last_event_id=` to resume elsewhere).
    pub last_event_id: Option<String>,
}

impl Sessions {
    /// No sessions yet. Each buffers at most `capacity` frames (at least 1) and expires after
    /// `timeout` without polls.
    pub fn new(capacity: usize, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
            timeout,
            metrics,
        }
    }

    /// Turn a hub registration into a session: start forwarding its queue into the session's
    /// buffer. Must be called within the tokio runtime.
    pub fn insert(&self, registration: Registration) -> Arc<Session> {
        let Registration { id, rx, guard } = registration;
        let session = Arc::new(Session {
            id,
            capacity: self.capacity,
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                next_seq: 1,
                dropped_upto: 0,
                answered_upto: 0,
                loss_logged: false,
                acked_token: None,
                answered_token: None,
                last_poll: Instant::now(),
                polling: 0,
                closed: false,
                guard: Some(guard),
            }),
            notify: Notify::new(),
            room: Notify::new(),
            metrics: self.metrics.clone(),
        });
        // The task holds only a weak reference: removing the session from the map drops it, which
        // unregisters it from the hub, which closes the queue, which ends the task.
        tokio::spawn(forward(rx, Arc::downgrade(&session)));
        write(&self.map).insert(id, session.clone());
        session
    }

    /// Start a poll of session `id`, if it exists. While the returned handle lives, the session
    /// does not expire (marked under the map lock, so the sweeper cannot remove it in between).
    pub fn begin_poll(&self, id: ConnId) -> Option<Polling> {
        let map = read(&self.map);
        let session = map.get(&id)?.clone();
        {
            let mut inner = session.lock();
            inner.polling += 1;
            inner.last_poll = Instant::now();
        }
        Some(Polling { session })
    }

    /// Forget session `id` (it ended).
    pub fn remove(&self, id: ConnId) {
        write(&self.map).remove(&id);
    }

    /// Remove every session not polled since `now - timeout`; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut expired = Vec::new();
        write(&self.map).retain(|_, session| {
            let idle = {
                let inner = session.lock();
                inner.polling == 0 && now.duration_since(inner.last_poll) >= self.timeout
            };
            if idle {
                expired.push(session.clone());
            }
            !idle
        });
        let count = expired.len();
        if count > 0 {
            self.metrics
                .longpolling_expired
                .fetch_add(count as u64, Ordering::Relaxed);
            tracing::info!(
                sessions = count,
                timeout_secs = self.timeout.as_secs(),
                "long-polling sessions expired without polls"
            );
        }
        // Dropped here, outside the map lock: each unregisters from the hub.
        drop(expired);
        count
    }

    /// The shared sweeper: expire idle sessions periodically until `shutdown`.
    pub async fn run_sweeper(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let period = (self.timeout / 4).clamp(MIN_SWEEP_PERIOD, MAX_SWEEP_PERIOD);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                now = tick.tick() => { self.sweep(now); }
                _ = crate::support::stopped(&mut shutdown) => break,
            }
        }
    }

    /// Sessions of this process.
    pub fn len(&self) -> usize {
        read(&self.map).len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poll in progress; keeps its session from expiring until dropped (also when the client goes
/// away mid-wait and the request future is dropped).
#[derive(Debug)]
pub struct Polling {
    session: Arc<Session>,
}

impl Drop for Polling {
    fn drop(&mut self) {
        let mut inner = self.session.lock();
        inner.polling = inner.polling.saturating_sub(1);
        inner.last_poll = Instant::now();
    }
}

impl Polling {
    /// The session's connection id.
    pub fn id(&self) -> ConnId {
        self.session.id
    }

    /// Answer a client that has every frame up to `acked` (0: none): the frames after it at once,
    /// or else the first that arrive within `hold`, or else an empty batch.
    pub async fn poll(&self, acked: u64, hold: Duration) -> Polled {
        let deadline = Instant::now() + hold.min(MAX_HOLD);
        loop {
            // Registered before looking, so a frame pushed in between still wakes this poll.
            let notified = self.session.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let give_up = Instant::now() >= deadline;
            if let Some(polled) = self.session.take(acked, give_up) {
                return polled;
            }
            // A timeout only ends the wait; the loop then answers with what there is.
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

impl Session {
    /// The session's connection id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Append frames, dropping the oldest beyond the capacity; `close` marks the end of the
    /// session (nothing follows) and unregisters it from the hub.
    fn push(&self, frames: impl IntoIterator<Item = Arc<Frame>>, close: bool) {
        let mut lost = 0u64;
        let mut first_loss = false;
        let guard = {
            let mut inner = self.lock();
            for frame in frames {
                let seq = inner.next_seq;
                inner.next_seq += 1;
                inner.ring.push_back((seq, frame));
                if inner.ring.len() > self.capacity
                    && let Some((dropped, _)) = inner.ring.pop_front()
                {
                    inner.dropped_upto = dropped;
                    if dropped > inner.answered_upto {
                        lost += 1;
                    }
                }
            }
            if lost > 0 && !inner.loss_logged {
                inner.loss_logged = true;
                first_loss = true;
            }
            if close {
                inner.closed = true;
                inner.guard.take()
            } else {
                None
            }
        };
        // Unregister outside the session lock (the hub takes its own locks).
        drop(guard);
        if lost > 0 {
            self.dropped(lost, first_loss);
        }
        self.notify.notify_waiters();
    }

    /// The one place where lost frames are counted and logged.
    fn dropped(&self, lost: u64, first: bool) {
        self.metrics
            .longpolling_dropped
            .fetch_add(lost, Ordering::Relaxed);
        if first {
            tracing::warn!(
                connection = self.id,
                capacity = self.capacity,
                "long-polling buffer full: dropping the oldest events; the client gets \
                 rig.connection.gap on its next poll"
            );
        }
    }

    /// The hub dropped the session: wake waiting polls so they answer now.
    fn close(&self) {
        self.push(std::iter::empty(), true);
    }

    /// Release what the client acknowledged and build its answer; `None` when there is nothing
    /// to answer yet and `give_up` is false.
    fn take(&self, acked: u64, give_up: bool) -> Option<Polled> {
        let mut inner = self.lock();
        // A number this session never issued is not the client's position here: answer everything
        // retained rather than skip frames it cannot have.
        let acked = if acked >= inner.next_seq { 0 } else { acked };
        let mut released = false;
        while let Some((seq, frame)) = inner.ring.front() {
            if *seq > acked {
                break;
            }
            if let Some(token) = frame.resume_token() {
                inner.acked_token = Some((*seq, token.to_owned()));
            }
            inner.ring.pop_front();
            released = true;
        }
        if released {
            self.room.notify_waiters();
        }
        let answered_newer = match (&inner.answered_token, &inner.acked_token) {
            (Some((answered, _)), Some((known, _))) => *answered <= acked && answered > known,
            (Some((answered, _)), None) => *answered <= acked,
            (None, _) => false,
        };
        if answered_newer {
            inner.acked_token = inner.answered_token.clone();
        }
        let acked_token = inner.acked_token.as_ref().map(|(_, token)| token.clone());
        let gap = inner.dropped_upto > acked;
        if !gap {
            inner.loss_logged = false;
        }
        let ended = inner.closed && inner.ring.is_empty() && !gap;
        if inner.ring.is_empty() && !gap && !inner.closed && !give_up {
            return None;
        }
        let mut frames = Vec::with_capacity(inner.ring.len() + usize::from(gap));
        if gap {
            let event = CloudEvent::new_rig(
                "rig.connection.gap",
                serde_json::json!({ "last_event_id": acked_token }),
            );
            frames.push(Arc::new(Frame::new(&event, None)));
        }
        let mut last_event_id = None;
        for (_, frame) in &inner.ring {
            if let Some(token) = frame.resume_token() {
                last_event_id = Some(token);
            }
            frames.push(frame.clone());
        }
        let last_event_id = last_event_id.map(str::to_owned).or(acked_token);
        let seq = inner
            .ring
            .back()
            .map_or(acked.max(inner.dropped_upto), |(seq, _)| *seq);
        inner.answered_upto = inner.answered_upto.max(seq);
        if let Some(token) = &last_event_id {
            inner.answered_token = Some((seq, token.clone()));
        }
        let batch = Batch {
            frames,
            seq,
            last_event_id,
        };
        Some(if ended {
            Polled::Ended(batch)
        } else {
            Polled::Batch(batch)
        })
    }
}

/// Move frames from the hub queue into the session's ring until the hub or the session goes away.
async fn forward(mut rx: crate::connections::feed::Feed, session: Weak<Session>) {
    let mut items = Vec::with_capacity(FORWARD_BATCH);
    loop {
        let mut batch = FORWARD_BATCH;
        if rx.is_replaying() {
            // A resuming client's missed events wait for room in the buffer (the client's polls
            // acknowledge what it got) instead of pushing the oldest out: the buffer's
            // drop-oldest policy is for live events only.
            loop {
                let Some(session) = session.upgrade() else {
                    return;
                };
                batch = FORWARD_BATCH.min(session.capacity);
                let room = session.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                if session.lock().ring.len() + batch <= session.capacity {
                    break;
                }
                // Bounded, so a session that expires meanwhile is noticed (its `Weak` dies once
                // this strong reference is dropped at the end of the turn).
                let _ = tokio::time::timeout(Duration::from_secs(1), room).await;
            }
        }
        if rx.recv_many(&mut items, batch).await == 0 {
            // The hub dropped the connection (e.g. shutdown): nothing more will come.
            if let Some(session) = session.upgrade() {
                session.close();
            }
            return;
        }
        let Some(session) = session.upgrade() else {
            return;
        };
        let mut close = false;
        let frames: Vec<Arc<Frame>> = items
            .drain(..)
            .filter_map(|item| match item {
                Outbound::Frame(frame) => Some(frame),
                Outbound::Heartbeat => None,
                Outbound::Close(frame) => {
                    close = true;
                    frame
                }
            })
            .collect();
        session.push(frames, close);
        if close {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
