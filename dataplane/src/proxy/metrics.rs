//! Proxy metrics: RIG's `rig_proxy_requests_total{method,path,target,response_from,status}` and
//! an upstream latency histogram.
//!
//! Label cardinality is bounded by the configuration, not by traffic: `path` is the endpoint's
//! **path regex** (RIG used the request path, which grows without bound), and requests that
//! match no route share `path="N/A"` with the method folded to one of RIG's seven or `OTHER`.
//! Each endpoint holds its counters (found once per configuration, by label set), so counting a
//! request is one atomic add with no lock and no lookup; a counter survives reloads that keep
//! its labels.

use crate::support::prom;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;

/// RIG's `status` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The target answered (whatever its status).
    Ok,
    /// The request was refused (401, 405, 413, 501).
    BadRequest,
    /// No route matched.
    NotFound,
    /// The target could not be reached (502).
    Unreachable,
    /// The client's request body broke off.
    RequestTimeout,
    /// The target did not answer in time (504).
    ResponseTimeout,
}

impl Status {
    const ALL: [Status; 6] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::Unreachable,
        Status::RequestTimeout,
        Status::ResponseTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::BadRequest => "bad_request",
            Status::NotFound => "not_found",
            Status::Unreachable => "unreachable",
            Status::RequestTimeout => "request_timeout",
            Status::ResponseTimeout => "response_timeout",
        }
    }
}

/// The counters of one label set, by status.
#[derive(Debug, Default)]
pub struct EndpointCounters {
    by_status: [AtomicU64; 6],
}

impl EndpointCounters {
    /// Count one request.
    pub fn count(&self, status: Status) {
        self.by_status[status as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Upper bounds (seconds) of the upstream latency buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

type Labels = (String, String, String, String);

/// All proxy metrics.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    counters: Mutex<BTreeMap<Labels, Arc<EndpointCounters>>>,
    /// Requests per latency bucket, not cumulative (one atomic add per request; the Prometheus
    /// `le` buckets are summed when rendered).
    buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_micros: AtomicU64,
}

/// `method` label of a request that matched no endpoint.
fn method_label(method: &Method) -> &str {
    match *method {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS => method.as_str(),
        _ => "OTHER",
    }
}

impl ProxyMetrics {
    /// The counters of one label set (created on first use, shared afterwards).
    pub fn endpoint(
        &self,
        method: &Method,
        path: &str,
        target: &str,
        response_from: &str,
    ) -> Arc<EndpointCounters> {
        let key = (
            method.as_str().to_owned(),
            path.to_owned(),
            target.to_owned(),
            response_from.to_owned(),
        );
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    }

    /// Count a request that matched no endpoint.
    pub fn not_found(&self, method: &Method) {
        let method = Method::from_bytes(method_label(method).as_bytes()).unwrap_or(Method::GET);
        self.endpoint(&method, "N/A", "N/A", "N/A")
            .count(Status::NotFound);
    }

    /// Count a request refused for an ambiguous path (before matching: `path="N/A"`,
    /// `status="bad_request"`).
    pub fn refused_path(&self, method: &Method) {
        let method = Method::from_bytes(method_label(method).as_bytes()).unwrap_or(Method::GET);
        self.endpoint(&method, "N/A", "N/A", "N/A")
            .count(Status::BadRequest);
    }

    /// Record how long the target took to answer (request sent → response head).
    pub fn upstream(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Append the Prometheus text of these metrics to `out`.
    pub fn render(&self, out: &mut String) {
        let name = "rig_proxy_requests_total";
        prom::family(
            out,
            name,
            prom::Kind::Counter,
            "Proxied requests by endpoint (path = the endpoint's path regex) and outcome.",
        );
        {
            let map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            for ((method, path, target, response_from), counters) in map.iter() {
                for status in Status::ALL {
                    let n = counters.by_status[status as usize].load(Ordering::Relaxed);
                    if n > 0 {
                        prom::sample(
                            out,
                            name,
                            &[
                                ("method", method),
                                ("path", path),
                                ("target", target),
                                ("response_from", response_from),
                                ("status", status.label()),
                            ],
                            n,
                        );
                    }
                }
            }
        }
        let name = "rig_proxy_upstream_duration_seconds";
        prom::family(
            out,
            name,
            prom::Kind::Histogram,
            "Time from sending a proxied request to the target's response head.",
        );
        let bucket = "rig_proxy_upstream_duration_seconds_bucket";
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            prom::sample(out, bucket, &[("le", &bound.to_string())], cumulative);
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        prom::sample(out, bucket, &[("le", "+Inf")], count);
        prom::sample(
            out,
            "rig_proxy_upstream_duration_seconds_sum",
            &[],
            self.duration_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        prom::sample(out, "rig_proxy_upstream_duration_seconds_count", &[], count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_label_set_and_the_histogram() {
        let m = ProxyMetrics::default();
        let c = m.endpoint(&Method::GET, "/books/(.+)", "http", "http");
        c.count(Status::Ok);
        c.count(Status::Ok);
        m.endpoint(&Method::GET, "/books/(.+)", "http", "http")
            .count(Status::ResponseTimeout);
        m.not_found(&Method::from_bytes(b"PURGE").expect("method"));
        m.upstream(Duration::from_millis(3));
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("rig_proxy_requests_total{method=\"GET\",path=\"/books/(.+)\",target=\"http\",response_from=\"http\",status=\"ok\"} 2\n"), "{text}");
        assert!(text.contains("status=\"response_timeout\"} 1\n"), "{text}");
        assert!(text.contains("rig_proxy_requests_total{method=\"OTHER\",path=\"N/A\",target=\"N/A\",response_from=\"N/A\",status=\"not_found\"} 1\n"), "{text}");
        assert!(
            text.contains("rig_proxy_upstream_duration_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("rig_proxy_upstream_duration_seconds_bucket{le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("rig_proxy_upstream_duration_seconds_count 1\n"),
            "{text}"
        );
    }
}
