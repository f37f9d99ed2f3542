//! The compiler: all `EventRoute`, `ProxyRoute` and `Blacklist` objects → one [`Snapshot`] plus a
//! [`Verdict`] per object.
//!
//! It is a pure function of the objects and the current time, so every replica computes the same
//! snapshot (and version) from the same cluster state. Validation here is what the CRD schema and
//! CEL cannot express: regexes compile exactly as the data plane compiles them (anchored,
//! case-insensitive, size-bounded), `pathReplacement` references existing groups, timeouts parse,
//! JSON pointers follow RFC 6901, and two `EventRoute`s do not define the same event type with
//! different extractors (the older object keeps the type; ties go to namespace/name). An invalid
//! object is left out of the snapshot with a reason on its verdict; the rest keeps working.
//! Expired `Blacklist` objects are left out too, but they are not invalid.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use rig_crds::event_route::EventType;
use rig_crds::proxy_route::Endpoint;
use rig_crds::{Blacklist, EventRoute, NamedSpec, ProxyRoute, Snapshot};

/// Upper bound on a compiled path regex, so one object cannot make every data plane allocate a
/// huge automaton (the `regex` crate's default is 10 MiB per regex).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The three kinds the operator compiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `EventRoute`
    EventRoute,
    /// `ProxyRoute`
    ProxyRoute,
    /// `Blacklist`
    Blacklist,
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

/// The compiler's decision about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In the snapshot.
    Accepted,
    /// A `Blacklist` whose `expiresAt` has passed: valid, but no longer in the snapshot.
    Expired {
        /// The `expiresAt` of the object.
        at: String,
    },
    /// Left out of the snapshot.
    Rejected {
        /// CamelCase reason of the first problem found (e.g. `InvalidPathRegex`).
        reason: &'static str,
        /// Every problem found, for people, separated by `; `.
        message: String,
    },
}

/// The result of one compilation.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The snapshot of every accepted, unexpired object.
    pub snapshot: Snapshot,
    /// One verdict per object, sorted by kind, namespace and name.
    pub verdicts: Vec<Verdict>,
    /// The earliest `expiresAt` still in the future: compile again then, so the entry leaves.
    pub next_expiry: Option<Timestamp>,
}

/// Problems found in one object: the first one's reason, all messages.
#[derive(Default)]
struct Problems {
    reason: Option<&'static str>,
    messages: Vec<String>,
}

impl Problems {
    fn add(&mut self, reason: &'static str, message: String) {
        self.reason.get_or_insert(reason);
        self.messages.push(message);
    }

    fn outcome(self) -> Outcome {
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
pub fn compile(
    event_routes: &[Arc<EventRoute>],
    proxy_routes: &[Arc<ProxyRoute>],
    blacklists: &[Arc<Blacklist>],
    now: Timestamp,
) -> Compiled {
    Compiler::default().compile(event_routes, proxy_routes, blacklists, now)
}

/// The compiler with a memo of the costly per-object checks (compiling every `ProxyRoute`'s
/// regexes), keyed by the object's `uid` and `generation`: a spec never changes without a new
/// generation, and a re-created object gets a new uid. So a `Blacklist` change does not recompile
/// a thousand regexes. The memo never changes a result, only its cost.
#[derive(Debug, Default)]
pub struct Compiler {
    proxy_outcomes: HashMap<(String, i64), Outcome>,
}

impl Compiler {
    /// Compile all objects as of `now`. Objects without a namespace or name (never the case for
    /// objects read from the apiserver) are skipped.
    pub fn compile(
        &mut self,
        event_routes: &[Arc<EventRoute>],
        proxy_routes: &[Arc<ProxyRoute>],
        blacklists: &[Arc<Blacklist>],
        now: Timestamp,
    ) -> Compiled {
        compile_with(
            &mut self.proxy_outcomes,
            event_routes,
            proxy_routes,
            blacklists,
            now,
        )
    }
}

fn compile_with(
    memo: &mut HashMap<(String, i64), Outcome>,
    event_routes: &[Arc<EventRoute>],
    proxy_routes: &[Arc<ProxyRoute>],
    blacklists: &[Arc<Blacklist>],
    now: Timestamp,
) -> Compiled {
    let mut verdicts = Vec::new();

    let mut accepted_events = Vec::new();
    for (route, outcome) in event_route_outcomes(event_routes) {
        let Some(named) = named(route.as_ref(), route.spec.clone()) else {
            continue;
        };
        verdicts.push(verdict(Kind::EventRoute, &named, outcome.clone()));
        if outcome == Outcome::Accepted {
            accepted_events.push(named);
        }
    }

    let mut accepted_proxies = Vec::new();
    let mut next_memo = HashMap::with_capacity(memo.len());
    for route in proxy_routes {
        let Some(named) = named(route.as_ref(), route.spec.clone()) else {
            continue;
        };
        let key = route
            .metadata
            .uid
            .clone()
            .map(|uid| (uid, named.generation));
        let outcome = match key.as_ref().and_then(|k| memo.remove(k)) {
            Some(outcome) => outcome,
            None => {
                let mut problems = Problems::default();
                check_proxy_route(&route.spec, &mut problems);
                problems.outcome()
            }
        };
        if let Some(key) = key {
            next_memo.insert(key, outcome.clone());
        }
        verdicts.push(verdict(Kind::ProxyRoute, &named, outcome.clone()));
        if outcome == Outcome::Accepted {
            accepted_proxies.push(named);
        }
    }

    // Only objects that still exist stay in the memo.
    *memo = next_memo;

    let mut accepted_blacklists = Vec::new();
    let mut next_expiry: Option<Timestamp> = None;
    for entry in blacklists {
        let Some(named) = named(entry.as_ref(), entry.spec.clone()) else {
            continue;
        };
        let outcome = match entry.spec.expires_at.parse::<Timestamp>() {
            Err(error) => Outcome::Rejected {
                reason: "InvalidExpiry",
                message: format!(
                    "expiresAt {:?} is not an RFC 3339 time: {error}",
                    entry.spec.expires_at
                ),
            },
            Ok(at) if at <= now => Outcome::Expired {
                at: entry.spec.expires_at.clone(),
            },
            Ok(at) => {
                next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
                Outcome::Accepted
            }
        };
        verdicts.push(verdict(Kind::Blacklist, &named, outcome.clone()));
        if outcome == Outcome::Accepted {
            accepted_blacklists.push(named);
        }
    }

    verdicts.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    Compiled {
        snapshot: Snapshot::new(accepted_events, accepted_proxies, accepted_blacklists),
        verdicts,
        next_expiry,
    }
}

fn named<K: ResourceExt, S>(object: &K, spec: S) -> Option<NamedSpec<S>> {
    Some(NamedSpec {
        namespace: object.namespace()?,
        name: object.meta().name.clone()?,
        generation: object.meta().generation.unwrap_or_default(),
        spec,
    })
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

/// Validate each `EventRoute` alone, then settle extractor conflicts between the valid ones:
/// routes are visited oldest first (creation time, then namespace/name), and the first route
/// defining an event type fixes its extractors; a later route with different extractors for that
/// type is rejected. So a new object can never break one that already works.
fn event_route_outcomes(routes: &[Arc<EventRoute>]) -> Vec<(&Arc<EventRoute>, Outcome)> {
    let mut ordered: Vec<&Arc<EventRoute>> = routes.iter().collect();
    ordered.sort_by(|a, b| {
        let key = |r: &EventRoute| {
            (
                r.meta().creation_timestamp.as_ref().map(|t| t.0),
                r.namespace(),
                r.meta().name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    // Event type → (owning route "ns/name", its extractors in canonical order).
    let mut owners: BTreeMap<&str, (String, Vec<ExtractorKey<'_>>)> = BTreeMap::new();
    let mut out = Vec::with_capacity(ordered.len());
    for route in ordered {
        let mut problems = Problems::default();
        for event in &route.spec.events {
            check_extractors(event, &mut problems);
        }
        if problems.reason.is_none() {
            let me = format!(
                "{}/{}",
                route.namespace().unwrap_or_default(),
                route.name_any()
            );
            for event in &route.spec.events {
                let extractors = canonical_extractors(event);
                if let Some((owner, theirs)) = owners.get(event.type_.as_str())
                    && *theirs != extractors
                {
                    problems.add(
                        "ExtractorConflict",
                        format!(
                            "event type {:?} is already defined with different extractors by \
                             EventRoute {owner}; define it once or with the same extractors",
                            event.type_
                        ),
                    );
                }
            }
            if problems.reason.is_none() {
                for event in &route.spec.events {
                    owners
                        .entry(event.type_.as_str())
                        .or_insert_with(|| (me.clone(), canonical_extractors(event)));
                }
            }
        }
        out.push((route, problems.outcome()));
    }
    out
}

/// An extractor as compared across routes: field, event pointer, JWT pointer.
type ExtractorKey<'a> = (&'a str, &'a str, Option<&'a str>);

fn canonical_extractors(event: &EventType) -> Vec<ExtractorKey<'_>> {
    let mut list: Vec<_> = event
        .extractors
        .iter()
        .map(|e| {
            (
                e.field.as_str(),
                e.event_pointer.as_str(),
                e.jwt_pointer.as_deref(),
            )
        })
        .collect();
    list.sort_unstable();
    list
}

fn check_extractors(event: &EventType, problems: &mut Problems) {
    let mut fields = std::collections::BTreeSet::new();
    for extractor in &event.extractors {
        if !fields.insert(extractor.field.as_str()) {
            problems.add(
                "DuplicateExtractor",
                format!(
                    "event type {:?} defines extractor field {:?} twice",
                    event.type_, extractor.field
                ),
            );
        }
        let pointers = [
            ("eventPointer", Some(extractor.event_pointer.as_str())),
            ("jwtPointer", extractor.jwt_pointer.as_deref()),
        ];
        for (what, pointer) in pointers {
            if let Some(pointer) = pointer
                && let Err(why) = check_json_pointer(pointer)
            {
                problems.add(
                    "InvalidJsonPointer",
                    format!(
                        "event type {:?}, field {:?}: {what} {pointer:?} is not a JSON pointer \
                         (RFC 6901): {why}",
                        event.type_, extractor.field
                    ),
                );
            }
        }
    }
}

/// RFC 6901: empty (the whole document) or `/`-separated tokens where `~` is only `~0` or `~1`.
fn check_json_pointer(pointer: &str) -> Result<(), &'static str> {
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err("it must start with '/'");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("'~' must be followed by '0' or '1'");
        }
    }
    Ok(())
}

fn check_proxy_route(spec: &rig_crds::ProxyRouteSpec, problems: &mut Problems) {
    let mut ids = std::collections::BTreeSet::new();
    for endpoint in &spec.endpoints {
        if !ids.insert(endpoint.id.as_str()) {
            problems.add(
                "DuplicateEndpointId",
                format!("endpoint id {:?} is used twice", endpoint.id),
            );
        }
        check_endpoint(endpoint, problems);
    }
    if let Err(why) = parse_timeout(&spec.response.timeout) {
        problems.add(
            "InvalidTimeout",
            format!("response.timeout {:?}: {why}", spec.response.timeout),
        );
    }
}

fn check_endpoint(endpoint: &Endpoint, problems: &mut Problems) {
    let regex = match path_regex(&endpoint.path_regex) {
        Ok(regex) => regex,
        Err(error) => {
            problems.add(
                "InvalidPathRegex",
                format!(
                    "endpoint {:?}: pathRegex {:?} does not compile: {}",
                    endpoint.id,
                    endpoint.path_regex,
                    one_line(&error.to_string())
                ),
            );
            return;
        }
    };
    if let Some(replacement) = &endpoint.path_replacement {
        // `captures_len` counts the implicit whole-match group 0.
        let groups = regex.captures_len() - 1;
        for group in replacement_groups(replacement) {
            if group > groups {
                problems.add(
                    "InvalidPathReplacement",
                    format!(
                        "endpoint {:?}: pathReplacement {replacement:?} uses group \\{group}, \
                         but pathRegex {:?} has {groups} group(s)",
                        endpoint.id, endpoint.path_regex
                    ),
                );
            }
        }
    }
}

/// Compile a `pathRegex` exactly as the data plane matches it: anchored at both ends (an explicit
/// `^`/`$` is harmless), case-insensitive, within [`REGEX_SIZE_LIMIT`].
///
/// The pattern must also compile on its own, so errors point into the user's text (not our
/// wrapper) and a pattern cannot escape the anchoring group (`/a)|(/b`).
pub fn path_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

/// The group numbers a `pathReplacement` references (`\0`…`\9`).
fn replacement_groups(replacement: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = replacement.as_bytes();
    bytes
        .windows(2)
        .filter(|w| w[0] == b'\\' && w[1].is_ascii_digit())
        .map(|w| usize::from(w[1] - b'0'))
}

/// Parse a route timeout: `<digits>(ms|s|m)`, more than zero.
pub fn parse_timeout(text: &str) -> Result<Duration, &'static str> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => return Err("a unit (ms, s or m) is required"),
    };
    let n: u64 = digits.parse().map_err(|_| "it must start with a number")?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err("the unit must be ms, s or m"),
    };
    if duration.is_zero() {
        return Err("it must be more than zero");
    }
    Ok(duration)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
