//! The optional API key of `nanochat serve --api-key` (no upstream counterpart: upstream's
//! `chat_web.py` has none; llama.cpp's server has `--api-key`): every route but `GET /health`
//! and the chat page itself wants `Authorization: Bearer <key>`, as the OpenAI clients send
//! it; without it, or with another key, the answer is a 401 in OpenAI's error shape.
//!
//! Design: one axum middleware over the whole router, reading the key from [`AppState`] (set
//! once, before or after the server starts listening); keys are compared in time independent
//! of where they differ.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::jobs::AppState;

/// Routes anyone may call: the liveness probe and the page (which asks for the key).
const OPEN: [&str; 2] = ["/health", "/"];

/// Lets a request through when no key is set, when it is for an open route, or when it
/// carries the key.
pub(crate) async fn require_key(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = state.api_key() else {
        return next.run(req).await;
    };
    if OPEN.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.trim().as_bytes(), key.as_bytes()) => next.run(req).await,
        given => {
            let message = match given {
                None => "this server wants an API key: send `Authorization: Bearer <key>`",
                Some(_) => "incorrect API key",
            };
            let mut res = ApiError::new(StatusCode::UNAUTHORIZED, message, None).into_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            res
        }
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(same(b"sk-abc", b"sk-abc"));
        assert!(!same(b"sk-abc", b"sk-abd"));
        assert!(!same(b"sk-ab", b"sk-abc"));
        assert!(!same(b"", b"x"));
    }
}
