//! The operator ↔ data-plane contract, defined once and used by both binaries: the snapshot
//! stream's path, query and media type, the heartbeat period, and the report Lease each data
//! plane writes (its name, label, annotation and duration). The messages themselves are the types
//! of [`crate::snapshot`].

use std::time::Duration;

/// Path of the snapshot stream on every operator replica (a new wire format is a new path).
pub const STREAM_PATH: &str = "/v1/snapshots";
/// Query parameter with the version the data plane already runs (no resend when it is current).
pub const STREAM_HAVE_PARAM: &str = "have";
/// Media type of the stream: newline-delimited JSON, one [`crate::snapshot::StreamMessage`] a line.
pub const STREAM_CONTENT_TYPE: &str = "application/x-ndjson";
/// How often the operator sends a heartbeat line (its default); data planes treat three missed
/// heartbeats as a dead connection.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);

/// Prefix of a data plane's report Lease name; the pod's name follows.
pub const REPORT_LEASE_PREFIX: &str = "rig-dataplane-";
/// The label marking report Leases, and its value.
pub const REPORT_ROLE_LABEL: (&str, &str) = ("rig.dev/role", "dataplane-report");
/// [`REPORT_ROLE_LABEL`] as a label selector.
pub const REPORT_SELECTOR: &str = "rig.dev/role=dataplane-report";
/// The annotation holding the JSON [`crate::snapshot::DataPlaneReport`].
pub const REPORT_ANNOTATION: &str = "rig.dev/report";
/// A report Lease's `leaseDurationSeconds` (also what the operator assumes when a Lease does not
/// say): three renewals may fail before the operator stops counting the pod.
pub const REPORT_LEASE_SECONDS: i32 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_is_the_label() {
        assert_eq!(
            REPORT_SELECTOR,
            format!("{}={}", REPORT_ROLE_LABEL.0, REPORT_ROLE_LABEL.1)
        );
    }
}
