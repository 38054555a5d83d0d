//! The assistant turns this service generated recently, found again when a client replays
//! them: Chat Completions is stateless, so each request resends the conversation, and an
//! assistant message comes back as text (`content`, `tool_calls`) or as a reference to its
//! audio (`audio.id`). Replaying the ids that were generated, instead of tokenizing the text
//! again, shows the model exactly what it said (speech codes and all) and keeps the rendered
//! history equal to what the KV cache holds, so the next call prefills only what is new.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use voxloop_core::session::AssistantTurn;

/// How a client names an assistant message it replays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TurnKey {
    /// `message.audio.id` of a spoken answer.
    Audio(String),
    /// The message's text content and its calls (id, name, arguments text), as answered.
    Text { content: String, calls: Vec<(String, String, String)> },
}

/// A bounded map from [`TurnKey`] to the generated turn; the oldest entries go first.
#[derive(Debug)]
pub struct TurnMemory {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    turns: HashMap<TurnKey, AssistantTurn>,
    order: VecDeque<TurnKey>,
}

impl TurnMemory {
    /// Keeps at most `capacity` turns (each key counts once).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::new(Entries::default()) }
    }

    /// Remembers `turn` under each of `keys`.
    pub fn remember(&self, keys: Vec<TurnKey>, turn: &AssistantTurn) {
        let mut entries = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            if entries.turns.insert(key.clone(), turn.clone()).is_none() {
                entries.order.push_back(key);
            }
        }
        while entries.order.len() > self.capacity {
            if let Some(old) = entries.order.pop_front() {
                entries.turns.remove(&old);
            }
        }
    }

    /// The turn remembered under `key`.
    pub fn recall(&self, key: &TurnKey) -> Option<AssistantTurn> {
        let entries = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.turns.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(id: i64) -> AssistantTurn {
        AssistantTurn {
            speech: false,
            ids: vec![id],
            text: String::new(),
            calls: Vec::new(),
            reply_id: None,
        }
    }

    #[test]
    fn recalls_by_any_key_and_forgets_the_oldest_past_capacity() {
        let memory = TurnMemory::new(2);
        let text = |s: &str| TurnKey::Text { content: s.into(), calls: Vec::new() };
        memory.remember(vec![TurnKey::Audio("audio_1".into()), text("one")], &turn(1));
        assert_eq!(memory.recall(&text("one")), Some(turn(1)));
        assert_eq!(memory.recall(&TurnKey::Audio("audio_1".into())), Some(turn(1)));
        memory.remember(vec![text("two")], &turn(2));
        assert_eq!(memory.recall(&TurnKey::Audio("audio_1".into())), None, "oldest key evicted");
        assert_eq!(memory.recall(&text("one")), Some(turn(1)));
        assert_eq!(memory.recall(&text("two")), Some(turn(2)));
        assert_eq!(memory.recall(&text("three")), None);
    }
}
