//! The controller loop: reflect the three kinds, compile on every change, publish the result.
//!
//! One reflector per kind keeps an in-memory store of the cluster's objects. Nothing is compiled
//! before all three stores finished their first list (an empty snapshot from a half-synced
//! operator would wipe the data planes' routes). After that, a `Blacklist` change compiles at
//! once; route changes open a short window ([`Config::route_debounce`]) that collects a burst
//! (`kubectl apply -f dir/`) into one compilation. The compiler also says when the next
//! `Blacklist` expires, and the loop compiles again at that moment. The loop is level-based: it
//! always compiles the whole current state, so a missed or repeated event changes nothing.
//!
//! [`Config::route_debounce`]: crate::config::Config::route_debounce

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use rig_crds::{Blacklist, EventRoute, ProxyRoute, Snapshot};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::compile::{self, Kind, Verdict};
use crate::metrics::Metrics;
use crate::programmed::{History, Versions};

/// A snapshot together with its stream line (encoded once, shared by every client).
#[derive(Debug)]
pub struct Published {
    /// The snapshot.
    pub snapshot: Arc<Snapshot>,
    /// `{"type":"snapshot",…}\n`.
    pub line: Bytes,
}

/// The reflector stores of the three kinds (cheap to clone).
#[derive(Clone, Debug)]
pub struct Stores {
    /// `EventRoute` objects.
    pub event_routes: Store<EventRoute>,
    /// `ProxyRoute` objects.
    pub proxy_routes: Store<ProxyRoute>,
    /// `Blacklist` objects.
    pub blacklists: Store<Blacklist>,
}

/// What the status writer needs from one compilation.
#[derive(Debug, Default)]
pub struct Round {
    /// Every object's verdict, with the sequence number of the first published version that
    /// carried its current generation ([`History::entered`]; `None` when not in the snapshot).
    pub verdicts: Vec<(Verdict, Option<u64>)>,
    /// The versions published up to this compilation.
    pub versions: Arc<Versions>,
}

/// What the controller publishes.
#[derive(Debug)]
pub struct Outputs {
    /// The current snapshot; `None` until the first complete compilation.
    pub snapshot: watch::Sender<Option<Arc<Published>>>,
    /// The verdicts of the last compilation.
    pub rounds: watch::Sender<Arc<Round>>,
    /// Compile and publish counters.
    pub metrics: Arc<Metrics>,
}

/// A change seen by one of the reflectors.
enum Change {
    /// Objects of this kind changed.
    Objects(Kind),
    /// This kind's store holds a complete list now.
    Synced(Kind),
    /// An object changed without a new generation (its status, labels or annotations): nothing
    /// to compile, but the status writer looks again (an edited status is put back).
    Status,
}

/// The generation of every object of one kind, to tell spec changes from the rest. The status
/// writes of the operator itself come back as watch events; compiling for each of them would
/// cost one full compilation per `Blacklist` status write.
#[derive(Default)]
struct Generations(std::collections::HashMap<String, i64>);

impl Generations {
    fn key<K: kube::Resource>(object: &K) -> String {
        let meta = object.meta();
        match &meta.uid {
            Some(uid) => uid.clone(),
            None => format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
        }
    }

    /// What a watch event means for the compile loop.
    fn change<K: kube::Resource>(
        &mut self,
        kind: Kind,
        event: &watcher::Event<K>,
    ) -> Option<Change> {
        match event {
            watcher::Event::Init => {
                self.0.clear();
                None
            }
            watcher::Event::InitApply(object) => {
                let generation = object.meta().generation.unwrap_or_default();
                self.0.insert(Self::key(object), generation);
                None
            }
            watcher::Event::InitDone => Some(Change::Synced(kind)),
            watcher::Event::Apply(object) => {
                let generation = object.meta().generation.unwrap_or_default();
                match self.0.insert(Self::key(object), generation) {
                    Some(old) if old == generation => Some(Change::Status),
                    _ => Some(Change::Objects(kind)),
                }
            }
            watcher::Event::Delete(object) => {
                self.0.remove(&Self::key(object));
                Some(Change::Objects(kind))
            }
        }
    }
}

fn changes<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    kind: Kind,
) -> impl Stream<Item = Change> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    // `managedFields` are dropped before the store: nothing here reads them, and with the
    // operator's own status writes they are a large share of each object's memory.
    reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|object: &mut K| object.meta_mut().managed_fields = None),
    )
    .filter_map({
        let mut generations = Generations::default();
        move |event| {
            let change = match event {
                Ok(event) => generations.change(kind, &event),
                Err(error) => {
                    // The backoff retries; the stores keep their last state meanwhile.
                    tracing::warn!(?kind, error = %crate::lease::error_chain(&error),
                        "watch failed");
                    None
                }
            };
            std::future::ready(change)
        }
    })
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Start watching; returns the stores and the loop that compiles and publishes, which runs until
/// the watch streams end (they do not, short of the process ending).
pub fn start(
    client: &kube::Client,
    namespace: Option<&str>,
    debounce: Duration,
    outputs: Outputs,
) -> (Stores, impl Future<Output = ()> + Send + 'static) {
    let (event_routes, er_writer) = reflector::store();
    let (proxy_routes, pr_writer) = reflector::store();
    let (blacklists, bl_writer) = reflector::store();
    let merged = futures::stream::select_all([
        changes(
            api::<EventRoute>(client, namespace),
            er_writer,
            Kind::EventRoute,
        )
        .boxed(),
        changes(
            api::<ProxyRoute>(client, namespace),
            pr_writer,
            Kind::ProxyRoute,
        )
        .boxed(),
        changes(
            api::<Blacklist>(client, namespace),
            bl_writer,
            Kind::Blacklist,
        )
        .boxed(),
    ]);
    let stores = Stores {
        event_routes,
        proxy_routes,
        blacklists,
    };
    let run = run_loop(stores.clone(), merged, debounce, outputs);
    (stores, run)
}

async fn run_loop(
    stores: Stores,
    mut changes: impl Stream<Item = Change> + Unpin,
    debounce: Duration,
    outputs: Outputs,
) {
    let mut compiler = compile::Compiler::default();
    let mut history = History::default();
    let mut synced = BTreeSet::new();
    let mut pending: Option<Instant> = None;
    let mut expiry: Option<Instant> = None;
    loop {
        let ready = synced.len() == 3;
        let compile_now = tokio::select! {
            change = changes.next() => match change {
                None => return,
                Some(Change::Synced(kind)) => {
                    synced.insert(kind);
                    synced.len() == 3
                }
                Some(Change::Status) => {
                    outputs.rounds.send_modify(|_| {});
                    false
                }
                Some(Change::Objects(Kind::Blacklist)) => ready,
                Some(Change::Objects(_)) => {
                    pending.get_or_insert_with(|| Instant::now() + debounce);
                    false
                }
            },
            _ = sleep_until(pending), if ready && pending.is_some() => true,
            _ = sleep_until(expiry), if ready && expiry.is_some() => true,
        };
        if compile_now {
            pending = None;
            expiry = publish(&mut compiler, &mut history, &stores, &outputs);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Compile the stores' current state and publish it (recording a new version in `history`);
/// returns when to compile again for the next `Blacklist` expiry.
fn publish(
    compiler: &mut compile::Compiler,
    history: &mut History,
    stores: &Stores,
    outputs: &Outputs,
) -> Option<Instant> {
    let started = std::time::Instant::now();
    let now = Timestamp::now();
    let compiled = compiler.compile(
        &stores.event_routes.state(),
        &stores.proxy_routes.state(),
        &stores.blacklists.state(),
        now,
    );
    let compile_took = started.elapsed();
    outputs.metrics.compiled(compile_took, &compiled.verdicts);
    let snapshot = Arc::new(compiled.snapshot);
    let changed = outputs
        .snapshot
        .borrow()
        .as_ref()
        .map(|p| &p.snapshot.version)
        != Some(&snapshot.version);
    if changed {
        match encode(&snapshot) {
            Ok(line) => {
                tracing::info!(
                    version = %snapshot.version,
                    event_routes = snapshot.event_routes.len(),
                    proxy_routes = snapshot.proxy_routes.len(),
                    blacklists = snapshot.blacklists.len(),
                    bytes = line.len(),
                    compile_micros = compile_took.as_micros() as u64,
                    micros = started.elapsed().as_micros() as u64,
                    "new snapshot"
                );
                history.record(&snapshot);
                outputs.metrics.published();
                outputs
                    .snapshot
                    .send_replace(Some(Arc::new(Published { snapshot, line })));
            }
            Err(error) => {
                tracing::error!(%error, "cannot encode the snapshot; keeping the last one")
            }
        }
    }
    // Always wake the status writer, even with unchanged verdicts: the compilation may have been
    // caused by someone editing a status, which the writer then puts back (level-based). Its pass
    // compares with the stores and writes only what differs.
    let verdicts = compiled
        .verdicts
        .into_iter()
        .map(|v| {
            let entered = history.entered(v.kind, &v.namespace, &v.name, v.generation);
            (v, entered)
        })
        .collect();
    outputs.rounds.send_replace(Arc::new(Round {
        verdicts,
        versions: history.versions(),
    }));
    compiled.next_expiry.map(|at| {
        let wait = now.duration_until(at).unsigned_abs();
        // A few milliseconds late, so the entry is expired by the time we compile.
        Instant::now() + wait + Duration::from_millis(5)
    })
}

/// The stream line of a snapshot: a `StreamMessage::Snapshot`, serialized without cloning.
pub fn encode(snapshot: &Snapshot) -> Result<Bytes, serde_json::Error> {
    #[derive(serde::Serialize)]
    #[serde(tag = "type", rename_all = "camelCase")]
    enum Message<'a> {
        Snapshot(&'a Snapshot),
    }
    let mut line = serde_json::to_vec(&Message::Snapshot(snapshot))?;
    line.push(b'\n');
    Ok(Bytes::from(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rig_crds::snapshot::StreamMessage;

    #[test]
    fn encoded_lines_parse_as_stream_messages() {
        let snapshot = Snapshot::new(vec![], vec![], vec![]);
        let line = encode(&snapshot).expect("encode");
        assert!(line.ends_with(b"\n"));
        let parsed: StreamMessage = serde_json::from_slice(&line).expect("parse");
        assert_eq!(parsed, StreamMessage::Snapshot(Box::new(snapshot)));
    }

    type Writers = (
        reflector::store::Writer<EventRoute>,
        reflector::store::Writer<ProxyRoute>,
        reflector::store::Writer<Blacklist>,
    );

    /// The loop on a channel of changes, with stores the test writes into.
    fn harness() -> (
        tokio::sync::mpsc::UnboundedSender<Change>,
        Writers,
        watch::Receiver<Option<Arc<Published>>>,
    ) {
        let (event_routes, er) = reflector::store();
        let (proxy_routes, pr) = reflector::store();
        let (blacklists, bl) = reflector::store();
        let stores = Stores {
            event_routes,
            proxy_routes,
            blacklists,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let changes =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
                .boxed();
        let (snapshot, snapshot_rx) = watch::channel(None);
        let (rounds, _) = watch::channel(Arc::new(Round::default()));
        let outputs = Outputs {
            snapshot,
            rounds,
            metrics: Arc::default(),
        };
        tokio::spawn(run_loop(
            stores,
            changes,
            Duration::from_millis(100),
            outputs,
        ));
        (tx, (er, pr, bl), snapshot_rx)
    }

    fn blacklist(name: &str) -> Blacklist {
        let mut b = Blacklist::new(
            name,
            rig_crds::BlacklistSpec {
                session_id: name.into(),
                expires_at: "2999-01-01T00:00:00Z".into(),
                reason: None,
            },
        );
        b.metadata.namespace = Some("ns".into());
        b
    }

    fn proxy_route(name: &str) -> ProxyRoute {
        let spec = serde_yaml::from_str(
            "endpoints: [{id: a, method: GET, pathRegex: /a}]\ntarget: {kind: Http, url: 'http://a:1'}\n",
        )
        .expect("spec");
        let mut r = ProxyRoute::new(name, spec);
        r.metadata.namespace = Some("ns".into());
        r
    }

    fn counts(rx: &watch::Receiver<Option<Arc<Published>>>) -> Option<(usize, usize)> {
        rx.borrow()
            .as_ref()
            .map(|p| (p.snapshot.proxy_routes.len(), p.snapshot.blacklists.len()))
    }

    /// Let the loop run (paused time advances only as far as asked).
    async fn settle(by: Duration) {
        tokio::time::sleep(by).await;
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_published_before_all_kinds_are_synced() {
        let (tx, (_er, _pr, mut bl), rx) = harness();
        bl.apply_watcher_event(&watcher::Event::Apply(blacklist("b1")));
        tx.send(Change::Synced(Kind::EventRoute)).expect("send");
        tx.send(Change::Objects(Kind::Blacklist)).expect("send");
        tx.send(Change::Synced(Kind::ProxyRoute)).expect("send");
        settle(Duration::from_secs(1)).await;
        assert_eq!(
            counts(&rx),
            None,
            "an incomplete view must not be published"
        );
        tx.send(Change::Synced(Kind::Blacklist)).expect("send");
        settle(Duration::from_millis(1)).await;
        assert_eq!(counts(&rx), Some((0, 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn routes_are_debounced_blacklists_are_not() {
        let (tx, (_er, mut pr, mut bl), rx) = harness();
        for kind in [Kind::EventRoute, Kind::ProxyRoute, Kind::Blacklist] {
            tx.send(Change::Synced(kind)).expect("send");
        }
        settle(Duration::from_millis(1)).await;
        assert_eq!(counts(&rx), Some((0, 0)));

        pr.apply_watcher_event(&watcher::Event::Apply(proxy_route("r1")));
        tx.send(Change::Objects(Kind::ProxyRoute)).expect("send");
        settle(Duration::from_millis(50)).await;
        // A second route inside the window joins the same compilation.
        pr.apply_watcher_event(&watcher::Event::Apply(proxy_route("r2")));
        tx.send(Change::Objects(Kind::ProxyRoute)).expect("send");
        settle(Duration::from_millis(40)).await;
        assert_eq!(
            counts(&rx),
            Some((0, 0)),
            "still inside the debounce window"
        );
        settle(Duration::from_millis(20)).await;
        assert_eq!(
            counts(&rx),
            Some((2, 0)),
            "the window is bounded from its first change"
        );

        pr.apply_watcher_event(&watcher::Event::Apply(proxy_route("r3")));
        tx.send(Change::Objects(Kind::ProxyRoute)).expect("send");
        bl.apply_watcher_event(&watcher::Event::Apply(blacklist("b1")));
        tx.send(Change::Objects(Kind::Blacklist)).expect("send");
        settle(Duration::from_millis(1)).await;
        // The Blacklist went out at once, and took the pending route with it.
        assert_eq!(counts(&rx), Some((3, 1)));
    }

    #[test]
    fn only_spec_changes_compile() {
        let mut g = Generations::default();
        let mut b = blacklist("b1");
        b.metadata.uid = Some("u1".into());
        b.metadata.generation = Some(1);
        let is = |c: Option<Change>, want: &str| {
            let got = match c {
                None => "none",
                Some(Change::Objects(_)) => "objects",
                Some(Change::Synced(_)) => "synced",
                Some(Change::Status) => "status",
            };
            assert_eq!(got, want);
        };
        let kind = Kind::Blacklist;
        is(g.change(kind, &watcher::Event::<Blacklist>::Init), "none");
        is(
            g.change(kind, &watcher::Event::InitApply(b.clone())),
            "none",
        );
        is(
            g.change(kind, &watcher::Event::<Blacklist>::InitDone),
            "synced",
        );
        // Our own status write comes back: same generation.
        is(g.change(kind, &watcher::Event::Apply(b.clone())), "status");
        b.metadata.generation = Some(2);
        is(g.change(kind, &watcher::Event::Apply(b.clone())), "objects");
        is(
            g.change(kind, &watcher::Event::Delete(b.clone())),
            "objects",
        );
        // Re-created with the same name: a new uid, generation 1 again.
        b.metadata.uid = Some("u2".into());
        b.metadata.generation = Some(1);
        is(g.change(kind, &watcher::Event::Apply(b.clone())), "objects");
        // A relist forgets what is gone.
        is(g.change(kind, &watcher::Event::<Blacklist>::Init), "none");
        is(
            g.change(kind, &watcher::Event::<Blacklist>::InitDone),
            "synced",
        );
        is(g.change(kind, &watcher::Event::Apply(b)), "objects");
    }
}
