//! Status conditions shared by the three kinds.
//!
//! We define our own `Condition` instead of reusing `k8s_openapi`'s `meta/v1/Condition` because the
//! latter does not implement `JsonSchema`; the shape and field names are the same, so `kubectl
//! describe`, Argo CD and `kubectl wait --for=condition=…` read it as usual.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The object was parsed and compiled into the configuration snapshot.
pub const ACCEPTED: &str = "Accepted";
/// Every data-plane pod acknowledged a snapshot that contains this generation of the object.
pub const PROGRAMMED: &str = "Programmed";
/// Accepted and programmed: the object is in effect.
pub const READY: &str = "Ready";

/// One observation of the state of an object (the Kubernetes condition convention).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition: `Accepted`, `Programmed` or `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason for the last transition.
    pub reason: String,
    /// Human-readable explanation of the last transition.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The tri-state value of a condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not yet known (e.g. waiting for data-plane acknowledgements).
    Unknown,
}

/// The status block common to all three kinds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RigStatus {
    /// The `metadata.generation` the operator last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `Programmed` and `Ready`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Data-plane pods that run this generation, over all data-plane pods, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programmed: Option<String>,
    /// Version (content hash) of the last snapshot that contained this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_version: Option<String>,
}

impl RigStatus {
    /// The condition of the given type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
