//! A connection's bounded queue: the hub pushes without ever waiting, the connection's writer
//! takes. Its memory follows what is queued now: when the writer has taken everything, a buffer
//! grown by a burst is given back (tokio's `mpsc` keeps the blocks of its high-water mark for the
//! channel's life, so after a broker outage's backlog every connection kept a burst's worth;
//! measured by `e2e/bench/hostile.sh`).
//!
//! One sender (the hub's entry) and one receiver (the connection). The lock is held only to push
//! or take, never across an await; the writer is woken on the first push after it found the queue
//! empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::hub::Outbound;

/// Items kept allocated when the queue empties (a larger buffer is freed).
const KEEP: usize = 16;

/// Why [`Sender::try_send`] refused an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue holds its capacity already.
    Full,
    /// The connection went away.
    Closed,
}

/// Why [`Receiver::try_recv`] has nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued now.
    Empty,
    /// Nothing queued, and the hub dropped the connection: nothing will come.
    Disconnected,
}

#[derive(Debug)]
struct Inner {
    items: VecDeque<Outbound>,
    capacity: usize,
    sender: bool,
    receiver: bool,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared(Mutex<Inner>);

impl Shared {
    // Nothing under this lock panics; should a bug panic anyway, the queue stays usable.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hub's end.
#[derive(Debug)]
pub struct Sender(Arc<Shared>);

/// The connection's end.
#[derive(Debug)]
pub struct Receiver(Arc<Shared>);

/// A queue of at most `capacity` items.
pub fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared(Mutex::new(Inner {
        items: VecDeque::new(),
        capacity: capacity.max(1),
        sender: true,
        receiver: true,
        waker: None,
    })));
    (Sender(shared.clone()), Receiver(shared))
}

impl Sender {
    /// Queue `item` unless the queue is full or the connection gone.
    pub fn try_send(&self, item: Outbound) -> Result<(), TrySendError> {
        let waker = {
            let mut inner = self.0.lock();
            if !inner.receiver {
                return Err(TrySendError::Closed);
            }
            if inner.items.len() >= inner.capacity {
                return Err(TrySendError::Full);
            }
            inner.items.push_back(item);
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut inner = self.0.lock();
            inner.sender = false;
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Receiver {
    /// The oldest item, if one is queued.
    pub fn try_recv(&mut self) -> Result<Outbound, TryRecvError> {
        let mut inner = self.0.lock();
        take(&mut inner)
    }

    /// The oldest item; `Ready(None)` once the sender is gone and everything was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        let mut inner = self.0.lock();
        match take(&mut inner) {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                match &inner.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => inner.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

fn take(inner: &mut Inner) -> Result<Outbound, TryRecvError> {
    match inner.items.pop_front() {
        Some(item) => {
            if inner.items.is_empty() && inner.items.capacity() > KEEP {
                inner.items.shrink_to(KEEP);
            }
            Ok(item)
        }
        None if inner.sender => Err(TryRecvError::Empty),
        None => Err(TryRecvError::Disconnected),
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.receiver = false;
        inner.items = VecDeque::new();
        inner.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_order_and_closed_either_way() {
        let (tx, mut rx) = channel(2);
        assert_eq!(tx.try_send(Outbound::Heartbeat), Ok(()));
        assert_eq!(tx.try_send(Outbound::Close(None)), Ok(()));
        assert_eq!(tx.try_send(Outbound::Heartbeat), Err(TrySendError::Full));
        assert!(matches!(rx.try_recv(), Ok(Outbound::Heartbeat)));
        assert!(matches!(rx.try_recv(), Ok(Outbound::Close(None))));
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
        tx.try_send(Outbound::Heartbeat).expect("room again");
        drop(tx);
        // What was queued is still taken, then the end.
        assert!(matches!(
            std::future::poll_fn(|cx| rx.poll_recv(cx)).await,
            Some(Outbound::Heartbeat)
        ));
        assert!(std::future::poll_fn(|cx| rx.poll_recv(cx)).await.is_none());

        let (tx, rx) = channel(2);
        drop(rx);
        assert_eq!(tx.try_send(Outbound::Heartbeat), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push_and_by_the_end() {
        let (tx, mut rx) = channel(4);
        let waiting = tokio::spawn(async move {
            let first = std::future::poll_fn(|cx| rx.poll_recv(cx)).await;
            let end = std::future::poll_fn(|cx| rx.poll_recv(cx)).await;
            (first.is_some(), end.is_none())
        });
        tokio::task::yield_now().await;
        tx.try_send(Outbound::Heartbeat).expect("queued");
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.expect("task"), (true, true));
    }

    #[test]
    fn a_burst_s_buffer_is_given_back_once_drained() {
        let (tx, mut rx) = channel(1024);
        for _ in 0..1024 {
            tx.try_send(Outbound::Heartbeat).expect("queued");
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.0.lock().items.capacity() <= KEEP);
    }
}
