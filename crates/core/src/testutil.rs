//! Helpers shared by the crate's unit tests.

/// A small deterministic pseudo-random generator, so the tests need no crate.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }

    pub(crate) fn level(&mut self, n: usize) -> u32 {
        ((self.next() * n as f64) as usize).min(n - 1) as u32
    }
}
