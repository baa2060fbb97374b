//! Response bounds: what keeps an answer small however much the store holds (list pages cut
//! by bytes, interim results cut to their most frequent outcomes).

use std::collections::{BTreeMap, HashMap};

use crate::error::Result;

/// Most bytes of programs or jobs in one list page: with sources, the 1,000 programs a page may
/// hold would make ~256 MB, far past a client's 4 MiB default message limit. A page stops
/// before it would pass this (it always holds at least one item, which fits: a program is at
/// most ~280 KiB), and the caller continues from `offset` plus the number returned.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Most outcomes in one interim result: the most frequent ones. Interim results show progress;
/// four of them with every outcome made a 17 MB answer.
pub(super) const MAX_INTERIM_OUTCOMES: usize = 1024;
/// Most interim results returned: the newest.
pub(super) const MAX_INTERIM_RESULTS: usize = 16;

/// Returns the items in order up to the one that would take the page past [`MAX_PAGE_BYTES`];
/// the first item is always kept.
pub(super) fn within_page_bytes<M: prost::Message>(
    items: impl Iterator<Item = std::result::Result<M, crate::store::StoreError>>,
) -> Result<Vec<M>> {
    let mut bytes = 0;
    let mut page = Vec::new();
    for item in items {
        let item = item?;
        // The repeated field's tag and length prefix: a few bytes more than the message.
        bytes += item.encoded_len() + 8;
        if bytes > MAX_PAGE_BYTES && !page.is_empty() {
            break;
        }
        page.push(item);
    }
    Ok(page)
}

/// Returns the `keep` most frequent outcomes of `counts` (ties by bit string).
pub(super) fn most_frequent(counts: BTreeMap<String, u32>, keep: usize) -> HashMap<String, u32> {
    if counts.len() <= keep {
        return counts.into_iter().collect();
    }
    let mut ranked: Vec<(String, u32)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(keep);
    ranked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use qtrail_proto::qtrail::runtime::v1 as pb;

    use super::*;

    #[test]
    fn pages_stop_before_their_byte_bound_and_interim_counts_keep_the_most_frequent() {
        let big = pb::JobLogs { job_id: String::new(), logs: "x".repeat(MAX_PAGE_BYTES / 3) };
        assert_eq!(within_page_bytes(std::iter::repeat_with(|| Ok(big.clone())).take(10)).unwrap().len(), 2);
        let huge = pb::JobLogs { job_id: String::new(), logs: "x".repeat(MAX_PAGE_BYTES * 2) };
        assert_eq!(
            within_page_bytes(std::iter::repeat_with(|| Ok(huge.clone())).take(3)).unwrap().len(),
            1,
            "one item always fits"
        );
        let counts: BTreeMap<String, u32> = (0..10u32).map(|n| (format!("{n:04b}"), n)).collect();
        let kept = most_frequent(counts, 3);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept.get("1001"), Some(&9));
        assert_eq!(kept.get("0111"), Some(&7));
    }
}
