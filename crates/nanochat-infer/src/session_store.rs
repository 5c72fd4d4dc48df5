//! The store behind `/v1/sessions` (no upstream counterpart: upstream's
//! `scripts/chat_web.py` is stateless, the client resends the whole conversation): the
//! sessions, bounded in number (least recently used evicted) and idle age, and each one's
//! inference state.
//!
//! Design: one mutex over the [`SessionStore`] and the states. A session answers one message
//! at a time: [`Sessions::begin`] checks and marks it busy under that lock and returns a
//! [`Busy`] guard whose `Drop` releases it, so no error path (nor a client that leaves
//! mid-answer, which drops the handler's future) can leave a session stuck busy.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use nanochat_core::conversation::{Message, SessionStore};
use nanochat_core::lifecycle::InferenceState;

use crate::api::ApiError;

/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 256;
/// Idle sessions are dropped after this long.
pub const MAX_IDLE_SECS: i64 = 3600;

/// The store and each session's lifecycle state.
pub struct Sessions {
    inner: Mutex<Inner>,
}

/// What the lock guards.
pub(crate) struct Inner {
    pub(crate) store: SessionStore,
    pub(crate) states: HashMap<String, InferenceState>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(MAX_SESSIONS, chrono::Duration::seconds(MAX_IDLE_SECS))
    }
}

impl Sessions {
    /// A store bounded by `max_sessions` and `max_idle`.
    pub fn new(max_sessions: usize, max_idle: chrono::Duration) -> Self {
        let (store, states) = (SessionStore::new(max_sessions, max_idle), HashMap::new());
        Self {
            inner: Mutex::new(Inner { store, states }),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().store.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store, locked (a panic elsewhere while holding it leaves no half-written state: every
    /// update is one call on the store or the map).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks session `id` busy (`processing`) and returns its history, its context window and
    /// the guard that releases it; 404 if there is no such session, 409 if it is busy.
    pub(crate) fn begin(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Message>, usize, Busy<'_>), ApiError> {
        let mut g = self.lock();
        g.store.evict_idle(now);
        let s = g.store.get(id).ok_or_else(|| not_found(id))?;
        let (history, window) = (s.messages.clone(), s.context_window);
        let st = g
            .states
            .entry(id.to_string())
            .or_insert(InferenceState::Ready);
        if matches!(st, InferenceState::Processing | InferenceState::Streaming) {
            let message = "this session is answering another message";
            return Err(ApiError::new(StatusCode::CONFLICT, message, Some("id")));
        }
        *st = InferenceState::Processing;
        let end = InferenceState::Ready;
        let id = id.to_string();
        Ok((
            history,
            window,
            Busy {
                sessions: self,
                id,
                end,
            },
        ))
    }
}

/// The 404 for a session that is not (or no longer) there.
pub(crate) fn not_found(id: &str) -> ApiError {
    let message = format!("no session {id:?} (expired or deleted?)");
    ApiError::new(StatusCode::NOT_FOUND, message, Some("id"))
}

/// A session answering a message. Its state on drop is `ready` if generation never started,
/// `error` if it stopped midway (a failure, or the client left) and `complete` after
/// [`Busy::complete`]. Drop it only with the store unlocked (it takes the lock).
pub(crate) struct Busy<'a> {
    sessions: &'a Sessions,
    id: String,
    end: InferenceState,
}

impl Busy<'_> {
    /// Generation started: the session is `streaming` until this guard drops.
    pub(crate) fn streaming(&mut self) {
        if let Some(s) = self.sessions.lock().states.get_mut(&self.id) {
            *s = InferenceState::Streaming;
        }
        self.end = InferenceState::Error;
    }

    /// The answer is stored: the session turns `complete` when this guard drops.
    pub(crate) fn complete(&mut self) {
        self.end = InferenceState::Complete;
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sessions.lock().states.get_mut(&self.id) {
            *s = self.end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanochat_core::ConversationSession;

    #[test]
    fn busy_guard_releases_the_session_on_every_path() {
        let sessions = Sessions::default();
        let now = Utc::now();
        let s = ConversationSession::new("s", 64, 64, now).unwrap();
        sessions.lock().store.insert(s).unwrap();
        let state = || sessions.lock().states.get("s").copied();
        let (_, window, mut busy) = sessions.begin("s", now).unwrap();
        assert_eq!((window, state()), (64, Some(InferenceState::Processing)));
        let status = |id| sessions.begin(id, now).err().map(|e| e.status);
        assert_eq!(status("s"), Some(StatusCode::CONFLICT));
        drop(busy);
        assert_eq!(state(), Some(InferenceState::Ready));
        busy = sessions.begin("s", now).unwrap().2;
        busy.streaming();
        assert_eq!(state(), Some(InferenceState::Streaming));
        drop(busy);
        assert_eq!(state(), Some(InferenceState::Error));
        busy = sessions.begin("s", now).unwrap().2;
        busy.streaming();
        busy.complete();
        drop(busy);
        assert_eq!(state(), Some(InferenceState::Complete));
        assert_eq!(status("t"), Some(StatusCode::NOT_FOUND));
    }
}
