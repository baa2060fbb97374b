//! Console sessions: what a browser holds instead of the auditor token.
//!
//! Signing in trades a token for a random session id (256 bits from the thread-local CSPRNG)
//! that the browser keeps in an `HttpOnly; SameSite=Strict; Path=/` cookie: script cannot read
//! it and other sites cannot make the browser send it. The collector keeps, in memory, the
//! SHA-256 digest of each id with the token's name and role and an expiry; the id itself is
//! stored nowhere, and a restart signs everyone out. The number of sessions is bounded so that
//! sign-ins cannot grow memory without limit.
//!
//! Failed sign-ins are counted per client address ([`SignInLimiter`]): past
//! [`MAX_FAILED_SIGN_INS`] in a [`SIGN_IN_WINDOW`], an address is answered 429 with
//! `Retry-After`, whatever token it sends, until the window has passed, so that tokens cannot
//! be guessed at the speed of the network.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::meters::{Open, Openable};
use crate::tokens::Caller;

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "qtrail_session";

/// Most sessions held at once.
pub(crate) const MAX_SESSIONS: usize = 10_000;

/// Failed sign-ins an address may make in one [`SIGN_IN_WINDOW`]; the next is refused.
pub(crate) const MAX_FAILED_SIGN_INS: u32 = 10;

/// The window failed sign-ins are counted in, from an address's first failure in it.
pub(crate) const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);

/// Most client addresses whose failed sign-ins are counted at once: beyond it expired windows
/// are dropped, then any one, so that many addresses cannot grow memory without limit.
const MAX_COUNTED_ADDRESSES: usize = 10_000;

/// Counts failed sign-ins per client address.
#[derive(Debug, Default)]
pub(crate) struct SignInLimiter {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

impl SignInLimiter {
    /// Returns how long `address` must wait before it may try again at `now`; `None` when it
    /// may sign in.
    pub(crate) fn wait(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let failures = *self.by_address.lock().unwrap_or_else(PoisonError::into_inner).get(&address)?;
        let over = failures.since + SIGN_IN_WINDOW;
        (failures.count >= MAX_FAILED_SIGN_INS && over > now).then(|| over - now)
    }

    /// Counts a failed sign-in of `address` at `now`.
    pub(crate) fn failed(&self, address: IpAddr, now: Instant) {
        let mut by_address = self.by_address.lock().unwrap_or_else(PoisonError::into_inner);
        if by_address.len() >= MAX_COUNTED_ADDRESSES && !by_address.contains_key(&address) {
            by_address.retain(|_, failures| failures.since + SIGN_IN_WINDOW > now);
            if by_address.len() >= MAX_COUNTED_ADDRESSES {
                let any = by_address.keys().next().copied();
                if let Some(any) = any {
                    by_address.remove(&any);
                }
            }
        }
        let failures = by_address.entry(address).or_insert(Failures { since: now, count: 0 });
        if failures.since + SIGN_IN_WINDOW <= now {
            *failures = Failures { since: now, count: 0 };
        }
        failures.count += 1;
    }
}

/// The signed-in sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    ttl: Duration,
    max: usize,
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

#[derive(Debug)]
struct Session {
    caller: Caller,
    expires: Instant,
    /// Cancelled when the session ends, however it ends (sign-out, expiry, a full table), so
    /// that the live views it opened end with it.
    ended: CancellationToken,
    _end_on_drop: DropGuard,
    /// Counts the session in the console sessions gauge while it is held.
    _open: Open,
}

/// A session that exists; what the cookie identifies.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    /// The token's name and role.
    pub(crate) caller: Caller,
    /// Time left before the session ends.
    pub(crate) remaining: Duration,
    /// Cancelled when the session ends before `remaining` has passed (sign-out).
    pub(crate) ended: CancellationToken,
}

impl Sessions {
    /// Returns an empty set of sessions that last `ttl` and number at most `max`.
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self { ttl, max, by_digest: Mutex::new(HashMap::new()) }
    }

    /// Returns how long a new session lasts.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `caller` at `now` and returns its id, or `None` when the limit is
    /// reached even after dropping expired sessions.
    pub(crate) fn create(&self, caller: Caller, now: Instant) -> Option<String> {
        let mut sessions = self.by_digest.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= self.max {
            sessions.retain(|_, session| session.expires > now);
        }
        if sessions.len() >= self.max {
            return None;
        }
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let ended = CancellationToken::new();
        let session = Session {
            caller,
            expires: now + self.ttl,
            _end_on_drop: ended.clone().drop_guard(),
            ended,
            _open: Open::new(Openable::ConsoleSession),
        };
        sessions.insert(digest(&id), session);
        Some(id)
    }

    /// Returns the session `id` names if it exists at `now`; an expired one is dropped.
    pub(crate) fn get(&self, id: &str, now: Instant) -> Option<SignedIn> {
        let key = digest(id);
        let mut sessions = self.by_digest.lock().unwrap_or_else(PoisonError::into_inner);
        let session = sessions.get(&key)?;
        if session.expires <= now {
            sessions.remove(&key);
            return None;
        }
        Some(SignedIn {
            caller: session.caller.clone(),
            remaining: session.expires - now,
            ended: session.ended.clone(),
        })
    }

    /// Ends the session `id` names, if any.
    pub(crate) fn remove(&self, id: &str) {
        self.by_digest.lock().unwrap_or_else(PoisonError::into_inner).remove(&digest(id));
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Returns the session id of the request's cookie, if it sends one.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Returns the `Set-Cookie` value that hands the browser session `id` for `ttl`. Over HTTPS
/// (`secure`) the cookie is marked `Secure`: cookies are not scoped by port or scheme, and the
/// browser would otherwise also send it to a plaintext port of the same host.
pub(crate) fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}", ttl.as_secs(), secure_attribute(secure))
}

/// Returns the `Set-Cookie` value that makes the browser forget its session.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}", secure_attribute(secure))
}

fn secure_attribute(secure: bool) -> &'static str {
    if secure { "; Secure" } else { "" }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::tokens::Role;

    fn alice() -> Caller {
        Caller { name: "alice".into(), role: Role::Auditor, locations: Vec::new(), scope: crate::scope::Scope::all() }
    }

    #[test]
    fn sessions_expire_and_end() {
        let sessions = Sessions::new(Duration::from_secs(60), 10);
        let start = Instant::now();
        let id = sessions.create(alice(), start).unwrap();
        assert_eq!(id.len(), 43, "256 bits in base64url");
        let signed_in = sessions.get(&id, start + Duration::from_secs(59)).unwrap();
        assert_eq!((signed_in.caller, signed_in.remaining), (alice(), Duration::from_secs(1)));
        assert!(sessions.get(&id, start + Duration::from_secs(60)).is_none());
        assert!(sessions.get(&id, start).is_none(), "an expired session is gone for good");

        let other = sessions.create(alice(), start).unwrap();
        assert_ne!(other, id);
        let ended = sessions.get(&other, start).unwrap().ended;
        assert!(!ended.is_cancelled());
        sessions.remove(&other);
        assert!(ended.is_cancelled(), "signing out ends what the session opened");
        assert!(sessions.get(&other, start).is_none());
        assert!(sessions.get("made-up", start).is_none());
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let start = Instant::now();
        let first = sessions.create(alice(), start).unwrap();
        sessions.create(alice(), start).unwrap();
        assert!(sessions.create(alice(), start).is_none());
        // Expired sessions make room.
        let later = start + Duration::from_secs(61);
        assert!(sessions.create(alice(), later).is_some());
        assert!(sessions.get(&first, later).is_none());
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address_for_a_window() {
        let limiter = SignInLimiter::default();
        let (mallory, alice): (IpAddr, IpAddr) = ("192.0.2.9".parse().unwrap(), "192.0.2.1".parse().unwrap());
        let start = Instant::now();
        for _ in 0..MAX_FAILED_SIGN_INS {
            assert_eq!(limiter.wait(mallory, start), None);
            limiter.failed(mallory, start);
        }
        assert_eq!(limiter.wait(mallory, start), Some(SIGN_IN_WINDOW));
        let later = start + Duration::from_secs(45);
        assert_eq!(limiter.wait(mallory, later), Some(Duration::from_secs(15)));
        assert_eq!(limiter.wait(alice, later), None, "other addresses are not affected");
        let over = start + SIGN_IN_WINDOW;
        assert_eq!(limiter.wait(mallory, over), None);
        limiter.failed(mallory, over);
        assert_eq!(limiter.wait(mallory, over), None, "a new window counts from zero");
    }

    #[test]
    fn reads_the_session_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(cookie(&headers), None);
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark; qtrail_session=abc; x=1"));
        assert_eq!(cookie(&headers), Some("abc"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("qtrail_session="));
        assert_eq!(cookie(&empty), None);
        let cookie_text = set_cookie("abc", Duration::from_secs(3600), false);
        assert_eq!(cookie_text, "qtrail_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600");
        let cookie_text = set_cookie("abc", Duration::from_secs(3600), true);
        assert_eq!(cookie_text, "qtrail_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600; Secure");
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert!(clear_cookie(true).ends_with("Max-Age=0; Secure"));
    }
}
