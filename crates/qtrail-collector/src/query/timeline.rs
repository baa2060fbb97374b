//! Event counts over time: how many events matching a filter happened in each bucket of a time
//! window, by outcome, for the console's timeline (people spot a burst faster than they read
//! one).
//!
//! The window is the filter's own time range; an open end is "now" and an open start is an hour
//! before the end. The bucket width is the smallest of [`BUCKET_WIDTHS_SECS`] that covers the
//! window in at most [`MAX_BUCKETS`] buckets, aligned to whole multiples of the width in UTC, so
//! that a bucket's bounds are round times an auditor can type back as a filter. Counting stops
//! after [`MAX_COUNTED`] events (newest first): a chart over more would cost every refresh a
//! long scan, so the answer says it is incomplete instead.

use qtrail_cadf::Outcome;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::Query;
use crate::error::{Error, Result};
use crate::filter::{Filter, Order, event_millis};
use crate::ingest::blocking;
use crate::registry::{parse_location, require_collector};
use crate::scope::Scope;

/// Most buckets one timeline has.
pub(crate) const MAX_BUCKETS: i64 = 240;
/// The bucket widths a timeline may use, in seconds, narrowest first: one minute up to a week.
pub(crate) const BUCKET_WIDTHS_SECS: [i64; 13] =
    [60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 604_800];
/// Most events one timeline counts.
pub(crate) const MAX_COUNTED: u64 = 100_000;
/// The window when the filter gives no start: the hour before its end.
const DEFAULT_WINDOW_MILLIS: i64 = 3_600_000;
/// Events read from the store per step of the count.
const SCAN_CHUNK: usize = 4096;

/// Counts of one bucket, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Events that succeeded.
    pub(crate) success: u64,
    /// Events that failed or were refused.
    pub(crate) failure: u64,
    /// Events accepted and not finished.
    pub(crate) pending: u64,
}

/// The counts of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Timeline {
    /// Start of the window, milliseconds since the epoch (inclusive).
    pub(crate) start_millis: i64,
    /// End of the window, milliseconds since the epoch (exclusive).
    pub(crate) end_millis: i64,
    /// Start of the first bucket: the window's start rounded down to the width.
    pub(crate) origin_millis: i64,
    /// Width of every bucket.
    pub(crate) bucket_millis: i64,
    /// The buckets, oldest first; bucket `i` covers `origin + i·width` up to the next.
    pub(crate) buckets: Vec<Bucket>,
    /// Events counted.
    pub(crate) counted: u64,
    /// False when counting stopped at [`MAX_COUNTED`]: older buckets may then miss events.
    pub(crate) complete: bool,
}

/// The buckets of a window, before counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: i64,
    end: i64,
    origin: i64,
    width: i64,
    count: i64,
}

impl Window {
    /// Returns the buckets of `[start, end)`, or why there are none.
    fn new(start: i64, end: i64) -> Result<Self> {
        if start >= end {
            return Err(Error::invalid("empty time window: start_time must be before end_time"));
        }
        // In i128, so that no pair of times can overflow, however far apart or near the ends.
        for secs in BUCKET_WIDTHS_SECS {
            let width = i128::from(secs * 1000);
            let origin = i128::from(start).div_euclid(width) * width;
            let count = (i128::from(end) - origin + width - 1).div_euclid(width);
            if count > i128::from(MAX_BUCKETS) {
                continue;
            }
            if let (Ok(origin), Ok(width), Ok(count)) =
                (i64::try_from(origin), i64::try_from(width), i64::try_from(count))
            {
                return Ok(Self { start, end, origin, width, count });
            }
        }
        let widest = BUCKET_WIDTHS_SECS[BUCKET_WIDTHS_SECS.len() - 1] / 86_400;
        Err(Error::invalid(format!(
            "time window too long for a timeline: at most {MAX_BUCKETS} buckets of {widest} days"
        )))
    }

    /// Returns the bucket of an event at `millis`, if it is in the window.
    fn bucket(&self, millis: i64) -> Option<usize> {
        if millis < self.start || millis >= self.end {
            return None;
        }
        usize::try_from((millis - self.origin).div_euclid(self.width)).ok()
    }
}

impl Query {
    /// Returns the counts by outcome, per bucket, of the events of `location` that match
    /// `filter` and that `scope` admits, over the filter's time range (open ends resolved
    /// against `now_millis`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location or filter, an empty window or one too long
    /// for [`MAX_BUCKETS`] of the widest width; [`Error::CollectorNotFound`].
    pub(crate) async fn timeline(
        &self,
        location: &str,
        filter: Option<&proto::EventFilter>,
        now_millis: i64,
        scope: &Scope,
    ) -> Result<Timeline> {
        let location = parse_location(location)?;
        let mut filter = Filter::from_wire(filter)?.within(scope);
        let end = filter.end_millis.unwrap_or(now_millis);
        let start = filter.start_millis.unwrap_or(end.saturating_sub(DEFAULT_WINDOW_MILLIS));
        let window = Window::new(start, end)?;
        // The store then skips the events outside the window itself.
        (filter.start_millis, filter.end_millis) = (Some(start), Some(end));
        require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        blocking(move || {
            let slots = usize::try_from(window.count).unwrap_or(0);
            let mut buckets = vec![Bucket::default(); slots];
            let mut counted = 0;
            let mut after = None;
            loop {
                let events = store.query(&location, &filter, Order::NewestFirst, after, SCAN_CHUNK)?;
                for record in &events {
                    if counted == MAX_COUNTED {
                        return Ok(timeline(window, buckets, counted, false));
                    }
                    counted += 1;
                    count(&window, &mut buckets, record);
                }
                match events.last() {
                    Some(last) if events.len() == SCAN_CHUNK => after = Some(last.location_seq),
                    _ => return Ok(timeline(window, buckets, counted, true)),
                }
            }
        })
        .await
    }
}

/// Adds a stored event to the bucket of its time.
fn count(window: &Window, buckets: &mut [Bucket], record: &proto::StoredEvent) {
    let Some(event) = &record.event else {
        return;
    };
    let Some(slot) = event.event_time.as_ref().and_then(|time| window.bucket(event_millis(time))) else {
        return;
    };
    let Some(bucket) = buckets.get_mut(slot) else {
        return;
    };
    match qtrail_cadf::proto::outcome_from_wire(event.outcome) {
        Ok(Outcome::Success) => bucket.success += 1,
        Ok(Outcome::Failure) => bucket.failure += 1,
        Ok(Outcome::Pending) => bucket.pending += 1,
        // Stored events were validated; one without an outcome is not drawn.
        Err(_) => {}
    }
}

fn timeline(window: Window, buckets: Vec<Bucket>, counted: u64, complete: bool) -> Timeline {
    Timeline {
        start_millis: window.start,
        end_millis: window.end,
        origin_millis: window.origin,
        bucket_millis: window.width,
        buckets,
        counted,
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn the_width_is_the_narrowest_that_fits_and_buckets_are_aligned() {
        let hour = Window::new(10 * MINUTE + 30_000, 70 * MINUTE + 30_000).unwrap();
        assert_eq!((hour.origin, hour.width, hour.count), (10 * MINUTE, MINUTE, 61));
        let day = Window::new(0, 24 * 60 * MINUTE).unwrap();
        assert_eq!((day.width, day.count), (10 * MINUTE, 144));
        let exact = Window::new(0, MAX_BUCKETS * MINUTE).unwrap();
        assert_eq!((exact.width, exact.count), (MINUTE, MAX_BUCKETS));
        let year = Window::new(0, 365 * 24 * 60 * MINUTE).unwrap();
        assert_eq!(year.width, 7 * 24 * 60 * MINUTE);
    }

    #[test]
    fn windows_must_be_non_empty_and_not_too_long() {
        for (start, end) in [(5, 5), (6, 5)] {
            assert!(Window::new(start, end).unwrap_err().to_string().starts_with("empty time window"));
        }
        let decade = Window::new(0, 10 * 365 * 24 * 60 * MINUTE).unwrap_err().to_string();
        assert!(decade.starts_with("time window too long for a timeline"), "{decade}");
        // Times at the ends of the range are refused or counted, never overflow.
        assert!(Window::new(i64::MIN, i64::MAX).is_err());
        assert_eq!(Window::new(i64::MAX - 1, i64::MAX).unwrap().count, 1);
        assert!(Window::new(i64::MIN, i64::MIN + 1).is_err(), "its bucket would start before the first millisecond");
        // Times before 1970 are buckets like any other.
        let before = Window::new(-MINUTE - 1, 0).unwrap();
        assert_eq!((before.origin, before.count), (-2 * MINUTE, 2));
    }

    #[test]
    fn events_fall_in_the_bucket_of_their_time_and_only_inside_the_window() {
        let window = Window::new(MINUTE + 1, 3 * MINUTE).unwrap();
        assert_eq!(window.bucket(MINUTE), None, "before the start");
        assert_eq!(window.bucket(MINUTE + 1), Some(0));
        assert_eq!(window.bucket(2 * MINUTE), Some(1));
        assert_eq!(window.bucket(3 * MINUTE - 1), Some(1));
        assert_eq!(window.bucket(3 * MINUTE), None, "the end is exclusive");
    }
}
