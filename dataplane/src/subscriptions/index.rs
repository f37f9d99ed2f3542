//! The subscription index: which connections an event goes to (RIG §3 semantics, DESIGN §3/§7
//! performance).
//!
//! # Design
//!
//! Subscriptions are compiled into *cells*. Each clause of a subscription's `oneOf` (an empty
//! `oneOf` is one empty clause) constrains some of its type's extractor fields; that set of fields
//! is the clause's *shape*, and the constrained values, encoded canonically in field order, are its
//! *key*. Tables: event type → shape → key → the connections registered there.
//!
//! To match an event: look up its type, then for each shape registered under the type build the
//! key from the event's values and look it up. Each extractor pointer is resolved at most once per
//! event. A shape whose field has no scalar value in the event is skipped (a constrained field
//! never matches null). The cost is O(S·F + m) for S shapes under the type (in practice a handful:
//! one per combination of constrained fields in use), F fields per shape and m matches — never
//! proportional to the number of connections.
//!
//! A connection may sit in several cells of one type (e.g. `{name: joe}` and `{age: 30}`), and
//! both may match. Such connections are flagged when registered and deduplicated per event with a
//! small set; the rest are pushed straight to the output.
//!
//! Semantics: constraint keys without an extractor for the type are ignored (wildcards), as is a
//! `null` constraint (RIG stores an unconstrained field as `nil`); a constraint whose value is an
//! array or object can never match. Values compare as canonical JSON scalars: `"30"` ≠ `30`, while
//! `30` = `30.0`.
//!
//! # Concurrency
//!
//! One `std::sync::RwLock`. [`Index::matching`] takes the read lock, so any number of publishers
//! match in parallel. Writers hold the write lock only to splice precomputed cells in or out:
//! [`Index::set`] compiles keys before taking it, and its work under the lock is proportional to
//! that one connection's subscriptions. [`Index::set_extractors`] re-keys only the event types
//! whose extractors changed. Sharding by connection was not chosen: every event would have to
//! visit every shard, and the critical sections are already short.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Number, Value};

use super::extractors::{Extractors, FieldExtractor};
use super::model::{Constraints, Subscription};
use crate::events::CloudEvent;

/// A connection's id, unique within the process.
pub type ConnId = u64;

/// Every connection's subscriptions, indexed for matching. Safe to share between tasks (`&self`
/// methods; see the module docs for the locking).
#[derive(Debug)]
pub struct Index {
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    extractors: Arc<Extractors>,
    types: HashMap<Box<str>, TypeIndex>,
    connections: HashMap<ConnId, Connection>,
    subscriptions: usize,
}

/// A connection's subscriptions as given (to re-key them) and the cells it occupies.
#[derive(Debug)]
struct Connection {
    subscriptions: Box<[Subscription]>,
    cells: Vec<Cell>,
}

/// The address of one cell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    event_type: Box<str>,
    /// Indices into the type's fields, ascending.
    shape: Box<[usize]>,
    /// The encoded values of those fields, in the same order.
    key: Box<[u8]>,
}

#[derive(Debug)]
struct TypeIndex {
    fields: Arc<[FieldExtractor]>,
    shapes: Vec<Shape>,
}

#[derive(Debug)]
struct Shape {
    fields: Box<[usize]>,
    cells: HashMap<Box<[u8]>, Members>,
}

impl Index {
    /// An empty index using `extractors`.
    pub fn new(extractors: Arc<Extractors>) -> Self {
        Self {
            inner: RwLock::new(Inner {
                extractors,
                types: HashMap::new(),
                connections: HashMap::new(),
                subscriptions: 0,
            }),
        }
    }

    /// Replace the whole subscription set of `conn` (an empty set removes the connection).
    pub fn set(&self, conn: ConnId, subscriptions: &[Subscription]) {
        if subscriptions.is_empty() {
            self.remove(conn);
            return;
        }
        let extractors = self.read().extractors.clone();
        let mut cells = compile(&extractors, subscriptions.iter());
        let mut inner = self.write();
        if !Arc::ptr_eq(&inner.extractors, &extractors) {
            // The configuration changed meanwhile: compile against the one now in effect.
            cells = compile(&inner.extractors, subscriptions.iter());
        }
        inner.remove(conn);
        let Inner {
            extractors,
            types,
            connections,
            subscriptions: count,
        } = &mut *inner;
        add_cells(types, extractors, conn, &cells);
        *count += subscriptions.len();
        connections.insert(
            conn,
            Connection {
                subscriptions: subscriptions.into(),
                cells,
            },
        );
    }

    /// Forget `conn` and all its subscriptions. Unknown ids are ignored.
    pub fn remove(&self, conn: ConnId) {
        self.write().remove(conn);
    }

    /// Append to `out` every connection with a subscription matching `event`, each exactly once
    /// (in no particular order). `out` is not cleared.
    pub fn matching(&self, event: &CloudEvent, out: &mut Vec<ConnId>) {
        let inner = self.read();
        let Some(index) = inner.types.get(event.event_type.as_str()) else {
            return;
        };
        let mut values = EventValues::new(&index.fields, &event.value);
        let mut key = Vec::new();
        let mut seen: Option<HashSet<ConnId>> = None;
        for shape in &index.shapes {
            if !values.key(&shape.fields, &mut key) {
                continue;
            }
            let Some(members) = shape.cells.get(key.as_slice()) else {
                continue;
            };
            out.reserve(members.list.len());
            for member in &members.list {
                if !member.in_several_shapes
                    || seen.get_or_insert_with(HashSet::new).insert(member.conn)
                {
                    out.push(member.conn);
                }
            }
        }
    }

    /// Whether `event` matches a subscription of `conn` (one connection's check, for its replay).
    pub fn matches(&self, conn: ConnId, event: &CloudEvent) -> bool {
        let inner = self.read();
        let (Some(connection), Some(index)) = (
            inner.connections.get(&conn),
            inner.types.get(event.event_type.as_str()),
        ) else {
            return false;
        };
        let mut values = EventValues::new(&index.fields, &event.value);
        let mut key = Vec::new();
        connection
            .cells
            .iter()
            .filter(|cell| *cell.event_type == *event.event_type)
            .any(|cell| values.key(&cell.shape, &mut key) && *key == *cell.key)
    }

    /// Switch to new extractors (configuration reload) and re-key the stored subscriptions of
    /// every event type whose fields changed; other types are untouched.
    pub fn set_extractors(&self, extractors: Arc<Extractors>) {
        let mut inner = self.write();
        let Inner {
            extractors: current,
            types,
            connections,
            ..
        } = &mut *inner;
        let changed: HashSet<String> = current
            .event_types()
            .chain(extractors.event_types())
            .filter(|t| current.fields(t) != extractors.fields(t))
            .map(str::to_owned)
            .collect();
        *current = extractors;
        if changed.is_empty() {
            return;
        }
        for event_type in &changed {
            types.remove(event_type.as_str());
        }
        for (conn, connection) in connections.iter_mut() {
            connection
                .cells
                .retain(|c| !changed.contains(&*c.event_type));
            let cells = compile(
                current,
                connection
                    .subscriptions
                    .iter()
                    .filter(|s| changed.contains(&s.event_type)),
            );
            add_cells(types, current, *conn, &cells);
            connection.cells.extend(cells);
        }
    }

    /// The extractors in effect.
    pub fn extractors(&self) -> Arc<Extractors> {
        self.read().extractors.clone()
    }

    /// The number of connections with at least one subscription.
    pub fn len(&self) -> usize {
        self.read().connections.len()
    }

    /// Whether no connection has a subscription.
    pub fn is_empty(&self) -> bool {
        self.read().connections.is_empty()
    }

    /// The number of subscriptions stored, over all connections (RIG's `rig_subscriptions_total`).
    pub fn subscription_count(&self) -> usize {
        self.read().subscriptions
    }

    // Nothing under these locks panics on any input. Should a bug panic anyway, serving with the
    // tables as they are beats panicking in every later call, so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn remove(&mut self, conn: ConnId) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        self.subscriptions = self
            .subscriptions
            .saturating_sub(connection.subscriptions.len());
        for cell in &connection.cells {
            let Some(index) = self.types.get_mut(&*cell.event_type) else {
                continue;
            };
            if let Some(position) = index.shapes.iter().position(|s| s.fields == cell.shape)
                && let Some(shape) = index.shapes.get_mut(position)
            {
                if let Some(members) = shape.cells.get_mut(&*cell.key) {
                    members.remove(conn);
                    if members.list.is_empty() {
                        shape.cells.remove(&*cell.key);
                    }
                }
                if shape.cells.is_empty() {
                    index.shapes.swap_remove(position);
                }
            }
            if index.shapes.is_empty() {
                self.types.remove(&*cell.event_type);
            }
        }
    }
}

/// The cells of `subscriptions`, sorted and deduplicated.
fn compile<'a>(
    extractors: &Extractors,
    subscriptions: impl Iterator<Item = &'a Subscription>,
) -> Vec<Cell> {
    let everything = [Constraints::new()];
    let mut cells = Vec::new();
    let mut key = Vec::new();
    for subscription in subscriptions {
        let fields = extractors.fields(&subscription.event_type);
        let clauses = if subscription.one_of.is_empty() {
            &everything[..]
        } else {
            &subscription.one_of[..]
        };
        'clauses: for clause in clauses {
            key.clear();
            let mut shape = Vec::new();
            for (i, field) in fields.iter().enumerate() {
                match clause.get(&field.field) {
                    None | Some(Value::Null) => {}
                    Some(value) => {
                        if !encode_scalar(value, &mut key) {
                            // An array or object never equals an extracted (scalar) value.
                            continue 'clauses;
                        }
                        shape.push(i);
                    }
                }
            }
            cells.push(Cell {
                event_type: subscription.event_type.as_str().into(),
                shape: shape.into(),
                key: key.as_slice().into(),
            });
        }
    }
    cells.sort_unstable();
    cells.dedup();
    cells
}

/// Register `conn` in `cells` (sorted, deduplicated, and not yet registered).
fn add_cells(
    types: &mut HashMap<Box<str>, TypeIndex>,
    extractors: &Extractors,
    conn: ConnId,
    cells: &[Cell],
) {
    for group in cells.chunk_by(|a, b| a.event_type == b.event_type) {
        let Some(first) = group.first() else { continue };
        // Sorted, so distinct shapes are adjacent; one shape means no duplicate matches.
        let in_several_shapes = group.windows(2).any(|w| w[0].shape != w[1].shape);
        let index = types
            .entry(first.event_type.clone())
            .or_insert_with(|| TypeIndex {
                fields: extractors
                    .fields_shared(&first.event_type)
                    .unwrap_or_else(|| Arc::from([])),
                shapes: Vec::new(),
            });
        for cell in group {
            let position = match index.shapes.iter().position(|s| s.fields == cell.shape) {
                Some(position) => position,
                None => {
                    index.shapes.push(Shape {
                        fields: cell.shape.clone(),
                        cells: HashMap::new(),
                    });
                    index.shapes.len() - 1
                }
            };
            if let Some(shape) = index.shapes.get_mut(position) {
                shape
                    .cells
                    .entry(cell.key.clone())
                    .or_default()
                    .insert(conn, in_several_shapes);
            }
        }
    }
}

/// Append the canonical encoding of a scalar to `out`; `false` (and nothing appended) for null,
/// arrays and objects. Encodings are prefix-free, so concatenations are unambiguous.
fn encode_scalar(value: &Value, out: &mut Vec<u8>) -> bool {
    match value {
        Value::String(s) => {
            out.push(b's');
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Number(n) => encode_number(n, out),
        Value::Null | Value::Array(_) | Value::Object(_) => return false,
    }
    true
}

/// Integers (including integral floats such as `30.0`) as 64-bit integers, other numbers as their
/// IEEE bits.
fn encode_number(n: &Number, out: &mut Vec<u8>) {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if let Some(i) = n.as_i64() {
        out.push(b'i');
        out.extend_from_slice(&i.to_le_bytes());
    } else if let Some(u) = n.as_u64() {
        out.push(b'u');
        out.extend_from_slice(&u.to_le_bytes());
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) {
            out.push(b'i');
            out.extend_from_slice(&(f as i64).to_le_bytes());
        } else if f.fract() == 0.0 && (TWO_63..2.0 * TWO_63).contains(&f) {
            out.push(b'u');
            out.extend_from_slice(&(f as u64).to_le_bytes());
        } else {
            out.push(b'f');
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }
}

/// The connections in one cell. A plain list (iterated on every match); past a few dozen members
/// a position map keeps removal O(1).
#[derive(Debug, Default)]
struct Members {
    list: Vec<Member>,
    positions: Option<HashMap<ConnId, usize>>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    conn: ConnId,
    /// The connection has cells in more than one shape of this type, so it may match twice.
    in_several_shapes: bool,
}

impl Members {
    const INDEXED_FROM: usize = 32;

    fn insert(&mut self, conn: ConnId, in_several_shapes: bool) {
        self.list.push(Member {
            conn,
            in_several_shapes,
        });
        let position = self.list.len() - 1;
        match &mut self.positions {
            Some(positions) => {
                positions.insert(conn, position);
            }
            None if self.list.len() > Self::INDEXED_FROM => {
                self.positions = Some(
                    self.list
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (m.conn, i))
                        .collect(),
                );
            }
            None => {}
        }
    }

    fn remove(&mut self, conn: ConnId) {
        let position = match &mut self.positions {
            Some(positions) => positions.remove(&conn),
            None => self.list.iter().position(|m| m.conn == conn),
        };
        let Some(position) = position.filter(|p| *p < self.list.len()) else {
            return;
        };
        self.list.swap_remove(position);
        if let (Some(positions), Some(moved)) = (&mut self.positions, self.list.get(position)) {
            positions.insert(moved.conn, position);
        }
        if self.list.len() < Self::INDEXED_FROM / 2 {
            self.positions = None;
        }
    }
}

/// An event's extracted field values, resolved lazily, each at most once.
struct EventValues<'a> {
    fields: &'a [FieldExtractor],
    event: &'a Value,
    slots: Vec<Slot>,
    encoded: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Pending,
    Null,
    At(usize, usize),
}

impl<'a> EventValues<'a> {
    fn new(fields: &'a [FieldExtractor], event: &'a Value) -> Self {
        Self {
            fields,
            event,
            slots: vec![Slot::Pending; fields.len()],
            encoded: Vec::new(),
        }
    }

    /// Build the key of `shape` into `key`; `false` if a field has no scalar value.
    fn key(&mut self, shape: &[usize], key: &mut Vec<u8>) -> bool {
        key.clear();
        for &field in shape {
            let slot = match self.slots.get(field) {
                Some(Slot::Pending) => self.extract(field),
                Some(slot) => *slot,
                None => Slot::Null,
            };
            let Slot::At(start, end) = slot else {
                return false;
            };
            key.extend_from_slice(self.encoded.get(start..end).unwrap_or_default());
        }
        true
    }

    fn extract(&mut self, field: usize) -> Slot {
        let start = self.encoded.len();
        let slot = match self
            .fields
            .get(field)
            .and_then(|f| f.event_pointer.resolve(self.event))
        {
            Some(value) if encode_scalar(value, &mut self.encoded) => {
                Slot::At(start, self.encoded.len())
            }
            _ => Slot::Null,
        };
        if let Some(s) = self.slots.get_mut(field) {
            *s = slot;
        }
        slot
    }
}

#[cfg(test)]
mod tests;
