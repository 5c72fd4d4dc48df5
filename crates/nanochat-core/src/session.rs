//! Live chat sessions (no upstream counterpart: upstream's `scripts/chat_web.py` is stateless)
//! and the bounded store that keeps them: a [`ConversationSession`] holds its history, its
//! context budget, the [`GenerationParams`] its messages default to, and where it stands in the
//! inference lifecycle.
//!
//! Design: the lifecycle is a private field moved only by the session's own methods, each
//! doing one step of answering a message through [`Lifecycle::advance`]:
//!
//! | method | transition |
//! |---|---|
//! | [`ConversationSession::new`] | → Created |
//! | [`ConversationSession::attach_model`] | Created → ModelLoaded → Ready |
//! | [`ConversationSession::begin_message`] | (Complete \| Error →) Ready → Processing |
//! | [`ConversationSession::start_streaming`] | Processing → Streaming |
//! | [`ConversationSession::end_message`] | Streaming → Complete, or Processing \| Streaming → Error |
//!
//! so a session answering a message cannot begin another (Processing → Processing is not a
//! transition), and nothing outside this file can set a state.
//!
//! Token accounting: a message's `token_count` is the tokenization of its content alone; the
//! chat template adds [`TEMPLATE_TOKENS_PER_MESSAGE`] around each message, which
//! [`ConversationSession::tokens_used`] counts on top.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::conversation::{Message, validate_messages};
use crate::generation::GenerationParams;
use crate::lifecycle::{InferenceState, Lifecycle, LifecycleError};
use crate::validation::{
    Rule, VResult, Validate, ValidationError, check_at_most, check_not_blank, check_positive,
};

/// Tokens the chat template puts around each message (`<|user_start|>` … `<|user_end|>`, or
/// the assistant's pair).
pub const TEMPLATE_TOKENS_PER_MESSAGE: usize = 2;

/// A live chat session: its history, its context budget, its sampling defaults and its
/// inference lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSession {
    /// Unique id within its store.
    pub id: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Tokens of context this session may use.
    pub context_window: usize,
    /// The model's maximum sequence length.
    pub max_sequence_len: usize,
    /// What its messages are sampled with unless a message says otherwise.
    pub generation: GenerationParams,
    /// The history.
    pub messages: Vec<Message>,
    /// Where it stands in the inference lifecycle, with every state it entered.
    lifecycle: Lifecycle<InferenceState>,
}

impl ConversationSession {
    /// A new, empty session (state Created) sampling with [`GenerationParams::default`];
    /// checks the context budget.
    pub fn new(
        id: impl Into<String>,
        context_window: usize,
        max_sequence_len: usize,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        Self::with_generation(
            id,
            context_window,
            max_sequence_len,
            GenerationParams::default(),
            now,
        )
    }

    /// A new, empty session whose messages default to `generation`; checks the context
    /// budget and the parameters (one sample per message).
    pub fn with_generation(
        id: impl Into<String>,
        context_window: usize,
        max_sequence_len: usize,
        generation: GenerationParams,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        let s = Self {
            id: id.into(),
            created_at: now,
            updated_at: now,
            context_window,
            max_sequence_len,
            generation,
            messages: Vec::new(),
            lifecycle: Lifecycle::new(now),
        };
        s.validate()?;
        Ok(s)
    }

    /// The inference lifecycle: current state and history.
    pub fn lifecycle(&self) -> &Lifecycle<InferenceState> {
        &self.lifecycle
    }

    /// The current inference state.
    pub fn state(&self) -> InferenceState {
        self.lifecycle.state()
    }

    /// The session is bound to a loaded model and waits for messages: Created → ModelLoaded →
    /// Ready.
    pub fn attach_model(&mut self, now: DateTime<Utc>) -> Result<(), LifecycleError> {
        self.lifecycle.advance(InferenceState::ModelLoaded, now)?;
        self.lifecycle.advance(InferenceState::Ready, now)
    }

    /// A message starts being answered: → Processing (through Ready after a finished
    /// message). Refused while another message is being answered or before a model is
    /// attached; the state is then unchanged.
    pub fn begin_message(&mut self, now: DateTime<Utc>) -> Result<(), LifecycleError> {
        let state = self.lifecycle.state();
        if matches!(state, InferenceState::Complete | InferenceState::Error) {
            let mut next = self.lifecycle.clone();
            next.advance(InferenceState::Ready, now)?;
            next.advance(InferenceState::Processing, now)?;
            self.lifecycle = next;
            return Ok(());
        }
        self.lifecycle.advance(InferenceState::Processing, now)
    }

    /// The first token of the reply was generated: Processing → Streaming.
    pub fn start_streaming(&mut self, now: DateTime<Utc>) -> Result<(), LifecycleError> {
        self.lifecycle.advance(InferenceState::Streaming, now)
    }

    /// The message is answered (`ok`: Streaming → Complete) or failed (→ Error).
    pub fn end_message(&mut self, ok: bool, now: DateTime<Utc>) -> Result<(), LifecycleError> {
        let next = if ok {
            InferenceState::Complete
        } else {
            InferenceState::Error
        };
        self.lifecycle.advance(next, now)
    }

    /// Appends a message (stamped `now` if it has no timestamp); the session is unchanged when
    /// the message would break a rule.
    pub fn push(&mut self, mut message: Message, now: DateTime<Utc>) -> VResult {
        message.timestamp.get_or_insert(now);
        self.messages.push(message);
        if let Err(e) = validate_messages("ConversationSession", &self.messages) {
            self.messages.pop();
            return Err(e);
        }
        self.updated_at = self.updated_at.max(now);
        Ok(())
    }

    /// Tokens the history takes in the chat template: each message whose count is known,
    /// with its [`TEMPLATE_TOKENS_PER_MESSAGE`].
    pub fn tokens_used(&self) -> usize {
        self.messages
            .iter()
            .filter_map(|m| m.token_count)
            .map(|n| n + TEMPLATE_TOKENS_PER_MESSAGE)
            .sum()
    }

    /// Tokens of context still free.
    pub fn remaining_context(&self) -> usize {
        self.context_window.saturating_sub(self.tokens_used())
    }
}

impl Validate for ConversationSession {
    fn validate(&self) -> VResult {
        check_not_blank("ConversationSession", "id", &self.id)?;
        check_positive(
            "ConversationSession",
            "context_window",
            self.context_window as u64,
        )?;
        check_at_most(
            "ConversationSession",
            "context_window",
            self.context_window as u64,
            "max_sequence_len",
            self.max_sequence_len as u64,
        )?;
        if self.updated_at < self.created_at {
            return Err(ValidationError::new(
                "ConversationSession",
                "updated_at",
                self.updated_at.to_rfc3339(),
                Rule::Chronological {
                    previous: self.created_at.to_rfc3339(),
                },
            ));
        }
        self.generation
            .validate()
            .map_err(|e| e.within("generation"))?;
        if self.generation.num_samples != 1 {
            return Err(ValidationError::new(
                "ConversationSession",
                "generation.num_samples",
                self.generation.num_samples,
                Rule::Equals {
                    what: "one answer per message".into(),
                    expected: "1".into(),
                },
            ));
        }
        validate_messages("ConversationSession", &self.messages)
    }
}

/// Sessions by id, bounded in number and idle age.
#[derive(Debug, Clone)]
pub struct SessionStore {
    sessions: HashMap<String, ConversationSession>,
    max_sessions: usize,
    max_idle: Duration,
}

impl SessionStore {
    /// A store keeping at most `max_sessions`, dropping sessions idle longer than `max_idle`.
    pub fn new(max_sessions: usize, max_idle: Duration) -> Self {
        Self {
            sessions: HashMap::new(),
            max_sessions: max_sessions.max(1),
            max_idle,
        }
    }

    /// Adds a session; its id must not be in the store. When full, the least recently
    /// updated session is evicted first. Returns the evicted session's id, if any.
    pub fn insert(
        &mut self,
        session: ConversationSession,
    ) -> Result<Option<String>, ValidationError> {
        session.validate()?;
        if self.sessions.contains_key(&session.id) {
            return Err(ValidationError::new(
                "ConversationSession",
                "id",
                &session.id,
                Rule::Unique {
                    within: "session store",
                },
            ));
        }
        let mut evicted = None;
        if self.sessions.len() >= self.max_sessions
            && let Some(oldest) = self
                .sessions
                .values()
                .min_by_key(|s| (s.updated_at, s.id.clone()))
                .map(|s| s.id.clone())
        {
            self.sessions.remove(&oldest);
            evicted = Some(oldest);
        }
        self.sessions.insert(session.id.clone(), session);
        Ok(evicted)
    }

    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<&ConversationSession> {
        self.sessions.get(id)
    }

    /// The session with this id, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut ConversationSession> {
        self.sessions.get_mut(id)
    }

    /// Removes a session.
    pub fn remove(&mut self, id: &str) -> Option<ConversationSession> {
        self.sessions.remove(id)
    }

    /// Drops sessions idle for longer than the store's limit; returns how many.
    pub fn evict_idle(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.sessions.len();
        let max_idle = self.max_idle;
        self.sessions.retain(|_, s| now - s.updated_at <= max_idle);
        before - self.sessions.len()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::MessageRole;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn store_evicts_least_recently_updated_when_full() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut store = SessionStore::new(2, Duration::hours(1));
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let s =
                ConversationSession::new(*id, 100, 100, t0 + Duration::seconds(i as i64)).unwrap();
            let evicted = store.insert(s).unwrap();
            assert_eq!(evicted.as_deref(), if i == 2 { Some("a") } else { None });
        }
        assert_eq!(store.len(), 2);
        assert_eq!(store.evict_idle(t0 + Duration::hours(2)), 2);
    }

    #[test]
    fn a_session_answers_one_message_at_a_time_through_its_lifecycle() {
        use InferenceState::*;
        let mut s = ConversationSession::new("s", 64, 64, t(0)).unwrap();
        assert_eq!(s.state(), Created);
        assert!(s.begin_message(t(1)).is_err(), "no model attached yet");
        s.attach_model(t(1)).unwrap();
        s.begin_message(t(2)).unwrap();
        assert!(s.begin_message(t(2)).is_err(), "already answering");
        assert_eq!(s.state(), Processing, "a refused step changes nothing");
        s.start_streaming(t(3)).unwrap();
        s.end_message(true, t(4)).unwrap();
        s.begin_message(t(5)).unwrap();
        s.end_message(false, t(6)).unwrap();
        s.begin_message(t(7)).unwrap();
        let states: Vec<_> = s.lifecycle().history().iter().map(|(s, _)| *s).collect();
        assert_eq!(
            states,
            [
                Created,
                ModelLoaded,
                Ready,
                Processing,
                Streaming,
                Complete,
                Ready,
                Processing,
                Error,
                Ready,
                Processing
            ]
        );
        // Processing → Complete skips streaming: refused.
        assert!(s.end_message(true, t(8)).is_err());
    }

    #[test]
    fn tokens_used_counts_the_template_around_each_message() {
        let mut s = ConversationSession::new("s", 64, 64, t(0)).unwrap();
        let mut m = Message::new(MessageRole::User, "hi").at(t(1));
        m.token_count = Some(2);
        s.push(m, t(1)).unwrap();
        assert_eq!(s.tokens_used(), 2 + TEMPLATE_TOKENS_PER_MESSAGE);
        assert_eq!(s.remaining_context(), 60);
    }

    #[test]
    fn generation_defaults_are_validated_with_the_session() {
        let bad = GenerationParams {
            temperature: 3.0,
            ..GenerationParams::default()
        };
        let e = ConversationSession::with_generation("s", 64, 64, bad, t(0)).unwrap_err();
        assert_eq!(e.field, "generation.temperature");
        let two = GenerationParams {
            num_samples: 2,
            ..GenerationParams::default()
        };
        let e = ConversationSession::with_generation("s", 64, 64, two, t(0)).unwrap_err();
        assert_eq!(e.field, "generation.num_samples");
    }
}
