//! Entry bundles (C2SP tlog-tiles): the leaves of an entry tile, each prefixed by its length as
//! a big-endian u16.

use crate::Error;

/// Packs entries into a bundle.
///
/// # Errors
/// [`Error::EntryTooLong`] for an entry over 65535 bytes.
pub fn pack_entries<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, Error> {
    let mut bundle = Vec::with_capacity(entries.iter().map(|e| e.as_ref().len() + 2).sum());
    for entry in entries {
        let entry = entry.as_ref();
        let len = u16::try_from(entry.len()).map_err(|_| Error::EntryTooLong(entry.len()))?;
        bundle.extend_from_slice(&len.to_be_bytes());
        bundle.extend_from_slice(entry);
    }
    Ok(bundle)
}

/// Splits a bundle into its entries.
///
/// # Errors
/// [`Error::BadBundle`] when it ends inside a length prefix or an entry.
pub fn unpack_entries(mut bundle: &[u8]) -> Result<Vec<&[u8]>, Error> {
    let mut entries = Vec::new();
    while !bundle.is_empty() {
        let Some((len, rest)) = bundle.split_first_chunk::<2>() else {
            return Err(Error::BadBundle("truncated length prefix"));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return Err(Error::BadBundle("truncated entry"));
        }
        let (entry, rest) = rest.split_at(len);
        entries.push(entry);
        bundle = rest;
    }
    Ok(entries)
}
