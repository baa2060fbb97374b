//! Latency statistics: percentiles by the nearest-rank method.

use std::time::Duration;

/// Latency samples, kept in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    micros: Vec<u64>,
    sorted: bool,
}

impl Samples {
    /// Returns an empty set of samples.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample.
    pub fn push(&mut self, latency: Duration) {
        self.micros.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Returns the number of samples.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// Returns true without samples.
    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// Returns the `p`-th percentile (0 < p <= 100) in milliseconds by nearest rank, 0 without
    /// samples.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
        let rank = ((p / 100.0) * self.micros.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.micros.len()) - 1;
        self.micros[index] as f64 / 1000.0
    }

    /// Returns the largest sample in milliseconds, 0 without samples.
    pub fn max_ms(&self) -> f64 {
        self.micros.iter().max().map_or(0.0, |max| *max as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(millis: &[u64]) -> Samples {
        let mut samples = Samples::new();
        for &ms in millis {
            samples.push(Duration::from_millis(ms));
        }
        samples
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut s = samples(&[5, 1, 4, 2, 3, 10, 9, 8, 7, 6]);
        assert_eq!(s.percentile_ms(50.0), 5.0);
        assert_eq!(s.percentile_ms(90.0), 9.0);
        assert_eq!(s.percentile_ms(99.0), 10.0);
        assert_eq!(s.percentile_ms(100.0), 10.0);
        assert_eq!(s.percentile_ms(1.0), 1.0);
        assert_eq!(s.max_ms(), 10.0);
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_zero() {
        let mut one = samples(&[7]);
        assert_eq!((one.percentile_ms(50.0), one.percentile_ms(99.0)), (7.0, 7.0));
        let mut none = Samples::new();
        assert_eq!((none.percentile_ms(50.0), none.max_ms()), (0.0, 0.0));
    }
}
