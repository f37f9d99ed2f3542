//! The configuration snapshot and the wire types of the operator → data-plane stream.
//!
//! The operator compiles every accepted `EventRoute`, `ProxyRoute` and unexpired `Blacklist` into
//! one [`Snapshot`]. Its [`version`](Snapshot::version) is a content hash over a canonical
//! serialization (objects sorted by namespace and name, fields in declaration order, maps sorted),
//! so every operator replica computes the same version from the same objects, and a restarted
//! operator reproduces the version the data planes already run.
//!
//! The stream (`GET /v1/snapshots?have=<version>` on an operator replica) is newline-delimited
//! JSON, one [`StreamMessage`] per line: the full snapshot whenever its version changes, and
//! heartbeats in between. Data planes answer each version with a [`DataPlaneReport`].
//!
//! The wire types deny unknown fields, like the specs inside them: a data plane verifies the
//! version by recomputing the hash, which only works if it understood every field. A change to
//! these types is therefore a new stream path (`/v2/snapshots`), served next to the old one during
//! an upgrade, never a silent addition.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{BlacklistSpec, EventRouteSpec, ProxyRouteSpec};

/// One object in a snapshot: where it came from and its spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedSpec<S> {
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// The `metadata.generation` this spec belongs to (data planes report it back, which drives
    /// the object's `Programmed` condition).
    pub generation: i64,
    /// The object's spec, as accepted by the operator.
    pub spec: S,
}

/// The whole configuration of the data planes at one version.
///
/// Guarantees: the lists are sorted by `(namespace, name)` and contain only objects the operator
/// accepted; `version` is [`Snapshot::content_version`] of the rest. It does not guarantee that a
/// `Blacklist` is still unexpired when the snapshot is read: data planes check `expiresAt` too.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// Content hash (hex SHA-256, truncated to 128 bits) of everything else in the snapshot.
    pub version: String,
    /// Accepted event routes.
    pub event_routes: Vec<NamedSpec<EventRouteSpec>>,
    /// Accepted proxy routes, in matching order (first match wins).
    pub proxy_routes: Vec<NamedSpec<ProxyRouteSpec>>,
    /// Unexpired revocations.
    pub blacklists: Vec<NamedSpec<BlacklistSpec>>,
}

/// The hashed part of a snapshot: everything but the version, borrowed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Content<'a> {
    event_routes: &'a [NamedSpec<EventRouteSpec>],
    proxy_routes: &'a [NamedSpec<ProxyRouteSpec>],
    blacklists: &'a [NamedSpec<BlacklistSpec>],
}

impl Snapshot {
    /// Build a snapshot: sort the lists by `(namespace, name)` and compute the version.
    pub fn new(
        mut event_routes: Vec<NamedSpec<EventRouteSpec>>,
        mut proxy_routes: Vec<NamedSpec<ProxyRouteSpec>>,
        mut blacklists: Vec<NamedSpec<BlacklistSpec>>,
    ) -> Self {
        fn key<S>(n: &NamedSpec<S>) -> (&str, &str) {
            (&n.namespace, &n.name)
        }
        event_routes.sort_by(|a, b| key(a).cmp(&key(b)));
        proxy_routes.sort_by(|a, b| key(a).cmp(&key(b)));
        blacklists.sort_by(|a, b| key(a).cmp(&key(b)));
        let mut snapshot = Self {
            version: String::new(),
            event_routes,
            proxy_routes,
            blacklists,
        };
        snapshot.version = snapshot.content_version();
        snapshot
    }

    /// The content hash of this snapshot's objects (ignores the `version` field).
    ///
    /// Data planes recompute it to detect a corrupted or hand-edited snapshot before using it.
    pub fn content_version(&self) -> String {
        let content = Content {
            event_routes: &self.event_routes,
            proxy_routes: &self.proxy_routes,
            blacklists: &self.blacklists,
        };
        let mut hasher = HashWriter(Sha256::new());
        // Serializing plain data into a hasher cannot fail (no I/O errors, no non-string map
        // keys in these types); should it ever, the version still hashes what was written.
        let _ = serde_json::to_writer(&mut hasher, &content);
        let digest = hasher.0.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `io::Write` into a SHA-256, so the canonical JSON is hashed without being buffered.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One line of the snapshot stream (`{"type": "snapshot", …}` or `{"type": "heartbeat", …}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StreamMessage {
    /// The full configuration. Sent first (unless its version equals the client's `have`) and
    /// again whenever the version changes.
    Snapshot(Box<Snapshot>),
    /// Sent every few seconds so both sides notice a dead connection.
    Heartbeat {
        /// The version this replica currently serves; `None` while it has not synced yet.
        version: Option<String>,
    },
}

/// A data plane's answer to one snapshot version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataPlaneReport {
    /// The reporting pod (its name, unique among data planes).
    pub pod: String,
    /// The snapshot version this report is about.
    pub version: String,
    /// Whether the data plane runs that version now.
    pub outcome: Outcome,
}

/// What a data plane did with a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Outcome {
    /// Validated and swapped in; the data plane serves this version.
    Applied,
    /// Refused as a whole; the data plane keeps serving its previous version.
    Rejected {
        /// Why, for people (shown on the objects' `Programmed` condition).
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blacklist(ns: &str, name: &str, session: &str) -> NamedSpec<BlacklistSpec> {
        NamedSpec {
            namespace: ns.into(),
            name: name.into(),
            generation: 1,
            spec: BlacklistSpec {
                session_id: session.into(),
                expires_at: "2030-01-01T00:00:00Z".into(),
                reason: None,
            },
        }
    }

    #[test]
    fn version_ignores_input_order_and_follows_content() {
        let a = Snapshot::new(
            vec![],
            vec![],
            vec![blacklist("b", "x", "1"), blacklist("a", "y", "2")],
        );
        let b = Snapshot::new(
            vec![],
            vec![],
            vec![blacklist("a", "y", "2"), blacklist("b", "x", "1")],
        );
        assert_eq!(a.version, b.version);
        assert_eq!(a.blacklists[0].namespace, "a");
        assert_eq!(a.version.len(), 32);
        let c = Snapshot::new(
            vec![],
            vec![],
            vec![blacklist("a", "y", "2"), blacklist("b", "x", "3")],
        );
        assert_ne!(a.version, c.version);
        let empty = Snapshot::new(vec![], vec![], vec![]);
        assert_ne!(a.version, empty.version);
    }

    #[test]
    fn version_survives_the_wire_and_detects_tampering() {
        let s = Snapshot::new(vec![], vec![], vec![blacklist("a", "y", "2")]);
        let line = serde_json::to_string(&StreamMessage::Snapshot(Box::new(s.clone())))
            .expect("serialize");
        assert!(
            line.starts_with(r#"{"type":"snapshot","version":"#),
            "{line}"
        );
        let StreamMessage::Snapshot(back) = serde_json::from_str(&line).expect("parse") else {
            panic!("not a snapshot: {line}");
        };
        assert_eq!(back.content_version(), s.version);
        let mut tampered = *back;
        tampered.blacklists[0].spec.session_id = "other".into();
        assert_ne!(tampered.content_version(), tampered.version);
    }

    #[test]
    fn heartbeats_and_reports_have_small_stable_shapes() {
        let hb = StreamMessage::Heartbeat {
            version: Some("abc".into()),
        };
        assert_eq!(
            serde_json::to_string(&hb).expect("serialize"),
            r#"{"type":"heartbeat","version":"abc"}"#
        );
        let report = DataPlaneReport {
            pod: "dp-0".into(),
            version: "abc".into(),
            outcome: Outcome::Rejected {
                message: "bad".into(),
            },
        };
        let json = serde_json::to_string(&report).expect("serialize");
        assert_eq!(
            json,
            r#"{"pod":"dp-0","version":"abc","outcome":{"result":"rejected","message":"bad"}}"#
        );
        assert_eq!(
            serde_json::from_str::<DataPlaneReport>(&json).expect("parse"),
            report
        );
    }
}
