//! The store behind `/v1/sessions` (no upstream counterpart: upstream's
//! `scripts/chat_web.py` is stateless, the client resends the whole conversation): the
//! sessions, bounded in number (least recently used evicted) and idle age. Each session
//! carries its own inference lifecycle ([`ConversationSession`]'s methods move it).
//!
//! Design: one mutex over the [`SessionStore`]. A session answers one message at a time:
//! [`Sessions::begin`] moves it to Processing under that lock (refused, 409, while it answers
//! another) and returns a [`Busy`] guard whose `Drop` ends the message (Complete after
//! [`Busy::complete`], Error otherwise), so no error path (nor a client that leaves
//! mid-answer, which drops the handler's future) can leave a session stuck busy.

use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use nanochat_core::conversation::Message;
use nanochat_core::{ConversationSession, GenerationParams, SessionStore};

use crate::api::ApiError;

/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 256;
/// Idle sessions are dropped after this long.
pub const MAX_IDLE_SECS: i64 = 3600;

/// The sessions, behind one lock.
pub struct Sessions {
    inner: Mutex<SessionStore>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(MAX_SESSIONS, chrono::Duration::seconds(MAX_IDLE_SECS))
    }
}

impl Sessions {
    /// A store bounded by `max_sessions` and `max_idle`.
    pub fn new(max_sessions: usize, max_idle: chrono::Duration) -> Self {
        Self {
            inner: Mutex::new(SessionStore::new(max_sessions, max_idle)),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store, locked (a panic elsewhere while holding it leaves no half-written state: every
    /// update is one call on the store or a session).
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionStore> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts answering a message in session `id` (→ Processing) and returns what the answer
    /// needs: the history, the context window, the session's sampling defaults, and the guard
    /// that ends the message; 404 if there is no such session, 409 if it is busy.
    pub(crate) fn begin(&self, id: &str, now: DateTime<Utc>) -> Result<Begun<'_>, ApiError> {
        let mut g = self.lock();
        g.evict_idle(now);
        let s = g.get_mut(id).ok_or_else(|| not_found(id))?;
        s.begin_message(now).map_err(|e| {
            let message = format!("this session is answering another message ({e})");
            ApiError::new(StatusCode::CONFLICT, message, Some("id"))
        })?;
        Ok(Begun {
            history: s.messages.clone(),
            window: s.context_window,
            generation: s.generation.clone(),
            busy: Busy {
                sessions: self,
                id: id.to_string(),
                ok: false,
            },
        })
    }
}

/// What [`Sessions::begin`] hands out.
pub(crate) struct Begun<'a> {
    pub(crate) history: Vec<Message>,
    pub(crate) window: usize,
    pub(crate) generation: GenerationParams,
    pub(crate) busy: Busy<'a>,
}

/// The 404 for a session that is not (or no longer) there.
pub(crate) fn not_found(id: &str) -> ApiError {
    let message = format!("no session {id:?} (expired or deleted?)");
    ApiError::new(StatusCode::NOT_FOUND, message, Some("id"))
}

/// A session answering a message. On drop the message ends: `complete` after
/// [`Busy::complete`], `error` otherwise (a failure, or the client left). Drop it only with the
/// store unlocked (it takes the lock).
pub(crate) struct Busy<'a> {
    sessions: &'a Sessions,
    id: String,
    ok: bool,
}

impl Busy<'_> {
    /// Generation started: Processing → Streaming.
    pub(crate) fn streaming(&mut self) {
        self.with_session(|s| s.start_streaming(Utc::now()));
    }

    /// The answer is stored: the session turns `complete` when this guard drops.
    pub(crate) fn complete(&mut self) {
        self.ok = true;
    }

    fn with_session(
        &self,
        step: impl FnOnce(&mut ConversationSession) -> Result<(), nanochat_core::LifecycleError>,
    ) {
        // The session may have been deleted or evicted meanwhile: nothing left to move.
        if let Some(s) = self.sessions.lock().get_mut(&self.id)
            && let Err(e) = step(s)
        {
            tracing::warn!(session = %self.id, "{e}");
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let ok = self.ok;
        self.with_session(|s| s.end_message(ok, Utc::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanochat_core::lifecycle::InferenceState;

    #[test]
    fn busy_guard_ends_the_message_on_every_path() {
        let sessions = Sessions::default();
        let now = Utc::now();
        let mut s = ConversationSession::new("s", 64, 64, now).unwrap();
        s.attach_model(now).unwrap();
        sessions.lock().insert(s).unwrap();
        let state = || sessions.lock().get("s").map(|s| s.state());
        let begun = sessions.begin("s", now).unwrap();
        assert_eq!(
            (begun.window, state()),
            (64, Some(InferenceState::Processing))
        );
        let status = |id| sessions.begin(id, now).err().map(|e| e.status);
        assert_eq!(status("s"), Some(StatusCode::CONFLICT));
        drop(begun);
        assert_eq!(
            state(),
            Some(InferenceState::Error),
            "failed before streaming"
        );
        let mut busy = sessions.begin("s", now).unwrap().busy;
        busy.streaming();
        assert_eq!(state(), Some(InferenceState::Streaming));
        drop(busy);
        assert_eq!(state(), Some(InferenceState::Error), "stopped midway");
        busy = sessions.begin("s", now).unwrap().busy;
        busy.streaming();
        busy.complete();
        drop(busy);
        assert_eq!(state(), Some(InferenceState::Complete));
        assert_eq!(status("t"), Some(StatusCode::NOT_FOUND));
    }
}
