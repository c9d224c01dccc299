//! The level pattern both engines start from: the rows grouped by the levels of term 0,
//! and which levels of the other terms (and which trailing dense columns) each level of
//! term 0 meets.
//!
//! The LMM's blocked Cholesky and the GLMM's crossed solver lay out their systems alike
//! (MixedModels.jl's layout): term 0 (most levels) is block diagonal, everything else is
//! one dense "rest" block, and the block between them is sparse by level of term 0. The
//! sparsity pattern of that block is what this module computes, once per model (never per
//! evaluation), so the two engines cannot drift apart in how they index it:
//!
//! * `off[k]` (k >= 1): where term k's coefficients start among the rest indices, `qz` their
//!   total; term k's level `lv` occupies `off[k] + lv * s_k ..+ s_k`;
//! * `colptr`/`idx` (CSC-like): level l of term 0 meets the rest indices
//!   `idx[colptr[l]..colptr[l + 1]]`, increasing: the other terms' blocks it meets, then
//!   the `trailing` dense columns `qz..qz + trailing` (X and, for the LMM, y), which every
//!   level meets;
//! * `slot[k][i]` (k >= 1): for row i, the position in `idx` where the block of its
//!   (level of term 0, level of term k) pair starts, so that accumulating a row's cross
//!   products needs no search.

/// Rows grouped by level, stably (a counting sort): `start[l]..start[l + 1]` indexes
/// `order`, which lists the rows of level l in their original order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowGroups {
    pub start: Vec<usize>,
    pub order: Vec<u32>,
}

impl RowGroups {
    pub fn by_level(refs: &[u32], nlev: usize) -> RowGroups {
        let mut start = vec![0usize; nlev + 1];
        for &l in refs {
            start[l as usize + 1] += 1;
        }
        for l in 0..nlev {
            start[l + 1] += start[l];
        }
        let mut order = vec![0u32; refs.len()];
        let mut next = start.clone();
        for (t, &l) in refs.iter().enumerate() {
            order[next[l as usize]] = t as u32;
            next[l as usize] += 1;
        }
        RowGroups { start, order }
    }

    /// The grouping of rows that are already sorted by level, `start` as in `by_level`.
    pub fn sorted(start: &[usize]) -> RowGroups {
        let n = *start.last().unwrap_or(&0);
        RowGroups { start: start.to_vec(), order: (0..n as u32).collect() }
    }

    pub fn nlev(&self) -> usize {
        self.start.len() - 1
    }

    /// The rows of level l, in their original order.
    #[inline]
    pub fn rows(&self, l: usize) -> &[u32] {
        &self.order[self.start[l]..self.start[l + 1]]
    }
}

/// See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelPattern {
    pub off: Vec<usize>,
    pub qz: usize,
    pub colptr: Vec<usize>,
    pub idx: Vec<u32>,
    pub slot: Vec<Vec<u32>>,
}

impl LevelPattern {
    /// Terms with `nlev[k]` levels and `s[k]` columns; `refs[k]` the level of every row;
    /// `groups` the rows grouped by the levels of term 0; `trailing` dense columns after the
    /// terms' (in every level's pattern).
    pub fn new(nlev: &[usize], s: &[usize], refs: &[&[u32]], groups: &RowGroups, trailing: usize) -> LevelPattern {
        let nt = nlev.len();
        let n = refs[0].len();
        let nl0 = nlev[0];
        let mut off = vec![0usize; nt];
        let mut qz = 0;
        for k in 1..nt {
            off[k] = qz;
            qz += nlev[k] * s[k];
        }
        let mut mark: Vec<Vec<u32>> = nlev.iter().map(|&m| vec![u32::MAX; m]).collect();
        let mut slot: Vec<Vec<u32>> = (0..nt).map(|k| if k == 0 { Vec::new() } else { vec![0u32; n] }).collect();
        let mut colptr = Vec::with_capacity(nl0 + 1);
        let mut idx: Vec<u32> = Vec::new();
        // (first rest index, term, level) of the blocks level l meets
        let mut uniq: Vec<(usize, usize, usize)> = Vec::new();
        for l in 0..nl0 {
            colptr.push(idx.len());
            let rows_l = groups.rows(l);
            uniq.clear();
            for &t in rows_l {
                for k in 1..nt {
                    let lv = refs[k][t as usize] as usize;
                    if mark[k][lv] == u32::MAX {
                        mark[k][lv] = 0;
                        uniq.push((off[k] + lv * s[k], k, lv));
                    }
                }
            }
            uniq.sort_unstable();
            for &(start, k, lv) in &uniq {
                mark[k][lv] = idx.len() as u32;
                for a in 0..s[k] {
                    idx.push((start + a) as u32);
                }
            }
            for a in 0..trailing {
                idx.push((qz + a) as u32);
            }
            for &t in rows_l {
                for k in 1..nt {
                    slot[k][t as usize] = mark[k][refs[k][t as usize] as usize];
                }
            }
            for &(_, k, lv) in &uniq {
                mark[k][lv] = u32::MAX;
            }
        }
        colptr.push(idx.len());
        LevelPattern { off, qz, colptr, idx, slot }
    }

    /// Entries of the sparse block (rest indices met, summed over the levels of term 0).
    pub fn nent(&self) -> usize {
        self.idx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_by_level_is_a_stable_grouping() {
        let g = RowGroups::by_level(&[2, 0, 2, 1, 0], 3);
        assert_eq!(g.start, vec![0, 2, 3, 5]);
        assert_eq!(g.order, vec![1, 4, 3, 0, 2]);
        assert_eq!(g.rows(2), &[0, 2]);
    }

    #[test]
    fn pattern_lists_the_levels_each_level_of_term_0_meets() {
        // term 0: 2 levels; term 1: 3 levels, 2 columns; term 2: 2 levels, 1 column
        let r0 = [0u32, 1, 0, 1, 0];
        let r1 = [2u32, 0, 0, 2, 2];
        let r2 = [1u32, 1, 0, 0, 1];
        let refs: Vec<&[u32]> = vec![&r0, &r1, &r2];
        let g = RowGroups::by_level(&r0, 2);
        let pat = LevelPattern::new(&[2, 3, 2], &[1, 2, 1], &refs, &g, 1);
        assert_eq!(pat.off, vec![0, 0, 6]);
        assert_eq!(pat.qz, 8);
        // level 0 (rows 0, 2, 4): term 1 levels 0, 2 (rest 0-1, 4-5), term 2 levels 0, 1 (6, 7)
        // level 1 (rows 1, 3): term 1 levels 0, 2, term 2 levels 1, 0; then the trailing 8
        assert_eq!(pat.colptr, vec![0, 7, 14]);
        assert_eq!(pat.idx, vec![0, 1, 4, 5, 6, 7, 8, 0, 1, 4, 5, 6, 7, 8]);
        // row 3: level 1 of term 0, level 2 of term 1 -> entry 7 + 2; level 0 of term 2 -> 7 + 4
        assert_eq!(pat.slot[1][3], 9);
        assert_eq!(pat.slot[2][3], 11);
        for i in 0..5 {
            let l = r0[i] as usize;
            let e = pat.slot[1][i] as usize;
            assert!(e >= pat.colptr[l] && e < pat.colptr[l + 1]);
            assert_eq!(pat.idx[e] as usize, pat.off[1] + 2 * r1[i] as usize);
            assert_eq!(pat.idx[pat.slot[2][i] as usize] as usize, pat.off[2] + r2[i] as usize);
        }
    }
}
