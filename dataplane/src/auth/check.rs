//! `SUBSCRIPTION_CHECK` and `SUBMISSION_CHECK`: may this client subscribe, may it publish
//! (rig-behaviour §3)?
//!
//! Each check has one [`CheckMode`], read from its environment variable (case-insensitive):
//! - `no_check` (or empty, the default): allow;
//! - `jwt_validation`: allow when the request carries at least one valid JWT (the caller says
//!   whether it does: the `jwt` query parameter on connect, the `Authorization` headers otherwise,
//!   see [`check_tokens`]);
//! - anything else is the `http://` URL of an external check service. It receives a `POST` with a
//!   JSON body and the client's authorization ([`ExternalRequest`]); a 2xx answer allows, 401 and
//!   403 deny, and anything else — another status, no answer within the configured timeout, a
//!   transport error — denies too, with a warning log and `rig_authorization_check_errors_total`.
//!
//! Every verdict is logged and counted in [`Check::authorize`], the one place that decides, so logs
//! and metrics agree. The client only learns "denied"; why is in the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

use crate::metrics::Metrics;

/// How a check decides (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CheckMode {
    /// Allow everything (RIG's default).
    #[default]
    NoCheck,
    /// Allow requests with at least one valid JWT.
    JwtValidation,
    /// Ask the check service at this `http://` URL.
    External(Uri),
}

impl CheckMode {
    /// Parse a `SUBSCRIPTION_CHECK` / `SUBMISSION_CHECK` value: `no_check` or empty,
    /// `jwt_validation` (both case-insensitive), or an absolute `http://` URL (kept as written;
    /// RIG lowercased the whole value, URL included). The error says what was expected.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("no_check") {
            return Ok(Self::NoCheck);
        }
        if value.eq_ignore_ascii_case("jwt_validation") {
            return Ok(Self::JwtValidation);
        }
        let uri: Uri = value
            .parse()
            .map_err(|_| "no_check, jwt_validation, or an http:// URL")?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") && uri.authority().is_some() => {
                Ok(Self::External(uri))
            }
            Some(s) if s.eq_ignore_ascii_case("https") => Err(
                "an https:// check URL is not supported yet; use http:// (e.g. a cluster Service)",
            ),
            _ => Err("no_check, jwt_validation, or an absolute http:// URL"),
        }
    }
}

/// Which check this is (for logs and metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// `SUBSCRIPTION_CHECK`: connecting with subscriptions, replacing subscriptions.
    Subscription,
    /// `SUBMISSION_CHECK`: `POST /_rig/v1/events`.
    Submission,
}

impl CheckKind {
    /// The `check` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Submission => "submission",
        }
    }
}

/// What the external check service is sent.
#[derive(Debug, Clone)]
pub struct ExternalRequest {
    /// The JSON body.
    pub body: Bytes,
    /// The `content-type` header.
    pub content_type: HeaderValue,
    /// `authorization` headers, in order (none when the client sent none).
    pub authorization: Vec<HeaderValue>,
}

/// Why a request was not allowed. The first two are decisions; the others are failures of the
/// check service, which deny too (fail closed) and are logged as warnings.
#[derive(Debug, Error)]
pub enum Denied {
    /// `jwt_validation`: the request carries no valid JWT.
    #[error("no valid JWT")]
    NoValidToken,
    /// External check: the request presents a token of a revoked session, so it is refused
    /// before the check service is asked (it cannot know about revocations).
    #[error("a revoked session's token was presented")]
    RevokedSession,
    /// The check service answered 401 or 403.
    #[error("the check service refused with {status}")]
    Refused {
        /// Its status.
        status: StatusCode,
    },
    /// The check service answered with a status that is neither 2xx nor 401/403.
    #[error("the check service answered {status}, which is neither an allow nor a deny")]
    UnexpectedStatus {
        /// Its status.
        status: StatusCode,
    },
    /// No answer within the timeout.
    #[error("the check service did not answer within {timeout:?}")]
    Timeout {
        /// The configured timeout.
        timeout: Duration,
    },
    /// The request could not be sent or the answer not read.
    #[error("the check service is unreachable")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// The request could not be built (a header value the HTTP library refuses).
    #[error("the check request could not be built")]
    Request(#[source] http::Error),
}

impl Denied {
    /// Whether this is a failure of the check service rather than a decision.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            Self::NoValidToken | Self::Refused { .. } | Self::RevokedSession
        )
    }
}

/// One configured check with its HTTP client (pooled, HTTP/1.1) for the external mode.
#[derive(Debug)]
pub struct Check {
    kind: CheckKind,
    mode: CheckMode,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    metrics: Arc<Metrics>,
}

impl Check {
    /// A check of `kind` in `mode`; external calls give up after `timeout`.
    pub fn new(kind: CheckKind, mode: CheckMode, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            kind,
            mode,
            timeout,
            client,
            metrics,
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> &CheckMode {
        &self.mode
    }

    /// Whether an external service decides.
    pub fn is_external(&self) -> bool {
        matches!(self.mode, CheckMode::External(_))
    }

    /// Like [`Check::authorize`], but an external check refuses a request that presents a token
    /// of a revoked session (`presents_revoked`, asked only in the external mode) without asking
    /// the service: revoked sessions are refused everywhere, and the service cannot know.
    pub async fn authorize_unrevoked(
        &self,
        presents_revoked: impl FnOnce() -> bool,
        has_valid_token: impl FnOnce() -> bool,
        request: impl FnOnce() -> ExternalRequest,
    ) -> Result<(), Denied> {
        if self.is_external() && presents_revoked() {
            let (counter, check) = self.counters(false);
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::info!(check, reason = %Denied::RevokedSession, "authorization check denied a request");
            return Err(Denied::RevokedSession);
        }
        self.authorize(has_valid_token, request).await
    }

    /// Decide. `has_valid_token` is asked only in `jwt_validation` mode, `request` only in the
    /// external mode. Logs and counts every denial.
    pub async fn authorize(
        &self,
        has_valid_token: impl FnOnce() -> bool,
        request: impl FnOnce() -> ExternalRequest,
    ) -> Result<(), Denied> {
        let verdict = match &self.mode {
            CheckMode::NoCheck => Ok(()),
            CheckMode::JwtValidation => {
                if has_valid_token() {
                    Ok(())
                } else {
                    Err(Denied::NoValidToken)
                }
            }
            CheckMode::External(url) => self.external(url, request()).await,
        };
        if let Err(denied) = &verdict {
            let (counter, check) = self.counters(denied.is_failure());
            counter.fetch_add(1, Ordering::Relaxed);
            if denied.is_failure() {
                let url = match &self.mode {
                    CheckMode::External(url) => url.to_string(),
                    _ => String::new(),
                };
                tracing::warn!(check, %url, error = %denied, source = ?std::error::Error::source(denied), "authorization check failed; denying");
            } else {
                tracing::info!(check, reason = %denied, "authorization check denied a request");
            }
        }
        verdict
    }

    fn counters(&self, failure: bool) -> (&AtomicU64, &'static str) {
        let m = &self.metrics;
        let counter = match (self.kind, failure) {
            (CheckKind::Subscription, false) => &m.subscription_check_denials,
            (CheckKind::Subscription, true) => &m.subscription_check_errors,
            (CheckKind::Submission, false) => &m.submission_check_denials,
            (CheckKind::Submission, true) => &m.submission_check_errors,
        };
        (counter, self.kind.label())
    }

    async fn external(&self, url: &Uri, request: ExternalRequest) -> Result<(), Denied> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::CONTENT_TYPE, request.content_type);
        for value in request.authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let req = builder
            .body(Full::new(request.body))
            .map_err(Denied::Request)?;
        let res = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| Denied::Timeout {
                timeout: self.timeout,
            })?
            .map_err(Denied::Unreachable)?;
        // The body is not needed; dropping the response returns the connection to the pool once
        // hyper has drained it, or closes it.
        match res.status() {
            s if s.is_success() => Ok(()),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(Denied::Refused { status: s })
            }
            s => Err(Denied::UnexpectedStatus { status: s }),
        }
    }
}

/// The JWTs of the `Authorization` headers, for `jwt_validation` on a PUT or an event submission:
/// every comma-separated credential that is `Bearer <jwt>` (scheme case-insensitive) or has no
/// scheme at all (RIG's check counts a bare value as a bearer token). Not verified.
pub fn check_tokens(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter_map(|credential| match credential.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
            Some(_) => None,
            None => Some(credential),
        })
        .filter(|token| !token.is_empty())
        .collect()
}

/// Every `authorization` header of a request, for forwarding to the check service.
pub fn authorization_headers(headers: &HeaderMap) -> Vec<HeaderValue> {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_case_insensitively_and_urls_stay_as_written() {
        assert_eq!(CheckMode::parse(""), Ok(CheckMode::NoCheck));
        assert_eq!(CheckMode::parse("NO_CHECK"), Ok(CheckMode::NoCheck));
        assert_eq!(
            CheckMode::parse(" Jwt_Validation "),
            Ok(CheckMode::JwtValidation)
        );
        match CheckMode::parse("http://Check.example:8080/Allow?x=1") {
            Ok(CheckMode::External(uri)) => {
                assert_eq!(uri.to_string(), "http://Check.example:8080/Allow?x=1");
            }
            other => panic!("expected a URL, got {other:?}"),
        }
    }

    #[test]
    fn anything_but_an_absolute_http_url_is_refused() {
        for bad in ["maybe", "/relative", "ftp://host/x", "https://host/x"] {
            assert!(CheckMode::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(
            CheckMode::parse("https://host/x")
                .expect_err("https")
                .contains("https")
        );
    }

    #[test]
    fn check_tokens_take_bearer_and_bare_credentials() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a, bearer b"),
        );
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("c"));
        headers.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert_eq!(check_tokens(&headers), vec!["a", "b", "c"]);
    }

    fn metrics_text(m: &Metrics) -> String {
        m.render(0)
    }

    #[tokio::test]
    async fn no_check_allows_without_asking_anything() {
        let m = Arc::new(Metrics::default());
        let check = Check::new(
            CheckKind::Submission,
            CheckMode::NoCheck,
            Duration::from_secs(1),
            m,
        );
        let verdict = check
            .authorize(|| panic!("not asked"), || panic!("not asked either"))
            .await;
        assert!(verdict.is_ok());
    }

    #[tokio::test]
    async fn jwt_validation_denies_without_a_valid_token_and_counts_it() {
        let m = Arc::new(Metrics::default());
        let check = Check::new(
            CheckKind::Subscription,
            CheckMode::JwtValidation,
            Duration::from_secs(1),
            m.clone(),
        );
        let denied = check
            .authorize(|| false, || panic!("not asked"))
            .await
            .expect_err("denied");
        assert!(matches!(denied, Denied::NoValidToken));
        assert!(
            check
                .authorize(|| true, || panic!("not asked"))
                .await
                .is_ok()
        );
        let text = metrics_text(&m);
        assert!(
            text.contains("rig_authorization_check_denials_total{check=\"subscription\"} 1\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_check_service_denies_and_counts_an_error() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url: Uri = format!("http://127.0.0.1:{port}/check")
            .parse()
            .expect("uri");
        let m = Arc::new(Metrics::default());
        let check = Check::new(
            CheckKind::Submission,
            CheckMode::External(url),
            Duration::from_secs(5),
            m.clone(),
        );
        let denied = check
            .authorize(
                || panic!("not asked"),
                || ExternalRequest {
                    body: Bytes::from_static(b"{}"),
                    content_type: HeaderValue::from_static("application/json"),
                    authorization: Vec::new(),
                },
            )
            .await
            .expect_err("denied");
        assert!(denied.is_failure(), "{denied:?}");
        let text = metrics_text(&m);
        assert!(
            text.contains("rig_authorization_check_errors_total{check=\"submission\"} 1\n"),
            "{text}"
        );
    }
}
