use super::*;
use crate::connections::hub::Hub;
use crate::metrics::Transport;
use crate::subscriptions::Extractors;

const HOLD: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(3600);

struct Fixture {
    hub: Arc<Hub>,
    sessions: Sessions,
    metrics: Arc<Metrics>,
}

fn fixture(capacity: usize) -> Fixture {
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(Arc::new(Extractors::new()), 1024, metrics.clone()));
    let sessions = Sessions::new(capacity, TIMEOUT, metrics.clone());
    Fixture {
        hub,
        sessions,
        metrics,
    }
}

impl Fixture {
    fn open(&self) -> Arc<Session> {
        let registration = self.hub.register(Transport::LongPolling, &[], true);
        self.sessions.insert(registration)
    }

    /// Queue frames `from..to` (numbered in their data) and wait until the session has them.
    async fn send(&self, session: &Session, numbers: std::ops::Range<u64>) {
        for n in numbers.clone() {
            let event = CloudEvent::new_rig("t", serde_json::json!({ "n": n }));
            let token = format!("1~s/0:{}", n + 1);
            let frame = Frame::new(&event, Some(&token));
            assert!(
                self.hub
                    .send_to(session.id(), Outbound::Frame(Arc::new(frame)))
            );
        }
        let expected = session.lock().next_seq + (numbers.end - numbers.start);
        let deadline = Instant::now() + Duration::from_secs(5);
        while session.lock().next_seq < expected {
            assert!(Instant::now() < deadline, "frames were not forwarded");
            tokio::task::yield_now().await;
        }
    }

    async fn poll(&self, session: &Session, acked: u64, hold: Duration) -> Polled {
        let polling = self.sessions.begin_poll(session.id()).expect("session");
        polling.poll(acked, hold).await
    }

    async fn batch(&self, session: &Session, acked: u64, hold: Duration) -> Batch {
        match self.poll(session, acked, hold).await {
            Polled::Batch(batch) => batch,
            Polled::Ended(_) => panic!("the session ended"),
        }
    }
}

/// The `n` of each frame, or the type for RIG's own events.
fn contents(batch: &Batch) -> Vec<String> {
    batch
        .frames
        .iter()
        .map(|f| {
            let v: serde_json::Value = serde_json::from_slice(&f.json).expect("json");
            match v["data"]["n"].as_u64() {
                Some(n) => n.to_string(),
                None => f.event_type.clone(),
            }
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pending_frames_are_answered_and_released_only_when_acknowledged() {
    let f = fixture(10);
    let s = f.open();
    f.send(&s, 0..3).await;
    let first = f.batch(&s, 0, HOLD).await;
    assert_eq!(contents(&first), ["0", "1", "2"]);
    assert_eq!(first.seq, 3);
    assert_eq!(first.last_event_id.as_deref(), Some("1~s/0:3"));

    // The answer was lost: the client polls again with its old mark and gets it all again.
    f.send(&s, 3..4).await;
    let again = f.batch(&s, 0, HOLD).await;
    assert_eq!(contents(&again), ["0", "1", "2", "3"]);

    // Acknowledged up to 4: only newer frames follow.
    f.send(&s, 4..5).await;
    let next = f.batch(&s, again.seq, HOLD).await;
    assert_eq!(contents(&next), ["4"]);
    assert_eq!(s.lock().ring.len(), 1, "acknowledged frames are released");
}

#[tokio::test(start_paused = true)]
async fn an_idle_poll_is_answered_empty_after_the_hold_with_the_last_position() {
    let f = fixture(10);
    let s = f.open();
    f.send(&s, 0..2).await;
    let got = f.batch(&s, 0, HOLD).await;
    let start = Instant::now();
    let empty = f.batch(&s, got.seq, HOLD).await;
    assert!(empty.frames.is_empty());
    assert_eq!(empty.seq, got.seq);
    assert_eq!(empty.last_event_id.as_deref(), Some("1~s/0:2"));
    // Paused clock: the wait is exactly the hold, not a real-time measurement.
    assert_eq!(Instant::now() - start, HOLD);
}

#[tokio::test(start_paused = true)]
async fn a_frame_arriving_during_the_hold_is_answered_at_once() {
    let f = Arc::new(fixture(10));
    let s = f.open();
    let start = Instant::now();
    let poll = {
        let (f, s) = (f.clone(), s.clone());
        tokio::spawn(async move { f.batch(&s, 0, HOLD).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.send(&s, 7..8).await;
    let batch = poll.await.expect("poll");
    assert_eq!(contents(&batch), ["7"]);
    assert!(Instant::now() - start < HOLD, "woken by the frame");
}

#[tokio::test(start_paused = true)]
async fn overflow_drops_the_oldest_and_the_next_answer_starts_with_a_gap() {
    let f = fixture(3);
    let s = f.open();
    f.send(&s, 0..1).await;
    let seen = f.batch(&s, 0, HOLD).await;
    f.send(&s, 1..6).await;
    let batch = f.batch(&s, seen.seq, HOLD).await;
    assert_eq!(contents(&batch), ["rig.connection.gap", "3", "4", "5"]);
    let gap: serde_json::Value = serde_json::from_slice(&batch.frames[0].json).expect("json");
    assert_eq!(gap["data"]["last_event_id"], "1~s/0:1");
    assert_eq!(f.metrics.longpolling_dropped.load(Ordering::Relaxed), 2);

    // Lost on the way: the gap is answered again; acknowledged: it is over.
    let again = f.batch(&s, seen.seq, HOLD).await;
    assert_eq!(contents(&again)[0], "rig.connection.gap");
    f.send(&s, 6..7).await;
    let after = f.batch(&s, batch.seq, HOLD).await;
    assert_eq!(contents(&after), ["6"]);
}

#[tokio::test(start_paused = true)]
async fn frames_answered_once_are_not_counted_as_lost_when_dropped() {
    let f = fixture(2);
    let s = f.open();
    f.send(&s, 0..2).await;
    let got = f.batch(&s, 0, HOLD).await;
    // Not yet acknowledged, so still buffered; two more push them out.
    f.send(&s, 2..4).await;
    assert_eq!(f.metrics.longpolling_dropped.load(Ordering::Relaxed), 0);
    let next = f.batch(&s, got.seq, HOLD).await;
    assert_eq!(
        contents(&next),
        ["2", "3"],
        "acknowledged past the drop: no gap"
    );
}

#[tokio::test(start_paused = true)]
async fn a_mark_the_session_never_issued_gets_everything_retained() {
    let f = fixture(10);
    let s = f.open();
    f.send(&s, 0..2).await;
    let batch = f.batch(&s, 999, HOLD).await;
    assert_eq!(contents(&batch), ["0", "1"]);
}

#[tokio::test(start_paused = true)]
async fn a_closed_session_delivers_what_is_left_then_ends() {
    let f = fixture(10);
    let s = f.open();
    f.send(&s, 0..1).await;
    f.hub.close_all();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.lock().closed {
        assert!(Instant::now() < deadline, "close was not forwarded");
        tokio::task::yield_now().await;
    }
    let batch = f.batch(&s, 0, HOLD).await;
    assert_eq!(contents(&batch), ["0"]);
    match f.poll(&s, batch.seq, HOLD).await {
        Polled::Ended(last) => {
            assert!(last.frames.is_empty());
            assert_eq!(last.seq, batch.seq);
        }
        Polled::Batch(b) => panic!("not ended: {b:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn closing_wakes_a_waiting_poll() {
    let f = Arc::new(fixture(10));
    let s = f.open();
    let poll = {
        let (f, s) = (f.clone(), s.clone());
        tokio::spawn(async move { f.poll(&s, 0, HOLD).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let start = Instant::now();
    f.hub.close_all();
    assert!(matches!(poll.await.expect("poll"), Polled::Ended(_)));
    assert!(Instant::now() - start < HOLD);
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_expire_and_leave_the_hub_but_polled_ones_stay() {
    let f = fixture(10);
    let idle = f.open();
    let busy = f.open();
    let idle_id = idle.id();
    drop(idle);
    assert_eq!(f.hub.len(), 2);
    tokio::time::advance(TIMEOUT / 2).await;
    let polling = f.sessions.begin_poll(busy.id()).expect("busy");
    assert_eq!(
        f.sessions.sweep(Instant::now()),
        0,
        "nothing is idle long enough"
    );
    tokio::time::advance(TIMEOUT).await;
    // The busy session is in a poll right now: it must survive however long that takes.
    assert_eq!(f.sessions.sweep(Instant::now()), 1);
    assert!(f.sessions.begin_poll(idle_id).is_none());
    assert_eq!(f.hub.len(), 1, "the expired session left the hub");
    assert_eq!(f.metrics.longpolling_expired.load(Ordering::Relaxed), 1);
    drop(polling);
    // Its poll just ended, so its timeout starts over.
    assert_eq!(f.sessions.sweep(Instant::now()), 0);
    tokio::time::advance(TIMEOUT).await;
    assert_eq!(f.sessions.sweep(Instant::now()), 1);
    assert!(f.sessions.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_task_expires_sessions_and_stops_on_shutdown() {
    let f = fixture(10);
    let sessions = Arc::new(Sessions::new(10, Duration::from_secs(8), f.metrics.clone()));
    let registration = f.hub.register(Transport::LongPolling, &[], true);
    sessions.insert(registration);
    let (stop, shutdown) = watch::channel(false);
    let sweeper = tokio::spawn(sessions.clone().run_sweeper(shutdown));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sessions.is_empty() {
        assert!(Instant::now() < deadline, "not expired by the sweeper");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.send(true).expect("send");
    sweeper.await.expect("sweeper ends");
}
