//! Configuration of `rig-operator run`, from environment variables. Every default is here.

use std::net::SocketAddr;
use std::time::Duration;

/// Listen address of the snapshot stream (`GET /v1/snapshots`, `GET /healthz`, `GET /readyz`).
pub const STREAM_ADDR: &str = "RIG_OPERATOR_STREAM_ADDR";
/// Namespace of the leader-election Lease.
pub const LEASE_NAMESPACE: &str = "RIG_OPERATOR_LEASE_NAMESPACE";
/// Watch only this namespace instead of the whole cluster.
pub const WATCH_NAMESPACE: &str = "RIG_OPERATOR_WATCH_NAMESPACE";
/// Namespace of the data planes' report Leases (default: [`WATCH_NAMESPACE`] when set, else all
/// namespaces).
pub const REPORT_NAMESPACE: &str = "RIG_OPERATOR_REPORT_NAMESPACE";
/// This replica's identity in the Lease (the Downward API's pod name in a cluster).
pub const POD_NAME: &str = "POD_NAME";
/// The pod's namespace (Downward API); the Lease lives there unless [`LEASE_NAMESPACE`] is set.
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";

/// Name of the leader-election Lease.
pub const LEASE_NAME: &str = "rig-operator";
/// The field manager of every status write (server-side apply).
pub const FIELD_MANAGER: &str = "rig-operator";

/// Errors in the configuration: the process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable holds something that does not parse.
    #[error("{name}={value:?} is not a valid {what}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        what: &'static str,
    },
}

/// The operator's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the snapshot stream listens. Default `0.0.0.0:9090` (reachable by data-plane pods).
    pub stream_addr: SocketAddr,
    /// Namespace of the Lease. Default: the pod's namespace, else `default`.
    pub lease_namespace: String,
    /// The Lease holder identity. Default: `POD_NAME`, else `<hostname>-<pid>` (unique per process
    /// even when several replicas share a host, as in the tests).
    pub identity: String,
    /// `None`: the whole cluster (the default, one operator per cluster).
    pub watch_namespace: Option<String>,
    /// Where the data planes' report Leases are read. `None`: all namespaces, the default of a
    /// cluster-wide operator (data planes may run in any namespace; the selector
    /// `rig.dev/role=dataplane-report` finds them). An operator restricted to one namespace reads
    /// reports from that namespace by default, so two installs in two namespaces (or two tests on
    /// one apiserver) do not count each other's pods.
    pub report_namespace: Option<String>,
    /// How long a Lease stays valid without renewal: 15 s, client-go's default, so a dead leader
    /// is replaced within seconds without flapping on a slow apiserver.
    pub lease_duration: Duration,
    /// How often the leader renews (a third of the duration: two renewals may fail in a row).
    pub renew_every: Duration,
    /// How often a follower looks at the Lease (short, to take over soon after it expires).
    pub follower_poll: Duration,
    /// Route changes within this window are compiled together (`kubectl apply -f dir/` sends
    /// many at once); `Blacklist` changes are never delayed.
    pub route_debounce: Duration,
    /// Heartbeat interval of the snapshot stream: frequent enough that data planes notice a dead
    /// operator within a few seconds, rare enough to cost nothing.
    pub heartbeat_every: Duration,
}

impl Config {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let stream_addr = match lookup(STREAM_ADDR) {
            None => SocketAddr::from(([0, 0, 0, 0], 9090)),
            Some(value) => value.parse().map_err(|_| Error::Invalid {
                name: STREAM_ADDR,
                value,
                what: "socket address (host:port)",
            })?,
        };
        let nonempty = |name| lookup(name).filter(|v: &String| !v.is_empty());
        let lease_namespace = nonempty(LEASE_NAMESPACE)
            .or_else(|| nonempty(POD_NAMESPACE))
            .unwrap_or_else(|| "default".into());
        let identity = nonempty(POD_NAME).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "rig-operator".into());
            format!("{host}-{}", std::process::id())
        });
        Ok(Self {
            stream_addr,
            lease_namespace,
            identity,
            watch_namespace: nonempty(WATCH_NAMESPACE),
            report_namespace: nonempty(REPORT_NAMESPACE).or_else(|| nonempty(WATCH_NAMESPACE)),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            follower_poll: Duration::from_secs(2),
            route_debounce: Duration::from_millis(100),
            heartbeat_every: rig_crds::contract::HEARTBEAT_PERIOD,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_lookup(|_| None).expect("defaults");
        assert_eq!(c.stream_addr.port(), 9090);
        assert_eq!(c.lease_namespace, "default");
        assert!(c.watch_namespace.is_none());
        assert!(c.report_namespace.is_none(), "reports from all namespaces");
        let c = Config::from_lookup(|k| (k == WATCH_NAMESPACE).then(|| "team".into()))
            .expect("namespaced");
        assert_eq!(c.report_namespace.as_deref(), Some("team"));
        let c = Config::from_lookup(|k| match k {
            WATCH_NAMESPACE => Some("team".into()),
            REPORT_NAMESPACE => Some("rig-system".into()),
            _ => None,
        })
        .expect("explicit report namespace");
        assert_eq!(c.report_namespace.as_deref(), Some("rig-system"));
        let c = Config::from_lookup(|k| match k {
            STREAM_ADDR => Some("127.0.0.1:1234".into()),
            POD_NAMESPACE => Some("rig".into()),
            POD_NAME => Some("op-0".into()),
            _ => None,
        })
        .expect("overrides");
        assert_eq!(c.stream_addr.to_string(), "127.0.0.1:1234");
        assert_eq!(
            (c.lease_namespace.as_str(), c.identity.as_str()),
            ("rig", "op-0")
        );
        let err = Config::from_lookup(|k| (k == STREAM_ADDR).then(|| "nope".into()));
        assert!(err.is_err());
    }
}
