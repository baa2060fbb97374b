//! Pages of a listing and the tokens that continue them.
//!
//! Pages are in chain order (`location_seq`), newest first unless asked otherwise, so a page
//! token is simply the last position served plus a fingerprint of what it was served for:
//! `base64url(version || last location_seq || SHA-256(location, filter, order)[..16])`. New
//! events only ever get higher positions, so paging is stable while events arrive.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;
use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::filter::Order;

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size accepted.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Most encoded bytes of events per page; a page of large events ends early (with a token)
/// rather than exceed a client's default 4 MiB message limit.
pub const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;
/// Most encoded bytes of publisher states per ListPublishers page. A publisher holds at most
/// [`crate::store::publisher::MAX_GAPS_PER_PUBLISHER`] gaps and
/// [`crate::store::publisher::MAX_REJECTED_RANGES_PER_PUBLISHER`] rejected ranges (a few
/// hundred KiB), so any one
/// fits, and a page stays well within a client's default 4 MiB message limit.
pub const MAX_PUBLISHERS_PAGE_BYTES: usize = 1024 * 1024;

const PAGE_TOKEN_VERSION: u8 = 1;
const FINGERPRINT_BYTES: usize = 16;

/// Returns how many of `messages`, from the first, fit in `max_bytes` once encoded (at least one,
/// so that a page always makes progress).
pub(super) fn fitting_prefix<M: prost::Message>(messages: &[M], max_bytes: usize) -> usize {
    let mut total = 0;
    for (index, message) in messages.iter().enumerate() {
        total += message.encoded_len();
        if total > max_bytes {
            return index.max(1);
        }
    }
    messages.len()
}

/// Returns the page size a request asks for: [`DEFAULT_PAGE_SIZE`] for 0.
///
/// # Errors
/// INVALID_ARGUMENT above [`MAX_PAGE_SIZE`].
pub(super) fn page_size(asked: u32) -> Result<u32> {
    match asked {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size if size > MAX_PAGE_SIZE => {
            Err(Error::invalid(format!("page_size {size} is over the limit of {MAX_PAGE_SIZE}")))
        }
        size => Ok(size),
    }
}

/// Returns what a page token is bound to: the location, the filter as sent and the order.
pub(super) fn fingerprint(
    location: &Location,
    filter: Option<&proto::EventFilter>,
    order: Order,
) -> [u8; FINGERPRINT_BYTES] {
    let mut hasher = Sha256::new();
    hasher.update(location.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(filter.cloned().unwrap_or_default().encode_to_vec());
    hasher.update([match order {
        Order::NewestFirst => 1,
        Order::OldestFirst => 2,
    }]);
    let digest = hasher.finalize();
    let mut fingerprint = [0; FINGERPRINT_BYTES];
    fingerprint.copy_from_slice(&digest[..FINGERPRINT_BYTES]);
    fingerprint
}

pub(super) fn encode_page_token(last_seq: u64, fingerprint: &[u8; FINGERPRINT_BYTES]) -> String {
    let mut bytes = Vec::with_capacity(1 + 8 + FINGERPRINT_BYTES);
    bytes.push(PAGE_TOKEN_VERSION);
    bytes.extend_from_slice(&last_seq.to_be_bytes());
    bytes.extend_from_slice(fingerprint);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Returns the publisher id a ListPublishers page token carries: the last one of its page.
pub(super) fn decode_publishers_token(token: &str) -> Result<String> {
    let invalid = || Error::invalid("invalid page_token: not from a previous page of publishers");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

pub(super) fn decode_page_token(token: &str, fingerprint: &[u8; FINGERPRINT_BYTES]) -> Result<u64> {
    let invalid = || Error::invalid("invalid page_token: not from a previous page of this location, filter and order");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() != 1 + 8 + FINGERPRINT_BYTES || bytes[0] != PAGE_TOKEN_VERSION || &bytes[9..] != fingerprint {
        return Err(invalid());
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&bytes[1..9]);
    Ok(u64::from_be_bytes(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bind_to_the_request() {
        let location: Location = "us-east".parse().unwrap();
        let filter = proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() };
        let print = fingerprint(&location, Some(&filter), Order::NewestFirst);
        let token = encode_page_token(42, &print);
        assert_eq!(decode_page_token(&token, &print).unwrap(), 42);
        let other_order = fingerprint(&location, Some(&filter), Order::OldestFirst);
        let other_filter = fingerprint(&location, None, Order::NewestFirst);
        let other_location = fingerprint(&"eu-de".parse().unwrap(), Some(&filter), Order::NewestFirst);
        for other in [other_order, other_filter, other_location] {
            assert!(decode_page_token(&token, &other).is_err());
        }
        for garbage in ["x", "!!!", "AAAA", &token[..token.len() - 1]] {
            let err = decode_page_token(garbage, &print).unwrap_err().to_string();
            assert!(err.starts_with("invalid page_token"), "{err}");
        }
    }

    proptest::proptest! {
        /// Whatever a caller sends as a page token, it decodes to a position or is refused with
        /// the one clear message; it never panics.
        #[test]
        fn any_page_token_decodes_or_is_refused(
            text in "\\PC{0,100}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let print = fingerprint(&"us-east".parse().unwrap(), None, Order::NewestFirst);
            for token in [text, URL_SAFE_NO_PAD.encode(&bytes)] {
                if let Err(err) = decode_page_token(&token, &print) {
                    proptest::prop_assert_eq!(
                        err.to_string(),
                        "invalid page_token: not from a previous page of this location, filter and order"
                    );
                }
            }
        }
    }

    #[test]
    fn pages_stay_within_their_byte_limits() {
        let event = |message_len: usize| proto::StoredEvent {
            event: Some(proto::AuditEvent { message: "m".repeat(message_len), ..Default::default() }),
            ..Default::default()
        };
        let large: Vec<_> = (0..10).map(|_| event(1024 * 1024)).collect();
        assert_eq!(fitting_prefix(&large, MAX_PAGE_BYTES), 2);
        assert_eq!(fitting_prefix(&large[..1], 10), 1);
        let small: Vec<_> = (0..10).map(|_| event(10)).collect();
        assert_eq!(fitting_prefix(&small, MAX_PAGE_BYTES), 10);
    }
}
