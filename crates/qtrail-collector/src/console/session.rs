//! Console sessions: what a browser holds instead of the auditor token.
//!
//! Signing in trades a token for a signed, expiring cookie that the browser keeps
//! (`HttpOnly; SameSite=Strict; Path=/`, `Secure` over HTTPS: script cannot read it and other
//! sites cannot make the browser send it): base64url of JSON claims (a random 128-bit session
//! id, the token's name and role, issued-at and expiry in unix seconds, and a digest of the
//! token's secret), a dot, and base64url of their HMAC-SHA256 under the session key
//! ([`super::key`]). Nothing is kept per session to accept it, so a session survives a restart
//! and works on every replica holding the same key and tokens file; each request re-checks the
//! signature (in constant time), the expiry, the token (still there, same secret, auditor), and
//! the sign-outs ([`super::revocations`]). The sessions seen are tracked, bounded, only so that
//! a sign-out ends the live views they opened.
//!
//! Failed sign-ins are counted per client address ([`SignInLimiter`]): past
//! [`MAX_FAILED_SIGN_INS`] in a [`SIGN_IN_WINDOW`], an address is answered 429 with
//! `Retry-After`, whatever token it sends, until the window has passed, so that tokens cannot
//! be guessed at the speed of the network.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::revocations::{Revocations, SessionId};
use crate::meters::{Open, Openable};
use crate::tokens::{Caller, Role, Tokens};

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "qtrail_session";

/// Most sessions whose live views this collector tracks at once.
pub(crate) const MAX_SESSIONS: usize = 10_000;

/// Longest cookie value looked at: a session's claims take a few hundred bytes.
const MAX_COOKIE_BYTES: usize = 4096;

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

/// The session cookies this collector signs and accepts.
#[derive(Debug)]
pub(crate) struct Sessions {
    key: hmac::Key,
    ttl: Duration,
    tokens: Arc<Tokens>,
    revoked: Revocations,
    /// The sessions this collector has seen, for what they opened here (live views), bounded.
    seen: Mutex<HashMap<SessionId, Seen>>,
}

#[derive(Debug)]
struct Seen {
    expires: u64,
    /// Cancelled when the session ends here (sign-out, or dropped to make room), so that the
    /// live views it opened end with it.
    ended: CancellationToken,
    _end_on_drop: DropGuard,
    /// Counts the session in the console sessions gauge while it is held.
    _open: Open,
}

/// What a session cookie says, signed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claims {
    /// The session id, base64url, for sign-out.
    sid: String,
    /// The token's name and role.
    name: String,
    role: String,
    /// Issued at and expires at, unix seconds.
    iat: u64,
    exp: u64,
    /// Binds the session to the token's current secret, base64url: a rotated or removed token
    /// ends its sessions on every replica.
    tok: String,
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
    id: SessionId,
    expires: u64,
}

impl Sessions {
    /// Returns the sessions signed with `key` (at least [`super::key::MIN_KEY_BYTES`]) for the
    /// tokens of `tokens`, lasting `ttl`, with sign-outs kept in `revoked`.
    pub(crate) fn new(key: &[u8], ttl: Duration, tokens: Arc<Tokens>, revoked: Revocations) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        Self { key, ttl, tokens, revoked, seen: Mutex::new(HashMap::new()) }
    }

    /// Returns how long a new session lasts.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Returns the cookie value of a new session for `caller` at `now` (unix seconds), or
    /// `None` when its token is not (or no longer) in the tokens file.
    pub(crate) fn create(&self, caller: &Caller, now: u64) -> Option<String> {
        let binding = self.tokens.session_binding(&caller.name)?;
        let claims = Claims {
            sid: URL_SAFE_NO_PAD.encode(rand::random::<SessionId>()),
            name: caller.name.clone(),
            role: caller.role.as_str().to_owned(),
            iat: now,
            exp: now.saturating_add(self.ttl.as_secs()),
            tok: URL_SAFE_NO_PAD.encode(binding),
        };
        let payload = serde_json::to_vec(&claims).ok()?;
        let tag = hmac::sign(&self.key, &payload);
        Some(format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }

    /// Returns the session `cookie` names if its signature holds, it has not expired at `now`
    /// (unix seconds), was not signed out, and its token still exists with the same secret
    /// and the auditor role.
    pub(crate) fn get(&self, cookie: &str, now: u64) -> Option<SignedIn> {
        if cookie.len() > MAX_COOKIE_BYTES {
            return None;
        }
        let (payload, tag) = cookie.split_once('.')?;
        let (payload, tag) = (URL_SAFE_NO_PAD.decode(payload).ok()?, URL_SAFE_NO_PAD.decode(tag).ok()?);
        // Constant time: a forger learns nothing from how long the comparison took.
        hmac::verify(&self.key, &payload, &tag).ok()?;
        let claims: Claims = serde_json::from_slice(&payload).ok()?;
        let id: SessionId = URL_SAFE_NO_PAD.decode(&claims.sid).ok()?.try_into().ok()?;
        if claims.exp <= now || self.revoked.contains(&id) {
            return None;
        }
        let binding = self.tokens.session_binding(&claims.name)?;
        let caller = self.tokens.caller(&claims.name)?;
        let same_secret = URL_SAFE_NO_PAD.decode(&claims.tok).ok()? == binding;
        if !same_secret || caller.role != Role::Auditor || claims.role != Role::Auditor.as_str() {
            return None;
        }
        let ended = self.ended(id, claims.exp, now);
        Some(SignedIn { caller, remaining: Duration::from_secs(claims.exp - now), ended, id, expires: claims.exp })
    }

    /// Returns the token that ends session `id` here, remembering it among the sessions seen
    /// when there is room (else a token that only expiry ends).
    fn ended(&self, id: SessionId, expires: u64, now: u64) -> CancellationToken {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = seen.get(&id) {
            return session.ended.clone();
        }
        if seen.len() >= MAX_SESSIONS {
            seen.retain(|_, session| session.expires > now);
        }
        let ended = CancellationToken::new();
        if seen.len() < MAX_SESSIONS {
            let session = Seen {
                expires,
                _end_on_drop: ended.clone().drop_guard(),
                ended: ended.clone(),
                _open: Open::new(Openable::ConsoleSession),
            };
            seen.insert(id, session);
        }
        ended
    }

    /// Signs `signed_in` out: ends what it opened here and refuses its cookie from now on.
    /// Blocking (the revocation list is written through): call it off the async workers.
    pub(crate) fn revoke(&self, signed_in: &SignedIn, now: u64) -> std::io::Result<()> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).remove(&signed_in.id);
        self.revoked.revoke(signed_in.id, signed_in.expires, now)
    }
}

/// Returns the current time in unix seconds, the clock session cookies are signed with.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
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
    use crate::tokens::TokenEntry;

    fn alice() -> Caller {
        Caller { name: "alice".into(), role: Role::Auditor, locations: Vec::new(), scope: crate::scope::Scope::all() }
    }

    fn tokens(secret: &str) -> Arc<Tokens> {
        Arc::new(Tokens::from_entries([TokenEntry::new(secret, Role::Auditor, "alice")]).unwrap())
    }

    fn sessions(key: &[u8], tokens: Arc<Tokens>) -> Sessions {
        Sessions::new(key, Duration::from_secs(60), tokens, Revocations::load(None, 0).unwrap())
    }

    const KEY: [u8; 32] = [9; 32];
    const START: u64 = 1_800_000_000;

    #[test]
    fn a_signed_session_works_on_another_collector_with_the_same_key_until_it_expires() {
        let cookie = sessions(&KEY, tokens("s3cret")).create(&alice(), START).unwrap();
        assert!(!cookie.contains("s3cret"));
        let replica = sessions(&KEY, tokens("s3cret"));
        let signed_in = replica.get(&cookie, START + 59).unwrap();
        assert_eq!((signed_in.caller, signed_in.remaining), (alice(), Duration::from_secs(1)));
        assert!(replica.get(&cookie, START + 60).is_none(), "expired");
        assert!(sessions(&[8; 32], tokens("s3cret")).get(&cookie, START).is_none(), "another key");
    }

    #[test]
    fn tampered_cookies_and_changed_tokens_are_refused() {
        let sessions_here = sessions(&KEY, tokens("s3cret"));
        let cookie = sessions_here.create(&alice(), START).unwrap();
        let (payload, tag) = cookie.split_once('.').unwrap();
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let longer = URL_SAFE_NO_PAD.encode(claims.replace(&format!("\"exp\":{}", START + 60), "\"exp\":9999999999"));
        assert!(sessions_here.get(&format!("{longer}.{tag}"), START).is_none(), "a changed expiry");
        assert!(sessions_here.get(&format!("{payload}.{}", &tag[1..]), START).is_none(), "a changed tag");
        for made_up in ["", ".", "abc", "a.b.c", &"x".repeat(5000)] {
            assert!(sessions_here.get(made_up, START).is_none(), "{made_up}");
        }
        assert!(sessions(&KEY, tokens("rotated")).get(&cookie, START).is_none(), "a rotated secret");
        let other = Arc::new(Tokens::from_entries([TokenEntry::new("s3cret", Role::Auditor, "bob")]).unwrap());
        assert!(sessions(&KEY, other).get(&cookie, START).is_none(), "a removed token");
        let admin = Arc::new(Tokens::from_entries([TokenEntry::new("s3cret", Role::Admin, "alice")]).unwrap());
        assert!(sessions(&KEY, admin).get(&cookie, START).is_none(), "another role");
    }

    #[test]
    fn signing_out_ends_the_session_and_what_it_opened() {
        let sessions = sessions(&KEY, tokens("s3cret"));
        let cookie = sessions.create(&alice(), START).unwrap();
        let other = sessions.create(&alice(), START).unwrap();
        let signed_in = sessions.get(&cookie, START).unwrap();
        assert!(!signed_in.ended.is_cancelled());
        sessions.revoke(&signed_in, START).unwrap();
        assert!(signed_in.ended.is_cancelled(), "signing out ends what the session opened");
        assert!(sessions.get(&cookie, START).is_none());
        assert!(sessions.get(&other, START).is_some(), "other sessions of the token go on");
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
