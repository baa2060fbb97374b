//! How a query reads the indexes: the candidate positions of a filter, bucket by bucket, in
//! result order, and the scan of the positions the indexes do not cover yet.

use qtrail_cadf::Location;
use redb::ReadTransaction;

use super::{
    Chain, Index, IndexDef, IndexEntry, IndexField, IndexRead, IndexTable, RecordView, TimeDef, TimeTable, bucket_of,
    index_table_name, kind_values, missing_is_none, time_table_name,
};
use crate::filter::{Filter, Order, TargetMatch};
use crate::store::{Result, StoreError};
use prost::Message as _;
use tracing::warn;

/// A boxed iterator of chain positions.
pub(crate) type Seqs<'a> = Box<dyn Iterator<Item = Result<u64>> + 'a>;

/// What a query asks for: up to `limit` events of `location` matching `filter` in `order`,
/// strictly after position `after` in that order.
pub(crate) struct Query<'a> {
    pub(crate) location: &'a Location,
    pub(crate) filter: &'a Filter,
    pub(crate) order: Order,
    pub(crate) after: Option<u64>,
    pub(crate) limit: usize,
}

/// Why collecting a query's page failed.
enum PageError {
    /// Loading a record (from the chain) failed.
    Load(StoreError),
    /// Reading the candidates failed: the index, or the chain.
    Read(StoreError),
}

impl Index {
    /// Returns up to `query.limit` records that `load` returns for the candidate positions
    /// of `query` (see [`Index::for_each_candidate`]), in result order; `load` returns `None`
    /// for a position that is empty or does not match. Begin `index_read` before taking
    /// `chain`, so that every position the index counts as indexed is in the chain's snapshot.
    ///
    /// A query never fails because of the index: when reading it fails (an index step failed
    /// while this read was open: redb then refuses reads with "previous I/O error" until the
    /// indexer closes the file) the page is collected again from the chain alone, as for the
    /// positions the index has not reached.
    pub(crate) fn matching<T>(
        &self,
        index_read: &IndexRead<'_>,
        chain: &dyn Chain,
        query: &Query<'_>,
        mut load: impl FnMut(u64) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        let mut page = Vec::with_capacity(query.limit.min(1024));
        let err = match self.fill(index_read.txn(), chain, query, &mut load, &mut page) {
            Ok(()) => return Ok(page),
            Err(PageError::Load(err)) => return Err(err),
            Err(PageError::Read(err)) if index_read.txn().is_none() => return Err(err),
            Err(PageError::Read(err)) => err,
        };
        warn!(location = %query.location, error = %err, "reading the index failed, answering the query from the chain alone");
        page.clear();
        match self.fill(None, chain, query, &mut load, &mut page) {
            Ok(()) => Ok(page),
            Err(PageError::Load(err) | PageError::Read(err)) => Err(err),
        }
    }

    /// Adds to `page` what `load` returns for the candidates of `query`, through the indexes
    /// of `index_txn` if any, until `page` is full.
    fn fill<T>(
        &self,
        index_txn: Option<&ReadTransaction>,
        chain: &dyn Chain,
        query: &Query<'_>,
        load: &mut impl FnMut(u64) -> Result<Option<T>>,
        page: &mut Vec<T>,
    ) -> std::result::Result<(), PageError> {
        let mut load_failed = false;
        let read = self.for_each_candidate(index_txn, chain, query, |seq| match load(seq) {
            Ok(Some(record)) => {
                page.push(record);
                Ok(page.len() < query.limit)
            }
            Ok(None) => Ok(true),
            Err(err) => {
                load_failed = true;
                Err(err)
            }
        });
        match read {
            Ok(()) => Ok(()),
            Err(err) if load_failed => Err(PageError::Load(err)),
            Err(err) => Err(PageError::Read(err)),
        }
    }

    /// Calls `each` on the candidate positions of `query` in result order, until it returns
    /// `false`: those the index's read `index_txn` (if any) covers through the indexes, the positions
    /// of `chain` after them by reading the records. Begin the index's read before taking `chain`,
    /// so that every position the index counts as indexed is in the chain's snapshot.
    fn for_each_candidate(
        &self,
        index_txn: Option<&ReadTransaction>,
        chain: &dyn Chain,
        query: &Query<'_>,
        mut each: impl FnMut(u64) -> Result<bool>,
    ) -> Result<()> {
        let bounds = match (query.order, query.after) {
            (_, None) => SeqBounds { low: 1, high: u64::MAX },
            (Order::NewestFirst, Some(after)) => SeqBounds { low: 1, high: after.saturating_sub(1) },
            (Order::OldestFirst, Some(after)) => SeqBounds { low: after.saturating_add(1), high: u64::MAX },
        };
        // Clamp to the newest position, so that posting lists visit only buckets that exist.
        let bounds = SeqBounds { low: bounds.low, high: bounds.high.min(chain.newest()?) };
        if bounds.low > bounds.high || query.limit == 0 {
            return Ok(());
        }
        let (location, filter) = (query.location, query.filter);
        let descending = query.order == Order::NewestFirst;
        // Unchecked indexes are not trusted (see `Index::check`), and a file closed after a
        // failed step cannot be read: the chain is read instead.
        let (tables, indexed) = match index_txn {
            Some(index_txn) if self.trusted() => match Tables::open(index_txn, location)? {
                Some(tables) => (Some(tables), Index::mark_in(index_txn, location.as_str())?),
                None => (None, 0),
            },
            _ => (None, 0),
        };
        let through_index = match &tables {
            Some(tables) if bounds.low <= indexed => candidates(
                chain,
                tables,
                self.bucket_bits,
                SeqBounds { low: bounds.low, high: bounds.high.min(indexed) },
                descending,
                filter,
            )?,
            _ => Box::new(std::iter::empty()),
        };
        #[cfg(test)]
        let through_index = if tables.is_some() { self.faults.wrap(through_index) } else { through_index };
        let tail = SeqBounds { low: bounds.low.max(indexed.saturating_add(1)), high: bounds.high };
        let beyond_index: Seqs<'_> = if tail.low > tail.high {
            Box::new(std::iter::empty())
        } else if filter.is_empty() {
            chain.positions(tail, descending)?
        } else {
            unindexed(chain, tail, descending, filter)?
        };
        // The positions beyond the index are the newest.
        let candidates = if descending { beyond_index.chain(through_index) } else { through_index.chain(beyond_index) };
        for seq in candidates {
            if !each(seq?)? {
                break;
            }
        }
        Ok(())
    }
}

/// Index reads made to fail in tests, as a step failing while a query reads leaves them.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// After how many candidates read through the indexes a read fails.
    fail_after: std::sync::Mutex<Option<usize>>,
}

#[cfg(test)]
impl Faults {
    /// Makes every later read through the indexes fail after `candidates` candidates (`None`:
    /// never).
    pub(crate) fn fail_index_reads_after(&self, candidates: Option<usize>) {
        *self.fail_after.lock().unwrap() = candidates;
    }

    fn wrap<'a>(&self, seqs: Seqs<'a>) -> Seqs<'a> {
        match *self.fail_after.lock().unwrap() {
            None => seqs,
            Some(count) => {
                let failed = StoreError::Backend("previous i/o error (injected)".into());
                Box::new(seqs.take(count).chain(std::iter::once(Err(failed))))
            }
        }
    }
}

/// Inclusive bounds on `location_seq`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqBounds {
    pub(crate) low: u64,
    pub(crate) high: u64,
}

impl SeqBounds {
    fn contains(self, seq: u64) -> bool {
        (self.low..=self.high).contains(&seq)
    }
}

/// The index tables of one location in a read transaction.
pub(crate) struct Tables {
    index: IndexTable,
    time: TimeTable,
}

impl Tables {
    /// Opens the index tables of `location`; `None` when nothing of it is indexed yet.
    pub(crate) fn open(txn: &ReadTransaction, location: &Location) -> Result<Option<Self>> {
        let loc = location.as_str();
        let Some(index) = missing_is_none(txn.open_table(IndexDef::new(&index_table_name(loc))))? else {
            return Ok(None);
        };
        let Some(time) = missing_is_none(txn.open_table(TimeDef::new(&time_table_name(loc))))? else {
            return Ok(None);
        };
        Ok(Some(Self { index, time }))
    }
}

/// What a query's candidate positions are read from and within.
struct Plan<'a> {
    index: &'a IndexTable,
    bucket_bits: u32,
    bounds: SeqBounds,
    descending: bool,
}

impl<'a> Plan<'a> {
    /// Returns the buckets that `bounds` spans, in result order.
    fn buckets(&self) -> Box<dyn Iterator<Item = u32>> {
        let first = bucket_of(self.bounds.low, self.bucket_bits);
        let last = bucket_of(self.bounds.high, self.bucket_bits);
        if self.descending { Box::new((first..=last).rev()) } else { Box::new(first..=last) }
    }

    /// Returns the positions indexed under `field` = `value` within the bounds, in result order,
    /// reading one bucket at a time.
    fn posting(&self, field: IndexField, value: &str) -> Seqs<'a> {
        Box::new(Posting {
            index: self.index,
            field: field as u8,
            value: value.to_owned(),
            bounds: self.bounds,
            descending: self.descending,
            buckets: self.buckets(),
            current: None,
        })
    }

    /// Returns the positions indexed under any of the `Kind` values `kinds`, in result order.
    fn kinds(&self, kinds: &[&str]) -> Seqs<'a> {
        let postings = kinds.iter().map(|kind| self.posting(IndexField::Kind, kind)).collect();
        merge(postings, self.descending)
    }

    /// Returns the positions of targets starting with `prefix` (at a segment boundary), in
    /// result order, reading one bucket at a time.
    fn target_prefix(&self, prefix: &str) -> Seqs<'a> {
        let (index, bounds, descending) = (self.index, self.bounds, self.descending);
        let prefix = prefix.to_owned();
        let field = IndexField::Target as u8;
        let bucket_seqs = move |bucket: u32| -> Result<Vec<u64>> {
            let mut seqs = Vec::new();
            for entry in index.range((field, bucket, prefix.as_str(), 0)..)? {
                let (key, _) = entry?;
                let (entry_field, entry_bucket, target, seq) = key.value();
                if entry_field != field || entry_bucket != bucket || !target.starts_with(prefix.as_str()) {
                    break;
                }
                if bounds.contains(seq) && crate::filter::prefix_matches(&prefix, target) {
                    seqs.push(seq);
                }
            }
            Ok(seqs)
        };
        Box::new(self.buckets().flat_map(move |bucket| match bucket_seqs(bucket) {
            Ok(seqs) => sorted(seqs, descending),
            Err(err) => Box::new(std::iter::once(Err(err))),
        }))
    }

    /// Returns the positions of events in the filter's time range, in result order, reading one
    /// bucket at a time; with `kinds`, only those of the kinds.
    fn time_window(&self, time: &'a TimeTable, filter: &Filter, kinds: Option<Vec<&'static str>>) -> Seqs<'a> {
        let (index, bucket_bits, bounds, descending) = (self.index, self.bucket_bits, self.bounds, self.descending);
        let start = filter.start_millis.unwrap_or(i64::MIN);
        let end = filter.end_millis.unwrap_or(i64::MAX);
        Box::new(self.buckets().flat_map(move |bucket| -> Seqs<'a> {
            let window = match bucket_window(time, bucket, start, end, bounds) {
                Ok(window) => window,
                Err(err) => return Box::new(std::iter::once(Err(err))),
            };
            let (Some(&low), Some(&high)) = (window.first(), window.last()) else {
                return Box::new(std::iter::empty());
            };
            let Some(kinds) = &kinds else {
                return sorted(window, descending);
            };
            // An action is common and a time window can lie deep in the chain: walking the
            // action's entries from the newest would load every newer record only to drop it
            // (measured: 300 ms for a first page over 1M events). Instead, the positions in the
            // window bound the walk, and only positions in the window are loaded.
            let within = Plan { index, bucket_bits, bounds: SeqBounds { low, high }, descending };
            Box::new(within.kinds(kinds).filter(move |seq| match seq {
                Ok(seq) => window.binary_search(seq).is_ok(),
                Err(_) => true,
            }))
        }))
    }
}

/// Reads a posting list bucket by bucket; buckets are consecutive ranges of the chain, so the
/// concatenation is in chain order.
struct Posting<'a> {
    index: &'a IndexTable,
    field: u8,
    value: String,
    bounds: SeqBounds,
    descending: bool,
    buckets: Box<dyn Iterator<Item = u32>>,
    current: Option<Seqs<'a>>,
}

impl Iterator for Posting<'_> {
    type Item = Result<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(seq) = self.current.as_mut().and_then(Iterator::next) {
                return Some(seq);
            }
            let bucket = self.buckets.next()?;
            let (low, high) = (self.bounds.low, self.bounds.high);
            let range = match self
                .index
                .range((self.field, bucket, self.value.as_str(), low)..=(self.field, bucket, self.value.as_str(), high))
            {
                Ok(range) => range,
                Err(err) => return Some(Err(err.into())),
            };
            let seqs = |entry: IndexEntry<'_>| entry.map(|(key, _)| key.value().3).map_err(StoreError::from);
            self.current =
                Some(if self.descending { Box::new(range.rev().map(seqs)) } else { Box::new(range.map(seqs)) });
        }
    }
}

/// Returns the candidate positions for `filter` within `bounds`, all of them indexed, in result
/// order. Exact-value indexes come first (their entries are in chain order, so a page stops
/// early), most selective first by rule of thumb: correlation id, initiator, exact target, then
/// the kinds an action filter allows (with a time range, only within the range's positions). A
/// target prefix or a time range reads its positions a bucket at a time and sorts them. Kinds that
/// only an outcome or a severity narrows select a large share of events and come last; with no
/// filter, the chain itself is scanned.
pub(crate) fn candidates<'a>(
    events: &'a dyn Chain,
    tables: &'a Tables,
    bucket_bits: u32,
    bounds: SeqBounds,
    descending: bool,
    filter: &Filter,
) -> Result<Seqs<'a>> {
    let plan = Plan { index: &tables.index, bucket_bits, bounds, descending };
    if let Some(value) = &filter.correlation_id {
        return Ok(plan.posting(IndexField::Correlation, value));
    }
    if let Some(value) = &filter.initiator_id {
        return Ok(plan.posting(IndexField::Initiator, value));
    }
    if let Some(TargetMatch::Exact(value)) = &filter.target {
        return Ok(plan.posting(IndexField::Target, value));
    }
    let kinds = kind_values(filter);
    if let (Some(kinds), Some(_)) = (&kinds, &filter.actions) {
        if filter.start_millis.is_none() && filter.end_millis.is_none() {
            return Ok(plan.kinds(kinds));
        }
        return Ok(plan.time_window(&tables.time, filter, Some(kinds.clone())));
    }
    if let Some(TargetMatch::Prefix(prefix)) = &filter.target {
        return Ok(plan.target_prefix(prefix));
    }
    if filter.start_millis.is_some() || filter.end_millis.is_some() {
        return Ok(plan.time_window(&tables.time, filter, None));
    }
    if let Some(kinds) = &kinds {
        return Ok(plan.kinds(kinds));
    }
    events.positions(bounds, descending)
}

/// Returns the positions within `bounds` whose records match `filter`, in result order, reading
/// the records one by one: how positions the indexes do not cover yet are searched. Only the
/// fields that filters test are decoded. A record that does not decode is passed on, for the
/// caller's full read to report.
pub(crate) fn unindexed<'a>(
    events: &'a dyn Chain,
    bounds: SeqBounds,
    descending: bool,
    filter: &'a Filter,
) -> Result<Seqs<'a>> {
    let keep = move |entry: Result<(u64, Vec<u8>)>| {
        let (seq, value) = match entry {
            Ok(entry) => entry,
            Err(err) => return Some(Err(err)),
        };
        match RecordView::decode(value.as_slice()) {
            Ok(RecordView { event: Some(event), .. }) => event.matches(filter).then_some(Ok(seq)),
            // As when indexing: a record that does not decode can be found by no filter, at any
            // lag; VerifyChain reports it.
            Ok(RecordView { event: None, .. }) | Err(_) => None,
        }
    };
    Ok(Box::new(events.records(bounds, descending)?.filter_map(keep)))
}

/// Returns the positions of one bucket, within `bounds`, of the events whose time is in
/// `start..end`, ascending. Holds at most a bucket's positions.
fn bucket_window(time: &TimeTable, bucket: u32, start: i64, end: i64, bounds: SeqBounds) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in time.range((bucket, start, 0)..(bucket, end, 0))? {
        let (key, _) = entry?;
        let seq = key.value().2;
        if bounds.contains(seq) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

fn sorted<'a>(mut seqs: Vec<u64>, descending: bool) -> Seqs<'a> {
    seqs.sort_unstable();
    seqs.dedup();
    if descending {
        seqs.reverse();
    }
    Box::new(seqs.into_iter().map(Ok))
}

/// Merges position streams that are each in result order into one stream in result order.
pub(super) fn merge(mut streams: Vec<Seqs<'_>>, descending: bool) -> Seqs<'_> {
    let mut heads: Vec<Option<u64>> = Vec::new();
    let mut started = false;
    Box::new(std::iter::from_fn(move || {
        if !started {
            started = true;
            for stream in &mut streams {
                match stream.next() {
                    Some(Ok(seq)) => heads.push(Some(seq)),
                    Some(Err(err)) => return Some(Err(err)),
                    None => heads.push(None),
                }
            }
        }
        let (slot, seq) = heads
            .iter()
            .enumerate()
            .filter_map(|(slot, head)| head.map(|seq| (slot, seq)))
            .reduce(|best, next| if (next.1 > best.1) == descending { next } else { best })?;
        heads[slot] = match streams[slot].next() {
            Some(Ok(next)) => Some(next),
            Some(Err(err)) => return Some(Err(err)),
            None => None,
        };
        Some(Ok(seq))
    }))
}
