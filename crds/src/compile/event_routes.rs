//! `EventRoute` → per event type: extractors, who may subscribe, who may publish, and whether
//! HTTP publishing is allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::event_route::{AccessCheck, AccessCheckMode, EventType};
use crate::{EventRouteSpec, NamedSpec};

use super::{JsonPointer, Object, Problems};

/// One constrainable field of an event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldExtractor {
    /// The name used in subscription constraints. Never empty.
    pub field: String,
    /// Where the value is in the event.
    pub event_pointer: JsonPointer,
    /// Where the value is in the subscriber's JWT claims, for automatic subscriptions.
    pub jwt_pointer: Option<JsonPointer>,
}

/// A compiled access check (an `EventRoute`'s `subscriptionCheck` or `submissionCheck`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everyone is allowed (RIG's `no_check`).
    Anyone,
    /// A valid, unexpired, non-revoked JWT is required (RIG's `jwt_validation`).
    ValidJwt,
    /// This `http://` endpoint decides (RIG's URL mode and contract).
    External(http::Uri),
}

/// What the accepted `EventRoute`s say about one event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeRules {
    /// `namespace/name` of the route that defined the type first.
    pub route: String,
    /// The fields subscriptions may constrain, as declared.
    pub extractors: Arc<[FieldExtractor]>,
    /// Who may subscribe; `None`: the process-wide `SUBSCRIPTION_CHECK`.
    pub subscription: Option<Access>,
    /// Who may publish over `POST /_rig/v1/events`; `None`: the process-wide `SUBMISSION_CHECK`.
    pub submission: Option<Access>,
    /// Whether the type may be published over HTTP at all (`source.http.enabled`, default true).
    pub http_publishing: bool,
    /// The Kafka topic its HTTP-published events go to (`source.http.topic`, else the route's
    /// first Kafka topic); `None`: the data plane's default.
    pub http_topic: Option<String>,
}

/// One judged route: the object, its problems, and (when accepted) its types' rules.
type Judged<'a> = (
    &'a Object<EventRouteSpec>,
    Problems,
    Vec<(String, Arc<EventTypeRules>)>,
);

/// Judge every route, oldest first; the rules of each accepted route's types.
pub(super) fn judge(routes: &[Object<EventRouteSpec>]) -> Vec<Judged<'_>> {
    let mut ordered: Vec<&Object<EventRouteSpec>> = routes.iter().collect();
    ordered.sort_by(|a, b| {
        (a.created, &a.named.namespace, &a.named.name).cmp(&(
            b.created,
            &b.named.namespace,
            &b.named.name,
        ))
    });
    // Event type → the rules fixed by its first route.
    let mut owners: BTreeMap<String, Arc<EventTypeRules>> = BTreeMap::new();
    let mut out = Vec::with_capacity(ordered.len());
    for route in ordered {
        let mut problems = Problems::default();
        let rules = route_rules(&route.named, &mut problems);
        if problems.is_empty() {
            for (event_type, mine) in &rules {
                let Some(theirs) = owners.get(event_type) else {
                    continue;
                };
                if theirs.extractors != mine.extractors {
                    problems.add(
                        "ExtractorConflict",
                        format!(
                            "event type {event_type:?} is already defined with different \
                             extractors by EventRoute {}; define it once or with the same \
                             extractors",
                            theirs.route
                        ),
                    );
                }
                if (
                    &theirs.subscription,
                    &theirs.submission,
                    theirs.http_publishing,
                ) != (&mine.subscription, &mine.submission, mine.http_publishing)
                {
                    problems.add(
                        "AccessConflict",
                        format!(
                            "event type {event_type:?} is already defined with a different \
                             subscriptionCheck, submissionCheck or source.http.enabled by \
                             EventRoute {}; every route of a type must give it the same access \
                             rules",
                            theirs.route
                        ),
                    );
                }
            }
        }
        if problems.is_empty() {
            for (event_type, rules) in &rules {
                owners
                    .entry(event_type.clone())
                    .or_insert_with(|| rules.clone());
            }
        }
        let rules = if problems.is_empty() {
            rules
        } else {
            Vec::new()
        };
        out.push((route, problems, rules));
    }
    out
}

/// Validate one route alone and compile its types' rules.
fn route_rules(
    named: &NamedSpec<EventRouteSpec>,
    problems: &mut Problems,
) -> Vec<(String, Arc<EventTypeRules>)> {
    let spec = &named.spec;
    let http = spec.source.http.as_ref().is_none_or(|h| h.enabled);
    let http_topic = match spec.source.http.as_ref().and_then(|h| h.topic.as_ref()) {
        Some(topic) if !valid_topic(&topic.0) => {
            problems.add(
                "InvalidTopic",
                format!(
                    "source.http.topic {:?} is not a Kafka topic name (1-249 characters of \
                     a-z A-Z 0-9 . _ -)",
                    topic.0
                ),
            );
            None
        }
        Some(topic) => Some(topic.0.clone()),
        None => spec
            .source
            .kafka
            .as_ref()
            .and_then(|k| k.topics.first())
            .map(|t| t.0.clone()),
    };
    match &spec.source.kafka {
        None if spec.source.http.as_ref().is_none_or(|h| !h.enabled) => problems.add(
            "InvalidSource",
            "a source needs kafka topics, http publishing, or both".to_owned(),
        ),
        Some(kafka) if kafka.topics.is_empty() => problems.add(
            "InvalidSource",
            "source.kafka.topics must name at least one topic".to_owned(),
        ),
        Some(kafka) => {
            for topic in &kafka.topics {
                if !valid_topic(&topic.0) {
                    problems.add(
                        "InvalidTopic",
                        format!(
                            "topic {:?} is not a Kafka topic name (1-249 characters of \
                             a-z A-Z 0-9 . _ -)",
                            topic.0
                        ),
                    );
                }
            }
        }
        None => {}
    }
    if spec.events.is_empty() {
        problems.add(
            "NoEventTypes",
            "events must name at least one event type".to_owned(),
        );
    }
    let subscription = access(
        "subscriptionCheck",
        spec.subscription_check.as_ref(),
        problems,
    );
    let submission = access("submissionCheck", spec.submission_check.as_ref(), problems);
    let route = format!("{}/{}", named.namespace, named.name);
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(spec.events.len());
    for event in &spec.events {
        if event.type_.is_empty() {
            problems.add(
                "InvalidEventType",
                "an event type must not be empty".to_owned(),
            );
            continue;
        }
        if !seen.insert(event.type_.as_str()) {
            problems.add(
                "DuplicateEventType",
                format!("event type {:?} is listed twice", event.type_),
            );
            continue;
        }
        let extractors = extractors(event, problems);
        out.push((
            event.type_.clone(),
            Arc::new(EventTypeRules {
                route: route.clone(),
                extractors: extractors.into(),
                subscription: subscription.clone(),
                submission: submission.clone(),
                http_publishing: http,
                http_topic: http_topic.clone(),
            }),
        ));
    }
    out
}

fn extractors(event: &EventType, problems: &mut Problems) -> Vec<FieldExtractor> {
    let mut fields = BTreeSet::new();
    let mut out = Vec::with_capacity(event.extractors.len());
    for extractor in &event.extractors {
        if extractor.field.is_empty() {
            problems.add(
                "InvalidExtractor",
                format!(
                    "event type {:?}: an extractor field must not be empty",
                    event.type_
                ),
            );
            continue;
        }
        if !fields.insert(extractor.field.as_str()) {
            problems.add(
                "DuplicateExtractor",
                format!(
                    "event type {:?} defines extractor field {:?} twice",
                    event.type_, extractor.field
                ),
            );
            continue;
        }
        let mut pointer = |what: &str, text: &str| match JsonPointer::parse(text) {
            Ok(pointer) => Some(pointer),
            Err(why) => {
                problems.add(
                    "InvalidJsonPointer",
                    format!(
                        "event type {:?}, field {:?}: {what} {text:?} is not a JSON pointer \
                         (RFC 6901): {why}",
                        event.type_, extractor.field
                    ),
                );
                None
            }
        };
        let event_pointer = pointer("eventPointer", &extractor.event_pointer);
        let jwt_pointer = match extractor.jwt_pointer.as_deref() {
            Some(text) => pointer("jwtPointer", text).map(Some),
            None => Some(None),
        };
        if let (Some(event_pointer), Some(jwt_pointer)) = (event_pointer, jwt_pointer) {
            out.push(FieldExtractor {
                field: extractor.field.clone(),
                event_pointer,
                jwt_pointer,
            });
        }
    }
    out
}

fn access(what: &str, check: Option<&AccessCheck>, problems: &mut Problems) -> Option<Access> {
    let check = check?;
    match (check.mode, check.url.as_deref()) {
        (AccessCheckMode::Anyone, None) => Some(Access::Anyone),
        (AccessCheckMode::ValidJwt, None) => Some(Access::ValidJwt),
        (AccessCheckMode::External, Some(url)) => match external_url(url) {
            Ok(uri) => Some(Access::External(uri)),
            Err(why) => {
                problems.add("InvalidAccessCheck", format!("{what}.url {url:?}: {why}"));
                None
            }
        },
        (AccessCheckMode::External, None) => {
            problems.add(
                "InvalidAccessCheck",
                format!("{what}: url is required for mode External"),
            );
            None
        }
        (_, Some(_)) => {
            problems.add(
                "InvalidAccessCheck",
                format!("{what}: url is only allowed for mode External"),
            );
            None
        }
    }
}

/// An external check endpoint: an absolute `http://` URL (the data plane's check client speaks
/// plain HTTP, usually to a cluster Service).
fn external_url(url: &str) -> Result<http::Uri, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL")?;
    match uri.scheme_str() {
        Some("http") if uri.authority().is_some() => Ok(uri),
        Some("https") => {
            Err("https:// check URLs are not supported; use http:// (e.g. a cluster Service)")
        }
        _ => Err("it must be an absolute http:// URL"),
    }
}

/// Kafka's topic name rule.
pub fn valid_topic(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
