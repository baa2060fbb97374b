//! C2SP tlog-tiles: the tree's stored hashes cut into tiles of height 8 (256 hashes of one
//! level), plus tiles of entries (the leaves' bytes), addressed by immutable paths so that any
//! static file server or cache can serve a log.

use crate::tree::read_exact;
use crate::{Error, HashReader, stored_hash_index};

/// The height of a tile: a level-L tile holds hashes of tree level 8·L.
pub const TILE_HEIGHT: u32 = 8;
/// The width of a full tile.
pub const TILE_WIDTH: u32 = 1 << TILE_HEIGHT;
/// The highest tile level C2SP allows.
const MAX_LEVEL: u32 = 63;

/// A tile: `width` hashes (or entries) from position `index · 256` of its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    /// The tile level; `None` for an entry bundle.
    pub level: Option<u32>,
    /// The tile's position within its level.
    pub index: u64,
    /// The number of hashes or entries, 1..=256; below 256 it is a partial tile.
    pub width: u32,
}

impl Tile {
    /// Returns whether it holds all 256 hashes or entries, so it never changes.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// Returns its path below the log's prefix, `tile/<L>/<N>[.p/<W>]` or
    /// `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        let level = self.level.map_or_else(|| "entries".to_owned(), |level| level.to_string());
        let mut path = format!("tile/{level}/{}", encode_index(self.index));
        if !self.is_full() {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }

    /// Parses a path as [`Tile::path`] writes it, accepting only the canonical form.
    ///
    /// # Errors
    /// [`Error::BadTilePath`] for anything else.
    pub fn parse(path: &str) -> Result<Self, Error> {
        let bad = || Error::BadTilePath(path.to_owned());
        let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
        let (level, rest) = rest.split_once('/').ok_or_else(bad)?;
        let level = match level {
            "entries" => None,
            digits => Some(parse_decimal(digits).filter(|&l| l <= u64::from(MAX_LEVEL)).ok_or_else(bad)? as u32),
        };
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                (index, parse_decimal(width).filter(|&w| (1..u64::from(TILE_WIDTH)).contains(&w)).ok_or_else(bad)?)
            }
            None => (rest, u64::from(TILE_WIDTH)),
        };
        let index = decode_index(index).ok_or_else(bad)?;
        let tile = Self { level, index, width: width as u32 };
        // Every tile has exactly one path: reject leading zeros and other spellings.
        if tile.path() != path {
            return Err(bad());
        }
        Ok(tile)
    }

    /// Returns how many leaves a tree needs so that this tile is complete.
    pub fn leaves_needed(&self) -> Option<u64> {
        let level = self.level.unwrap_or(0);
        let end = self.index.checked_mul(u64::from(TILE_WIDTH))?.checked_add(u64::from(self.width))?;
        end.checked_mul(1u64.checked_shl(TILE_HEIGHT * level)?)
    }
}

/// Parses plain decimal digits (no sign, at most 19 of them).
fn parse_decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes `n` as three-digit groups, all but the last prefixed with `x`: 1234067 → x001/x234/067.
fn encode_index(n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn decode_index(text: &str) -> Option<u64> {
    let mut groups: Vec<&str> = text.split('/').collect();
    let last = groups.pop()?;
    let mut n: u64 = 0;
    for group in groups.iter().map(|group| group.strip_prefix('x')).chain([Some(last)]) {
        let group = group.filter(|group| group.len() == 3)?;
        n = n.checked_mul(1000)?.checked_add(parse_decimal(group)?)?;
    }
    Some(n)
}

/// Returns the bytes of a hash tile: its hashes, concatenated.
///
/// # Errors
/// [`Error::BadTilePath`] for an entry tile; what `reader` returns.
pub fn read_tile_data(tile: Tile, reader: &impl HashReader) -> Result<Vec<u8>, Error> {
    let Some(level) = tile.level else { return Err(Error::BadTilePath(tile.path())) };
    let start = tile.index * u64::from(TILE_WIDTH);
    let indexes: Vec<u64> =
        (0..u64::from(tile.width)).map(|i| stored_hash_index(level * TILE_HEIGHT, start + i)).collect();
    Ok(read_exact(reader, &indexes)?.concat())
}

/// Returns the hash tiles of a tree of `size` leaves: every full tile plus the rightmost
/// partial tile of each level.
pub fn tiles_for_size(size: u64) -> Vec<Tile> {
    let mut tiles = Vec::new();
    let mut level = 0;
    let mut count = size; // hashes at tree level 8·level
    while count > 0 {
        let full = count / u64::from(TILE_WIDTH);
        tiles.extend((0..full).map(|index| Tile { level: Some(level), index, width: TILE_WIDTH }));
        let partial = (count % u64::from(TILE_WIDTH)) as u32;
        if partial > 0 {
            tiles.push(Tile { level: Some(level), index: full, width: partial });
        }
        count >>= TILE_HEIGHT;
        level += 1;
    }
    tiles
}
