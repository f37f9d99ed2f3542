//! The replay window: the last `capacity` events this process forwarded, with their positions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::token::Frontier;
use crate::auth::TokenCodec;
use crate::events::CloudEvent;
use crate::kafka::history::Fetched;

/// Streams of HTTP-published events start with this prefix, followed by the process's name and a
/// random run id: they are local to one run of one process, so a token naming another process's
/// (or a previous run's) HTTP stream is a gap here — what was published there is not here.
pub const HTTP_STREAM_PREFIX: &str = "_http@";

#[derive(Debug)]
struct Entry {
    stream: Arc<str>,
    position: i64,
    event: Arc<CloudEvent>,
    token: Arc<str>,
}

/// What a reconnecting client gets from the window.
#[derive(Debug, Default)]
pub struct Replay {
    /// Events past the client's frontier may be missing: send `rig.connection.gap` first.
    pub gap: bool,
    /// The retained events past the client's frontier, in forwarding order, with their tokens.
    pub events: Vec<(Arc<CloudEvent>, Arc<str>)>,
}

/// A bounded, in-order record of forwarded events.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    entries: VecDeque<Entry>,
    frontier: Frontier,
    /// Per stream, the first position the window can still vouch for: positions below it were
    /// either evicted or never seen by this process.
    floor: BTreeMap<Arc<str>, i64>,
    /// Signs the tokens handed to clients.
    key: TokenCodec,
}

impl Window {
    /// An empty window keeping at most `capacity` events (0 disables replay: every resume is a
    /// gap), handing out tokens signed with `key`.
    pub fn new(capacity: usize, key: TokenCodec) -> Self {
        Self {
            key,
            capacity,
            entries: VecDeque::with_capacity(capacity.min(65_536)),
            frontier: Frontier::default(),
            floor: BTreeMap::new(),
        }
    }

    /// Declare that this process sees `stream` from `position` on (e.g. where a Kafka partition
    /// was assigned). Without it the first event seen on a stream sets the floor.
    pub fn start_stream(&mut self, stream: &Arc<str>, position: i64) {
        self.floor.entry(stream.clone()).or_insert(position);
        self.frontier.0.entry(stream.clone()).or_insert(position);
    }

    /// Record a forwarded event; returns its resume token (the frontier after it).
    pub fn push(&mut self, stream: &Arc<str>, position: i64, event: Arc<CloudEvent>) -> Arc<str> {
        self.floor.entry(stream.clone()).or_insert(position);
        self.frontier.advance(stream, position);
        let token: Arc<str> = Arc::from(self.frontier.encode_signed(&self.key));
        if self.capacity == 0 {
            self.floor
                .insert(stream.clone(), position.saturating_add(1));
            return token;
        }
        if self.entries.len() == self.capacity
            && let Some(old) = self.entries.pop_front()
        {
            self.floor
                .insert(old.stream, old.position.saturating_add(1));
        }
        self.entries.push_back(Entry {
            stream: stream.clone(),
            position,
            event,
            token: token.clone(),
        });
        token
    }

    /// The current frontier as a token (for greeting events of a new connection).
    pub fn token(&self) -> String {
        self.frontier.encode_signed(&self.key)
    }

    /// The first position of `stream` the window can vouch for, if it has seen the stream.
    pub fn floor(&self, stream: &str) -> Option<i64> {
        self.floor.get(stream).copied()
    }

    /// What a client whose last token was `from` missed (`None`: the token is not understood).
    /// `history` holds what was read from Kafka for positions older than the window: it is
    /// replayed first, and the streams it covers count as served up to its end.
    pub fn replay(&self, from: Option<&Frontier>, history: Option<&Fetched>) -> Replay {
        let Some(from) = from else {
            return Replay {
                gap: true,
                events: Vec::new(),
            };
        };
        let gap = from.0.iter().any(|(stream, next)| {
            let next = match history.and_then(|h| h.covered.get(stream)) {
                Some(end) => (*next).max(*end),
                None => *next,
            };
            match self.floor.get(stream) {
                Some(floor) => next < *floor,
                // A stream this process never saw (a Kafka partition it does not read, another
                // process's or a previous run's HTTP events): whatever the client missed is not here.
                None => true,
            }
        });
        let mut events = Vec::new();
        if let Some(history) = history {
            let mut frontier = from.clone();
            for (stream, position, event) in &history.events {
                frontier.advance(stream, *position);
                events.push((event.clone(), Arc::from(frontier.encode_signed(&self.key))));
            }
        }
        let live = self
            .entries
            .iter()
            .filter(|e| match from.next(&e.stream) {
                Some(next) => e.position >= next,
                // Streams the client never heard of (a Kafka partition that appeared later, HTTP
                // events of this run published before its token named them or while it was
                // connected elsewhere): every retained event of them is new to it.
                None => true,
            })
            .map(|e| (e.event.clone(), e.token.clone()));
        events.extend(live);
        Replay { gap, events }
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
    pub fn token_after_event(&self, event_id: &str) -> Option<Arc<str>> {
        self.entries
            .iter()
            .find(|e| e.event.id == event_id)
            .map(|e| e.token.clone())
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

    fn numbers(replay: &Replay) -> Vec<i64> {
        replay
            .events
            .iter()
            .map(|(e, _)| e.value["data"]["n"].as_i64().expect("n"))
            .collect()
    }

    #[test]
    fn an_event_id_resolves_to_the_token_after_its_oldest_occurrence() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(10);
        let first = event(1);
        let id = first.id.clone();
        let after_first = w.push(&p, 0, first.clone());
        w.push(&p, 1, event(2));
        // The same id again (a producer retry): the older occurrence wins.
        w.push(&p, 2, first);
        assert_eq!(w.token_after_event(&id), Some(after_first));
        assert_eq!(w.token_after_event("unknown"), None);
    }

    #[test]
    fn replays_exactly_what_follows_the_token_in_order() {
        let p0: Arc<str> = Arc::from("t/0");
        let p1: Arc<str> = Arc::from("t/1");
        let mut w = Window::new_for_test(100);
        w.start_stream(&p0, 0);
        w.start_stream(&p1, 0);
        let mut tokens = Vec::new();
        for n in 0..10 {
            let stream = if n % 2 == 0 { &p0 } else { &p1 };
            tokens.push(w.push(stream, n / 2, event(n)));
        }
        let from = decode(&tokens[3]).expect("token");
        let replay = w.replay(Some(&from), None);
        assert!(!replay.gap);
        assert_eq!(numbers(&replay), vec![4, 5, 6, 7, 8, 9]);
        // The last token: nothing missed.
        let last = decode(&tokens[9]).expect("token");
        let replay = w.replay(Some(&last), None);
        assert!(!replay.gap && replay.events.is_empty());
    }

    #[test]
    fn an_evicted_position_is_a_gap_but_the_rest_is_still_replayed() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(3);
        w.start_stream(&p, 0);
        let tokens: Vec<_> = (0..6).map(|n| w.push(&p, n, event(n))).collect();
        let from = decode(&tokens[0]).expect("token");
        let replay = w.replay(Some(&from), None);
        assert!(replay.gap, "events 1 and 2 were evicted");
        assert_eq!(numbers(&replay), vec![3, 4, 5]);
        let from = decode(&tokens[2]).expect("token");
        let replay = w.replay(Some(&from), None);
        assert!(!replay.gap, "3.. are all retained");
        assert_eq!(numbers(&replay), vec![3, 4, 5]);
    }

    #[test]
    fn unknown_tokens_and_unseen_kafka_streams_are_gaps() {
        let w = Window::new_for_test(10);
        assert!(w.replay(None, None).gap);
        let from = Frontier::decode("1~other/0:5").expect("token");
        assert!(w.replay(Some(&from), None).gap);
        let from = Frontier::decode("1~_http@other-pod.0000abcd:5").expect("token");
        assert!(
            w.replay(Some(&from), None).gap,
            "another process's (or a previous run's) HTTP events are not here"
        );
    }

    #[test]
    fn history_fills_the_positions_before_the_window() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(10);
        w.start_stream(&p, 100);
        w.push(&p, 100, event(100));
        let from = Frontier::decode("1~t/0:97").expect("token");
        let history = Fetched {
            events: (97..100).map(|n| (p.clone(), n, event(n))).collect(),
            covered: [(p.clone(), 100)].into_iter().collect(),
            invalid: 0,
        };
        let replay = w.replay(Some(&from), Some(&history));
        assert!(!replay.gap);
        assert_eq!(numbers(&replay), vec![97, 98, 99, 100]);
        assert_eq!(
            decode(&replay.events[0].1),
            Frontier::decode("1~t/0:98"),
            "history tokens advance the client's frontier"
        );
        // History that stops short of the window's start is a gap.
        let short = Fetched {
            events: Vec::new(),
            covered: [(p.clone(), 99)].into_iter().collect(),
            invalid: 0,
        };
        assert!(w.replay(Some(&from), Some(&short)).gap);
    }

    #[test]
    fn positions_before_the_start_of_a_stream_are_a_gap() {
        let p: Arc<str> = Arc::from("t/0");
        let mut w = Window::new_for_test(10);
        w.start_stream(&p, 100);
        let from = Frontier::decode("1~t/0:90").expect("token");
        assert!(w.replay(Some(&from), None).gap);
        let from = Frontier::decode("1~t/0:100").expect("token");
        assert!(!w.replay(Some(&from), None).gap);
    }
}
