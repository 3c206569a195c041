//! Statistics over repeated measurements: median (min–max) of the rounds, and
//! nearest-rank percentiles for our own latency samples (the rate generator).

/// Percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile_sorted(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median, min and max of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Median, min and max of the finite values (a figure that could not be
/// computed is NaN or infinite and is left out); `None` when none is left.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_percentiles() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(summarize(&[1.0, 3.0]).unwrap().median, 2.0);
        assert!(summarize(&[]).is_none());
        // NaN and infinities (a division by zero upstream) are left out.
        assert_eq!(summarize(&[f64::NAN, 4.0]).unwrap().median, 4.0);
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile_sorted(&sorted, 50.0), 500);
        assert_eq!(percentile_sorted(&sorted, 99.9), 999);
        assert_eq!(percentile_sorted(&sorted, 100.0), 1000);
        assert_eq!(percentile_sorted(&[], 50.0), 0);
    }
}
