//! A tracing subscriber for tests that keeps every span's name, parent (explicit, else the
//! innermost entered span) and fields, initial and recorded.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One span as the recorder saw it.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub id: u64,
    pub name: &'static str,
    pub parent: Option<u64>,
    pub fields: BTreeMap<String, String>,
}

/// One event: its span (explicit, else the innermost entered one) and fields (`message`
/// included).
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub parent: Option<u64>,
    pub fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    spans: Vec<SpanRecord>,
    events: Vec<EventRecord>,
    stack: Vec<u64>,
}

/// A subscriber that keeps every span's name, parent and fields (initial and recorded).
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<State>>);

impl Recorder {
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.0.lock().unwrap().spans.clone()
    }

    pub fn named(&self, name: &str) -> Vec<SpanRecord> {
        self.spans().into_iter().filter(|span| span.name == name).collect()
    }

    /// The events whose `message` is `message`.
    pub fn events(&self, message: &str) -> Vec<EventRecord> {
        let state = self.0.lock().unwrap();
        let named = |e: &&EventRecord| e.fields.get("message").is_some_and(|m| m == message);
        state.events.iter().filter(named).cloned().collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut state = self.0.lock().unwrap();
        let id = state.spans.len() as u64 + 1;
        let parent = if attrs.is_root() {
            None
        } else if let Some(parent) = attrs.parent() {
            Some(parent.into_u64())
        } else {
            state.stack.last().copied()
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        state.spans.push(SpanRecord { id, name: attrs.metadata().name(), parent, fields });
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut state = self.0.lock().unwrap();
        let index = usize::try_from(span.into_u64() - 1).unwrap();
        values.record(&mut Fields(&mut state.spans[index].fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut state = self.0.lock().unwrap();
        let parent = if event.is_root() {
            None
        } else if let Some(parent) = event.parent() {
            Some(parent.into_u64())
        } else {
            state.stack.last().copied()
        };
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        state.events.push(EventRecord { parent, fields });
    }

    fn enter(&self, span: &Id) {
        self.0.lock().unwrap().stack.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut state = self.0.lock().unwrap();
        if let Some(position) = state.stack.iter().rposition(|&id| id == span.into_u64()) {
            state.stack.remove(position);
        }
    }
}
