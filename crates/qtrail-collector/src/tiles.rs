//! The transparency log over HTTP: each location's Merkle tree served read-only as C2SP
//! tlog-tiles under `/tlog/<location>/`, so that any tlog client (Go's `sumdb/tlog`, a mirror, a
//! plain HTTP cache) can check our checkpoints and prove inclusion and consistency on its own:
//!
//! - `checkpoint`: the newest signed tree head note (C2SP tlog-checkpoint);
//! - `key`: the note verifier key of its signature, `<origin>+<hex key id>+<base64 key>`;
//! - `tile/<L>/<N>[.p/<W>]`: hash tiles; `tile/entries/<N>[.p/<W>]`: the leaves, each event's
//!   canonical bytes with a big-endian u16 length prefix.
//!
//! Only what the newest checkpoint covers is served: a client never sees a tile it cannot check
//! against a signed head. A full tile never changes, so it is cacheable for a year; partial tiles
//! and the checkpoint are not cached. Callers present an auditor token as `authorization:
//! Bearer`, unless the collector runs with `--public-tiles`. An auditor token scoped to some
//! accounts gets the checkpoint, the key and the hash tiles, which say nothing of any event, but
//! not the entry tiles, which hold every account's events: it proves its own events through
//! `GetInclusionProof` instead.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use qtrail_cadf::Location;
use qtrail_tlog::{Checkpoint as TreeHead, NoteVerifier, Tile, open_note, pack_entries, read_tile_data};
use tracing::warn;

use crate::checkpointer::log_origin;
use crate::store::{EventStore, StoreError, TreeReader, canonical_of};
use crate::tokens::{Role, Tokens};

/// Longest tile path accepted; the longest valid one is far shorter.
const MAX_TILE_PATH: usize = 128;

/// What the tile handlers share.
#[derive(Debug)]
pub(crate) struct TileServer {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) tokens: Arc<Tokens>,
    /// Serve without a token.
    pub(crate) public: bool,
    /// Prefix of the log origins.
    pub(crate) origin_prefix: String,
    /// The raw public key of the checkpoint key; `None` when the collector signs nothing.
    pub(crate) public_key: Option<[u8; 32]>,
    /// The raw public keys a newest note may be signed by: the checkpoint key's and those it
    /// replaced (until it signs its first); empty when the collector signs nothing.
    pub(crate) note_keys: Vec<[u8; 32]>,
}

/// Why a tile request failed; each maps to its own status.
#[derive(Debug, thiserror::Error)]
enum TileError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("an auditor token is required as authorization: bearer")]
    Unauthenticated,
    #[error("token `{0}` is not an auditor token")]
    Forbidden(String),
    #[error(
        "token `{0}` reads only some accounts' events and entry tiles hold every account's: prove your events with GetInclusionProof (`qtrail events prove`); hash tiles, checkpoint and key stay readable"
    )]
    ScopedEntries(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// What the token check answered that is not about the caller (a fault of ours).
    #[error("cannot check the token: {0}")]
    Internal(String),
}

impl IntoResponse for TileError {
    fn into_response(self) -> Response {
        let status = match &self {
            TileError::BadRequest(_) => StatusCode::BAD_REQUEST,
            TileError::NotFound(_) => StatusCode::NOT_FOUND,
            TileError::Unauthenticated => StatusCode::UNAUTHORIZED,
            TileError::Forbidden(_) | TileError::ScopedEntries(_) => StatusCode::FORBIDDEN,
            TileError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            TileError::Store(err) => match err {
                StoreError::NoCollector(_) => StatusCode::NOT_FOUND,
                StoreError::CollectorExists(_) | StoreError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
                StoreError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
                StoreError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
                StoreError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            },
        };
        if status.is_server_error() {
            warn!(error = %self, "cannot serve the transparency log");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Maps a refused token check to its answer: only an unknown token is 401, a fault of ours
/// is not the caller's.
fn token_error(err: crate::error::Error) -> TileError {
    use crate::error::Error;
    match err {
        Error::Unauthenticated => TileError::Unauthenticated,
        Error::PermissionDenied { name, .. } => TileError::Forbidden(name),
        Error::Store(err) => TileError::Store(err),
        err @ (Error::InvalidArgument(_)
        | Error::CollectorNotFound(_)
        | Error::EventNotFound { .. }
        | Error::LeafNotFound(_)
        | Error::CollectorExists(_)
        | Error::FailedPrecondition(_)
        | Error::ResourceExhausted(_)
        | Error::LocationDenied { .. }
        | Error::PublisherBound { .. }
        | Error::NoClientCertificate
        | Error::AlertRuleNotFound { .. }
        | Error::AlertRuleExists { .. }
        | Error::ShuttingDown
        | Error::NotRecorded(_)) => TileError::Internal(err.to_string()),
    }
}

/// Returns the routes under `/tlog/`.
pub(crate) fn router(tiles: TileServer) -> Router {
    Router::new()
        .route("/tlog/{location}/checkpoint", get(checkpoint))
        .route("/tlog/{location}/key", get(key))
        .route("/tlog/{location}/tile/{*path}", get(tile))
        .with_state(Arc::new(tiles))
}

type Shared = State<Arc<TileServer>>;

impl TileServer {
    /// Checks the caller's token (unless tiles are public) and the location; returns the
    /// location and the name of the token when it is scoped to some accounts.
    fn admit(&self, headers: &HeaderMap, location: &str) -> Result<(Location, Option<String>), TileError> {
        let mut scoped = None;
        if !self.public {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token)
                .ok_or(TileError::Unauthenticated)?;
            let caller = self.tokens.authorize(Some(token), Role::Auditor).map_err(token_error)?;
            scoped = (!caller.scope.is_all()).then_some(caller.name);
        }
        let location = location.parse().map_err(|err| TileError::BadRequest(format!("invalid location: {err}")))?;
        Ok((location, scoped))
    }

    /// Returns the newest signed tree head of `location`: its note and size.
    fn newest_head(&self, location: &Location) -> Result<(String, u64), TileError> {
        if self.store.collector(location)?.is_none() {
            return Err(StoreError::NoCollector(location.to_string()).into());
        }
        let newest = self.store.checkpoints(location, None, 1)?.into_iter().next();
        let Some(checkpoint) =
            newest.as_ref().and_then(|entry| entry.intact()).filter(|checkpoint| !checkpoint.note.is_empty())
        else {
            return Err(TileError::NotFound(format!("location `{location}` has no signed tree head yet")));
        };
        // What is served is bounded by the size the note states (its signature checked when
        // the collector holds the key or a previous one), not by the `tree_size` field no signature covers.
        let note = &checkpoint.note;
        let origin = log_origin(&self.origin_prefix, location.as_str());
        let text = match self.note_keys.as_slice() {
            [] => note.rfind("\n\n").map(|split| &note[..=split]).ok_or_else(|| "no signature block".to_owned()),
            keys => keys
                .iter()
                .map(|public| NoteVerifier::new(&origin, *public))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|verifiers| open_note(note, &verifiers))
                .map_err(|err| err.to_string()),
        };
        let head = text.and_then(|text| TreeHead::parse(text).map_err(|err| err.to_string())).map_err(|why| {
            StoreError::Corrupt(format!(
                "checkpoint {} of `{location}` has a bad tree head note: {why}",
                checkpoint.number
            ))
        })?;
        Ok((note.clone(), head.size))
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TileError> + Send + 'static,
) -> Result<T, TileError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| Err(StoreError::Backend(format!("tile task failed: {err}")).into()))
}

fn text(body: String, cache: &'static str) -> Response {
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, cache)];
    (headers, body).into_response()
}

async fn checkpoint(State(tiles): Shared, Path(location): Path<String>, headers: HeaderMap) -> Response {
    let served = blocking(move || {
        let (location, _) = tiles.admit(&headers, &location)?;
        tiles.newest_head(&location).map(|(note, _)| note)
    })
    .await;
    match served {
        Ok(note) => text(note, "no-cache"),
        Err(err) => err.into_response(),
    }
}

async fn key(State(tiles): Shared, Path(location): Path<String>, headers: HeaderMap) -> Response {
    let served = blocking(move || {
        let (location, _) = tiles.admit(&headers, &location)?;
        if tiles.store.collector(&location)?.is_none() {
            return Err(StoreError::NoCollector(location.to_string()).into());
        }
        let public =
            tiles.public_key.ok_or_else(|| TileError::NotFound("the collector signs no checkpoints".into()))?;
        NoteVerifier::new(&log_origin(&tiles.origin_prefix, location.as_str()), public)
            .map_err(|err| TileError::BadRequest(err.to_string()))
    })
    .await;
    match served {
        Ok(verifier) => text(format!("{verifier}\n"), "no-cache"),
        Err(err) => err.into_response(),
    }
}

async fn tile(State(tiles): Shared, Path((location, path)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let served = blocking(move || {
        let (location, scoped) = tiles.admit(&headers, &location)?;
        if path.len() > MAX_TILE_PATH {
            return Err(TileError::BadRequest("tile path too long".into()));
        }
        let tile = Tile::parse(&format!("tile/{path}")).map_err(|err| TileError::BadRequest(err.to_string()))?;
        if let (None, Some(name)) = (tile.level, scoped) {
            return Err(TileError::ScopedEntries(name));
        }
        let (_, size) = tiles.newest_head(&location)?;
        if tile.leaves_needed().is_none_or(|needed| needed > size) {
            return Err(TileError::NotFound(format!(
                "{} is beyond the newest signed tree head ({size} leaves)",
                tile.path()
            )));
        }
        let data = match tile.level {
            Some(_) => read_tile_data(tile, &TreeReader { store: tiles.store.as_ref(), location: &location })
                .map_err(|err| crate::store::tree_error(location.as_str(), &err))?,
            None => entries(tiles.store.as_ref(), &location, tile)?,
        };
        Ok(data)
    })
    .await;
    match served {
        Ok(data) => {
            // A partial tile of width W never changes either (C2SP tlog-tiles): a bigger tree
            // is served as another path.
            let cache = "public, max-age=31536000, immutable";
            ([(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, cache)], data).into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// Returns the entry bundle of `tile`: the canonical bytes of its events.
fn entries(store: &dyn EventStore, location: &Location, tile: Tile) -> Result<Vec<u8>, TileError> {
    let first = tile.index * u64::from(qtrail_tlog::TILE_WIDTH) + 1;
    let records = store.events(location, first, tile.width as usize)?;
    let last = first + u64::from(tile.width) - 1;
    if records.len() < tile.width as usize && last <= store.pruned_through(location)? {
        // Hash tiles stay: they, with the archived events, still prove the range.
        return Err(TileError::NotFound(format!(
            "the entries of {} were pruned (archived) from location `{location}`",
            tile.path()
        )));
    }
    let mut leaves = Vec::with_capacity(records.len());
    for (seq, record) in (first..).zip(&records) {
        if record.location_seq != seq {
            return Err(StoreError::Corrupt(format!("location_seq {seq} of `{location}` is missing")).into());
        }
        let canonical = canonical_of(record).ok_or_else(|| {
            StoreError::Corrupt(format!("the event at location_seq {seq} of `{location}` is invalid"))
        })?;
        leaves.push(canonical);
    }
    if leaves.len() != tile.width as usize {
        return Err(StoreError::Corrupt(format!("the events of {} of `{location}` are missing", tile.path())).into());
    }
    pack_entries(&leaves).map_err(|err| StoreError::Corrupt(err.to_string()).into())
}

#[cfg(test)]
mod tests {
    use qtrail_cadf::checkpoint::SigningKey;
    use qtrail_proto::qtrail::audit::v1 as proto;
    use qtrail_tlog::{NoteSigner, sign_note};

    use super::*;
    use crate::store::FileStore;

    fn key() -> SigningKey {
        SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap()
    }

    /// After a rotation, until the new key signs its first, the newest note is the previous
    /// key's: served when that key is among the note keys, refused when it is not.
    #[test]
    fn a_note_by_a_previous_key_bounds_the_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(FileStore::open(dir.path(), 1024 * 1024).unwrap());
        let location: Location = "us-east".parse().unwrap();
        store.create_collector(&location, crate::writer::now()).unwrap();
        let (old, new) = (key(), key());
        let text = TreeHead { origin: "qtrail.local/us-east".into(), size: 0, root: [0; 32], extensions: Vec::new() };
        let signer = NoteSigner::new("qtrail.local/us-east", old.key_pair()).unwrap();
        let note = sign_note(&text.to_text(), &signer).unwrap();
        let mut checkpoint = proto::Checkpoint { location: "us-east".into(), number: 1, note, ..Default::default() };
        old.sign(&mut checkpoint);
        store.add_checkpoint(&checkpoint).unwrap();
        let tiles = |note_keys| TileServer {
            store: store.clone(),
            tokens: Arc::new(Tokens::default()),
            public: false,
            origin_prefix: "qtrail.local".into(),
            public_key: Some(new.public_key()),
            note_keys,
        };
        let served = tiles(vec![new.public_key(), old.public_key()]).newest_head(&location).unwrap();
        assert_eq!(served, (checkpoint.note.clone(), 0));
        let refused = tiles(vec![new.public_key()]).newest_head(&location).unwrap_err();
        assert!(refused.to_string().contains("bad tree head note"), "{refused}");
    }
}
