//! `EventRoute`: which events flow from the backend to frontends, and who may subscribe to them.
//!
//! One object names a source (Kafka topics and/or `POST /_rig/v1/events`), the CloudEvent types it
//! carries, and for each type the extractors that make subscription constraints possible (RIG's
//! `EXTRACTORS`). The subscription and submission checks are RIG's `SUBSCRIPTION_CHECK` and
//! `SUBMISSION_CHECK`, per route instead of per process.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::RigStatus;

/// Specification of an `EventRoute`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rig.dev",
    version = "v1alpha1",
    kind = "EventRoute",
    namespaced,
    status = "RigStatus",
    shortname = "er",
    category = "rig",
    printcolumn = r#"{"name":"Topics","type":"string","jsonPath":".spec.source.kafka.topics"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.programmed"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRouteSpec {
    /// Where the events of this route come from.
    pub source: EventSource,
    /// The CloudEvent types this route carries (exact match on the event's `type`), each with the
    /// fields that subscriptions may constrain. At least one.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub events: Vec<EventType>,
    /// Who may subscribe to these event types (RIG's `SUBSCRIPTION_CHECK`, per type): applies to
    /// SSE, WebSocket and long-polling connects with subscriptions of these types, to subscription
    /// updates, and to subscriptions derived from the JWT. Default: the process-wide
    /// `SUBSCRIPTION_CHECK` (anyone unless set), so a route never loosens it silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_check: Option<AccessCheck>,
    /// Who may publish these event types over `POST /_rig/v1/events` (RIG's `SUBMISSION_CHECK`,
    /// per type; a refusal is 403 `Submission denied.`). Default: the process-wide
    /// `SUBMISSION_CHECK` (anyone unless set). Has no effect on events read from Kafka, nor on the
    /// internal `POST /v3/messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_check: Option<AccessCheck>,
}

/// Where events come from: Kafka topics, HTTP publishing, or both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.kafka) || (has(self.http) && self.http.enabled)").message("a source needs kafka topics, http publishing, or both"))]
pub struct EventSource {
    /// Read events from these Kafka topics. Every data-plane pod reads every partition (no shared
    /// consumer group), so each pod sees every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSource>,
    /// Accept these event types over `POST /_rig/v1/events` (inbound port) and
    /// `POST /v3/messages` (internal port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
}

/// Kafka topics to consume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSource {
    /// Topic names (Kafka's rules: 1–249 characters of `a-z A-Z 0-9 . _ -`).
    #[schemars(length(min = 1, max = 64))]
    pub topics: Vec<TopicName>,
}

/// A Kafka topic name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
pub struct TopicName(
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))] pub String,
);

/// HTTP publishing of events.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSource {
    /// Whether `POST /_rig/v1/events` and `POST /v3/messages` accept these event types; `false`
    /// refuses them with 403 `Submission denied.` An `EventRoute` without `source.http` allows
    /// HTTP publishing of its types (as RIG always did).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where the data plane produces these types' HTTP-published events when it has Kafka: every
    /// pod reads the topic, so every pod delivers them, in one order, resumable like any Kafka
    /// event. Default: the route's first `source.kafka.topics` entry, else the data plane's
    /// `RIG_HTTP_EVENTS_TOPIC` (default: its first `KAFKA_SOURCE_TOPICS` topic). The data plane
    /// consumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicName>,
}

fn default_true() -> bool {
    true
}

/// One CloudEvent type and its extractors.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventType {
    /// The CloudEvent `type` (exact string match; no wildcards, as in RIG).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 512))]
    pub type_: String,
    /// Fields that subscriptions may constrain. Constraints on other fields are ignored (they act as
    /// wildcards), as in RIG.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["field".into()]))]
    pub extractors: Vec<Extractor>,
}

/// Where a constrainable field is found in the event and, optionally, in the subscriber's JWT.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extractor {
    /// The field name used in subscription constraints (`oneOf: [{"<field>": "value"}]`).
    #[schemars(length(min = 1, max = 128))]
    pub field: String,
    /// JSON pointer (RFC 6901) into the event, e.g. `/data/name`. Missing or non-scalar values
    /// match only subscriptions that leave the field unconstrained.
    #[schemars(length(min = 2, max = 512), regex(pattern = r"^/"))]
    pub event_pointer: String,
    /// JSON pointer into the subscriber's JWT claims, e.g. `/username`. When set, a connection with
    /// a JWT is subscribed automatically to events whose field equals its claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 512), regex(pattern = r"^/"))]
    pub jwt_pointer: Option<String>,
}

/// An authorization check for subscribing or publishing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.mode == 'External' ? has(self.url) : !has(self.url)").message("url is required for mode External and not allowed otherwise"))]
pub struct AccessCheck {
    /// `Anyone` (RIG's `NO_CHECK`), `ValidJwt` (RIG's `JWT_VALIDATION`: a valid, non-revoked JWT)
    /// or `External` (RIG's URL mode: the subscriptions, or the event, are POSTed to `url` with the
    /// client's authorization; 2xx allows, anything else denies).
    pub mode: AccessCheckMode,
    /// The external check endpoint, for mode `External`: an absolute `http://` URL (typically a
    /// cluster Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^http://"))]
    pub url: Option<String>,
}

/// How an [`AccessCheck`] decides.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AccessCheckMode {
    /// Everyone is allowed.
    #[default]
    Anyone,
    /// A valid, unexpired, non-revoked JWT is required.
    ValidJwt,
    /// An external HTTP endpoint decides.
    External,
}
