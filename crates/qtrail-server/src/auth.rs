//! Bearer tokens from gRPC metadata.
//!
//! Both services take credentials as `authorization: Bearer <token>`. Tokens are compared and
//! looked up, never logged: callers must not put the returned value in a log line, an event or
//! an error message.

use tonic::metadata::MetadataMap;

/// Returns the token of an `authorization: Bearer <token>` header (scheme case-insensitive), or
/// `None` when the header is missing, not ASCII, of another scheme or has an empty token.
pub fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    bearer(metadata.get("authorization")?.to_str().ok()?)
}

/// Returns the token of an `authorization` header value `Bearer <token>`, as
/// [`bearer_token`] does; for HTTP requests.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn extracts_bearer_tokens() {
        assert_eq!(bearer_token(&metadata("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&metadata("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&metadata("Basic abc")), None);
        assert_eq!(bearer_token(&metadata("Bearer ")), None);
        assert_eq!(bearer_token(&metadata("abc")), None);
        assert_eq!(bearer_token(&MetadataMap::new()), None);
    }
}
