//! Load-balancer choices over `n` endpoints. State (the round-robin cursor, the
//! in-flight counts) is per worker, so nothing here is shared between cores.

use std::cell::Cell;

pub fn round_robin(cursor: &Cell<usize>, n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let c = cursor.get();
    cursor.set(c.wrapping_add(1));
    Some(c % n)
}

pub fn random(n: usize) -> Option<usize> {
    (n > 0).then(|| fastrand::usize(..n))
}

/// Power of two choices: of two distinct random endpoints, the one with fewer
/// requests in flight (ties to the first).
pub fn p2c(n: usize, active: impl Fn(usize) -> u32) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        _ => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            Some(if active(b) < active(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_evenly() {
        let c = Cell::new(0);
        let picks: Vec<_> = (0..6).map(|_| round_robin(&c, 3).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(round_robin(&c, 0), None);
    }

    #[test]
    fn random_stays_in_range_and_spreads() {
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[random(4).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&s| (800..1200).contains(&s)), "{seen:?}");
        assert_eq!(random(0), None);
    }

    #[test]
    fn p2c_avoids_the_busy_endpoint() {
        // Endpoint 0 is loaded; it can only win when both draws pick it, which
        // p2c never does (the two choices are distinct).
        for _ in 0..1000 {
            let i = p2c(2, |i| if i == 0 { 10 } else { 0 }).unwrap();
            assert_eq!(i, 1);
        }
        let mut seen = [0u32; 3];
        for _ in 0..3000 {
            seen[p2c(3, |i| if i == 0 { 5 } else { 0 }).unwrap()] += 1;
        }
        // 0 is chosen only when it is not drawn at all: never.
        assert_eq!(seen[0], 0);
        assert!(seen[1] > 1000 && seen[2] > 1000, "{seen:?}");
        assert_eq!(p2c(1, |_| 9), Some(0));
        assert_eq!(p2c(0, |_| 0), None);
    }
}
