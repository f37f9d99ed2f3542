//! Who may subscribe to, and publish, each event type: the process-wide `SUBSCRIPTION_CHECK` /
//! `SUBMISSION_CHECK` (RIG's environment), overridden per event type by the `EventRoute` that
//! names it (`subscriptionCheck`, `submissionCheck`, `source.http.enabled`).
//!
//! The rules per type come from the compiled configuration and are swapped whole on every
//! change ([`AccessPolicy::set_event_types`]); a request reads one `Arc` under a short read lock.
//! A type no `EventRoute` names, or a route that leaves a check unset, keeps the process-wide
//! check, so a RIG configuration behaves as before and a route never loosens it silently.
//!
//! Subscriptions are checked per type ([`AccessPolicy::subscription_plan`]): those whose type has
//! a route check go to that check (given by the client or derived from its JWT); the others go to
//! the process-wide check with RIG's rules (only when subscriptions were given on connect; always
//! on a subscription update). Each distinct check runs once, with the subscriptions it covers;
//! every one must allow.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rig_crds::compile::{Access, EventTypeRules};

use super::check::{Check, CheckKind, CheckMode};
use crate::metrics::Metrics;
use crate::subscriptions::Subscription;

/// The access rules of one event type named by an `EventRoute`.
#[derive(Debug, Clone)]
struct TypeAccess {
    /// The route's subscription check; `None`: the process-wide one.
    subscription: Option<Arc<Check>>,
    /// The route's submission check; `None`: the process-wide one.
    submission: Option<Arc<Check>>,
    /// `source.http.enabled`.
    http_publishing: bool,
    /// `source.http.topic` (or the route's first Kafka topic).
    http_topic: Option<Arc<str>>,
    /// `namespace/name` of the route, for logs.
    route: String,
}

/// The access policy of the process (module docs).
#[derive(Debug)]
pub struct AccessPolicy {
    subscription: Arc<Check>,
    submission: Arc<Check>,
    anyone: Arc<Check>,
    types: RwLock<Arc<BTreeMap<String, TypeAccess>>>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// One check to run for a set of subscriptions.
#[derive(Debug)]
pub struct Planned {
    /// The check.
    pub check: Arc<Check>,
    /// The subscriptions it covers.
    pub subscriptions: Vec<Subscription>,
    /// Whether this is the process-wide check covering every given subscription (its external
    /// service then gets the request as the client sent it, as in RIG).
    pub whole_request: bool,
}

/// What publishing one event type over HTTP needs.
#[derive(Debug)]
pub enum Publishing {
    /// Its `EventRoute` disables HTTP publishing (`source.http.enabled: false`).
    Disabled {
        /// `namespace/name` of the route.
        route: String,
    },
    /// Allowed after this submission check.
    Check(Arc<Check>),
}

impl AccessPolicy {
    /// The policy with the process-wide checks; no per-type rules until the first configuration.
    pub fn new(
        subscription: CheckMode,
        submission: CheckMode,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            subscription: Arc::new(Check::new(
                CheckKind::Subscription,
                subscription,
                timeout,
                metrics.clone(),
            )),
            submission: Arc::new(Check::new(
                CheckKind::Submission,
                submission,
                timeout,
                metrics.clone(),
            )),
            anyone: Arc::new(Check::new(
                CheckKind::Submission,
                CheckMode::NoCheck,
                timeout,
                metrics.clone(),
            )),
            types: RwLock::new(Arc::default()),
            timeout,
            metrics,
        }
    }

    /// Swap in the rules of a new compiled configuration. Checks with the same mode share one
    /// [`Check`] (and its connection pool).
    pub fn set_event_types(&self, types: &BTreeMap<String, Arc<EventTypeRules>>) {
        let mut checks: HashMap<(CheckKind, String), Arc<Check>> = HashMap::new();
        let mut check = |kind: CheckKind, access: &Option<Access>| -> Option<Arc<Check>> {
            let mode = match access.as_ref()? {
                Access::Anyone => CheckMode::NoCheck,
                Access::ValidJwt => CheckMode::JwtValidation,
                Access::External(uri) => CheckMode::External(uri.clone()),
            };
            let key = (kind, format!("{mode:?}"));
            Some(
                checks
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(Check::new(kind, mode, self.timeout, self.metrics.clone()))
                    })
                    .clone(),
            )
        };
        let compiled: BTreeMap<String, TypeAccess> = types
            .iter()
            .map(|(event_type, rules)| {
                (
                    event_type.clone(),
                    TypeAccess {
                        subscription: check(CheckKind::Subscription, &rules.subscription),
                        submission: check(CheckKind::Submission, &rules.submission),
                        http_publishing: rules.http_publishing,
                        http_topic: rules.http_topic.as_deref().map(Arc::from),
                        route: rules.route.clone(),
                    },
                )
            })
            .collect();
        *self
            .types
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(compiled);
    }

    fn types(&self) -> Arc<BTreeMap<String, TypeAccess>> {
        self.types
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The checks a connection or a subscription update must pass (module docs). `given`: the
    /// subscriptions the client sent (`None` on a connect without a `subscriptions` parameter);
    /// `derived`: those derived from its JWT. `always_global`: run the process-wide check even
    /// when nothing was given (RIG's subscription update).
    pub fn subscription_plan(
        &self,
        given: Option<&[Subscription]>,
        derived: &[Subscription],
        always_global: bool,
    ) -> Vec<Planned> {
        let types = self.types();
        let route_check = |s: &Subscription| {
            types
                .get(&s.event_type)
                .and_then(|t| t.subscription.clone())
        };
        let mut plan: Vec<Planned> = Vec::new();
        let mut add = |check: Arc<Check>, sub: &Subscription| match plan
            .iter_mut()
            .find(|p| Arc::ptr_eq(&p.check, &check))
        {
            Some(p) => {
                if !p.subscriptions.contains(sub) {
                    p.subscriptions.push(sub.clone());
                }
            }
            None => plan.push(Planned {
                check,
                subscriptions: vec![sub.clone()],
                whole_request: false,
            }),
        };
        let given_list = given.unwrap_or(&[]);
        let mut global = Vec::new();
        for sub in given_list {
            match route_check(sub) {
                Some(check) => add(check, sub),
                None => global.push(sub.clone()),
            }
        }
        for sub in derived {
            if let Some(check) = route_check(sub) {
                add(check, sub);
            }
        }
        let run_global = !global.is_empty()
            || (given.is_some() && given_list.is_empty())
            || (always_global && given_list.is_empty());
        if run_global {
            let whole_request = global.len() == given_list.len();
            plan.push(Planned {
                check: self.subscription.clone(),
                subscriptions: global,
                whole_request,
            });
        }
        plan
    }

    /// What publishing `event_type` over `POST /_rig/v1/events` needs.
    pub fn publishing(&self, event_type: &str) -> Publishing {
        match self.types().get(event_type) {
            Some(t) if !t.http_publishing => Publishing::Disabled {
                route: t.route.clone(),
            },
            Some(TypeAccess {
                submission: Some(check),
                ..
            }) => Publishing::Check(check.clone()),
            _ => Publishing::Check(self.submission.clone()),
        }
    }

    /// A check that allows everything (the internal API's publishing).
    pub fn no_check(&self) -> Arc<Check> {
        self.anyone.clone()
    }

    /// Whether `event_type` may be published over HTTP at all (`POST /v3/messages`, which skips
    /// the submission check); `Err` names the route that disables it.
    pub fn http_publishing(&self, event_type: &str) -> Result<(), String> {
        match self.types().get(event_type) {
            Some(t) if !t.http_publishing => Err(t.route.clone()),
            _ => Ok(()),
        }
    }

    /// The Kafka topic the `EventRoute` of `event_type` names for its HTTP-published events;
    /// `None`: no route says (the process's default applies).
    pub fn http_topic(&self, event_type: &str) -> Option<Arc<str>> {
        self.types().get(event_type)?.http_topic.clone()
    }

    /// Count and log a refusal by `source.http.enabled: false` (one place for both endpoints).
    pub fn record_http_disabled(&self, event_type: &str, route: &str) {
        self.metrics
            .submission_check_denials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            event_type,
            route,
            "HTTP publishing refused: the event type's EventRoute has source.http.enabled false"
        );
    }
}

/// Whether any of `tokens` is a valid JWT of a revoked session.
pub fn presents_revoked(jwt: &crate::auth::Jwt, tokens: &[&str]) -> bool {
    tokens
        .iter()
        .any(|t| matches!(jwt.verify(t), Err(crate::auth::JwtError::Revoked { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rig_crds::compile::{Object, Objects, compile};

    fn policy(yaml_routes: &[&str]) -> AccessPolicy {
        let objects = Objects {
            event_routes: yaml_routes
                .iter()
                .enumerate()
                .map(|(i, yaml)| {
                    Object::new(
                        "ns",
                        format!("r{i}"),
                        serde_yaml::from_str(yaml).expect("spec"),
                    )
                })
                .collect(),
            ..Default::default()
        };
        let compiled = compile(&objects, "2026-01-01T00:00:00Z".parse().expect("time"));
        assert_eq!(compiled.rejected().count(), 0, "{:?}", compiled.verdicts);
        let p = AccessPolicy::new(
            CheckMode::NoCheck,
            CheckMode::JwtValidation,
            Duration::from_secs(1),
            Arc::new(Metrics::default()),
        );
        p.set_event_types(&compiled.config.event_types);
        p
    }

    fn sub(t: &str) -> Subscription {
        Subscription::new(t, vec![])
    }

    const SECURED: &str = "source: {kafka: {topics: [a]}, http: {enabled: false}}\nevents: [{type: secret}, {type: secret2}]\nsubscriptionCheck: {mode: ValidJwt}\n";
    const PLAIN: &str = "source: {kafka: {topics: [b]}}\nevents: [{type: plain}]\nsubmissionCheck: {mode: Anyone}\n";

    #[test]
    fn route_types_get_their_check_and_others_the_process_wide_one() {
        let p = policy(&[SECURED, PLAIN]);
        let given = [sub("secret"), sub("plain"), sub("other")];
        let plan = p.subscription_plan(Some(&given), &[sub("secret2")], false);
        assert_eq!(plan.len(), 2, "{plan:?}");
        assert_eq!(*plan[0].check.mode(), CheckMode::JwtValidation);
        assert_eq!(plan[0].subscriptions, [sub("secret"), sub("secret2")]);
        assert_eq!(*plan[1].check.mode(), CheckMode::NoCheck);
        assert_eq!(plan[1].subscriptions, [sub("plain"), sub("other")]);
        assert!(!plan[1].whole_request);
    }

    #[test]
    fn the_process_wide_check_keeps_rigs_rules() {
        let p = policy(&[SECURED]);
        // Connect without subscriptions: nothing to check (RIG), not even derived ones of
        // types without a route check.
        assert!(p.subscription_plan(None, &[sub("other")], false).is_empty());
        // Derived subscriptions of a route type are checked.
        let plan = p.subscription_plan(None, &[sub("secret")], false);
        assert_eq!(plan.len(), 1);
        assert_eq!(*plan[0].check.mode(), CheckMode::JwtValidation);
        // An empty list given, and a subscription update: the process-wide check runs.
        assert_eq!(p.subscription_plan(Some(&[]), &[], false).len(), 1);
        let plan = p.subscription_plan(Some(&[]), &[], true);
        assert!(plan[0].whole_request);
        let plan = p.subscription_plan(Some(&[sub("x")]), &[], false);
        assert!(
            plan[0].whole_request,
            "all given: sent as the client sent it"
        );
    }

    #[test]
    fn publishing_follows_the_route() {
        let p = policy(&[SECURED, PLAIN]);
        assert!(matches!(
            p.publishing("secret"),
            Publishing::Disabled { route } if route == "ns/r0"
        ));
        assert_eq!(p.http_publishing("secret"), Err("ns/r0".to_owned()));
        match p.publishing("plain") {
            Publishing::Check(c) => assert_eq!(*c.mode(), CheckMode::NoCheck),
            other => panic!("{other:?}"),
        }
        match p.publishing("unnamed") {
            Publishing::Check(c) => assert_eq!(*c.mode(), CheckMode::JwtValidation),
            other => panic!("{other:?}"),
        }
        assert!(p.http_publishing("unnamed").is_ok());
    }
}
