//! What a connection's writer reads: its queue, and — while a resuming client catches up — its
//! replay, pulled lazily from the shared replay window.
//!
//! A resuming connection is registered with the hub but not live: published events are not queued
//! to it. Its writer takes the greetings from the queue, then pulls the missed events from the
//! window a batch at a time, only when it has written the previous batch, so a client that does
//! not read holds no more than one batch ([`REPLAY_BATCH`] frames, shared with the window in the
//! common case) and a cursor — whatever the window holds or the token claims. When the cursor
//! reaches the newest entry, the connection goes live under the window's lock, so no event falls
//! between the replay and the live stream, and none comes twice. Events evicted before a slow
//! client reached them become one `rig.connection.gap`.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::hub::{Hub, Outbound};
use super::queue::{Receiver, TryRecvError};
use crate::events::frame::Frame;
use crate::replay::{Cursor, Window};
use crate::subscriptions::ConnId;

/// Frames pulled from the window at a time.
pub const REPLAY_BATCH: usize = 32;

/// A connection's queue plus, while it catches up, its replay (module docs).
#[derive(Debug)]
pub struct Feed {
    rx: Receiver,
    /// Replay frames pulled but not taken yet; always taken before anything in `rx`.
    ready: VecDeque<Arc<Frame>>,
    replay: Option<Box<Replaying>>,
}

/// A connection catching up from the window.
#[derive(Debug)]
pub struct Replaying {
    /// The connection.
    pub id: ConnId,
    /// Where it is.
    pub cursor: Cursor,
    /// The window (the fan-out's).
    pub window: Arc<Mutex<Window>>,
    /// The hub (its subscriptions, and to go live).
    pub hub: Arc<Hub>,
}

impl Feed {
    /// A live connection's feed: its queue only.
    pub fn new(rx: Receiver) -> Self {
        Self {
            rx,
            ready: VecDeque::new(),
            replay: None,
        }
    }

    /// Catch up with `replaying` after what is queued now (the greetings).
    pub fn replay(&mut self, replaying: Replaying) {
        self.replay = Some(Box::new(replaying));
    }

    /// Whether the connection is still catching up.
    pub fn is_replaying(&self) -> bool {
        self.replay.is_some() || !self.ready.is_empty()
    }

    /// The next item if one is there now: a pulled replay frame, else the queue, else a new
    /// batch of the replay.
    pub fn try_recv(&mut self) -> Result<Outbound, TryRecvError> {
        if let Some(frame) = self.ready.pop_front() {
            return Ok(Outbound::Frame(frame));
        }
        match self.rx.try_recv() {
            Ok(item) => return Ok(item),
            Err(TryRecvError::Disconnected) => {
                // Closed by the hub (killed, slow, shutdown): nothing more to replay.
                self.replay = None;
                return Err(TryRecvError::Disconnected);
            }
            Err(TryRecvError::Empty) => {}
        }
        match self.pull() {
            Some(frame) => Ok(Outbound::Frame(frame)),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Poll for the next item; `None` when the hub closed the connection and everything was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        match self.try_recv() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            // Caught up (`pull` went live): wait on the queue.
            Err(TryRecvError::Empty) => self.rx.poll_recv(cx),
        }
    }

    /// The next item; `None` when the hub closed the connection and everything was taken.
    pub async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Wait for at least one item, then append up to `limit` to `out`; 0 when closed.
    pub async fn recv_many(&mut self, out: &mut Vec<Outbound>, limit: usize) -> usize {
        let Some(first) = self.recv().await else {
            return 0;
        };
        out.push(first);
        let mut n = 1;
        while n < limit {
            match self.try_recv() {
                Ok(item) => {
                    out.push(item);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    /// Pull the next batch of the replay into `ready` and take its first frame; goes live when
    /// the cursor reaches the newest entry. `None` when not replaying or nothing was left.
    fn pull(&mut self) -> Option<Arc<Frame>> {
        let replay = self.replay.as_mut()?;
        let mut out = Vec::with_capacity(REPLAY_BATCH);
        loop {
            let Replaying {
                id,
                cursor,
                hub,
                window,
            } = &mut **replay;
            let window = window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let caught_up = window.pull(cursor, |e| hub.matches(*id, e), &mut out, REPLAY_BATCH);
            if caught_up {
                // Under the window's lock: the next published event is queued to it, and
                // every earlier one was in the window (so in this replay).
                hub.go_live(*id);
                drop(window);
                self.replay = None;
                break;
            }
            drop(window);
            if !out.is_empty() {
                break;
            }
        }
        self.ready.extend(out);
        self.ready.pop_front()
    }
}
