//! C2SP tile paths, tile contents and entry bundles.

use qtrail_tlog::{
    Error, Hash, HashReader, Tile, append_hashes, leaf_hash, pack_entries, read_tile_data, stored_hash_index,
    tiles_for_size, unpack_entries,
};

struct Stored(Vec<Hash>);

impl HashReader for Stored {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        indexes.iter().map(|&i| self.0.get(i as usize).copied().ok_or_else(|| Error::Storage(format!("{i}")))).collect()
    }
}

fn stored(size: u64) -> Stored {
    let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let empty = Stored(Vec::new());
    Stored(append_hashes(0, &leaves, &empty).unwrap())
}

#[test]
fn paths_follow_c2sp_tlog_tiles() {
    let cases = [
        (Tile { level: Some(0), index: 0, width: 256 }, "tile/0/000"),
        (Tile { level: Some(1), index: 67, width: 256 }, "tile/1/067"),
        (Tile { level: Some(0), index: 1234067, width: 256 }, "tile/0/x001/x234/067"),
        (Tile { level: Some(2), index: 1000, width: 17 }, "tile/2/x001/000.p/17"),
        (Tile { level: None, index: 5, width: 256 }, "tile/entries/005"),
        (Tile { level: None, index: 5, width: 1 }, "tile/entries/005.p/1"),
    ];
    for (tile, path) in cases {
        assert_eq!(tile.path(), path);
        assert_eq!(Tile::parse(path), Ok(tile), "{path}");
    }
}

#[test]
fn non_canonical_paths_are_rejected() {
    for path in [
        "tile/0/1",
        "tile/0/0001",
        "tile/0/x000/001",
        "tile/0/001/002",
        "tile/0/x001",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/017",
        "tile/64/000",
        "tile/00/000",
        "tile/-1/000",
        "tile/0/+01",
        "tile/data/000",
        "tile/0/000/",
        "tiles/0/000",
        "tile/0/x99999999999999999999/000",
        "",
    ] {
        assert!(matches!(Tile::parse(path), Err(Error::BadTilePath(_))), "{path}");
    }
}

#[test]
fn tile_bytes_are_the_stored_hashes_of_their_level() {
    let size = 256 * 3 + 5;
    let log = stored(size);
    for tile in tiles_for_size(size) {
        let data = read_tile_data(tile, &log).unwrap();
        assert_eq!(data.len(), tile.width as usize * 32);
        let level = tile.level.unwrap() * 8;
        for (i, hash) in data.chunks(32).enumerate() {
            let index = stored_hash_index(level, tile.index * 256 + i as u64);
            assert_eq!(hash, log.0[index as usize], "{} hash {i}", tile.path());
        }
    }
}

#[test]
fn tiles_for_size_lists_full_and_partial_tiles() {
    let paths: Vec<String> = tiles_for_size(256 * 2 + 3).iter().map(Tile::path).collect();
    assert_eq!(paths, ["tile/0/000", "tile/0/001", "tile/0/002.p/3", "tile/1/000.p/2"]);
    assert!(tiles_for_size(0).is_empty());
    assert_eq!(Tile { level: Some(1), index: 0, width: 2 }.leaves_needed(), Some(512));
    assert_eq!(Tile { level: None, index: 1, width: 3 }.leaves_needed(), Some(259));
    assert_eq!(Tile { level: Some(63), index: 1, width: 256 }.leaves_needed(), None);
}

#[test]
fn entry_bundles_round_trip() {
    let entries: Vec<Vec<u8>> = vec![b"".to_vec(), b"{\"a\":1}".to_vec(), vec![7; 300]];
    let bundle = pack_entries(&entries).unwrap();
    assert_eq!(&bundle[..4], [0, 0, 0, 7]);
    assert_eq!(unpack_entries(&bundle).unwrap(), entries);
    assert_eq!(unpack_entries(&bundle[..bundle.len() - 1]), Err(Error::BadBundle("truncated entry")));
    assert_eq!(unpack_entries(&[0]), Err(Error::BadBundle("truncated length prefix")));
    assert_eq!(pack_entries(&[vec![0; 65536]]), Err(Error::EntryTooLong(65536)));
}
