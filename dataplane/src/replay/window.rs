//! The replay window: the last `capacity` events this process forwarded, with their positions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::token::Frontier;
use crate::auth::TokenCodec;
use crate::events::CloudEvent;
use crate::events::frame::Frame;

/// Streams of HTTP-published events start with this prefix, followed by the process's name and a
/// random run id: they are local to one run of one process, so a token naming another process's
/// (or a previous run's) HTTP stream is a gap here — what was published there is not here.
pub const HTTP_STREAM_PREFIX: &str = "_http@";

#[derive(Debug)]
struct Entry {
    stream: Arc<str>,
    position: i64,
    /// For matching a resuming client's subscriptions.
    event: Arc<CloudEvent>,
    /// The frame live clients got (its SSE `id:` is the token after this entry), shared with
    /// every client it is replayed to.
    frame: Arc<Frame>,
}

/// A bounded, in-order record of forwarded events.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    entries: VecDeque<Entry>,
    /// The sequence number of `entries[0]` (every entry ever pushed has the next number).
    first_seq: u64,
    /// The frontier after the newest entry.
    frontier: Frontier,
    /// The frontier before the oldest retained entry.
    base: Frontier,
    /// Per stream, the first position the window can still vouch for: positions below it were
    /// either evicted or never seen by this process.
    floor: BTreeMap<Arc<str>, i64>,
    /// Signs the tokens handed to clients.
    key: TokenCodec,
}

/// Where a resuming client is in the window, and what it has seen: O(streams), whatever the
/// window holds (the events themselves are never copied for it).
#[derive(Debug)]
pub struct Cursor {
    /// The sequence number of the next entry to look at.
    next: u64,
    /// The client's frontier: its token, advanced past every entry looked at.
    client: Frontier,
    /// The window's frontier just before entry `next`.
    walked: Frontier,
    /// `walked` is at or past `client` on every stream the window knows: from here on, each
    /// entry's own token (the shared frame) is right for this client too.
    dominated: bool,
}

impl Window {
    /// An empty window keeping at most `capacity` events (0 disables replay: every resume is a
    /// gap), handing out tokens signed with `key`.
    pub fn new(capacity: usize, key: TokenCodec) -> Self {
        Self {
            key,
            capacity,
            entries: VecDeque::with_capacity(capacity.min(65_536)),
            first_seq: 0,
            frontier: Frontier::default(),
            base: Frontier::default(),
            floor: BTreeMap::new(),
        }
    }

    /// Declare that this process sees `stream` from `position` on (e.g. where a Kafka partition
    /// was assigned, or where its history read back after a restart starts). Without it the
    /// first event seen on a stream sets the floor.
    pub fn start_stream(&mut self, stream: &Arc<str>, position: i64) {
        self.floor.entry(stream.clone()).or_insert(position);
        self.frontier.0.entry(stream.clone()).or_insert(position);
        self.base.0.entry(stream.clone()).or_insert(position);
    }

    /// Record a forwarded event; returns its frame, encoded once with its resume token (the
    /// frontier after it), to send to live clients and to replay later.
    pub fn push(&mut self, stream: &Arc<str>, position: i64, event: Arc<CloudEvent>) -> Arc<Frame> {
        self.floor.entry(stream.clone()).or_insert(position);
        self.base.0.entry(stream.clone()).or_insert(position);
        self.frontier.advance(stream, position);
        let token = self.frontier.encode_signed(&self.key);
        let frame = Arc::new(Frame::new(&event, Some(&token)));
        if self.capacity == 0 {
            self.floor
                .insert(stream.clone(), position.saturating_add(1));
            self.base.advance(stream, position);
            self.first_seq += 1;
            return frame;
        }
        if self.entries.len() == self.capacity
            && let Some(old) = self.entries.pop_front()
        {
            self.first_seq += 1;
            self.base.advance(&old.stream, old.position);
            self.floor
                .insert(old.stream, old.position.saturating_add(1));
        }
        self.entries.push_back(Entry {
            stream: stream.clone(),
            position,
            event,
            frame: frame.clone(),
        });
        frame
    }

    /// The current frontier as a token (for greeting events of a new connection).
    pub fn token(&self) -> String {
        self.frontier.encode_signed(&self.key)
    }

    /// The first position of `stream` the window can vouch for, if it has seen the stream.
    pub fn floor(&self, stream: &str) -> Option<i64> {
        self.floor.get(stream).copied()
    }

    /// A client resumes from `from` (`None`: a token that is not understood). Returns whether
    /// something it missed is not here (send `rig.connection.gap` first), and the cursor to
    /// [`pull`](Self::pull) the retained events past its frontier with (none for a token that is
    /// not understood).
    pub fn resume(&self, from: Option<&Frontier>) -> (bool, Option<Cursor>) {
        let Some(from) = from else {
            return (true, None);
        };
        let gap = from
            .0
            .iter()
            .any(|(stream, next)| match self.floor.get(stream) {
                Some(floor) => next < floor,
                // A stream this process never saw (a Kafka partition it does not read, another
                // process's or a previous run's HTTP events): whatever the client missed is not here.
                None => true,
            });
        let mut cursor = Cursor {
            next: self.first_seq,
            client: from.clone(),
            walked: self.base.clone(),
            dominated: false,
        };
        cursor.dominated = self.dominates(&cursor.walked, &cursor.client);
        (gap, Some(cursor))
    }

    /// Move `cursor` on: push to `out` the frames of up to `max` entries past the client's
    /// frontier that `wanted` accepts (its subscriptions), in forwarding order, looking at a
    /// bounded number of entries per call (the caller holds the window's lock). Entries evicted
    /// before the client got to them become one `rig.connection.gap` frame. Returns `true` when
    /// the cursor has reached the newest entry.
    pub fn pull(
        &self,
        cursor: &mut Cursor,
        mut wanted: impl FnMut(&CloudEvent) -> bool,
        out: &mut Vec<Arc<Frame>>,
        max: usize,
    ) -> bool {
        if cursor.next < self.first_seq {
            // The client read too slowly: what it had not reached yet was evicted.
            merge(&mut cursor.walked, &self.base);
            merge(&mut cursor.client, &self.base);
            cursor.next = self.first_seq;
            let gap = CloudEvent::new_rig(
                crate::connections::GAP,
                serde_json::json!({ "reason": "evicted before it was replayed" }),
            );
            out.push(Arc::new(Frame::new(
                &gap,
                Some(&cursor.client.encode_signed(&self.key)),
            )));
        }
        let mut looked = 0;
        while out.len() < max && looked < MAX_LOOKED_PER_PULL {
            let Some(entry) = usize::try_from(cursor.next - self.first_seq)
                .ok()
                .and_then(|i| self.entries.get(i))
            else {
                return true;
            };
            cursor.next += 1;
            looked += 1;
            cursor.walked.advance(&entry.stream, entry.position);
            let new = cursor
                .client
                .next(&entry.stream)
                // A stream the client never heard of (a partition that appeared later, HTTP
                // events published while it was connected elsewhere): every event of it is new.
                .is_none_or(|next| entry.position >= next);
            if !new {
                continue;
            }
            if !cursor.dominated {
                cursor.dominated = self.dominates(&cursor.walked, &cursor.client);
            }
            cursor.client.advance(&entry.stream, entry.position);
            if !wanted(&entry.event) {
                continue;
            }
            if cursor.dominated {
                out.push(entry.frame.clone());
            } else {
                // The client is ahead of this process on some stream (its token came from
                // another pod or an earlier run): its own token, so it never goes back.
                let mut token = cursor.client.clone();
                merge(&mut token, &cursor.walked);
                out.push(Arc::new(Frame::new(
                    &entry.event,
                    Some(&token.encode_signed(&self.key)),
                )));
            }
        }
        usize::try_from(cursor.next - self.first_seq).is_ok_and(|i| i >= self.entries.len())
    }

    /// Whether `walked` is at or past `client` on every stream this window knows.
    fn dominates(&self, walked: &Frontier, client: &Frontier) -> bool {
        client
            .0
            .iter()
            .filter(|(stream, _)| self.floor.contains_key(*stream))
            .all(|(stream, next)| walked.next(stream).is_some_and(|w| w >= *next))
    }

    /// Events retained.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The resume token after the oldest retained event whose CloudEvent `id` is `event_id`, for
    /// clients that know event ids but not tokens (WebSocket). The oldest, so that a reused id
    /// replays more rather than less. `None` when no retained event has that id.
    pub fn token_after_event(&self, event_id: &str) -> Option<String> {
        self.entries
            .iter()
            .find(|e| e.event.id == event_id)
            .and_then(|e| e.frame.resume_token().map(str::to_owned))
    }
}

/// Entries one [`Window::pull`] looks at, at most (bounds the time the window's lock is held for
/// a client whose subscriptions match little).
const MAX_LOOKED_PER_PULL: usize = 4096;

/// Raise `into` to `other` on every stream.
fn merge(into: &mut Frontier, other: &Frontier) {
    for (stream, next) in &other.0 {
        into.advance(stream, next - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenCodec {
        TokenCodec::new(b"window-test-key-0123456789abcdef")
    }

    fn decode(token: &str) -> Option<Frontier> {
        Frontier::decode_signed(token, &key())
    }

    impl Window {
        fn new_for_test(capacity: usize) -> Self {
            Self::new(capacity, key())
        }
    }

    fn event(n: i64) -> Arc<CloudEvent> {
        Arc::new(CloudEvent::new_rig("t", serde_json::json!({ "n": n })))
    }

    fn token_of(frame: &Frame) -> String {
        frame.resume_token().expect("token").to_owned()
    }

    /// Resume from `from`, pulling everything in batches of `batch`: the gap flag and the
    /// frames (`n` of each, or -1 for a gap frame).
    fn replay(w: &Window, from: Option<&Frontier>, batch: usize) -> (bool, Vec<(i64, String)>) {
        let (gap, cursor) = w.resume(from);
        let mut frames = Vec::new();
        if let Some(mut cursor) = cursor {
            loop {
                let mut out = Vec::new();
                let done = w.pull(&mut cursor, |_| true, &mut out, batch);
                frames.extend(out);
                if done {
                    break;
                }
            }
        }
        let numbers = frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_slice(&f.json).expect("json");
                (v["data"]["n"].as_i64().unwrap_or(-1), token_of(f))
            })
            .collect();
        (gap, numbers)
    }

    fn numbers(frames: &[(i64, String)]) -> Vec<i64> {
        frames.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn an_event_id_resolves_to_the_token_after_its_oldest_occurrence() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(10);
        let first = event(1);
        let id = first.id.clone();
        let after_first = token_of(&w.push(&p, 0, first.clone()));
        w.push(&p, 1, event(2));
        // The same id again (a producer retry): the older occurrence wins.
        w.push(&p, 2, first);
        assert_eq!(w.token_after_event(&id), Some(after_first));
        assert_eq!(w.token_after_event("unknown"), None);
    }

    #[test]
    fn replays_exactly_what_follows_the_token_in_order_sharing_the_live_frames() {
        let p0: Arc<str> = Arc::from("t/0");
        let p1: Arc<str> = Arc::from("t/1");
        let mut w = Window::new_for_test(100);
        w.start_stream(&p0, 0);
        w.start_stream(&p1, 0);
        let mut frames = Vec::new();
        for n in 0..10 {
            let stream = if n % 2 == 0 { &p0 } else { &p1 };
            frames.push(w.push(stream, n / 2, event(n)));
        }
        let from = decode(&token_of(&frames[3])).expect("token");
        for batch in [1, 2, 100] {
            let (gap, got) = replay(&w, Some(&from), batch);
            assert!(!gap);
            assert_eq!(numbers(&got), vec![4, 5, 6, 7, 8, 9], "batch {batch}");
        }
        // The frames are the live ones, not copies.
        let (_, mut cursor) = w.resume(Some(&from));
        let mut out = Vec::new();
        w.pull(cursor.as_mut().expect("cursor"), |_| true, &mut out, 100);
        assert!(Arc::ptr_eq(&out[0], &frames[4]));
        // The last token: nothing missed.
        let last = decode(&token_of(&frames[9])).expect("token");
        let (gap, got) = replay(&w, Some(&last), 10);
        assert!(!gap && got.is_empty());
    }

    #[test]
    fn only_wanted_events_are_replayed_and_the_walk_per_pull_is_bounded() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(10_000);
        w.start_stream(&p, 0);
        let first = w.push(&p, 0, event(0));
        for n in 1..10_000 {
            w.push(&p, n, event(n));
        }
        let from = decode(&token_of(&first)).expect("token");
        let (_, cursor) = w.resume(Some(&from));
        let mut cursor = cursor.expect("cursor");
        let mut out = Vec::new();
        let want = |e: &CloudEvent| e.value["data"]["n"].as_i64() == Some(9_999);
        let mut pulls = 0;
        while !w.pull(&mut cursor, want, &mut out, 32) {
            pulls += 1;
            assert!(out.is_empty(), "nothing wanted before the last");
        }
        assert!(pulls >= 2, "one pull does not walk the whole window");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn an_evicted_position_is_a_gap_but_the_rest_is_still_replayed() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(3);
        w.start_stream(&p, 0);
        let tokens: Vec<_> = (0..6).map(|n| token_of(&w.push(&p, n, event(n)))).collect();
        let from = decode(&tokens[0]).expect("token");
        let (gap, got) = replay(&w, Some(&from), 10);
        assert!(gap, "events 1 and 2 were evicted");
        assert_eq!(numbers(&got), vec![3, 4, 5]);
        let from = decode(&tokens[2]).expect("token");
        let (gap, got) = replay(&w, Some(&from), 10);
        assert!(!gap, "3.. are all retained");
        assert_eq!(numbers(&got), vec![3, 4, 5]);
    }

    #[test]
    fn entries_evicted_while_a_slow_client_replays_become_one_gap_frame() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(4);
        w.start_stream(&p, 0);
        let first = w.push(&p, 0, event(0));
        for n in 1..4 {
            w.push(&p, n, event(n));
        }
        let from = decode(&token_of(&first)).expect("token");
        let (gap, cursor) = w.resume(Some(&from));
        assert!(!gap);
        let mut cursor = cursor.expect("cursor");
        let mut out = Vec::new();
        assert!(!w.pull(&mut cursor, |_| true, &mut out, 1));
        assert_eq!(out.len(), 1, "event 1");
        // Four more events evict 1..=3 and 4 before the client comes back.
        for n in 4..8 {
            w.push(&p, n, event(n));
        }
        let mut out = Vec::new();
        assert!(w.pull(&mut cursor, |_| true, &mut out, 10));
        let types: Vec<&str> = out.iter().map(|f| f.event_type.as_str()).collect();
        assert_eq!(types, vec![crate::connections::GAP, "t", "t", "t", "t"]);
        assert_eq!(
            decode(&token_of(out.last().expect("frame"))),
            decode(&w.token())
        );
    }

    #[test]
    fn a_client_ahead_of_this_process_gets_tokens_that_never_go_back() {
        // The token came from another pod (or an earlier run) that was further on stream b.
        let a: Arc<str> = Arc::from("t/0");
        let b: Arc<str> = Arc::from("t/1");
        let mut w = Window::new_for_test(10);
        w.start_stream(&a, 0);
        w.start_stream(&b, 0);
        w.push(&a, 0, event(0));
        w.push(&b, 0, event(100));
        w.push(&b, 1, event(101));
        w.push(&a, 1, event(1));
        let from = Frontier::decode("1~t/0:0,t/1:2").expect("token");
        let (gap, got) = replay(&w, Some(&from), 10);
        assert!(!gap);
        assert_eq!(numbers(&got), vec![0, 1]);
        for (_, token) in &got {
            let t = decode(token).expect("token");
            assert!(t.next("t/1") >= Some(2), "{t:?} went back on t/1");
        }
        assert_eq!(decode(&got[1].1), Frontier::decode("1~t/0:2,t/1:2"));
    }

    #[test]
    fn unknown_tokens_and_unseen_kafka_streams_are_gaps() {
        let w = Window::new_for_test(10);
        let (gap, cursor) = w.resume(None);
        assert!(gap && cursor.is_none());
        let from = Frontier::decode("1~other/0:5").expect("token");
        assert!(w.resume(Some(&from)).0);
        let from = Frontier::decode("1~_http@other-pod.0000abcd:5").expect("token");
        assert!(
            w.resume(Some(&from)).0,
            "another process's (or a previous run's) HTTP events are not here"
        );
    }

    #[test]
    fn history_pushed_before_the_live_start_is_replayed() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(10);
        // After a restart: the stream starts at 97, where the history read back begins.
        w.start_stream(&p, 97);
        for n in 97..100 {
            w.push(&p, n, event(n));
        }
        w.push(&p, 100, event(100));
        let from = Frontier::decode("1~t/0:98").expect("token");
        let (gap, got) = replay(&w, Some(&from), 10);
        assert!(!gap);
        assert_eq!(numbers(&got), vec![98, 99, 100]);
        assert_eq!(decode(&got[0].1), Frontier::decode("1~t/0:99"));
        let from = Frontier::decode("1~t/0:90").expect("token");
        assert!(w.resume(Some(&from)).0, "older than the history read back");
    }

    #[test]
    fn positions_before_the_start_of_a_stream_are_a_gap() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(10);
        w.start_stream(&p, 100);
        let from = Frontier::decode("1~t/0:90").expect("token");
        assert!(w.resume(Some(&from)).0);
        let from = Frontier::decode("1~t/0:100").expect("token");
        assert!(!w.resume(Some(&from)).0);
    }
}
