//! The subscription object and its JSON form (RIG §3).
//!
//! `{"eventType": "<non-empty>", "oneOf": [{"<field>": <value>, ...}, ...]}`, with RIG's aliases
//! `event_type` and `one_of`/`constraints`. `oneOf` is optional (`[]`, all events of the type). A
//! list is all-or-nothing: one invalid entry rejects the whole list. Error texts are RIG's.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use thiserror::Error;

/// One conjunction: every field must equal its value (`null` leaves the field unconstrained, as in
/// RIG, where an absent field is stored as `nil`).
pub type Constraints = BTreeMap<String, Value>;

/// A subscription to one event type.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// The CloudEvent `type`, matched exactly. Never empty when parsed.
    pub event_type: String,
    /// An OR of ANDs; empty means every event of the type. Keys are never empty when parsed.
    pub one_of: Vec<Constraints>,
}

impl Subscription {
    /// A subscription to `event_type` with the given disjunction of constraints.
    pub fn new(event_type: impl Into<String>, one_of: Vec<Constraints>) -> Self {
        Self {
            event_type: event_type.into(),
            one_of,
        }
    }

    /// Parse one subscription object (RIG's aliases and rules, module docs).
    pub fn from_value(value: &Value) -> Result<Self> {
        let invalid = |reason| Error::Invalid {
            reason,
            params: params_snippet(value),
        };
        let Some(object) = value.as_object() else {
            return Err(invalid(Reason::NotAMap));
        };
        // RIG's precedence when several aliases are present.
        let event_type = ["event_type", "eventType"]
            .iter()
            .find_map(|key| object.get(*key))
            .ok_or_else(|| invalid(Reason::EventTypeNotFound))?
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(Reason::EventTypeEmpty))?;
        let one_of = match ["constraints", "one_of", "oneOf"]
            .iter()
            .find_map(|key| object.get(*key))
        {
            None => Vec::new(),
            Some(Value::Array(clauses)) => clauses
                .iter()
                .map(|clause| match clause {
                    Value::Object(map) if map.keys().any(String::is_empty) => {
                        Err(invalid(Reason::EmptyKey))
                    }
                    Value::Object(map) => {
                        Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    }
                    _ => Err(invalid(Reason::ClauseNotAMap)),
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(invalid(Reason::ConstraintsNotAList)),
        };
        Ok(Self::new(event_type, one_of))
    }

    /// RIG's JSON shape: `{"eventType": .., "oneOf": [..]}` (`oneOf` always present).
    pub fn to_json(&self) -> Value {
        let one_of = self
            .one_of
            .iter()
            .map(|c| Value::Object(c.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            .collect();
        let mut object = serde_json::Map::new();
        object.insert(
            "eventType".to_owned(),
            Value::from(self.event_type.as_str()),
        );
        object.insert("oneOf".to_owned(), Value::Array(one_of));
        Value::Object(object)
    }
}

/// Why a subscription list was rejected. All variants mean "reject the request with 400".
#[derive(Debug, Error)]
pub enum Error {
    /// The text is not JSON. The message is RIG's full response body for this case.
    #[error("Failed to decode subscription list: {0}")]
    Decode(#[source] serde_json::Error),
    /// The JSON is not a list.
    #[error("expected a list of subscriptions, got {0}")]
    NotAList(&'static str),
    /// An entry is not a valid subscription (`params` is the entry as JSON, shortened).
    #[error("invalid subscription: {reason} when parsing {params}")]
    Invalid {
        /// What is wrong.
        reason: Reason,
        /// The offending entry.
        params: String,
    },
}

/// What is wrong with a subscription entry (RIG's texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Reason {
    /// The entry is not an object.
    #[error("not a map")]
    NotAMap,
    /// Neither `eventType` nor `event_type` is present.
    #[error("event-type not found")]
    EventTypeNotFound,
    /// The event type is not a non-empty string.
    #[error("event-type empty")]
    EventTypeEmpty,
    /// `oneOf` (or an alias) is not a list.
    #[error("constraints expected to be a list of disjunctive clauses")]
    ConstraintsNotAList,
    /// An element of `oneOf` is not an object.
    #[error("a disjunctive clause expected to be a conjunction represented by a map")]
    ClauseNotAMap,
    /// A constraint object has an empty key.
    #[error("conjunctive clauses expected to be a map with nonempty strings as keys")]
    EmptyKey,
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parse the `subscriptions` query parameter: a JSON list of subscription objects.
pub fn parse_list(json: &str) -> Result<Vec<Subscription>> {
    let value: Value = serde_json::from_str(json).map_err(Error::Decode)?;
    parse_value(&value)
}

/// Validate an already-parsed list (the `subscriptions` field of a PUT body).
pub fn parse_value(value: &Value) -> Result<Vec<Subscription>> {
    match value {
        Value::Array(entries) => entries.iter().map(Subscription::from_value).collect(),
        Value::Object(_) => Err(Error::NotAList("an object")),
        Value::String(_) => Err(Error::NotAList("a string")),
        Value::Number(_) => Err(Error::NotAList("a number")),
        Value::Bool(_) => Err(Error::NotAList("a boolean")),
        Value::Null => Err(Error::NotAList("null")),
    }
}

/// RIG's JSON for a set of subscriptions (the data of `rig.subscriptions_set`).
pub fn to_json(subscriptions: &[Subscription]) -> Value {
    Value::Array(subscriptions.iter().map(Subscription::to_json).collect())
}

/// Drop repeated subscriptions, keeping the first of each (RIG's `uniq(jwt ++ query)`). Linear time.
pub fn dedup(subscriptions: impl IntoIterator<Item = Subscription>) -> Vec<Subscription> {
    let mut seen = HashSet::new();
    subscriptions
        .into_iter()
        // Object keys serialise sorted, so equal subscriptions have equal JSON.
        .filter(|s| seen.insert(s.to_json().to_string()))
        .collect()
}

/// An entry as JSON for an error message, shortened.
fn params_snippet(value: &Value) -> String {
    const MAX: usize = 200;
    let mut text = value.to_string();
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn constraints(value: Value) -> Constraints {
        serde_json::from_value(value).expect("constraints")
    }

    #[test]
    fn valid_lists_parse() {
        let cases: Vec<(&str, Vec<Subscription>)> = vec![
            ("[]", vec![]),
            (
                r#"[{"eventType":"a"}]"#,
                vec![Subscription::new("a", vec![])],
            ),
            (
                r#"[{"event_type":"a","one_of":[]}]"#,
                vec![Subscription::new("a", vec![])],
            ),
            (
                r#"[{"eventType":"a","oneOf":[{"name":"joe"},{"name":"bob","age":30}]}]"#,
                vec![Subscription::new(
                    "a",
                    vec![
                        constraints(json!({"name": "joe"})),
                        constraints(json!({"name": "bob", "age": 30})),
                    ],
                )],
            ),
            (
                r#"[{"eventType":"a","constraints":[{"x":null}]},{"eventType":"b","oneOf":[{}]}]"#,
                vec![
                    Subscription::new("a", vec![constraints(json!({"x": null}))]),
                    Subscription::new("b", vec![Constraints::new()]),
                ],
            ),
            // RIG's alias precedence: event_type over eventType, constraints over one_of over oneOf.
            (
                r#"[{"eventType":"b","event_type":"a","oneOf":"bad","one_of":"bad","constraints":[{"k":1}]}]"#,
                vec![Subscription::new("a", vec![constraints(json!({"k": 1}))])],
            ),
            (
                r#"[{"eventType":"a","oneOf":"bad","one_of":[]}]"#,
                vec![Subscription::new("a", vec![])],
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(parse_list(json).expect(json), expected, "{json}");
        }
    }

    #[test]
    fn invalid_lists_are_rejected_whole_with_rigs_texts() {
        let cases: &[(&str, &str)] = &[
            ("[", "Failed to decode subscription list: "),
            ("", "Failed to decode subscription list: "),
            (
                r#"{"eventType":"a"}"#,
                "expected a list of subscriptions, got an object",
            ),
            ("\"a\"", "expected a list of subscriptions, got a string"),
            ("null", "expected a list of subscriptions, got null"),
            ("[1]", "invalid subscription: not a map when parsing 1"),
            (
                r#"[{"eventType":"a"},{"oneOf":[]}]"#,
                r#"invalid subscription: event-type not found when parsing {"oneOf":[]}"#,
            ),
            (
                r#"[{"eventType":""}]"#,
                "invalid subscription: event-type empty",
            ),
            (
                r#"[{"eventType":5}]"#,
                "invalid subscription: event-type empty",
            ),
            (
                r#"[{"eventType":null}]"#,
                "invalid subscription: event-type empty",
            ),
            (
                r#"[{"eventType":"a","oneOf":{"name":"joe"}}]"#,
                "invalid subscription: constraints expected to be a list of disjunctive clauses",
            ),
            (
                r#"[{"eventType":"a","oneOf":null}]"#,
                "constraints expected to be a list of disjunctive clauses",
            ),
            (
                r#"[{"eventType":"a","oneOf":["name"]}]"#,
                "a disjunctive clause expected to be a conjunction represented by a map",
            ),
            (
                r#"[{"eventType":"a","oneOf":[{"":"x"}]}]"#,
                "conjunctive clauses expected to be a map with nonempty strings as keys",
            ),
        ];
        for (json, expected) in cases {
            let err = parse_list(json).expect_err(json);
            assert!(
                err.to_string().starts_with(expected) || err.to_string().contains(expected),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn long_entries_are_shortened_in_messages() {
        let json = format!(r#"[{{"eventType":"","pad":"{}"}}]"#, "x".repeat(10_000));
        let err = parse_list(&json).expect_err("empty type");
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
    }

    #[test]
    fn to_json_is_rigs_shape_and_round_trips() {
        let subs = vec![
            Subscription::new("a", vec![]),
            Subscription::new("b", vec![constraints(json!({"name": "joe", "age": 30}))]),
        ];
        let json = to_json(&subs);
        assert_eq!(
            json,
            json!([
                {"eventType": "a", "oneOf": []},
                {"eventType": "b", "oneOf": [{"age": 30, "name": "joe"}]}
            ])
        );
        assert_eq!(parse_value(&json).expect("round trip"), subs);
    }

    #[test]
    fn dedup_keeps_first_occurrences_in_order() {
        let a = Subscription::new("a", vec![]);
        let b1 = Subscription::new("b", vec![constraints(json!({"x": 1, "y": "2"}))]);
        let b1_again = Subscription::new("b", vec![constraints(json!({"y": "2", "x": 1}))]);
        let b2 = Subscription::new("b", vec![constraints(json!({"x": "1", "y": "2"}))]);
        let out = dedup(vec![a.clone(), b1.clone(), a.clone(), b1_again, b2.clone()]);
        assert_eq!(out, vec![a, b1, b2]);
    }
}
