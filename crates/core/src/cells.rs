//! Per-cell weighted moments of row values, accumulated chunk by chunk.
//!
//! Data read in chunks (Parquet batches, Dask partitions) reach the LMM only through, per
//! *cell* (a combination of the levels of every random-effect term), the weight, a shift
//! `c` and the shifted first and second moments of the row values
//! `v = [z.., x.., y - offset]`: `m1 = sum w (v - c)`, `m2 = sum w (v - c)(v - c)'` (upper
//! triangle, row-major). The Python side (`multilevel.engine.blocks.CellStats`) merges them
//! exactly and turns them into pseudo rows. This is the per-row part, in one pass over the
//! chunk's rows instead of one numpy pass per moment (the moments are `dim (dim + 3) / 2`
//! sums per row: 20 for random slopes).
//!
//! The shift of a cell is the unweighted mean of its rows in the first chunk that has any
//! (close to the cell's mean, so the shifted sums keep their digits); a cell seen before
//! keeps its shift.

use crate::error::{CoreError, CoreResult};

/// The accumulated moments of `n` cells of `dim`-vectors (row-major arrays):
/// `count` (n), `wsum` (n), `c` (n x dim), `m1` (n x dim), `m2` (n x dim (dim + 1) / 2).
pub struct CellMoments<'a> {
    pub dim: usize,
    pub count: &'a mut [i64],
    pub wsum: &'a mut [f64],
    pub c: &'a mut [f64],
    pub m1: &'a mut [f64],
    pub m2: &'a mut [f64],
}

impl CellMoments<'_> {
    fn n_cells(&self) -> usize {
        self.count.len()
    }

    fn check(&self) -> CoreResult<()> {
        let (n, d) = (self.n_cells(), self.dim);
        let t = d * (d + 1) / 2;
        if self.wsum.len() != n || self.c.len() != n * d || self.m1.len() != n * d
            || self.m2.len() != n * t
        {
            return Err(CoreError::Data(format!(
                "cell moments: arrays of {n} cells of dimension {d} must have {n}, {n}, {}, {} and {} values",
                n * d, n * d, n * t)));
        }
        if self.count.iter().any(|&k| k < 0) {
            return Err(CoreError::Data("cell moments: a negative row count".into()));
        }
        Ok(())
    }

    /// Add `m` rows: `cells` (m) the cell of each row, `v` (m x dim, row-major) the values,
    /// `w` (m) prior weights or None (all 1). Validates everything before changing anything.
    pub fn add(&mut self, cells: &[i64], v: &[f64], w: Option<&[f64]>) -> CoreResult<()> {
        self.check()?;
        let (n, d) = (self.n_cells(), self.dim);
        let m = cells.len();
        if v.len() != m * d {
            return Err(CoreError::Data(format!(
                "cell moments: {m} rows of dimension {d} need {} values, not {}", m * d, v.len())));
        }
        if let Some(w) = w {
            if w.len() != m {
                return Err(CoreError::Data(format!(
                    "cell moments: {m} rows need {m} weights, not {}", w.len())));
            }
        }
        if let Some(&bad) = cells.iter().find(|&&k| k < 0 || k as usize >= n) {
            return Err(CoreError::Data(format!("cell moments: cell {bad} is not in 0..{n}")));
        }
        // the shifts of fresh cells: the mean of their rows here. count < 0 marks a cell
        // fresh in this chunk (minus its rows so far); the sum is summed from 0 in row order
        // (as numpy's bincount would)
        for (i, &k) in cells.iter().enumerate() {
            let k = k as usize;
            let row = &v[i * d..(i + 1) * d];
            let ck = &mut self.c[k * d..(k + 1) * d];
            match self.count[k] {
                0 => {
                    ck.copy_from_slice(row);
                    self.count[k] = -1;
                }
                c if c < 0 => {
                    for (a, b) in ck.iter_mut().zip(row) {
                        *a += *b;
                    }
                    self.count[k] = c - 1;
                }
                _ => {}
            }
        }
        for &k in cells {
            let k = k as usize;
            let c = self.count[k];
            if c < 0 {
                let inv = -(c as f64);
                for a in &mut self.c[k * d..(k + 1) * d] {
                    *a /= inv;
                }
                self.count[k] = 0;
            }
        }
        let t = d * (d + 1) / 2;
        let mut r = vec![0.0; d];
        for (i, &k) in cells.iter().enumerate() {
            let k = k as usize;
            let row = &v[i * d..(i + 1) * d];
            let ck = &self.c[k * d..(k + 1) * d];
            for j in 0..d {
                r[j] = row[j] - ck[j];
            }
            let wt = w.map_or(1.0, |w| w[i]);
            let m1 = &mut self.m1[k * d..(k + 1) * d];
            let m2 = &mut self.m2[k * t..(k + 1) * t];
            let mut pos = 0;
            for a in 0..d {
                let wr = wt * r[a];
                m1[a] += wr;
                for b in a..d {
                    m2[pos] += wr * r[b];
                    pos += 1;
                }
            }
            self.count[k] += 1;
            self.wsum[k] += wt;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The moments by brute force: every cell's sum of w v v' about its shift, compared with
    /// what the shifted moments give back.
    #[test]
    fn moments_match_brute_force_over_chunks() {
        let d = 3;
        let n = 4;
        let t = d * (d + 1) / 2;
        let rows: Vec<(i64, [f64; 3], f64)> = (0..40)
            .map(|i| {
                let f = i as f64;
                ((i * 7 % 3) as i64, [1.0, (f * 0.37).sin() * 10.0 + 100.0, f * f * 0.01], 0.5 + (i % 4) as f64)
            })
            .collect();
        let (mut count, mut wsum) = (vec![0i64; n], vec![0.0; n]);
        let (mut c, mut m1, mut m2) = (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * t]);
        for chunk in rows.chunks(7) {
            let cells: Vec<i64> = chunk.iter().map(|r| r.0).collect();
            let v: Vec<f64> = chunk.iter().flat_map(|r| r.1).collect();
            let w: Vec<f64> = chunk.iter().map(|r| r.2).collect();
            let mut cm = CellMoments { dim: d, count: &mut count, wsum: &mut wsum, c: &mut c, m1: &mut m1, m2: &mut m2 };
            cm.add(&cells, &v, Some(&w)).unwrap();
        }
        assert_eq!(count[3], 0); // a cell without rows stays empty
        for k in 0..3 {
            let mine: Vec<_> = rows.iter().filter(|r| r.0 == k as i64).collect();
            assert_eq!(count[k] as usize, mine.len());
            let wk: f64 = mine.iter().map(|r| r.2).sum();
            assert!((wsum[k] - wk).abs() < 1e-12);
            let mut pos = 0;
            for a in 0..d {
                let s1: f64 = mine.iter().map(|r| r.2 * r.1[a]).sum();
                let got1 = m1[k * d + a] + wk * c[k * d + a];
                assert!((got1 - s1).abs() < 1e-9 * s1.abs().max(1.0), "m1 {k} {a}");
                for b in a..d {
                    let s2: f64 = mine.iter().map(|r| r.2 * r.1[a] * r.1[b]).sum();
                    let (ca, cb) = (c[k * d + a], c[k * d + b]);
                    let got2 = m2[k * t + pos] + ca * m1[k * d + b] + cb * m1[k * d + a] + wk * ca * cb;
                    assert!((got2 - s2).abs() < 1e-9 * s2.abs().max(1.0), "m2 {k} {a} {b}");
                    pos += 1;
                }
            }
        }
        // the shift of a cell is the mean of its rows in the first chunk that had any
        let first: Vec<_> = rows[..7].iter().filter(|r| r.0 == 0).collect();
        let mean1 = first.iter().map(|r| r.1[1]).sum::<f64>() / first.len() as f64;
        assert_eq!(c[1], mean1);
    }

    #[test]
    fn bad_input_changes_nothing() {
        let (mut count, mut wsum) = (vec![0i64; 2], vec![0.0; 2]);
        let (mut c, mut m1, mut m2) = (vec![0.0; 4], vec![0.0; 4], vec![0.0; 6]);
        let mut cm = CellMoments { dim: 2, count: &mut count, wsum: &mut wsum, c: &mut c, m1: &mut m1, m2: &mut m2 };
        assert!(cm.add(&[0, 2], &[1.0, 2.0, 3.0, 4.0], None).is_err());
        assert!(cm.add(&[0, 1], &[1.0, 2.0, 3.0], None).is_err());
        assert!(cm.add(&[0, 1], &[1.0, 2.0, 3.0, 4.0], Some(&[1.0])).is_err());
        assert_eq!(count, vec![0, 0]);
        assert_eq!(c, vec![0.0; 4]);
    }
}
