//! The one compiler: `EventRoute`, `ProxyRoute` and `Blacklist` specs → one typed, immutable
//! [`Config`], plus a [`Verdict`] per object.
//!
//! Both binaries call [`Compiler::compile`]: the operator to decide each object's `Accepted`
//! condition and to build the [`Snapshot`] it streams, the data plane for standalone manifests
//! (`RIG_MANIFESTS`) and for every operator snapshot. So the same spec is judged the same way and
//! means the same thing in both modes; nothing a spec declares is dropped on the way (the
//! [`Config`] carries every field that has an effect).
//!
//! It is a pure function of the objects and the current time. Validation here is everything the
//! data plane relies on, including what the CRD schema and its CEL rules check (standalone
//! manifests never pass through the apiserver): regexes compile alone and anchored
//! ([`path_regex`]), `pathReplacement` references existing groups, timeouts parse, targets and
//! header names are valid, JSON pointers follow RFC 6901, access checks name usable URLs.
//!
//! Two `EventRoute`s may carry the same event type only with the same extractors, access checks
//! and HTTP publishing: routes are visited oldest first (creation time, then namespace/name), the
//! first one defining a type fixes its rules, and a later route that would change them is rejected
//! (`ExtractorConflict`, `AccessConflict`). So a new object can never loosen or break one that
//! already works. An invalid object is left out of the [`Config`] and the [`Snapshot`] with a
//! reason on its verdict; the rest keeps working. Expired `Blacklist` objects are left out too,
//! but they are not invalid.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;

use crate::{BlacklistSpec, EventRouteSpec, NamedSpec, ProxyRouteSpec, Snapshot};

mod event_routes;
mod pointer;
mod proxy_routes;

pub use event_routes::{Access, EventTypeRules, FieldExtractor, valid_topic};
pub use pointer::JsonPointer;
pub use proxy_routes::{
    Auth, HttpTarget, ProxyApi, ProxyEndpoint, REGEX_SIZE_LIMIT, Target,
    auth_header as proxy_auth_header, method as proxy_method, parse_timeout, path_regex,
};

/// The three kinds the compiler judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `EventRoute`
    EventRoute,
    /// `ProxyRoute`
    ProxyRoute,
    /// `Blacklist`
    Blacklist,
}

impl Kind {
    /// The kind's name, as in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::EventRoute => "EventRoute",
            Kind::ProxyRoute => "ProxyRoute",
            Kind::Blacklist => "Blacklist",
        }
    }
}

/// What the compiler decided about one object (at one generation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Kind of the object.
    pub kind: Kind,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// The `metadata.generation` that was judged.
    pub generation: i64,
    /// The decision.
    pub outcome: Outcome,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}: ",
            self.kind.as_str(),
            self.namespace,
            self.name
        )?;
        match &self.outcome {
            Outcome::Accepted => f.write_str("accepted"),
            Outcome::Expired { at } => write!(f, "expired at {at}"),
            Outcome::Rejected { reason, message } => write!(f, "{reason}: {message}"),
        }
    }
}

/// The compiler's decision about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In the configuration.
    Accepted,
    /// A `Blacklist` whose `expiresAt` has passed: valid, but no longer in the configuration.
    Expired {
        /// The `expiresAt` of the object.
        at: String,
    },
    /// Left out of the configuration.
    Rejected {
        /// CamelCase reason of the first problem found (e.g. `InvalidPathRegex`).
        reason: &'static str,
        /// Every problem found, for people, separated by `; `.
        message: String,
    },
}

/// One object to compile: its name, generation and spec, and when it was created (the order in
/// which conflicting `EventRoute`s are settled; `None` sorts first, then namespace/name).
#[derive(Clone, Debug)]
pub struct Object<S> {
    /// Namespace, name, generation and spec.
    pub named: NamedSpec<S>,
    /// `metadata.creationTimestamp`, when known.
    pub created: Option<Timestamp>,
}

impl<S> Object<S> {
    /// An object without a known creation time.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, spec: S) -> Self {
        Self {
            named: NamedSpec {
                namespace: namespace.into(),
                name: name.into(),
                generation: 0,
                spec,
            },
            created: None,
        }
    }

    fn id(&self) -> String {
        format!("{}/{}", self.named.namespace, self.named.name)
    }
}

/// Every object of the three kinds.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// `EventRoute` objects.
    pub event_routes: Vec<Object<EventRouteSpec>>,
    /// `ProxyRoute` objects.
    pub proxy_routes: Vec<Object<ProxyRouteSpec>>,
    /// `Blacklist` objects.
    pub blacklists: Vec<Object<BlacklistSpec>>,
}

impl Objects {
    /// The objects of an operator snapshot (no creation times: the operator has settled every
    /// conflict already, so the order does not matter).
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        fn objects<S: Clone>(list: &[NamedSpec<S>]) -> Vec<Object<S>> {
            list.iter()
                .map(|named| Object {
                    named: named.clone(),
                    created: None,
                })
                .collect()
        }
        Self {
            event_routes: objects(&snapshot.event_routes),
            proxy_routes: objects(&snapshot.proxy_routes),
            blacklists: objects(&snapshot.blacklists),
        }
    }
}

/// The compiled configuration: what the data plane runs. Immutable; a change builds a new one,
/// swapped in whole.
#[derive(Debug, Default)]
pub struct Config {
    /// The version of the [`Snapshot`] of the same objects.
    pub version: String,
    /// Per event type named by an accepted `EventRoute`: its extractors and access rules.
    pub event_types: BTreeMap<String, Arc<EventTypeRules>>,
    /// The Kafka topics of every accepted `EventRoute` (`source.kafka.topics` and
    /// `source.http.topic`), sorted, no duplicates.
    pub topics: Vec<String>,
    /// The accepted `ProxyRoute`s in matching order (namespace/name), regexes built.
    pub proxy_routes: Vec<Arc<ProxyApi>>,
    /// The unexpired revocations.
    pub revocations: Vec<Revocation>,
}

/// One revoked session (a `Blacklist`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked session (the JWT claim at `JWT_SESSION_FIELD`).
    pub session_id: String,
    /// When the revocation ends.
    pub until: SystemTime,
}

/// The result of one compilation.
#[derive(Debug)]
pub struct Compiled {
    /// The snapshot of every accepted, unexpired object (what the operator streams).
    pub snapshot: Snapshot,
    /// The compiled configuration of the same objects.
    pub config: Arc<Config>,
    /// One verdict per object, sorted by kind, namespace and name.
    pub verdicts: Vec<Verdict>,
    /// The earliest `expiresAt` still in the future: compile again then, so the entry leaves.
    pub next_expiry: Option<Timestamp>,
}

impl Compiled {
    /// The verdicts that rejected an object.
    pub fn rejected(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts
            .iter()
            .filter(|v| matches!(v.outcome, Outcome::Rejected { .. }))
    }
}

/// Problems found in one object: the first one's reason, all messages.
#[derive(Clone, Debug, Default)]
struct Problems {
    reason: Option<&'static str>,
    messages: Vec<String>,
}

impl Problems {
    fn add(&mut self, reason: &'static str, message: String) {
        self.reason.get_or_insert(reason);
        self.messages.push(message);
    }

    fn is_empty(&self) -> bool {
        self.reason.is_none()
    }

    fn outcome(&self) -> Outcome {
        match self.reason {
            None => Outcome::Accepted,
            Some(reason) => Outcome::Rejected {
                reason,
                message: self.messages.join("; "),
            },
        }
    }
}

/// Compile all objects as of `now` (see [`Compiler::compile`]), with no memo.
pub fn compile(objects: &Objects, now: Timestamp) -> Compiled {
    Compiler::default().compile(objects, now)
}

/// The compiler with a memo of the costly per-object work (a `ProxyRoute`'s regexes), keyed by
/// namespace/name and checked against the spec: a `Blacklist` change does not recompile a
/// thousand regexes. The memo never changes a result, only its cost.
#[derive(Debug, Default)]
pub struct Compiler {
    proxy_memo: HashMap<String, (ProxyRouteSpec, Result<Arc<ProxyApi>, Problems>)>,
}

impl Compiler {
    /// Compile all objects as of `now`.
    pub fn compile(&mut self, objects: &Objects, now: Timestamp) -> Compiled {
        let mut verdicts = Vec::new();
        let mut config = Config::default();

        let mut accepted_events = Vec::new();
        for (route, problems, rules) in event_routes::judge(&objects.event_routes) {
            verdicts.push(verdict(Kind::EventRoute, &route.named, problems.outcome()));
            if problems.is_empty() {
                for (event_type, rules) in rules {
                    config.event_types.entry(event_type).or_insert(rules);
                }
                if let Some(kafka) = &route.named.spec.source.kafka {
                    config
                        .topics
                        .extend(kafka.topics.iter().map(|t| t.0.clone()));
                }
                // HTTP-published events come back through the consumer: it reads their topic.
                if let Some(topic) = route
                    .named
                    .spec
                    .source
                    .http
                    .as_ref()
                    .filter(|h| h.enabled)
                    .and_then(|h| h.topic.as_ref())
                {
                    config.topics.push(topic.0.clone());
                }
                accepted_events.push(route.named.clone());
            }
        }
        config.topics.sort();
        config.topics.dedup();

        let mut proxies: Vec<&Object<ProxyRouteSpec>> = objects.proxy_routes.iter().collect();
        proxies.sort_by(|a, b| {
            (&a.named.namespace, &a.named.name).cmp(&(&b.named.namespace, &b.named.name))
        });
        let mut accepted_proxies = Vec::new();
        let mut memo = HashMap::with_capacity(proxies.len());
        for route in proxies {
            let id = route.id();
            let result = match self.proxy_memo.remove(&id) {
                Some((spec, result)) if spec == route.named.spec => result,
                _ => proxy_routes::compile(&id, &route.named.name, &route.named.spec).map(Arc::new),
            };
            match &result {
                Ok(api) => {
                    verdicts.push(verdict(Kind::ProxyRoute, &route.named, Outcome::Accepted));
                    config.proxy_routes.push(api.clone());
                    accepted_proxies.push(route.named.clone());
                }
                Err(problems) => {
                    verdicts.push(verdict(Kind::ProxyRoute, &route.named, problems.outcome()));
                }
            }
            memo.insert(id, (route.named.spec.clone(), result));
        }
        // Only objects that still exist stay in the memo.
        self.proxy_memo = memo;

        let mut accepted_blacklists = Vec::new();
        let mut next_expiry: Option<Timestamp> = None;
        for entry in &objects.blacklists {
            let spec = &entry.named.spec;
            let outcome = if spec.session_id.is_empty() {
                Outcome::Rejected {
                    reason: "InvalidSessionId",
                    message: "sessionId must not be empty".to_owned(),
                }
            } else {
                match spec.expires_at.parse::<Timestamp>() {
                    Err(error) => Outcome::Rejected {
                        reason: "InvalidExpiry",
                        message: format!(
                            "expiresAt {:?} is not an RFC 3339 time: {error}",
                            spec.expires_at
                        ),
                    },
                    Ok(at) if at <= now => Outcome::Expired {
                        at: spec.expires_at.clone(),
                    },
                    Ok(at) => {
                        next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
                        config.revocations.push(Revocation {
                            session_id: spec.session_id.clone(),
                            until: SystemTime::from(at),
                        });
                        Outcome::Accepted
                    }
                }
            };
            verdicts.push(verdict(Kind::Blacklist, &entry.named, outcome.clone()));
            if outcome == Outcome::Accepted {
                accepted_blacklists.push(entry.named.clone());
            }
        }

        verdicts
            .sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        let snapshot = Snapshot::new(accepted_events, accepted_proxies, accepted_blacklists);
        config.version = snapshot.version.clone();
        Compiled {
            snapshot,
            config: Arc::new(config),
            verdicts,
            next_expiry,
        }
    }
}

fn verdict<S>(kind: Kind, named: &NamedSpec<S>, outcome: Outcome) -> Verdict {
    Verdict {
        kind,
        namespace: named.namespace.clone(),
        name: named.name.clone(),
        generation: named.generation,
        outcome,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
