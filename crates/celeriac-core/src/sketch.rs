//! A mergeable quantile sketch for run and wait times (DDSketch's logarithmic buckets): any
//! quantile of the values it saw within a relative error of 1 %, in a size bounded by the
//! range of the values, not their number; two sketches merge by adding bucket counts, so the
//! percentiles of a queue over an hour come from its minutes, and of all queues from each
//! queue's, exactly as if one sketch had seen every value.

use serde::{Deserialize, Serialize};

/// The relative error of every quantile a [`Sketch`] gives.
pub const RELATIVE_ERROR: f64 = 0.01;

/// The smallest value told apart from zero; smaller ones count as zero.
pub const MIN_VALUE: f64 = 1e-3;

/// The most buckets a sketch keeps; beyond it the lowest merge (their values then read as the
/// lowest kept bucket's). With [`RELATIVE_ERROR`] this spans more than 17 orders of magnitude.
pub const MAX_BUCKETS: usize = 2048;

/// Counts of values in logarithmic buckets: bucket `i` holds values in
/// `(γ^(i-1), γ^i]` with `γ = (1 + α) / (1 - α)`.
///
/// A sketch read back from a store (JSON) is checked: at most [`MAX_BUCKETS`] buckets, all
/// of them indexable, a count that is what its buckets and zeros hold, and extremes in order;
/// one that is not fails to deserialize. Buckets given to [`from_parts`](Self::from_parts) may
/// be anything: the sketch never holds more than [`MAX_BUCKETS`] of them, and counts saturate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct Sketch {
    /// The index of the first bucket in `counts`.
    offset: i32,
    /// Bucket counts from `offset` on.
    counts: Vec<u64>,
    /// Values at or below [`MIN_VALUE`] (and negative ones).
    zeros: u64,
    /// How many values.
    count: u64,
    /// Their sum.
    sum: f64,
    /// The smallest and largest value seen (exact).
    min: f64,
    max: f64,
}

/// A sketch as stored, before it is checked.
#[derive(Deserialize)]
struct Stored {
    offset: i32,
    counts: Vec<u64>,
    zeros: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl TryFrom<Stored> for Sketch {
    type Error = String;

    fn try_from(s: Stored) -> Result<Self, String> {
        if s.counts.len() > MAX_BUCKETS {
            return Err(format!(
                "a sketch of {} buckets, more than {MAX_BUCKETS}",
                s.counts.len()
            ));
        }
        let top = i64::from(s.offset) + s.counts.len() as i64 - 1;
        if top > i64::from(i32::MAX) {
            return Err(format!("a sketch whose buckets end past {}", i32::MAX));
        }
        let held = s
            .counts
            .iter()
            .try_fold(s.zeros, |total, n| total.checked_add(*n));
        if held != Some(s.count) {
            return Err(format!(
                "a sketch counting {} values whose buckets hold another number",
                s.count
            ));
        }
        if s.count > 0 && !(s.min.is_finite() && s.max.is_finite() && s.min <= s.max) {
            return Err(format!(
                "a sketch whose smallest value {} is not at most its largest {}",
                s.min, s.max
            ));
        }
        Ok(Sketch {
            offset: s.offset,
            counts: s.counts,
            zeros: s.zeros,
            count: s.count,
            sum: s.sum,
            min: s.min,
            max: s.max,
        })
    }
}

fn gamma() -> f64 {
    (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
}

fn index_of(value: f64) -> i32 {
    (value.ln() / gamma().ln()).ceil() as i32
}

/// The value a bucket stands for: the point whose relative error to both ends is α.
fn value_of(index: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(index) / (g + 1.0)
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value; a value that is not finite (NaN, infinite) is ignored.
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.note(value, 1);
        if value <= MIN_VALUE {
            self.zeros = self.zeros.saturating_add(1);
        } else {
            self.bump(index_of(value), 1);
        }
    }

    fn note(&mut self, value: f64, n: u64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count = self.count.saturating_add(n);
        self.sum += value * n as f64;
    }

    /// Adds `n` to bucket `index`, keeping at most [`MAX_BUCKETS`] buckets: an index below
    /// them counts in the lowest, and one above them folds the lowest into the lowest kept.
    /// The vector never grows beyond the bound, whatever the index.
    fn bump(&mut self, index: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(0);
        }
        let max = MAX_BUCKETS as i64;
        let lo = i64::from(self.offset);
        let hi = lo + self.counts.len() as i64 - 1;
        let index = i64::from(index);
        if index > hi {
            // The lowest bucket kept once `index` is the highest.
            let keep_from = (index - max + 1).max(lo);
            let drop = ((keep_from - lo) as usize).min(self.counts.len());
            if drop > 0 {
                let folded = self
                    .counts
                    .drain(..drop)
                    .fold(0u64, |a, b| a.saturating_add(b));
                if self.counts.is_empty() {
                    self.counts.push(0);
                }
                self.counts[0] = self.counts[0].saturating_add(folded);
            }
            // `keep_from` lies between two indexes (`lo` and `index`), so it is one.
            self.offset = i32::try_from(keep_from).unwrap_or(i32::MAX);
            let len = (index - keep_from + 1) as usize;
            self.counts.resize(len, 0);
        } else if index < lo {
            // Grow down no further than the bound allows.
            let new_lo = index.max(hi - max + 1);
            let grow = (lo - new_lo) as usize;
            if grow > 0 {
                let mut counts = vec![0; grow];
                counts.append(&mut self.counts);
                self.counts = counts;
                self.offset = i32::try_from(new_lo).unwrap_or(i32::MIN);
            }
        }
        let at = (index - i64::from(self.offset)).clamp(0, self.counts.len() as i64 - 1) as usize;
        self.counts[at] = self.counts[at].saturating_add(n);
    }

    /// Adds every value `other` saw.
    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        self.zeros = self.zeros.saturating_add(other.zeros);
        for (i, &n) in other.counts.iter().enumerate() {
            if n > 0 {
                self.bump(other.offset + i as i32, n);
            }
        }
    }

    /// The non-empty buckets as `(index, count)`, lowest first: with [`zeros`](Self::zeros),
    /// [`sum`](Self::sum), [`min`](Self::min) and [`max`](Self::max), all a store keeps to
    /// rebuild the sketch with [`from_parts`](Self::from_parts) (or to add to one in place).
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (self.offset + i as i32, *n))
    }

    /// How many values read as zero (at or below [`MIN_VALUE`]).
    pub fn zeros(&self) -> u64 {
        self.zeros
    }

    /// The sketch with these buckets (as [`buckets`](Self::buckets) gives them, in any order),
    /// zeros, sum and extremes; the count is what the buckets and zeros hold. Extremes that
    /// are missing or not finite are taken from the lowest and highest bucket.
    pub fn from_parts(
        buckets: impl IntoIterator<Item = (i32, u64)>,
        zeros: u64,
        sum: f64,
        min: Option<f64>,
        max: Option<f64>,
    ) -> Self {
        let mut s = Sketch::new();
        for (index, n) in buckets {
            if n > 0 {
                s.bump(index, n);
                s.count = s.count.saturating_add(n);
            }
        }
        s.zeros = zeros;
        s.count = s.count.saturating_add(zeros);
        if s.count == 0 {
            return Sketch::new();
        }
        s.sum = if sum.is_finite() { sum } else { 0.0 };
        let low = if zeros > 0 {
            0.0
        } else {
            s.buckets().next().map_or(0.0, |(i, _)| value_of(i))
        };
        let high = s.buckets().last().map_or(0.0, |(i, _)| value_of(i));
        s.min = min.filter(|m| m.is_finite()).unwrap_or(low);
        s.max = max.filter(|m| m.is_finite()).unwrap_or(high).max(s.min);
        s
    }

    /// How many values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// The smallest value, if any.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest value, if any.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// The `q` quantile (0 ≤ q ≤ 1) within [`RELATIVE_ERROR`] of the true one (values below
    /// [`MIN_VALUE`] read as 0), or `None` for an empty sketch.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // The rank of the wanted value among the sorted values, from 0.
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        if rank < self.zeros {
            return Some(self.min.clamp(0.0, MIN_VALUE));
        }
        let mut seen = self.zeros;
        for (i, &n) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(n);
            if seen > rank {
                let v = value_of(self.offset + i as i32);
                // Not `clamp`, which panics when the bounds are out of order.
                return Some(v.max(self.min).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[(q * (values.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn an_empty_sketch_has_no_quantiles() {
        let s = Sketch::new();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!((s.count(), s.min(), s.max()), (0, None, None));
    }

    #[test]
    fn quantiles_of_a_wide_range_stay_within_one_percent() {
        let mut s = Sketch::new();
        let mut values: Vec<f64> = (1..=100_000)
            .map(|i| (i as f64).powf(1.7) / 100.0)
            .collect();
        for v in &values {
            s.add(*v);
        }
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&mut values, q);
            let got = s.quantile(q).expect("a quantile");
            assert!(
                (got - want).abs() <= want * RELATIVE_ERROR * 1.0001,
                "q={q}: {got} vs {want}"
            );
        }
        assert_eq!(s.count(), 100_000);
        assert!(s.counts.len() <= MAX_BUCKETS);
    }

    #[test]
    fn zeros_and_tiny_values_read_as_zero() {
        let mut s = Sketch::new();
        for _ in 0..10 {
            s.add(0.0);
        }
        s.add(5.0);
        assert_eq!(s.quantile(0.5), Some(0.0));
        let top = s.quantile(1.0).expect("a quantile");
        assert!((top - 5.0).abs() <= 5.0 * RELATIVE_ERROR);
    }

    #[test]
    fn values_that_are_not_finite_are_ignored() {
        let mut s = Sketch::new();
        s.add(f64::INFINITY);
        s.add(f64::NAN);
        s.add(f64::NEG_INFINITY);
        assert_eq!(s.count(), 0);
        s.add(-3.0);
        assert_eq!(s.quantile(0.5), Some(0.0), "negative values count as zero");
    }

    #[test]
    fn the_bucket_count_is_bounded() {
        let mut s = Sketch::new();
        let mut v = MIN_VALUE * 2.0;
        while v < 1e300 {
            s.add(v);
            v *= 1.01;
        }
        assert!(s.counts.len() <= MAX_BUCKETS, "{}", s.counts.len());
        let top = s.quantile(1.0).expect("a quantile");
        assert!((top - s.max).abs() <= s.max * RELATIVE_ERROR);
    }

    #[test]
    fn a_sketch_survives_serialization() {
        let mut s = Sketch::new();
        for i in 1..1000 {
            s.add(i as f64 * 0.37);
        }
        let bytes = serde_json::to_vec(&s).expect("encodes");
        let back: Sketch = serde_json::from_slice(&bytes).expect("decodes");
        assert_eq!(back, s);
    }

    #[test]
    fn a_sketch_rebuilds_from_its_parts() {
        let mut s = Sketch::new();
        for i in 0..500 {
            s.add(f64::from(i) * 1.3);
        }
        let back = Sketch::from_parts(
            s.buckets().collect::<Vec<_>>().into_iter().rev(),
            s.zeros(),
            s.sum(),
            s.min(),
            s.max(),
        );
        assert_eq!(back.count(), s.count());
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(back.quantile(q), s.quantile(q));
        }
        let bare = Sketch::from_parts(s.buckets(), s.zeros(), s.sum(), None, None);
        assert_eq!(bare.min(), Some(0.0), "zeros make the minimum 0");
        let top = bare.max().expect("a maximum");
        assert!((top - s.max).abs() <= s.max * RELATIVE_ERROR);
        assert_eq!(Sketch::from_parts([], 0, 0.0, None, None), Sketch::new());
    }

    proptest! {
        /// Merging the sketches of two halves gives the sketch of the whole: the same buckets,
        /// so the same quantiles, whatever the grouping.
        #[test]
        fn merging_equals_seeing_everything(
            a in proptest::collection::vec(0.0f64..1e7, 0..300),
            b in proptest::collection::vec(0.0f64..1e7, 0..300),
        ) {
            let (mut sa, mut sb, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
            for v in &a { sa.add(*v); all.add(*v); }
            for v in &b { sb.add(*v); all.add(*v); }
            sa.merge(&sb);
            prop_assert_eq!(sa.count, all.count);
            prop_assert_eq!(sa.zeros, all.zeros);
            let trim = |s: &Sketch| -> (i32, Vec<u64>) {
                let first = s.counts.iter().position(|&n| n > 0).unwrap_or(0);
                let last = s.counts.iter().rposition(|&n| n > 0).map_or(0, |l| l + 1);
                (s.offset + first as i32, s.counts[first..last.max(first)].to_vec())
            };
            prop_assert_eq!(trim(&sa), trim(&all));
            for q in [0.5, 0.95, 0.99] {
                prop_assert_eq!(sa.quantile(q), all.quantile(q));
            }
        }

        /// Any quantile is within the relative error of the exact one.
        #[test]
        fn quantiles_are_within_the_error(
            mut values in proptest::collection::vec(0.01f64..1e6, 1..500),
            q in 0.0f64..=1.0,
        ) {
            let mut s = Sketch::new();
            for v in &values { s.add(*v); }
            let want = exact(&mut values, q);
            let got = s.quantile(q).expect("a quantile");
            prop_assert!((got - want).abs() <= want * RELATIVE_ERROR * 1.0001, "{} vs {}", got, want);
        }
    }
}
