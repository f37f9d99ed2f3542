//! `Blacklist`: one revoked session.
//!
//! The data planes refuse tokens whose session claim (`JWT_SESSION_FIELD`, `/jti` by default)
//! equals `sessionId`, and close that session's live connections, until `expiresAt`. Clients that
//! think in durations (RIG's `validityInSeconds`) convert to `expiresAt` when they create the
//! object, so the object means the same thing whenever it is read.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::RigStatus;

/// Specification of a `Blacklist` entry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rig.dev",
    version = "v1alpha1",
    kind = "Blacklist",
    namespaced,
    status = "RigStatus",
    shortname = "bl",
    category = "rig",
    printcolumn = r#"{"name":"Session","type":"string","jsonPath":".spec.sessionId"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","format":"date-time","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.programmed"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlacklistSpec {
    /// The revoked session: the value of the session claim (`jti` unless `JWT_SESSION_FIELD` says
    /// otherwise). Immutable: revoke another session with another object.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("sessionId is immutable"))]
    pub session_id: String,
    /// When the revocation ends (RFC 3339). Set it at or after the token's own expiry. Expired
    /// entries leave the data planes' memory.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: String,
    /// Why the session was revoked (for people; not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}
