//! Extractors: per event type, the fields that subscriptions may constrain, where each is found in
//! the event, and optionally in the subscriber's JWT claims (RIG §3, `EXTRACTORS`; `EventRoute`
//! `events[].extractors`).
//!
//! JSON pointers are parsed and checked once, at configuration time; resolving one is a walk down
//! pre-split tokens. Fields keep a stable order per type (RIG: by `stable_field_index`; routes: as
//! declared), which the [`Index`](super::Index) uses to key its tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use rig_crds::compile::EventTypeRules;
use serde_json::{Map, Value};
use thiserror::Error;

use super::model::{Constraints, Subscription};
pub use rig_crds::compile::{FieldExtractor, JsonPointer};

const INDEX_FIELD: &str = "stable_field_index";

/// The extractor configuration: event type → its fields. Field names are unique per type.
/// Cheap to share (`Arc` per type) and immutable once built; a reload builds a new one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extractors {
    types: BTreeMap<String, Arc<[FieldExtractor]>>,
}

/// Why an extractor configuration was rejected. Every variant means "reject the configuration
/// whole and keep the last good one"; messages name the event type and field.
#[derive(Debug, Error)]
pub enum Error {
    /// `EXTRACTORS` is not JSON.
    #[error("the extractor configuration is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The top level is not an object of event types.
    #[error("the extractor configuration must be a JSON object mapping event types to fields")]
    NotAnObject,
    /// An event type's configuration is not an object of fields.
    #[error("event type {event_type:?}: expected an object mapping field names to extractors")]
    TypeNotAnObject {
        /// The event type.
        event_type: String,
    },
    /// Fields without `stable_field_index` (RIG's text).
    #[error(
        "event type {event_type:?}: stable_field_index is required, but missing for fields: {fields:?}"
    )]
    IndexMissing {
        /// The event type.
        event_type: String,
        /// The fields without an index.
        fields: Vec<String>,
    },
    /// Two fields share a `stable_field_index` (RIG's text).
    #[error(
        "event type {event_type:?}: Duplicate index - please use a different stable_field_index value for each field"
    )]
    DuplicateIndex {
        /// The event type.
        event_type: String,
    },
    /// A negative `stable_field_index` (RIG's text).
    #[error(
        "event type {event_type:?}: Negative index - please use only non-negative values for stable_field_index"
    )]
    NegativeIndex {
        /// The event type.
        event_type: String,
    },
    /// Fields whose configuration is malformed: index not an integer, `event.json_pointer` missing
    /// or empty, `jwt` not `{"json_pointer": "..."}` (RIG's text).
    #[error("event type {event_type:?}: Invalid configuration for fields: {fields:?}")]
    InvalidFields {
        /// The event type.
        event_type: String,
        /// The malformed fields.
        fields: Vec<String>,
    },
    /// A JSON pointer that cannot be parsed.
    #[error(
        "event type {event_type:?}, field {field:?}: invalid JSON pointer {pointer:?}: {reason}"
    )]
    InvalidPointer {
        /// The event type.
        event_type: String,
        /// The field.
        field: String,
        /// The pointer as written.
        pointer: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A field with an empty name.
    #[error("event type {event_type:?}: a field name must not be empty")]
    EmptyField {
        /// The event type.
        event_type: String,
    },
    /// The same field of the same type is defined twice, differently.
    #[error(
        "event type {event_type:?}: field {field:?} is defined more than once, with different pointers"
    )]
    Conflict {
        /// The event type.
        event_type: String,
        /// The field.
        field: String,
    },
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Extractors {
    /// No extractors: every constraint is a wildcard.
    pub fn new() -> Self {
        Self::default()
    }

    /// RIG's `EXTRACTORS` JSON:
    /// `{"<type>":{"<field>":{"stable_field_index":1,"event":{"json_pointer":"/data/name"},"jwt":{"json_pointer":"/username"}}}}`.
    /// Validated as RIG does (index required, non-negative, unique per type; event pointer required
    /// and non-empty), plus pointer syntax. Fields are ordered by index.
    pub fn from_rig_json(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json).map_err(Error::Json)?;
        let Value::Object(types) = value else {
            return Err(Error::NotAnObject);
        };
        let mut out = Self::new();
        for (event_type, config) in &types {
            let Value::Object(fields) = config else {
                return Err(Error::TypeNotAnObject {
                    event_type: event_type.clone(),
                });
            };
            let fields = rig_type_fields(event_type, fields)?;
            out.types.insert(event_type.clone(), fields.into());
        }
        Ok(out)
    }

    /// The extractors of the compiled `EventRoute`s (the compiler has judged them: field names
    /// unique per type, pointers valid, one definition per type).
    pub fn from_compiled(types: &BTreeMap<String, Arc<EventTypeRules>>) -> Self {
        Self {
            types: types
                .iter()
                .map(|(event_type, rules)| (event_type.clone(), rules.extractors.clone()))
                .collect(),
        }
    }

    /// Both configurations together (e.g. `EXTRACTORS` plus `EventRoute`s): the union of the
    /// fields of each type; the same field defined differently is a [`Error::Conflict`].
    pub fn merge(mut self, other: Self) -> Result<Self> {
        for (event_type, fields) in other.types {
            self.add(&event_type, fields.iter().cloned().collect())?;
        }
        Ok(self)
    }

    /// The fields of `event_type`, in their stable order; empty when the type has none.
    pub fn fields(&self, event_type: &str) -> &[FieldExtractor] {
        self.types.get(event_type).map_or(&[], |f| &**f)
    }

    /// The fields of `event_type`, shared.
    pub(super) fn fields_shared(&self, event_type: &str) -> Option<Arc<[FieldExtractor]>> {
        self.types.get(event_type).cloned()
    }

    /// The configured event types, sorted.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Whether no event type is configured.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The automatic subscriptions for a JWT (RIG §3): per event type, the fields whose JWT pointer
    /// resolves in `claims` to a string, number or boolean form one conjunction; a type where none
    /// resolves yields no subscription. Sorted by event type.
    pub fn jwt_subscriptions(&self, claims: &Value) -> Vec<Subscription> {
        self.types
            .iter()
            .filter_map(|(event_type, fields)| {
                let conjunction: Constraints = fields
                    .iter()
                    .filter_map(|f| {
                        let value = f.jwt_pointer.as_ref()?.resolve(claims)?;
                        matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
                            .then(|| (f.field.clone(), value.clone()))
                    })
                    .collect();
                (!conjunction.is_empty())
                    .then(|| Subscription::new(event_type.clone(), vec![conjunction]))
            })
            .collect()
    }

    /// Add `fields` to `event_type`: new fields are appended; repeated identical ones are skipped.
    fn add(&mut self, event_type: &str, fields: Vec<FieldExtractor>) -> Result<()> {
        let mut merged: Vec<FieldExtractor> = self.fields(event_type).to_vec();
        for field in fields {
            match merged.iter().find(|f| f.field == field.field) {
                Some(existing) if *existing == field => {}
                Some(_) => {
                    return Err(Error::Conflict {
                        event_type: event_type.to_owned(),
                        field: field.field,
                    });
                }
                None => merged.push(field),
            }
        }
        self.types.insert(event_type.to_owned(), merged.into());
        Ok(())
    }
}

/// Validate one type of RIG's format, in RIG's order of checks.
fn rig_type_fields(event_type: &str, fields: &Map<String, Value>) -> Result<Vec<FieldExtractor>> {
    let missing: Vec<String> = fields
        .iter()
        .filter(|(_, config)| config.get(INDEX_FIELD).is_none())
        .map(|(name, _)| name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(Error::IndexMissing {
            event_type: event_type.to_owned(),
            fields: missing,
        });
    }
    let indices: Vec<&Value> = fields.values().filter_map(|c| c.get(INDEX_FIELD)).collect();
    let distinct: std::collections::HashSet<String> =
        indices.iter().map(|v| v.to_string()).collect();
    if distinct.len() != indices.len() {
        return Err(Error::DuplicateIndex {
            event_type: event_type.to_owned(),
        });
    }
    if indices.iter().any(|v| v.as_i64().is_some_and(|i| i < 0)) {
        return Err(Error::NegativeIndex {
            event_type: event_type.to_owned(),
        });
    }

    let mut invalid = Vec::new();
    let mut parsed: Vec<(u64, FieldExtractor)> = Vec::with_capacity(fields.len());
    for (name, config) in fields {
        let index = config.get(INDEX_FIELD).and_then(Value::as_u64);
        let event_pointer = config
            .get("event")
            .and_then(|e| e.get("json_pointer"))
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty());
        let jwt_pointer = match config.get("jwt") {
            None | Some(Value::Null) => Some(None),
            Some(jwt) => jwt.get("json_pointer").and_then(Value::as_str).map(Some),
        };
        let (Some(index), Some(event_pointer), Some(jwt_pointer), false) =
            (index, event_pointer, jwt_pointer, name.is_empty())
        else {
            invalid.push(name.clone());
            continue;
        };
        let pointer = |text: &str| {
            JsonPointer::parse(text).map_err(|reason| Error::InvalidPointer {
                event_type: event_type.to_owned(),
                field: name.clone(),
                pointer: text.to_owned(),
                reason,
            })
        };
        parsed.push((
            index,
            FieldExtractor {
                field: name.clone(),
                event_pointer: pointer(event_pointer)?,
                jwt_pointer: jwt_pointer.map(pointer).transpose()?,
            },
        ));
    }
    if !invalid.is_empty() {
        return Err(Error::InvalidFields {
            event_type: event_type.to_owned(),
            fields: invalid,
        });
    }
    parsed.sort_by_key(|(index, _)| *index);
    Ok(parsed.into_iter().map(|(_, field)| field).collect())
}

#[cfg(test)]
mod tests;
