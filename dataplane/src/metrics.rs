//! Prometheus metrics: plain atomics, rendered in the text exposition format on `/metrics`.
//!
//! Names follow RIG's where RIG has one (`rig_consumed_events_total`, ...), so existing dashboards
//! keep working. Counters are bumped where the matching log line is written.

use crate::support::prom::{self, counter};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The transports a frontend connection can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    Ws,
    /// HTTP long-polling.
    LongPolling,
}

impl Transport {
    /// All transports, in label order.
    pub const ALL: [Transport; 3] = [Transport::Sse, Transport::Ws, Transport::LongPolling];

    /// The `transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::LongPolling => "longpolling",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// All metrics of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open connections, by transport.
    pub connections: [AtomicI64; 3],
    /// Connections opened since start, by transport.
    pub connections_total: [AtomicU64; 3],
    /// Events read from Kafka or accepted over HTTP.
    pub consumed_events: AtomicU64,
    /// Events that could not be parsed (skipped; logged).
    pub consumed_events_failed: AtomicU64,
    /// Event frames queued to connections.
    pub forwarded_events: AtomicU64,
    /// Frames dropped because a connection's queue was full (the connection is closed).
    pub queue_drops: AtomicU64,
    /// Connection attempts refused because their client had spent its share of
    /// `MAX_CONNECTIONS_PER_MINUTE`.
    pub connections_refused_per_client: AtomicU64,
    /// HTTP-published events the broker acknowledged (Kafka on).
    pub http_events_produced: AtomicU64,
    /// HTTP-published events not produced (no topic, broker down or no acknowledgement in time).
    pub http_events_failed: AtomicU64,
    /// Events dropped from full long-polling buffers before the client got them (it is told with
    /// `rig.connection.gap`).
    pub longpolling_dropped: AtomicU64,
    /// Long-polling sessions removed after the session timeout without polls.
    pub longpolling_expired: AtomicU64,
    /// Kafka partitions this process reads.
    pub assigned_partitions: AtomicU64,
    /// Messages behind the end of the assigned partitions (sum over partitions).
    pub consumer_lag: AtomicU64,
    /// Certificate reloads of the TLS ports: succeeded, refused (the previous one stayed).
    pub tls_reloads: [AtomicU64; 2],
    /// Inbound connections closed at once because the inbound cap was reached.
    pub inbound_shed: std::sync::Arc<AtomicU64>,
    /// 1 while the lag could not be measured (the broker does not answer): the last value stays.
    pub consumer_lag_stale: AtomicU64,
    /// Successful reloads of the standalone manifests.
    pub config_reloads: AtomicU64,
    /// Rejected reloads (the previous configuration stayed).
    pub config_reload_failures: AtomicU64,
    /// Resumes served entirely from the replay window.
    pub replay_hits: AtomicU64,
    /// Resumes that could not be served whole (the client got `rig.connection.gap`).
    pub replay_misses: AtomicU64,
    /// Requests `SUBSCRIPTION_CHECK` denied.
    pub subscription_check_denials: AtomicU64,
    /// `SUBSCRIPTION_CHECK` calls that failed (no usable answer; the request was denied).
    pub subscription_check_errors: AtomicU64,
    /// Requests `SUBMISSION_CHECK` denied.
    pub submission_check_denials: AtomicU64,
    /// `SUBMISSION_CHECK` calls that failed (no usable answer; the request was denied).
    pub submission_check_errors: AtomicU64,
    /// Subscription updates forwarded to the process that holds the connection.
    pub peer_forwards: AtomicU64,
    /// Forwarded subscription updates that got no answer from the owner (or had no known owner).
    pub peer_forward_failures: AtomicU64,
    /// Entries in the session blacklist (a gauge).
    pub blacklist_entries: AtomicU64,
    /// Connections closed because their session was revoked.
    pub sessions_killed: AtomicU64,
    /// Connections closed because their JWT expired (`RIG_CLOSE_AT_TOKEN_EXPIRY`), by transport.
    pub connections_expired: [AtomicU64; 3],
    /// Errors of the cluster-mode `Blacklist` watch (it retries with backoff).
    pub blacklist_watch_errors: AtomicU64,
    /// `Blacklist` objects ignored because their spec is invalid.
    pub blacklist_objects_invalid: AtomicU64,
    /// Cluster-mode API revocations that could not be stored as a `Blacklist` object (in force on
    /// the receiving pod only; answered 503).
    pub blacklist_store_failures: AtomicU64,
    /// Failed writes (or deletion) of this pod's report Lease (retried).
    pub report_failures: AtomicU64,
}

impl Metrics {
    /// A connection of `transport` opened.
    pub fn connection_opened(&self, transport: Transport) {
        self.connections[transport.index()].fetch_add(1, Ordering::Relaxed);
        self.connections_total[transport.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of `transport` closed.
    pub fn connection_closed(&self, transport: Transport) {
        self.connections[transport.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric; `subscriptions` is the number of
    /// subscriptions in the index right now (RIG's `rig_subscriptions_total` gauge).
    pub fn render(&self, subscriptions: usize) -> String {
        let mut out = String::with_capacity(2048);
        prom::gauge(
            &mut out,
            "rig_subscriptions_total",
            "Subscriptions of the open connections.",
            subscriptions,
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge_by_transport(
            &mut out,
            "rig_connections",
            "Open frontend connections.",
            &self.connections,
        );
        by_transport(
            &mut out,
            "rig_connections_total",
            prom::Kind::Counter,
            "Frontend connections opened since start.",
            |t| load(&self.connections_total[t.index()]),
        );
        counter(
            &mut out,
            "rig_consumed_events_total",
            "Events consumed from Kafka or accepted over HTTP.",
            load(&self.consumed_events),
        );
        counter(
            &mut out,
            "rig_consumed_events_failed_total",
            "Events that could not be parsed and were skipped.",
            load(&self.consumed_events_failed),
        );
        counter(
            &mut out,
            "rig_consumed_events_forwarded_total",
            "Event frames queued to frontend connections.",
            load(&self.forwarded_events),
        );
        counter(
            &mut out,
            "rig_queue_drops_total",
            "Frames dropped because a connection's queue was full (the connection is closed).",
            load(&self.queue_drops),
        );
        {
            let name = "rig_http_events_published_total";
            prom::family(
                &mut out,
                name,
                prom::Kind::Counter,
                "HTTP-published events produced to Kafka, by outcome (failed: 503).",
            );
            prom::sample(
                &mut out,
                name,
                &[("result", "acknowledged")],
                load(&self.http_events_produced),
            );
            prom::sample(
                &mut out,
                name,
                &[("result", "failed")],
                load(&self.http_events_failed),
            );
        }
        counter(
            &mut out,
            "rig_connections_refused_per_client_total",
            "Connection attempts refused because their client had spent its share of MAX_CONNECTIONS_PER_MINUTE.",
            load(&self.connections_refused_per_client),
        );
        counter(
            &mut out,
            "rig_longpolling_dropped_events_total",
            "Events dropped from full long-polling buffers before the client got them.",
            load(&self.longpolling_dropped),
        );
        counter(
            &mut out,
            "rig_longpolling_expired_sessions_total",
            "Long-polling sessions removed after the session timeout without polls.",
            load(&self.longpolling_expired),
        );
        prom::gauge(
            &mut out,
            "rig_kafka_assigned_partitions",
            "Kafka partitions this process reads.",
            load(&self.assigned_partitions),
        );
        prom::gauge(
            &mut out,
            "rig_kafka_consumer_lag_messages",
            "Messages behind the end of the assigned partitions.",
            load(&self.consumer_lag),
        );
        prom::gauge(
            &mut out,
            "rig_kafka_consumer_lag_stale",
            "1 while the consumer lag cannot be measured (broker unreachable; the lag shown is the last known).",
            load(&self.consumer_lag_stale),
        );
        counter(
            &mut out,
            "rig_inbound_connections_shed_total",
            "Inbound connections closed at once because RIG_MAX_INBOUND_CONNECTIONS was reached.",
            load(&self.inbound_shed),
        );
        prom::family(
            &mut out,
            "rig_tls_reloads_total",
            prom::Kind::Counter,
            "Certificate reloads of the TLS ports (error: the files could not be used; the previous certificate stayed).",
        );
        for (result, value) in [
            ("ok", &self.tls_reloads[0]),
            ("error", &self.tls_reloads[1]),
        ] {
            prom::sample(
                &mut out,
                "rig_tls_reloads_total",
                &[("result", result)],
                load(value),
            );
        }
        counter(
            &mut out,
            "rig_config_reloads_total",
            "Successful reloads of the standalone manifests.",
            load(&self.config_reloads),
        );
        counter(
            &mut out,
            "rig_config_reload_failures_total",
            "Rejected reloads of the standalone manifests (the previous configuration stayed).",
            load(&self.config_reload_failures),
        );
        counter(
            &mut out,
            "rig_replay_hits_total",
            "Reconnects served entirely from the replay window.",
            load(&self.replay_hits),
        );
        counter(
            &mut out,
            "rig_replay_misses_total",
            "Reconnects that could not be served whole (rig.connection.gap sent).",
            load(&self.replay_misses),
        );
        for (name, help, subscription, submission) in [
            (
                "rig_authorization_check_denials_total",
                "Requests denied by SUBSCRIPTION_CHECK or SUBMISSION_CHECK.",
                &self.subscription_check_denials,
                &self.submission_check_denials,
            ),
            (
                "rig_authorization_check_errors_total",
                "External authorization checks without a usable answer (the request was denied).",
                &self.subscription_check_errors,
                &self.submission_check_errors,
            ),
        ] {
            prom::family(&mut out, name, prom::Kind::Counter, help);
            prom::sample(
                &mut out,
                name,
                &[("check", "subscription")],
                load(subscription),
            );
            prom::sample(&mut out, name, &[("check", "submission")], load(submission));
        }
        counter(
            &mut out,
            "rig_peer_forwards_total",
            "Subscription updates forwarded to the process that holds the connection.",
            load(&self.peer_forwards),
        );
        counter(
            &mut out,
            "rig_peer_forward_failures_total",
            "Forwarded subscription updates without an answer from the connection's owner.",
            load(&self.peer_forward_failures),
        );
        prom::gauge(
            &mut out,
            "rig_blacklist_entries",
            "Revoked sessions held in the session blacklist.",
            load(&self.blacklist_entries),
        );
        counter(
            &mut out,
            "rig_sessions_killed_total",
            "Connections closed because their session was revoked.",
            load(&self.sessions_killed),
        );
        by_transport(
            &mut out,
            "rig_connections_expired_total",
            prom::Kind::Counter,
            "Connections closed because their JWT expired.",
            |t| load(&self.connections_expired[t.index()]),
        );
        counter(
            &mut out,
            "rig_blacklist_watch_errors_total",
            "Errors of the Blacklist watch (cluster mode; retried with backoff).",
            load(&self.blacklist_watch_errors),
        );
        counter(
            &mut out,
            "rig_blacklist_objects_invalid_total",
            "Blacklist objects ignored because their spec is invalid.",
            load(&self.blacklist_objects_invalid),
        );
        counter(
            &mut out,
            "rig_blacklist_store_failures_total",
            "API revocations not stored as a Blacklist object (in force on this pod only).",
            load(&self.blacklist_store_failures),
        );
        counter(
            &mut out,
            "rig_report_lease_failures_total",
            "Failed writes of this pod's report Lease (retried).",
            load(&self.report_failures),
        );
        out
    }
}

fn gauge_by_transport(out: &mut String, name: &str, help: &str, values: &[AtomicI64; 3]) {
    by_transport(out, name, prom::Kind::Gauge, help, |t| {
        values[t.index()].load(Ordering::Relaxed)
    });
}

/// A family with one sample per transport.
fn by_transport<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: prom::Kind,
    help: &str,
    value: impl Fn(Transport) -> V,
) {
    prom::family(out, name, kind, help);
    for t in Transport::ALL {
        prom::sample(out, name, &[("transport", t.label())], value(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rig_names_with_values_and_labels() {
        let m = Metrics::default();
        m.connection_opened(Transport::Ws);
        m.connection_opened(Transport::Ws);
        m.connection_closed(Transport::Ws);
        m.consumed_events_failed.fetch_add(3, Ordering::Relaxed);
        let text = m.render(7);
        assert!(text.contains("rig_subscriptions_total 7\n"), "{text}");
        assert!(
            text.contains("rig_connections{transport=\"ws\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("rig_connections_total{transport=\"ws\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("rig_consumed_events_failed_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE rig_consumed_events_forwarded_total counter\n"),
            "{text}"
        );
    }
}
