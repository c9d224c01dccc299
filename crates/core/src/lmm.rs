//! Profiled deviance of a linear mixed model by a blocked Cholesky factorisation.
//!
//! Model: y | b ~ N(X beta + Z b, sigma^2 W^-1), b = Lambda(theta) u, u ~ N(0, sigma^2 I).
//! With the rows scaled by sqrt(w), the penalised least-squares system for (u, beta) and the
//! response is the lower Cholesky factor L of
//!
//! ```text
//!   [ Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y ]
//!   [ X'Z Lambda              X'X          X'y        ]
//!   [ y'Z Lambda              y'X          y'y        ]
//! ```
//!
//! and the penalised residual sum of squares is the square of L's last diagonal element, so an
//! evaluation needs no solve. The layout follows MixedModels.jl (Bates et al.):
//!
//! * term 0 is the random-effect term with the most levels; its diagonal block is block
//!   diagonal (one s0 x s0 block per level) and its factor stays so: no fill-in;
//! * everything else (the other terms, then X, then y) is the "rest", of size r = qz + p + 1,
//!   held as one dense r x r block. Its off-diagonal block with term 0 is sparse by level of
//!   term 0 (each level of term 0 meets a few levels of the other terms) and the factor keeps
//!   that pattern, so the update of the dense block is a sum of small sparse rank-s0 updates.
//!
//! The cross-product blocks are sums over rows; the pattern (which levels meet) needs only the
//! grouping codes, and the values can be accumulated from the rows in any order or in chunks.

use crate::error::{CoreError, CoreResult};
use crate::pattern::{LevelPattern, RowGroups};
use crate::small;

pub use crate::error::MAX_DENSE;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor as llt;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{MatMut, MatRef, Par};

mod gradient;
mod sparse;

use sparse::{RestShape, SpPat, SparseRest};
pub use sparse::MAX_SPARSE_NNZ;

/// How the rest block (the terms after term 0, X and y) is held and factored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// chosen from the pattern before the optimiser starts (`Lmm::new`)
    Auto,
    /// one dense block and faer's dense Cholesky
    Dense,
    /// faer's sparse Cholesky with a fill-reducing order (nested and partially crossed
    /// designs); falls back to dense when there is no random effect after term 0
    Sparse,
}

/// Below this many random effects after term 0 the dense block is kept: its Cholesky costs
/// microseconds and the sparse one's set-up would not pay.
const SPARSE_MIN_QZ: usize = 48;
/// Most pairs of levels the pattern analysis may visit (sum over the levels of term 0 of the
/// square of the levels they meet): beyond it the analysis alone would cost seconds.
const SPARSE_MAX_PAIRS: f64 = 2e9;

/// One random-effect term as the engine sees it: a grouping factor with `nlev` levels, `s`
/// model-matrix columns, and the pattern of its relative covariance factor Lambda (lower
/// triangular s x s): the nonzeros as (row, column, index into theta). Terms that share a
/// grouping factor (`(1|g) + (0+x|g)`) are merged by the caller into one term whose Lambda has
/// structural zeros.
#[derive(Clone, Debug)]
pub struct Term {
    pub nlev: usize,
    pub s: usize,
    pub lambda: Vec<(usize, usize, usize)>,
}

/// The rows of a model, borrowed. `z[k]` and `x` are row-major (n x s_k, n x p).
pub struct Rows<'a> {
    pub refs: Vec<&'a [u32]>,
    pub z: Vec<&'a [f64]>,
    pub x: &'a [f64],
    pub y: &'a [f64],
    pub w: Option<&'a [f64]>,
}

/// Estimates at one theta.
#[derive(Clone, Debug)]
pub struct Solution {
    pub objective: f64,
    pub beta: Vec<f64>,
    /// spherical random effects per term, level-major (nlev x s)
    pub u: Vec<Vec<f64>>,
    /// b = Lambda u per term, level-major (nlev x s)
    pub b: Vec<Vec<f64>>,
    pub pwrss: f64,
    /// log det(L_Z)^2 and log det(L_X)^2
    pub ldl2: f64,
    pub ldrx2: f64,
    /// L_X, the p x p lower factor of the fixed-effects block, column-major:
    /// vcov(beta) = sigma^2 (L_X L_X')^-1
    pub rx: Vec<f64>,
}

/// The cross-product blocks and the workspace of one evaluation.
pub struct Lmm {
    terms: Vec<Term>,
    n: usize,
    p: usize,
    /// start of term k (k >= 1) inside the rest block
    off: Vec<usize>,
    qz: usize,
    r: usize,
    // ---- cross products (values) ----
    a11: Vec<f64>,
    arr: Vec<f64>,
    colptr: Vec<usize>,
    idx: Vec<u32>,
    ar1: Vec<f64>,
    /// per term k >= 1 and row: the entry of the (level of term 0, level of term k) block
    slot: Vec<Vec<u32>>,
    // ---- workspace ----
    lam: Vec<Vec<f64>>,
    l11: Vec<f64>,
    bmat: Vec<f64>,
    c: Vec<f64>,
    mem: MemBuffer,
    par: Par,
    /// the theta the factor in the workspace belongs to
    factored: Option<Vec<f64>>,
    /// the sparse representation of the rest block; None: `arr` and `c` are dense r x r
    sp: Option<Box<SparseRest>>,
    /// update the dense block with dense products of chunks of B (true) or entry by entry
    dense_update: bool,
    /// workspace of the dense update: r x (CHUNK * s0)
    chunk: Vec<f64>,
    /// workspace of the gradient (`gradient.rs`): the inverse of the leading part of the
    /// dense factor and P = (C C')^-1; allocated on the first gradient, reused after
    gw_inv: Vec<f64>,
    gw_p: Vec<f64>,
    /// ... and under REML: the X rows of B over all levels of term 0 (p x nl0 s0) and P_xx
    /// times them
    gw_bx: Vec<f64>,
    gw_pbx: Vec<f64>,
}

/// Levels of term 0 per dense update of the rest block.
const CHUNK: usize = 128;

use CoreError as E;

fn check_len(what: &str, got: usize, want: usize) -> CoreResult<()> {
    E::check_len(what, got, want)
}

impl Lmm {
    /// Build the pattern and the cross products from the rows; the layout of the rest block
    /// is chosen from the pattern (`Layout::Auto`).
    pub fn new(terms: Vec<Term>, p: usize, rows: &Rows) -> CoreResult<Lmm> {
        Lmm::with_layout(terms, p, rows, Layout::Auto)
    }

    /// As `new`, with the layout of the rest block given (the tests compare the layouts).
    pub fn with_layout(terms: Vec<Term>, p: usize, rows: &Rows, layout: Layout) -> CoreResult<Lmm> {
        Lmm::build(terms, p, rows, layout, None)
    }

    /// As `with_layout`; `supernodal` forces faer's choice between its simplicial and
    /// supernodal sparse factorisations (None: faer's own, by its flop count).
    fn build(terms: Vec<Term>, p: usize, rows: &Rows, layout: Layout, supernodal: Option<bool>) -> CoreResult<Lmm> {
        if terms.is_empty() {
            return Err(E::ModelSpec("no random-effect terms".into()));
        }
        let n = rows.y.len();
        check_len("refs", rows.refs.len(), terms.len())?;
        check_len("z", rows.z.len(), terms.len())?;
        check_len("x", rows.x.len(), n * p)?;
        if let Some(w) = rows.w {
            check_len("weights", w.len(), n)?;
        }
        for (k, t) in terms.iter().enumerate() {
            check_len("refs", rows.refs[k].len(), n)?;
            check_len("z", rows.z[k].len(), n * t.s)?;
            if let Some(&bad) = rows.refs[k].iter().find(|&&l| l as usize >= t.nlev) {
                return Err(E::Data(format!("term {k}: level {bad} >= nlev {}", t.nlev)));
            }
            for &(i, j, _) in &t.lambda {
                if i < j || i >= t.s {
                    return Err(E::ModelSpec(format!("term {k}: lambda entry ({i},{j}) not lower")));
                }
            }
        }
        // the size of the rest block before anything is allocated
        let qz: usize = terms[1..].iter().map(|t| t.nlev * t.s).sum();
        let r = qz + p + 1;
        let too_dense = |why: &str| {
            E::check_dense(r, || {
                format!(
                    "the random-effect terms after the first (the one with most levels) have {qz} \
                     coefficients together, with the {p} fixed effects and the response{why}"
                )
            })
        };
        if layout == Layout::Dense || qz == 0 {
            too_dense("")?;
        }
        let s0 = terms[0].s;
        let nl0 = terms[0].nlev;

        // ---- pattern: which levels of the other terms meet each level of term 0 ----
        let groups = RowGroups::by_level(rows.refs[0], nl0);
        let nlev: Vec<usize> = terms.iter().map(|t| t.nlev).collect();
        let svec: Vec<usize> = terms.iter().map(|t| t.s).collect();
        // trailing columns of every level's pattern: X, then y
        let LevelPattern { off, qz, colptr, idx, slot } = LevelPattern::new(&nlev, &svec, &rows.refs, &groups, p + 1);
        let nent = idx.len();

        // The update of the dense block by B B' costs sum_l m_l^2 / 2 scattered operations
        // entry by entry, or r^2 nl0 / 2 as dense matrix products, which run some 20 times
        // faster per operation: take the dense route when B is dense enough (crossed factors
        // with many levels meeting, e.g. 5000 x 500 levels on 1e6 rows).
        let sparse_cost: f64 = (0..nl0)
            .map(|l| {
                let m = (colptr[l + 1] - colptr[l]) as f64;
                m * (m + 1.0) / 2.0
            })
            .sum::<f64>()
            * s0 as f64;
        let dense_cost = (r as f64) * (r as f64) * (nl0 * s0) as f64 / 2.0;
        let dense_update = r >= 64 && sparse_cost * 20.0 > dense_cost;

        // The rest block: sparse where the pattern keeps the factor sparse, decided here from
        // the grouping codes alone (deterministic, before the optimiser starts). Designs whose
        // levels of term 0 meet many levels of the others (dense_update) fill in to a dense
        // factor, so the analysis is skipped for them unless the dense block is too large.
        let sp = {
            let shape = RestShape { nlev: &nlev, s: &svec, off: &off, qz, trailing: p + 1 };
            let lpat = sparse::LevelRef { colptr: &colptr, idx: &idx };
            let attempt = match layout {
                Layout::Dense => false,
                Layout::Sparse => qz > 0 && SparseRest::pair_bound(&shape, n, lpat).is_some(),
                Layout::Auto => {
                    qz >= SPARSE_MIN_QZ
                        && (!dense_update || r > MAX_DENSE)
                        && SparseRest::pair_bound(&shape, n, lpat).is_some_and(|b| b <= SPARSE_MAX_PAIRS)
                }
            };
            if attempt {
                match SparseRest::build(&shape, &rows.refs, lpat, supernodal) {
                    Some((sp, cost)) if layout == Layout::Sparse || r > MAX_DENSE || sparse_pays(&cost, r) => Some(Box::new(sp)),
                    _ => None,
                }
            } else {
                None
            }
        };
        if sp.is_none() {
            too_dense(if qz > 0 && layout != Layout::Dense { " (and their pattern fills in too much for a sparse factor)" } else { "" })?;
        }
        let dense = sp.is_none();
        let par = if dense && r >= 256 { Par::rayon(0) } else { Par::Seq };
        let nval = sp.as_ref().map(|s| s.nnz()).unwrap_or(r * r);
        let mem = if dense {
            MemBuffer::new(llt::cholesky_in_place_scratch::<f64>(r, par, Default::default()))
        } else {
            MemBuffer::new(faer::dyn_stack::StackReq::EMPTY)
        };
        let dense_update = dense && dense_update;
        let mut m = Lmm {
            lam: terms.iter().map(|t| vec![0.0; t.s * t.s]).collect(),
            l11: vec![0.0; nl0 * s0 * s0],
            bmat: vec![0.0; nent * s0],
            c: vec![0.0; nval],
            a11: vec![0.0; nl0 * s0 * s0],
            arr: vec![0.0; nval],
            ar1: vec![0.0; nent * s0],
            terms,
            n,
            p,
            off,
            qz,
            r,
            colptr,
            idx,
            slot,
            mem,
            par,
            factored: None,
            sp,
            dense_update,
            chunk: if dense_update { vec![0.0; r * CHUNK * s0] } else { Vec::new() },
            gw_inv: Vec::new(),
            gw_p: Vec::new(),
            gw_bx: Vec::new(),
            gw_pbx: Vec::new(),
        };
        m.accumulate(rows, false);
        Ok(m)
    }

    pub fn nobs(&self) -> usize {
        self.n
    }
    pub fn p(&self) -> usize {
        self.p
    }
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }
    /// Size of the rest block (other terms, X and y).
    pub fn rest_size(&self) -> usize {
        self.r
    }

    /// Whether the rest block is held sparse (`Layout::Sparse`, or chosen so by `Auto`).
    pub fn is_sparse(&self) -> bool {
        self.sp.is_some()
    }

    /// Replace the response (and keep weights, X and Z): only the y row of the blocks is
    /// recomputed. Used by the parametric bootstrap and by simulation studies.
    pub fn set_y(&mut self, rows: &Rows) -> CoreResult<()> {
        check_len("y", rows.y.len(), self.n)?;
        self.accumulate(rows, true);
        Ok(())
    }

    /// Replace weights and response (the pattern is kept). Used by PIRLS.
    pub fn reweight(&mut self, rows: &Rows) -> CoreResult<()> {
        check_len("y", rows.y.len(), self.n)?;
        self.accumulate(rows, false);
        Ok(())
    }

    /// Sum the cross products over the rows. With `only_y`, just the y row.
    fn accumulate(&mut self, rows: &Rows, only_y: bool) {
        self.clear(only_y);
        if only_y || self.n < 200_000 {
            self.add_rows(rows, 0, only_y);
        } else {
            // Scattered updates make this pass memory-latency bound; two threads overlap the
            // misses. The halves are fixed (not the machine's thread count), so the sums and
            // hence the results are the same everywhere.
            let mid = self.n / 2;
            let (lo, hi) = (rows.range(0, mid, &self.terms, self.p), rows.range(mid, self.n, &self.terms, self.p));
            let mut other = Acc { a11: vec![0.0; self.a11.len()], ar1: vec![0.0; self.ar1.len()], arr: vec![0.0; self.arr.len()] };
            let mut mine = Acc {
                a11: std::mem::take(&mut self.a11),
                ar1: std::mem::take(&mut self.ar1),
                arr: std::mem::take(&mut self.arr),
            };
            {
                let pat = self.pattern();
                rayon::join(|| pat.add_rows(&mut mine, &lo, 0, false), || pat.add_rows(&mut other, &hi, mid, false));
            }
            for (a, b) in mine.a11.iter_mut().zip(&other.a11) {
                *a += b;
            }
            for (a, b) in mine.ar1.iter_mut().zip(&other.ar1) {
                *a += b;
            }
            for (a, b) in mine.arr.iter_mut().zip(&other.arr) {
                *a += b;
            }
            self.a11 = mine.a11;
            self.ar1 = mine.ar1;
            self.arr = mine.arr;
        }
        self.finish();
    }

    fn pattern(&self) -> Pattern<'_> {
        Pattern {
            terms: &self.terms,
            p: self.p,
            r: self.r,
            qz: self.qz,
            off: &self.off,
            colptr: &self.colptr,
            slot: &self.slot,
            sp: self.sp.as_ref().map(|s| s.pat()),
        }
    }

    /// Accumulate the cross products from chunks of rows (out of core, or data arriving in
    /// pieces): `clear_values`, then `add_chunk` for each chunk with the index of its first
    /// row in the whole data, then `finish_values`. The pattern (built by `new` from the
    /// grouping codes of all rows) is kept.
    pub fn clear_values(&mut self) {
        self.clear(false);
    }

    pub fn add_chunk(&mut self, rows: &Rows, first_row: usize) -> CoreResult<()> {
        let m = rows.y.len();
        if first_row + m > self.n {
            return Err(E::Data(format!("chunk rows {first_row}..{} beyond n = {}", first_row + m, self.n)));
        }
        check_len("x", rows.x.len(), m * self.p)?;
        for (k, t) in self.terms.iter().enumerate() {
            check_len("refs", rows.refs[k].len(), m)?;
            check_len("z", rows.z[k].len(), m * t.s)?;
        }
        self.add_rows(rows, first_row, false);
        Ok(())
    }

    pub fn finish_values(&mut self) {
        self.finish();
    }

    fn clear(&mut self, only_y: bool) {
        self.factored = None;
        let r = self.r;
        let s0 = self.terms[0].s;
        let yi = r - 1;
        if only_y {
            for l in 0..self.terms[0].nlev {
                let e = self.colptr[l + 1] - 1;
                for c in 0..s0 {
                    self.ar1[e * s0 + c] = 0.0;
                }
            }
            if let Some(sp) = &self.sp {
                for j in 0..r {
                    self.arr[sp.pos(yi, j)] = 0.0;
                }
            } else {
                for j in 0..r {
                    self.arr[yi + j * r] = 0.0;
                    self.arr[j + yi * r] = 0.0;
                }
            }
        } else {
            self.a11.iter_mut().for_each(|v| *v = 0.0);
            self.ar1.iter_mut().for_each(|v| *v = 0.0);
            self.arr.iter_mut().for_each(|v| *v = 0.0);
        }
    }

    /// Add rows (a chunk whose first row is row `first` of the data) to the cross products.
    fn add_rows(&mut self, rows: &Rows, first: usize, only_y: bool) {
        let mut acc = Acc {
            a11: std::mem::take(&mut self.a11),
            ar1: std::mem::take(&mut self.ar1),
            arr: std::mem::take(&mut self.arr),
        };
        self.pattern().add_rows(&mut acc, rows, first, only_y);
        self.a11 = acc.a11;
        self.ar1 = acc.ar1;
        self.arr = acc.arr;
    }

    fn finish(&mut self) {
        if self.sp.is_some() {
            return; // the sparse pattern holds the lower triangle only
        }
        let r = self.r;
        // mirror the lower triangle (the scaling by Lambda works on full rows and columns)
        for j in 0..r {
            for i in (j + 1)..r {
                self.arr[j + i * r] = self.arr[i + j * r];
            }
        }
    }

    fn set_lambda(&mut self, theta: &[f64]) {
        for (k, t) in self.terms.iter().enumerate() {
            let lam = &mut self.lam[k];
            lam.iter_mut().for_each(|v| *v = 0.0);
            for &(i, j, ti) in &t.lambda {
                lam[i + j * t.s] = theta[ti];
            }
        }
    }

    /// Number of theta values the terms refer to.
    pub fn n_theta(&self) -> usize {
        self.terms
            .iter()
            .flat_map(|t| t.lambda.iter().map(|&(_, _, ti)| ti + 1))
            .max()
            .unwrap_or(0)
    }

    /// Factor at theta. Returns false if the dense block is not positive definite (which
    /// happens only for a rank-deficient X).
    fn factor(&mut self, theta: &[f64]) -> bool {
        if self.factored.as_deref() == Some(theta) {
            return true;
        }
        self.factored = None;
        self.set_lambda(theta);
        let s0 = self.terms[0].s;
        let nl0 = self.terms[0].nlev;
        let (r, qz, p) = (self.r, self.qz, self.p);
        // 1.-2. per level of term 0 (independent across levels: two halves on two threads
        // when there are many; no sums cross the halves, so results do not depend on it)
        {
            let ctx = LevelCtx {
                terms: &self.terms,
                lam: &self.lam,
                a11: &self.a11,
                ar1: &self.ar1,
                colptr: &self.colptr,
                idx: &self.idx,
                off: &self.off,
                qz,
            };
            let ok = if nl0 >= 4000 {
                let mid = nl0 / 2;
                let (l_lo, l_hi) = self.l11.split_at_mut(mid * s0 * s0);
                let (b_lo, b_hi) = self.bmat.split_at_mut(self.colptr[mid] * s0);
                let (x, y) = rayon::join(|| ctx.levels(0, mid, l_lo, b_lo), || ctx.levels(mid, nl0, l_hi, b_hi));
                x && y
            } else {
                ctx.levels(0, nl0, &mut self.l11, &mut self.bmat)
            };
            if !ok {
                return false;
            }
        }
        if let Some(sp) = self.sp.as_mut() {
            // 3.-4. the sparse rest block: form, update, factor
            let svec: Vec<usize> = self.terms.iter().map(|t| t.s).collect();
            sp.form(&self.arr, &mut self.c, &self.lam, &svec);
            sp.rank_update(&mut self.c, &self.colptr, &self.idx, &self.bmat, s0);
            if !sp.factor(&self.c) {
                return false;
            }
            self.factored = Some(theta.to_vec());
            return true;
        }
        // 3. the dense block: Lambda_rest' A_rest Lambda_rest + I_z - sum B_l B_l'
        if self.terms[1..].iter().all(|t| t.s == 1) {
            // Lambda_rest is diagonal: one pass over the lower triangle
            let mut sc = vec![1.0; r];
            for k in 1..self.terms.len() {
                let th = self.lam[k][0];
                for lv in 0..self.terms[k].nlev {
                    sc[self.off[k] + lv] = th;
                }
            }
            for j in 0..r {
                let sj = sc[j];
                let col = j * r;
                for i in j..r {
                    self.c[i + col] = self.arr[i + col] * sc[i] * sj;
                }
            }
        } else {
            self.c.copy_from_slice(&self.arr);
            for k in 1..self.terms.len() {
                let sk = self.terms[k].s;
                let lk = self.lam[k].clone();
                for lv in 0..self.terms[k].nlev {
                    let base = self.off[k] + lv * sk;
                    if sk == 1 {
                        let th = lk[0];
                        for j in 0..r {
                            self.c[base + j * r] *= th;
                        }
                        for i in 0..r {
                            self.c[i + base * r] *= th;
                        }
                        continue;
                    }
                    // rows: C[base.., j] = Lk' C[base.., j]; columns: C[i, base..] = C[i, base..] Lk
                    let mut buf = vec![0.0; sk];
                    for j in 0..r {
                        for a in 0..sk {
                            let mut v = 0.0;
                            for q in a..sk {
                                v += lk[q + a * sk] * self.c[base + q + j * r];
                            }
                            buf[a] = v;
                        }
                        for a in 0..sk {
                            self.c[base + a + j * r] = buf[a];
                        }
                    }
                    for i in 0..r {
                        for c in 0..sk {
                            let mut v = 0.0;
                            for q in c..sk {
                                v += self.c[i + (base + q) * r] * lk[q + c * sk];
                            }
                            buf[c] = v;
                        }
                        for c in 0..sk {
                            self.c[i + (base + c) * r] = buf[c];
                        }
                    }
                }
            }
        }
        for j in 0..qz {
            self.c[j + j * r] += 1.0;
        }
        if self.dense_update {
            self.dense_rank_update();
        } else {
            self.sparse_rank_update();
        }
        let _ = p;
        // 4. dense Cholesky
        let cm = MatMut::from_column_major_slice_mut(&mut self.c, r, r);
        let stack = MemStack::new(&mut self.mem);
        if llt::cholesky_in_place(cm, Default::default(), self.par, stack, Default::default()).is_err() {
            return false;
        }
        self.factored = Some(theta.to_vec());
        true
    }

    /// C -= sum_l B_l B_l' (lower triangle), entry by entry.
    fn sparse_rank_update(&mut self) {
        let s0 = self.terms[0].s;
        let r = self.r;
        for l in 0..self.terms[0].nlev {
            let (e0, e1) = (self.colptr[l], self.colptr[l + 1]);
            for b in e0..e1 {
                let ib = self.idx[b] as usize;
                let bb = &self.bmat[b * s0..(b + 1) * s0];
                let col = ib * r;
                for a in b..e1 {
                    let ia = self.idx[a] as usize;
                    let ba = &self.bmat[a * s0..(a + 1) * s0];
                    let mut v = 0.0;
                    for c in 0..s0 {
                        v += ba[c] * bb[c];
                    }
                    self.c[ia + col] -= v;
                }
            }
        }
    }

    /// C -= B B' (lower triangle) as dense products of chunks of CHUNK levels of term 0.
    fn dense_rank_update(&mut self) {
        let s0 = self.terms[0].s;
        let (r, nl0) = (self.r, self.terms[0].nlev);
        let mut l0 = 0;
        while l0 < nl0 {
            let l1 = (l0 + CHUNK).min(nl0);
            let ncol = (l1 - l0) * s0;
            let bc = &mut self.chunk[..r * ncol];
            bc.iter_mut().for_each(|v| *v = 0.0);
            for l in l0..l1 {
                for e in self.colptr[l]..self.colptr[l + 1] {
                    let ie = self.idx[e] as usize;
                    for c in 0..s0 {
                        bc[ie + ((l - l0) * s0 + c) * r] = self.bmat[e * s0 + c];
                    }
                }
            }
            let bm = MatRef::from_column_major_slice(bc, r, ncol);
            triangular::matmul(
                MatMut::from_column_major_slice_mut(&mut self.c, r, r),
                BlockStructure::TriangularLower,
                faer::Accum::Add,
                bm,
                BlockStructure::Rectangular,
                bm.transpose(),
                BlockStructure::Rectangular,
                -1.0,
                self.par,
            );
            l0 = l1;
        }
    }

    fn logdets(&self) -> (f64, f64, f64) {
        let s0 = self.terms[0].s;
        let (r, qz, p) = (self.r, self.qz, self.p);
        let mut ldl2 = 0.0;
        for l in 0..self.terms[0].nlev {
            for j in 0..s0 {
                ldl2 += self.l11[l * s0 * s0 + j + j * s0].ln();
            }
        }
        let diag = |j: usize| match &self.sp {
            Some(sp) => sp.ldiag(j),
            None => self.c[j + j * r],
        };
        for j in 0..qz {
            ldl2 += diag(j).ln();
        }
        let mut ldrx2 = 0.0;
        for j in qz..qz + p {
            ldrx2 += diag(j).ln();
        }
        let last = diag(r - 1);
        (2.0 * ldl2, 2.0 * ldrx2, last * last)
    }

    /// Profiled deviance (ML) or REML criterion at theta, without the prior-weights term
    /// (-sum log w, which the caller adds). Returns +inf where the factorisation fails.
    pub fn objective(&mut self, theta: &[f64], reml: bool) -> f64 {
        if !self.factor(theta) {
            return f64::INFINITY;
        }
        let (ldl2, ldrx2, pwrss) = self.logdets();
        profiled(self.n, self.p, ldl2, ldrx2, pwrss, reml)
    }

    /// Minimise the profiled deviance (ML) or the REML criterion over theta >= `lower` from
    /// `theta0` with the analytic gradient (`optim::minimize`, projected BFGS): the whole
    /// optimisation inside the core, no call out per evaluation. `lower` has one bound per
    /// theta (0 for a diagonal of a Lambda, -inf otherwise).
    pub fn optimize(&mut self, theta0: &[f64], lower: &[f64], reml: bool, opts: &crate::optim::Options) -> CoreResult<crate::optim::Outcome> {
        let k = self.n_theta();
        check_len("theta", theta0.len(), k)?;
        check_len("lower bounds", lower.len(), k)?;
        Ok(crate::optim::minimize(|th, g| self.objective_gradient(th, reml, g), theta0, lower, opts))
    }

    /// Estimates at theta: beta, u, b = Lambda u, the pieces of the deviance and L_X.
    pub fn solution(&mut self, theta: &[f64], reml: bool) -> Option<Solution> {
        if !self.factor(theta) {
            return None;
        }
        let (ldl2, ldrx2, pwrss) = self.logdets();
        let (r, qz, p) = (self.r, self.qz, self.p);
        let (beta, u0, ur) = self.pls();
        let at = |i: usize, j: usize| match &self.sp {
            Some(sp) => sp.l_trailing(i, j),
            None => self.c[i + j * r],
        };
        let mut u = vec![u0];
        for k in 1..self.terms.len() {
            let sz = self.terms[k].nlev * self.terms[k].s;
            u.push(ur[self.off[k]..self.off[k] + sz].to_vec());
        }
        let b = u
            .iter()
            .enumerate()
            .map(|(k, uk)| {
                let s = self.terms[k].s;
                let lam = &self.lam[k];
                let mut bk = vec![0.0; uk.len()];
                for lv in 0..self.terms[k].nlev {
                    for i in 0..s {
                        let mut v = 0.0;
                        for j in 0..=i {
                            v += lam[i + j * s] * uk[lv * s + j];
                        }
                        bk[lv * s + i] = v;
                    }
                }
                bk
            })
            .collect();
        let mut rx = vec![0.0; p * p];
        for j in 0..p {
            for i in j..p {
                rx[i + j * p] = at(qz + i, qz + j);
            }
        }
        Some(Solution {
            objective: profiled(self.n, p, ldl2, ldrx2, pwrss, reml),
            beta,
            u,
            b,
            pwrss,
            ldl2,
            ldrx2,
            rx,
        })
    }

    /// Starting values for the diagonal of each Lambda, per term and column, from moments of
    /// the cross products already at hand (no pass over the rows): ordinary least squares
    /// residuals r, then per level and column c the "group mean" m = sum(z_c r) / sum(z_c^2);
    /// the spread of m over levels beyond what the noise explains estimates that column's
    /// variance. Crude, but close enough that BOBYQA needs about half the evaluations of a
    /// start at 1 on crossed models (InstEval 80 -> 40). Falls back to 1 where undefined.
    pub fn moment_start(&self) -> Vec<Vec<f64>> {
        let fallback: Vec<Vec<f64>> = self.terms.iter().map(|t| vec![1.0; t.s]).collect();
        let (p, r, qz) = (self.p, self.r, self.qz);
        let yi = r - 1;
        let at = |i: usize, j: usize| match &self.sp {
            Some(sp) => self.arr[if i >= j { sp.pos(i, j) } else { sp.pos(j, i) }],
            None => self.arr[i + j * r],
        };
        let mut xtx = vec![0.0; p * p];
        let mut beta = vec![0.0; p];
        for j in 0..p {
            for i in 0..p {
                xtx[i + j * p] = at(qz + i, qz + j);
            }
            beta[j] = at(yi, qz + j);
        }
        if p > 0 {
            if !small::chol_lower(&mut xtx, p) {
                return fallback;
            }
            small::solve_lower(&xtx, p, &mut beta);
            small::solve_lower_t(&xtx, p, &mut beta);
        }
        let rss = at(yi, yi) - (0..p).map(|a| beta[a] * at(yi, qz + a)).sum::<f64>();
        let n = self.n as f64;
        let s2tot = rss / n;
        if !(s2tot > 0.0) {
            return fallback;
        }
        // per term and column: (variance estimate, mean z^2)
        let mut comps: Vec<Vec<(f64, f64)>> = Vec::new();
        let spread = |pairs: &[(f64, f64)]| -> (f64, f64) {
            // pairs of (sum z r, sum z^2) over levels
            let used: Vec<&(f64, f64)> = pairs.iter().filter(|(_, d)| *d > 0.0).collect();
            if used.len() < 2 {
                return (f64::NAN, 0.0);
            }
            let k = used.len() as f64;
            let ms: Vec<f64> = used.iter().map(|(s, d)| s / d).collect();
            let mean = ms.iter().sum::<f64>() / k;
            let var = ms.iter().map(|m| (m - mean) * (m - mean)).sum::<f64>() / (k - 1.0);
            let noise = s2tot * used.iter().map(|(_, d)| 1.0 / d).sum::<f64>() / k;
            let meanz2 = used.iter().map(|(_, d)| *d).sum::<f64>() / n;
            (var - noise, meanz2)
        };
        let s0 = self.terms[0].s;
        let mut c0 = Vec::new();
        for c in 0..s0 {
            let pairs: Vec<(f64, f64)> = (0..self.terms[0].nlev)
                .map(|l| {
                    let d = self.a11[l * s0 * s0 + c + c * s0];
                    let xe = self.colptr[l + 1] - (p + 1);
                    let mut sz = self.ar1[(xe + p) * s0 + c];
                    for a in 0..p {
                        sz -= self.ar1[(xe + a) * s0 + c] * beta[a];
                    }
                    (sz, d)
                })
                .collect();
            c0.push(spread(&pairs));
        }
        comps.push(c0);
        for k in 1..self.terms.len() {
            let sk = self.terms[k].s;
            let mut ck = Vec::new();
            for c in 0..sk {
                let pairs: Vec<(f64, f64)> = (0..self.terms[k].nlev)
                    .map(|lv| {
                        let ix = self.off[k] + lv * sk + c;
                        let mut sz = at(yi, ix);
                        for a in 0..p {
                            sz -= at(qz + a, ix) * beta[a];
                        }
                        (sz, at(ix, ix))
                    })
                    .collect();
                ck.push(spread(&pairs));
            }
            comps.push(ck);
        }
        let explained: f64 = comps.iter().flatten().filter(|(v, _)| v.is_finite()).map(|(v, m)| v.max(0.0) * m).sum();
        let s2e = (s2tot - explained).max(0.05 * s2tot);
        comps
            .iter()
            .map(|ck| {
                ck.iter()
                    .map(|&(v, _)| if v.is_finite() { (v.max(0.0) / s2e).sqrt().clamp(0.1, 10.0) } else { 1.0 })
                    .collect()
            })
            .collect()
    }

    /// Conditional covariance of b given the data and the estimates, relative to sigma^2:
    /// per term, level-major blocks of s x s (column-major).
    ///
    /// With L_Z = [[D, 0], [B, C]] (D block diagonal for term 0, C the dense factor of the
    /// other terms) and P = (C C')^-1, the diagonal blocks of (L_Z L_Z')^-1 are
    /// D_l^-T (I + B_l' P B_l) D_l^-1 for term 0 and the blocks of P for the others; B_l is
    /// sparse, so this costs one dense inverse plus small sums.
    pub fn condvar(&mut self, theta: &[f64]) -> Option<Vec<Vec<f64>>> {
        if !self.factor(theta) {
            return None;
        }
        let (r, qz) = (self.r, self.qz);
        let mut pm = Vec::new();
        if let Some(sp) = self.sp.as_mut() {
            sp.selected_inverse(qz);
        } else if qz > 0 {
            pm = vec![0.0; qz * qz];
            let mut cz = vec![0.0; qz * qz];
            for j in 0..qz {
                for i in j..qz {
                    cz[i + j * qz] = self.c[i + j * r];
                }
            }
            let mut inv = vec![0.0; qz * qz];
            faer::linalg::triangular_inverse::invert_lower_triangular(
                MatMut::from_column_major_slice_mut(&mut inv, qz, qz),
                MatRef::from_column_major_slice(&cz, qz, qz),
                self.par,
            );
            // zero the strict upper part (invert_lower_triangular leaves it unspecified)
            for j in 0..qz {
                for i in 0..j {
                    inv[i + j * qz] = 0.0;
                }
            }
            let invm = MatRef::from_column_major_slice(&inv, qz, qz);
            faer::linalg::matmul::matmul(
                MatMut::from_column_major_slice_mut(&mut pm, qz, qz),
                faer::Accum::Replace,
                invm.transpose(),
                invm,
                1.0,
                self.par,
            );
        }
        let s0 = self.terms[0].s;
        let nl0 = self.terms[0].nlev;
        let mut out = Vec::with_capacity(self.terms.len());
        let mut t0 = vec![0.0; nl0 * s0 * s0];
        let mut g = vec![0.0; s0 * s0];
        let mut dinv = vec![0.0; s0 * s0];
        let mut h = vec![0.0; s0 * s0];
        let mut tmp = vec![0.0; s0 * s0];
        let ps = self.psel(&pm, qz);
        let maxz = (0..nl0).map(|l| self.colptr[l + 1] - self.colptr[l]).max().unwrap_or(0);
        let mut pl = vec![0.0; maxz * maxz];
        for l in 0..nl0 {
            g.iter_mut().for_each(|v| *v = 0.0);
            for j in 0..s0 {
                g[j + j * s0] = 1.0;
            }
            let (e0, e1) = (self.colptr[l], self.colptr[l + 1]);
            // the random-effect entries of the level (X and y come last)
            let nz = e1 - e0 - (self.p + 1);
            self.level_p(&ps, l, nz, &mut pl);
            for e in e0..e0 + nz {
                for f in e0..e0 + nz {
                    let pv = pl[(e - e0) + (f - e0) * nz];
                    for a in 0..s0 {
                        for bb in 0..s0 {
                            g[a + bb * s0] += self.bmat[e * s0 + a] * pv * self.bmat[f * s0 + bb];
                        }
                    }
                }
            }
            small::invert_lower(&self.l11[l * s0 * s0..(l + 1) * s0 * s0], s0, &mut dinv);
            // h = Dinv' G Dinv
            small::congruence_t(&dinv, &g, s0, &mut tmp, &mut h);
            let v = lambda_sandwich(&self.lam[0], &h, s0);
            t0[l * s0 * s0..(l + 1) * s0 * s0].copy_from_slice(&v);
        }
        out.push(t0);
        for k in 1..self.terms.len() {
            let sk = self.terms[k].s;
            let mut tk = vec![0.0; self.terms[k].nlev * sk * sk];
            for lv in 0..self.terms[k].nlev {
                let base = self.off[k] + lv * sk;
                let mut blk = vec![0.0; sk * sk];
                for j in 0..sk {
                    for i in 0..sk {
                        blk[i + j * sk] = ps.at(base + i, base + j);
                    }
                }
                let v = lambda_sandwich(&self.lam[k], &blk, sk);
                tk[lv * sk * sk..(lv + 1) * sk * sk].copy_from_slice(&v);
            }
            out.push(tk);
        }
        Some(out)
    }

    /// The selected inverse P of the leading m x m part of the rest block's factor: the
    /// dense one (`pm`, full m x m) or the sparse one's (computed by `selected_inverse`).
    fn psel<'a>(&'a self, pm: &'a [f64], m: usize) -> PSel<'a> {
        match &self.sp {
            Some(sp) => PSel::Sparse(sp),
            None => PSel::Dense { pm, m },
        }
    }

    /// P over the first `nrel` entries of level l of term 0 (its random-effect entries,
    /// then X), as a full nrel x nrel matrix (column-major) in `out`.
    fn level_p(&self, ps: &PSel, l: usize, nrel: usize, out: &mut [f64]) {
        let e0 = self.colptr[l];
        match ps {
            PSel::Dense { pm, m } => {
                for a in 0..nrel {
                    let ia = self.idx[e0 + a] as usize;
                    for b in 0..nrel {
                        out[b + a * nrel] = pm[self.idx[e0 + b] as usize + ia * m];
                    }
                }
            }
            PSel::Sparse(sp) => {
                // the pairs of random effects at the positions found with the pattern
                let z = self.colptr[l + 1] - e0 - (self.p + 1);
                let mut k = sp.lvoff[l];
                for b in 0..nrel {
                    for a in b..nrel {
                        let v = if a < z {
                            let v = sp.z_at(sp.lvpos[k] as usize);
                            k += 1;
                            v
                        } else {
                            sp.z_at(sp.pos(self.idx[e0 + a] as usize, self.idx[e0 + b] as usize))
                        };
                        out[b + a * nrel] = v;
                        out[a + b * nrel] = v;
                    }
                }
            }
        }
    }
}

/// The selected inverse of the rest block's factor, as `Lmm::psel` finds it.
enum PSel<'a> {
    Dense { pm: &'a [f64], m: usize },
    Sparse(&'a SparseRest),
}

impl PSel<'_> {
    /// P[i, j] (rest indices < m; for the sparse factor, on the pattern of the rest block)
    #[inline]
    fn at(&self, i: usize, j: usize) -> f64 {
        match self {
            PSel::Dense { pm, m } => pm[i + j * m],
            PSel::Sparse(sp) => sp.z_ij(i, j),
        }
    }
}

/// Whether the sparse factor of the rest block beats the dense one: a dense Cholesky of r
/// rows costs r^3 / 6 multiply-adds at the speed of matrix products, and its set-up touches
/// r^2 entries; the sparse one's multiply-adds (`cost.flops`) run some 4 times slower (short
/// columns, indirect rows) and it touches each entry of the pattern a few times.
fn sparse_pays(cost: &sparse::SparseCost, r: usize) -> bool {
    let rf = r as f64;
    let dense = rf * rf * rf / 6.0 + rf * rf;
    let sparse = 4.0 * cost.flops + 3.0 * (cost.nnz_c + cost.nnz_l) as f64;
    sparse < dense
}

/// The pattern of the cross products (fixed once built), for accumulating values.
struct Pattern<'a> {
    terms: &'a [Term],
    p: usize,
    r: usize,
    qz: usize,
    off: &'a [usize],
    colptr: &'a [usize],
    slot: &'a [Vec<u32>],
    /// the sparse rest block's pattern (None: dense r x r)
    sp: Option<SpPat<'a>>,
}

/// Values of the cross products being accumulated.
struct Acc {
    a11: Vec<f64>,
    ar1: Vec<f64>,
    arr: Vec<f64>,
}

impl Pattern<'_> {
    /// Add rows (a chunk whose first row is row `first` of the data) to the cross products.
    fn add_rows(&self, acc: &mut Acc, rows: &Rows, first: usize, only_y: bool) {
        let (p, r, qz) = (self.p, self.r, self.qz);
        let s0 = self.terms[0].s;
        let nt = self.terms.len();
        let yi = r - 1;
        let mut ri: Vec<usize> = Vec::with_capacity(r.min(64));
        let mut rv: Vec<f64> = Vec::with_capacity(r.min(64));
        let mut z0 = vec![0.0; s0];
        for t in 0..rows.y.len() {
            let sw = rows.w.map(|w| w[t].sqrt()).unwrap_or(1.0);
            let l = rows.refs[0][t] as usize;
            for c in 0..s0 {
                z0[c] = rows.z[0][t * s0 + c] * sw;
            }
            let yv = rows.y[t] * sw;
            let xe = self.colptr[l + 1] - (p + 1);
            if only_y {
                for c in 0..s0 {
                    acc.ar1[(xe + p) * s0 + c] += yv * z0[c];
                }
            } else {
                let a = &mut acc.a11[l * s0 * s0..(l + 1) * s0 * s0];
                for c in 0..s0 {
                    for q in 0..s0 {
                        a[q + c * s0] += z0[q] * z0[c];
                    }
                }
                for k in 1..nt {
                    let sk = self.terms[k].s;
                    let e = self.slot[k][first + t] as usize;
                    for a in 0..sk {
                        let zv = rows.z[k][t * sk + a] * sw;
                        for c in 0..s0 {
                            acc.ar1[(e + a) * s0 + c] += zv * z0[c];
                        }
                    }
                }
                for a in 0..p {
                    let xv = rows.x[t * p + a] * sw;
                    for c in 0..s0 {
                        acc.ar1[(xe + a) * s0 + c] += xv * z0[c];
                    }
                }
                for c in 0..s0 {
                    acc.ar1[(xe + p) * s0 + c] += yv * z0[c];
                }
            }
            // the rest block: the row's nonzeros in the rest, in increasing index
            ri.clear();
            rv.clear();
            for k in 1..nt {
                let sk = self.terms[k].s;
                let base = self.off[k] + rows.refs[k][t] as usize * sk;
                for a in 0..sk {
                    ri.push(base + a);
                    rv.push(rows.z[k][t * sk + a] * sw);
                }
            }
            for a in 0..p {
                ri.push(qz + a);
                rv.push(rows.x[t * p + a] * sw);
            }
            ri.push(yi);
            rv.push(yv);
            let m = ri.len();
            if let Some(sp) = &self.sp {
                if only_y {
                    for b in 0..m {
                        acc.arr[sp.pos(yi, ri[b])] += yv * rv[b];
                    }
                } else {
                    for b in 0..m {
                        let vb = rv[b];
                        for a in b..m {
                            acc.arr[sp.pos(ri[a], ri[b])] += rv[a] * vb;
                        }
                    }
                }
            } else if only_y {
                for b in 0..m {
                    acc.arr[yi + ri[b] * r] += yv * rv[b];
                }
            } else {
                for b in 0..m {
                    let col = ri[b] * r;
                    let vb = rv[b];
                    for a in b..m {
                        acc.arr[ri[a] + col] += rv[a] * vb;
                    }
                }
            }
        }
    }

}

impl<'a> Rows<'a> {
    /// Rows a..b as a chunk.
    fn range(&self, a: usize, b: usize, terms: &[Term], p: usize) -> Rows<'a> {
        Rows {
            refs: self.refs.iter().map(|r| &r[a..b]).collect(),
            z: self.z.iter().zip(terms).map(|(z, t)| &z[a * t.s..b * t.s]).collect(),
            x: &self.x[a * p..b * p],
            y: &self.y[a..b],
            w: self.w.map(|w| &w[a..b]),
        }
    }
}

/// What the per-level steps of a factorisation read; they write only their own levels'
/// slices of L11 and B.
struct LevelCtx<'a> {
    terms: &'a [Term],
    lam: &'a [Vec<f64>],
    a11: &'a [f64],
    ar1: &'a [f64],
    colptr: &'a [usize],
    idx: &'a [u32],
    off: &'a [usize],
    qz: usize,
}

impl LevelCtx<'_> {
    /// (term, s) of the rest index `ix` < qz
    fn term_of(&self, ix: usize) -> (usize, usize) {
        let mut k = self.terms.len() - 1;
        while k > 1 && self.off[k] > ix {
            k -= 1;
        }
        (k, self.terms[k].s)
    }

    /// Levels lo..hi of term 0: L11 blocks (`l11` starts at level lo) and the rows of B
    /// below them (`bmat` starts at entry colptr[lo]).
    fn levels(&self, lo: usize, hi: usize, l11: &mut [f64], bmat: &mut [f64]) -> bool {
        let s0 = self.terms[0].s;
        let qz = self.qz;
        let lam0 = &self.lam[0];
        let maxs = self.terms.iter().map(|t| t.s).max().unwrap_or(1);
        let mut tmp = vec![0.0; s0 * s0];
        let mut row = vec![0.0; s0];
        let mut buf = vec![0.0; maxs];
        let ebase = self.colptr[lo];
        for l in lo..hi {
            // 1. diagonal block: chol(Lambda_0' A11 Lambda_0 + I)
            let blk = l * s0 * s0;
            let d = &mut l11[(l - lo) * s0 * s0..(l - lo + 1) * s0 * s0];
            small::congruence_t(lam0, &self.a11[blk..blk + s0 * s0], s0, &mut tmp, d);
            for j in 0..s0 {
                d[j + j * s0] += 1.0;
            }
            if !small::chol_lower(d, s0) {
                return false;
            }
            let d: &[f64] = d;
            // 2. B = Lambda_rest' A Lambda_0 D^-T
            let (e0, end) = (self.colptr[l], self.colptr[l + 1]);
            for e in e0..end {
                for c in 0..s0 {
                    let mut v = 0.0;
                    for q in c..s0 {
                        v += self.ar1[e * s0 + q] * lam0[q + c * s0];
                    }
                    row[c] = v;
                }
                bmat[(e - ebase) * s0..(e - ebase + 1) * s0].copy_from_slice(&row);
            }
            // Lambda_k' on the rows of each block of another term (X and y rows: none)
            let mut e = e0;
            while e < end {
                let ix = self.idx[e] as usize;
                if ix >= qz {
                    break;
                }
                let (k, sk) = self.term_of(ix);
                let lk = &self.lam[k];
                for c in 0..s0 {
                    for a in 0..sk {
                        let mut v = 0.0;
                        for q in a..sk {
                            v += lk[q + a * sk] * bmat[(e - ebase + q) * s0 + c];
                        }
                        buf[a] = v;
                    }
                    for a in 0..sk {
                        bmat[(e - ebase + a) * s0 + c] = buf[a];
                    }
                }
                e += sk;
            }
            for e in e0..end {
                small::solve_lower(d, s0, &mut bmat[(e - ebase) * s0..(e - ebase + 1) * s0]);
            }
        }
        true
    }
}

/// Lam H Lam' for lower-triangular Lam and symmetric H (s x s, column-major).
fn lambda_sandwich(lam: &[f64], h: &[f64], s: usize) -> Vec<f64> {
    let mut t = vec![0.0; s * s];
    for j in 0..s {
        for i in 0..s {
            let mut v = 0.0;
            for q in 0..=i {
                v += lam[i + q * s] * h[q + j * s];
            }
            t[i + j * s] = v;
        }
    }
    let mut out = vec![0.0; s * s];
    for j in 0..s {
        for i in 0..s {
            let mut v = 0.0;
            for q in 0..=j {
                v += t[i + q * s] * lam[j + q * s];
            }
            out[i + j * s] = v;
        }
    }
    out
}

/// The linear predictor X beta + sum_k Z_k b_k[refs_k] of the rows (no offset), in one pass.
/// `b[k]` is level-major (nlev x s_k).
pub fn linear_predictor(rows: &Rows, p: usize, beta: &[f64], b: &[Vec<f64>]) -> Vec<f64> {
    let n = rows.y.len();
    let mut out = vec![0.0; n];
    for (t, o) in out.iter_mut().enumerate() {
        let mut v = 0.0;
        for a in 0..p {
            v += rows.x[t * p + a] * beta[a];
        }
        for (k, bk) in b.iter().enumerate() {
            let s = rows.z[k].len() / n.max(1);
            let l = rows.refs[k][t] as usize;
            for c in 0..s {
                v += rows.z[k][t * s + c] * bk[l * s + c];
            }
        }
        *o = v;
    }
    out
}

/// -2 log-likelihood profiled over beta and sigma (ML), or the REML criterion.
pub fn profiled(n: usize, p: usize, ldl2: f64, ldrx2: f64, pwrss: f64, reml: bool) -> f64 {
    let two_pi = 2.0 * std::f64::consts::PI;
    if reml {
        let nmp = (n - p) as f64;
        ldl2 + ldrx2 + nmp * (1.0 + (two_pi * pwrss / nmp).ln())
    } else {
        let nf = n as f64;
        ldl2 + nf * (1.0 + (two_pi * pwrss / nf).ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::Lcg;

    /// Dense symmetric solve by Cholesky, for the brute-force reference.
    fn dense_chol(a: &[f64], n: usize) -> Vec<f64> {
        let mut l = a.to_vec();
        assert!(small::chol_lower(&mut l, n));
        l
    }

    /// -2 log-likelihood (ML) straight from V = Z Lam Lam' Z' + W^-1 (weights term included
    /// so compare with objective - sum log w).
    fn brute_force(
        terms: &[Term],
        refs: &[Vec<u32>],
        z: &[Vec<f64>],
        x: &[f64],
        p: usize,
        y: &[f64],
        w: &[f64],
        theta: &[f64],
        reml: bool,
    ) -> f64 {
        let n = y.len();
        // V0 = sum_k Z_k Lam_k Lam_k' Z_k' + diag(1/w)
        let mut v = vec![0.0; n * n];
        for i in 0..n {
            v[i + i * n] = 1.0 / w[i];
        }
        for (k, t) in terms.iter().enumerate() {
            let s = t.s;
            let mut lam = vec![0.0; s * s];
            for &(a, b, ti) in &t.lambda {
                lam[a + b * s] = theta[ti];
            }
            // zl_i = Lam' z_i
            let zl: Vec<Vec<f64>> = (0..n)
                .map(|i| {
                    (0..s)
                        .map(|c| (0..s).map(|a| lam[a + c * s] * z[k][i * s + a]).sum())
                        .collect()
                })
                .collect();
            for i in 0..n {
                for j in 0..n {
                    if refs[k][i] == refs[k][j] {
                        v[i + j * n] += (0..s).map(|c| zl[i][c] * zl[j][c]).sum::<f64>();
                    }
                }
            }
        }
        let l = dense_chol(&v, n);
        let logdet: f64 = 2.0 * (0..n).map(|i| l[i + i * n].ln()).sum::<f64>();
        // whitened X and y
        let white = |col: &dyn Fn(usize) -> f64| {
            let mut b: Vec<f64> = (0..n).map(|i| col(i)).collect();
            small::solve_lower(&l, n, &mut b);
            b
        };
        let xw: Vec<Vec<f64>> = (0..p).map(|a| white(&|i| x[i * p + a])).collect();
        let yw = white(&|i| y[i]);
        let mut xtx = vec![0.0; p * p];
        let mut xty = vec![0.0; p];
        for a in 0..p {
            for b in 0..p {
                xtx[a + b * p] = (0..n).map(|i| xw[a][i] * xw[b][i]).sum();
            }
            xty[a] = (0..n).map(|i| xw[a][i] * yw[i]).sum();
        }
        let lx = dense_chol(&xtx, p);
        let mut beta = xty.clone();
        small::solve_lower(&lx, p, &mut beta);
        small::solve_lower_t(&lx, p, &mut beta);
        let rss: f64 = (0..n)
            .map(|i| {
                let f: f64 = (0..p).map(|a| xw[a][i] * beta[a]).sum();
                (yw[i] - f).powi(2)
            })
            .sum();
        let ldx: f64 = 2.0 * (0..p).map(|a| lx[a + a * p].ln()).sum::<f64>();
        let tp = 2.0 * std::f64::consts::PI;
        if reml {
            let d = (n - p) as f64;
            logdet + ldx + d * (1.0 + (tp * rss / d).ln())
        } else {
            logdet + n as f64 * (1.0 + (tp * rss / n as f64).ln())
        }
    }

    #[test]
    fn blocked_objective_equals_brute_force() {
        let mut g = Lcg(42);
        let n = 60;
        let p = 2;
        // term 0: 8 levels, intercept + slope; term 1: 5 levels, crossed, slope;
        // term 2: 3 levels, intercept
        let terms = vec![
            Term { nlev: 8, s: 2, lambda: vec![(0, 0, 0), (1, 0, 1), (1, 1, 2)] },
            Term { nlev: 5, s: 2, lambda: vec![(0, 0, 3), (1, 1, 4)] },
            Term { nlev: 3, s: 1, lambda: vec![(0, 0, 5)] },
        ];
        let refs: Vec<Vec<u32>> = terms.iter().map(|t| (0..n).map(|_| g.level(t.nlev)).collect()).collect();
        let z: Vec<Vec<f64>> = terms
            .iter()
            .map(|t| (0..n * t.s).map(|i| if i % t.s == 0 { 1.0 } else { g.next() * 2.0 - 1.0 }).collect())
            .collect();
        let x: Vec<f64> = (0..n * p).map(|i| if i % p == 0 { 1.0 } else { g.next() }).collect();
        let y: Vec<f64> = (0..n).map(|_| g.next() * 10.0).collect();
        let w: Vec<f64> = (0..n).map(|_| 0.5 + g.next()).collect();
        let rows = Rows {
            refs: refs.iter().map(|v| v.as_slice()).collect(),
            z: z.iter().map(|v| v.as_slice()).collect(),
            x: &x,
            y: &y,
            w: Some(&w),
        };
        let mut m = Lmm::new(terms.clone(), p, &rows).unwrap();
        let logw: f64 = w.iter().map(|v| v.ln()).sum();
        for theta in [[1.0, 0.0, 1.0, 1.0, 1.0, 1.0], [0.7, -0.3, 0.2, 1.5, 0.0, 0.4], [0.0, 0.0, 0.0, 0.3, 0.9, 0.0]] {
            for reml in [false, true] {
                let got = m.objective(&theta, reml) - logw;
                let want = brute_force(&terms, &refs, &z, &x, p, &y, &w, &theta, reml);
                assert!((got - want).abs() < 1e-9 * want.abs(), "{got} vs {want} at {theta:?}");
            }
        }
        // a new response through set_y gives the same as building afresh
        let y2: Vec<f64> = (0..n).map(|_| g.next()).collect();
        let rows2 = Rows { y: &y2, ..rows };
        m.set_y(&rows2).unwrap();
        let mut fresh = Lmm::new(terms.clone(), p, &rows2).unwrap();
        let th = [0.7, -0.3, 0.2, 1.5, 0.0, 0.4];
        assert!((m.objective(&th, true) - fresh.objective(&th, true)).abs() < 1e-10);
    }

    #[test]
    fn chunked_accumulation_equals_one_pass() {
        let mut g = Lcg(11);
        let n = 500;
        let terms = vec![
            Term { nlev: 20, s: 2, lambda: vec![(0, 0, 0), (1, 0, 1), (1, 1, 2)] },
            Term { nlev: 6, s: 1, lambda: vec![(0, 0, 3)] },
        ];
        let refs: Vec<Vec<u32>> = terms.iter().map(|t| (0..n).map(|_| g.level(t.nlev)).collect()).collect();
        let z: Vec<Vec<f64>> = vec![(0..2 * n).map(|i| if i % 2 == 0 { 1.0 } else { g.next() }).collect(), vec![1.0; n]];
        let x: Vec<f64> = (0..2 * n).map(|i| if i % 2 == 0 { 1.0 } else { g.next() }).collect();
        let y: Vec<f64> = (0..n).map(|_| g.next()).collect();
        let rows = Rows { refs: refs.iter().map(|v| v.as_slice()).collect(), z: z.iter().map(|v| v.as_slice()).collect(), x: &x, y: &y, w: None };
        let mut whole = Lmm::new(terms.clone(), 2, &rows).unwrap();
        let mut chunked = Lmm::new(terms, 2, &rows).unwrap();
        chunked.clear_values();
        for (a, b) in [(0usize, 137usize), (137, 400), (400, 500)] {
            let chunk = Rows {
                refs: refs.iter().map(|v| &v[a..b]).collect(),
                z: vec![&z[0][2 * a..2 * b], &z[1][a..b]],
                x: &x[2 * a..2 * b],
                y: &y[a..b],
                w: None,
            };
            chunked.add_chunk(&chunk, a).unwrap();
        }
        chunked.finish_values();
        let th = [0.9, 0.2, 0.5, 0.7];
        let (f1, f2) = (whole.objective(&th, true), chunked.objective(&th, true));
        assert!((f1 - f2).abs() < 1e-10 * f1.abs(), "{f1} vs {f2}");
    }

    #[test]
    fn dense_and_sparse_updates_agree() {
        let mut g = Lcg(7);
        let n = 4000;
        let terms = vec![
            Term { nlev: 300, s: 1, lambda: vec![(0, 0, 0)] },
            Term { nlev: 80, s: 1, lambda: vec![(0, 0, 1)] },
        ];
        let refs: Vec<Vec<u32>> = terms.iter().map(|t| (0..n).map(|_| g.level(t.nlev)).collect()).collect();
        let z: Vec<Vec<f64>> = vec![vec![1.0; n], vec![1.0; n]];
        let x: Vec<f64> = (0..n).map(|_| 1.0).collect();
        let y: Vec<f64> = (0..n).map(|_| g.next()).collect();
        let rows = Rows { refs: refs.iter().map(|v| v.as_slice()).collect(), z: z.iter().map(|v| v.as_slice()).collect(), x: &x, y: &y, w: None };
        let mut a = Lmm::new(terms.clone(), 1, &rows).unwrap();
        let mut b = Lmm::new(terms, 1, &rows).unwrap();
        a.dense_update = false;
        b.dense_update = true;
        b.chunk = vec![0.0; b.r * CHUNK];
        let th = [0.8, 0.3];
        let (fa, fb) = (a.objective(&th, false), b.objective(&th, false));
        assert!((fa - fb).abs() < 1e-9 * fa.abs(), "{fa} vs {fb}");
    }

    /// A random model with `terms` (every level of term 0 seen), rows, X with an intercept.
    fn random_model(seed: u64, n: usize, p: usize, terms: &[Term], weights: bool) -> (Vec<Vec<u32>>, Vec<Vec<f64>>, Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
        let mut g = Lcg(seed);
        let refs: Vec<Vec<u32>> = terms
            .iter()
            .map(|t| (0..n).map(|i| if i < t.nlev { i as u32 } else { g.level(t.nlev) }).collect())
            .collect();
        let z: Vec<Vec<f64>> = terms
            .iter()
            .map(|t| (0..n * t.s).map(|i| if i % t.s == 0 { 1.0 } else { g.next() * 2.0 - 1.0 }).collect())
            .collect();
        let x: Vec<f64> = (0..n * p).map(|i| if i % p == 0 { 1.0 } else { g.next() * 3.0 }).collect();
        let y: Vec<f64> = (0..n).map(|i| 2.0 * g.next() + (refs[0][i] % 3) as f64).collect();
        let w = if weights { Some((0..n).map(|_| 0.5 + g.next()).collect()) } else { None };
        (refs, z, x, y, w)
    }

    fn check_gradient(terms: Vec<Term>, p: usize, weights: bool, thetas: &[Vec<f64>]) {
        let n = 90;
        let (refs, z, x, y, w) = random_model(5, n, p, &terms, weights);
        let rows = Rows {
            refs: refs.iter().map(|v| v.as_slice()).collect(),
            z: z.iter().map(|v| v.as_slice()).collect(),
            x: &x,
            y: &y,
            w: w.as_deref(),
        };
        for (layout, sn) in [(Layout::Dense, None), (Layout::Sparse, Some(false)), (Layout::Sparse, Some(true))] {
            let mut m = Lmm::build(terms.clone(), p, &rows, layout, sn).unwrap();
            check_gradient_of(&mut m, thetas);
        }
    }

    /// The analytic gradient of `m` against central differences.
    fn check_gradient_of(m: &mut Lmm, thetas: &[Vec<f64>]) {
        let k = m.n_theta();
        for theta in thetas {
            for reml in [false, true] {
                let mut g = vec![0.0; k];
                let f = m.objective_gradient(theta, reml, &mut g);
                assert!((f - m.objective(theta, reml)).abs() < 1e-12 * f.abs());
                for i in 0..k {
                    // central differences, Richardson-extrapolated: O(h^4)
                    let fd = |h: f64, m: &mut Lmm| {
                        let mut tp = theta.clone();
                        let mut tm = theta.clone();
                        tp[i] += h;
                        tm[i] -= h;
                        (m.objective(&tp, reml) - m.objective(&tm, reml)) / (2.0 * h)
                    };
                    let h = 1e-3;
                    let want = (4.0 * fd(h / 2.0, m) - fd(h, m)) / 3.0;
                    assert!(
                        (g[i] - want).abs() < 1e-6 * (1.0 + want.abs()),
                        "reml {reml} theta {theta:?} d/dtheta_{i}: {} vs {want}",
                        g[i]
                    );
                }
            }
        }
    }

    #[test]
    fn gradient_of_one_vector_term_equals_finite_differences() {
        let terms = vec![Term { nlev: 12, s: 2, lambda: vec![(0, 0, 0), (1, 0, 1), (1, 1, 2)] }];
        let thetas = vec![vec![0.8, 0.3, 0.5], vec![1.2, -0.4, 0.0], vec![0.0, 0.0, 0.7]];
        check_gradient(terms.clone(), 2, false, &thetas);
        check_gradient(terms, 3, true, &thetas);
    }

    #[test]
    fn gradient_of_crossed_vector_terms_equals_finite_differences() {
        // term 0 vector-valued, term 1 vector-valued with a structural zero (diagonal
        // Lambda), term 2 scalar: every branch of the selected inverse
        let terms = vec![
            Term { nlev: 10, s: 2, lambda: vec![(0, 0, 0), (1, 0, 1), (1, 1, 2)] },
            Term { nlev: 6, s: 2, lambda: vec![(0, 0, 3), (1, 1, 4)] },
            Term { nlev: 4, s: 1, lambda: vec![(0, 0, 5)] },
        ];
        let thetas = vec![vec![0.7, -0.3, 0.2, 1.5, 0.6, 0.4], vec![1.1, 0.5, 0.0, 0.3, 0.0, 0.9]];
        check_gradient(terms.clone(), 2, true, &thetas);
        check_gradient(terms, 1, false, &thetas);
        // a vector-valued rest term with a full Lambda, scalar term 0
        let terms = vec![
            Term { nlev: 15, s: 1, lambda: vec![(0, 0, 0)] },
            Term { nlev: 5, s: 3, lambda: vec![(0, 0, 1), (1, 0, 2), (2, 0, 3), (1, 1, 4), (2, 1, 5), (2, 2, 6)] },
        ];
        let thetas = vec![vec![0.6, 0.9, 0.2, -0.3, 0.5, 0.1, 0.4]];
        check_gradient(terms, 2, true, &thetas);
    }

    #[test]
    fn gradient_with_a_large_dense_block_uses_faer_and_agrees() {
        // rest block beyond SMALL_DENSE: the faer route of the selected inverse
        let terms = vec![
            Term { nlev: 20, s: 1, lambda: vec![(0, 0, 0)] },
            Term { nlev: 14, s: 1, lambda: vec![(0, 0, 1)] },
        ];
        check_gradient(terms, 2, false, &[vec![0.8, 1.3], vec![0.0, 0.5]]);
    }

    #[test]
    fn optimizer_reaches_a_verified_optimum_and_the_boundary_exactly() {
        let terms = vec![Term { nlev: 12, s: 2, lambda: vec![(0, 0, 0), (1, 0, 1), (1, 1, 2)] }];
        let (refs, z, x, y, _) = random_model(9, 120, 2, &terms, false);
        let rows = Rows { refs: refs.iter().map(|v| v.as_slice()).collect(), z: z.iter().map(|v| v.as_slice()).collect(), x: &x, y: &y, w: None };
        let mut m = Lmm::new(terms.clone(), 2, &rows).unwrap();
        let lower = [0.0, f64::NEG_INFINITY, 0.0];
        for reml in [false, true] {
            let out = m.optimize(&[1.0, 0.0, 1.0], &lower, reml, &Default::default()).unwrap();
            assert_eq!(out.stop, crate::optim::Stop::Converged);
            assert!(out.decrement <= 1e-10);
            // no point of a small grid around the optimum is better (brute force)
            let mut g = Lcg(3);
            for _ in 0..200 {
                let t: Vec<f64> = out.x.iter().zip(&lower).map(|(v, lo)| (v + 0.02 * (g.next() - 0.5)).max(*lo)).collect();
                assert!(m.objective(&t, reml) >= out.f - 1e-9, "{t:?} beats {:?}", out.x);
            }
            assert_eq!(out.log.len(), out.nfev);
        }
        // within-group contrasts only: the between-group variance is at its bound 0, exactly
        let terms = vec![Term { nlev: 10, s: 1, lambda: vec![(0, 0, 0)] }];
        let (refs, z, x, mut y, _) = random_model(4, 100, 1, &terms, false);
        let mut sums = vec![(0.0, 0.0); 10];
        for (i, &l) in refs[0].iter().enumerate() {
            sums[l as usize].0 += y[i];
            sums[l as usize].1 += 1.0;
        }
        for (i, &l) in refs[0].iter().enumerate() {
            y[i] -= sums[l as usize].0 / sums[l as usize].1;
        }
        let rows = Rows { refs: refs.iter().map(|v| v.as_slice()).collect(), z: z.iter().map(|v| v.as_slice()).collect(), x: &x, y: &y, w: None };
        let mut m = Lmm::new(terms, 1, &rows).unwrap();
        let out = m.optimize(&[0.8], &[0.0], true, &Default::default()).unwrap();
        // (the deviance is even in theta, so its slope at 0 is 0: the optimum is a minimum
        // of the one-sided function, and the interior is worse)
        assert_eq!(out.x, vec![0.0], "{out:?}");
        assert!(m.objective(&[1e-3], true) > out.f && m.objective(&[0.3], true) > out.f);
        assert!(m.optimize(&[0.8, 1.0], &[0.0], true, &Default::default()).is_err());
    }

    // ---- the sparse rest block ----

    /// The layouts a test compares: dense, sparse with faer's simplicial factor, sparse with
    /// its supernodal one.
    const LAYOUTS: [(Layout, Option<bool>); 3] = [(Layout::Dense, None), (Layout::Sparse, Some(false)), (Layout::Sparse, Some(true))];

    /// Rows of a model with the given grouping codes: Z with an intercept and uniform slopes,
    /// X with an intercept, a response with group effects, optional weights.
    fn rows_for(seed: u64, terms: &[Term], refs: &[Vec<u32>], p: usize, weights: bool) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
        let mut g = Lcg(seed);
        let n = refs[0].len();
        let z: Vec<Vec<f64>> = terms
            .iter()
            .map(|t| (0..n * t.s).map(|i| if i % t.s == 0 { 1.0 } else { g.next() * 2.0 - 1.0 }).collect())
            .collect();
        let x: Vec<f64> = (0..n * p).map(|i| if i % p == 0 { 1.0 } else { g.next() * 3.0 }).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| 2.0 * g.next() + refs.iter().enumerate().map(|(k, r)| ((r[i] as usize * (k + 3)) % 5) as f64 * 0.4).sum::<f64>())
            .collect();
        let w = if weights { Some((0..n).map(|_| 0.5 + g.next()).collect()) } else { None };
        (z, x, y, w)
    }

    /// Three nested levels: term 0 (30 levels, slopes) in term 1 (10 levels, intercepts) in
    /// term 2 (5 levels, slopes).
    fn nested_design(n: usize) -> (Vec<Term>, Vec<Vec<u32>>) {
        let terms = vec![
            Term { nlev: 30, s: 2, lambda: vec![(0, 0, 0), (1, 0, 1), (1, 1, 2)] },
            Term { nlev: 10, s: 1, lambda: vec![(0, 0, 3)] },
            Term { nlev: 5, s: 2, lambda: vec![(0, 0, 4), (1, 0, 5), (1, 1, 6)] },
        ];
        let c: Vec<u32> = (0..n).map(|i| (i % 30) as u32).collect();
        let sch: Vec<u32> = c.iter().map(|&v| v / 3).collect();
        let dis: Vec<u32> = sch.iter().map(|&v| v / 2).collect();
        (terms, vec![c, sch, dis])
    }

    /// Partially crossed, as students, teachers and schools: students (term 0, slopes) have a
    /// teacher a year from their school's teachers, a few change school; teachers (term 1)
    /// are nested in schools (term 2, slopes).
    fn star_design(seed: u64, nstud: usize, nsch: usize, tpers: usize) -> (Vec<Term>, Vec<Vec<u32>>) {
        star_design_moving(seed, nstud, nsch, tpers, 0.08)
    }

    fn star_design_moving(seed: u64, nstud: usize, nsch: usize, tpers: usize, move_p: f64) -> (Vec<Term>, Vec<Vec<u32>>) {
        let mut g = Lcg(seed);
        let (mut st, mut te, mut sc) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..nstud {
            let mut school = (i % nsch) as u32;
            for _year in 0..3 {
                if g.next() < move_p {
                    school = g.level(nsch);
                }
                st.push(i as u32);
                sc.push(school);
                te.push(school * tpers as u32 + g.level(tpers));
            }
        }
        let terms = vec![
            Term { nlev: nstud, s: 2, lambda: vec![(0, 0, 0), (1, 0, 1), (1, 1, 2)] },
            Term { nlev: nsch * tpers, s: 1, lambda: vec![(0, 0, 3)] },
            Term { nlev: nsch, s: 2, lambda: vec![(0, 0, 4), (1, 0, 5), (1, 1, 6)] },
        ];
        (terms, vec![st, te, sc])
    }

    fn rows_ref<'a>(refs: &'a [Vec<u32>], z: &'a [Vec<f64>], x: &'a [f64], y: &'a [f64], w: Option<&'a [f64]>) -> Rows<'a> {
        Rows { refs: refs.iter().map(|v| v.as_slice()).collect(), z: z.iter().map(|v| v.as_slice()).collect(), x, y, w }
    }

    #[test]
    fn sparse_layouts_equal_brute_force_on_nested_and_partially_crossed_designs() {
        let theta_sets: [[f64; 7]; 3] = [[0.9, 0.2, 0.4, 0.7, 1.1, -0.3, 0.5], [1.4, -0.5, 0.0, 0.0, 0.6, 0.2, 0.0], [0.3, 0.0, 0.8, 1.7, 0.0, 0.0, 0.9]];
        let (tn, rn) = nested_design(120);
        let (ts, rs) = star_design(3, 40, 4, 3);
        for (terms, refs) in [(tn, rn), (ts, rs)] {
            for (p, weights) in [(2, true), (1, false)] {
                let (z, x, y, w) = rows_for(8, &terms, &refs, p, weights);
                let wv = w.clone().unwrap_or_else(|| vec![1.0; y.len()]);
                let logw: f64 = wv.iter().map(|v| v.ln()).sum();
                let rows = rows_ref(&refs, &z, &x, &y, w.as_deref());
                for (layout, sn) in LAYOUTS {
                    let mut m = Lmm::build(terms.clone(), p, &rows, layout, sn).unwrap();
                    assert_eq!(m.is_sparse(), layout == Layout::Sparse);
                    for theta in &theta_sets {
                        for reml in [false, true] {
                            let got = m.objective(theta, reml) - logw;
                            let want = brute_force(&terms, &refs, &z, &x, p, &y, &wv, theta, reml);
                            assert!((got - want).abs() < 1e-9 * want.abs(), "{layout:?} {sn:?}: {got} vs {want} at {theta:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sparse_and_dense_layouts_give_the_same_estimates() {
        let (terms, refs) = star_design(5, 60, 5, 3);
        let (z, x, y, w) = rows_for(2, &terms, &refs, 3, true);
        let rows = rows_ref(&refs, &z, &x, &y, w.as_deref());
        let theta = [0.9, 0.2, 0.4, 0.7, 1.1, -0.3, 0.5];
        let mut ms: Vec<Lmm> = LAYOUTS.iter().map(|&(l, sn)| Lmm::build(terms.clone(), 3, &rows, l, sn).unwrap()).collect();
        let close = |a: &[f64], b: &[f64], what: &str| {
            assert_eq!(a.len(), b.len());
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() < 1e-9 * (1.0 + v.abs()), "{what}: {u} vs {v}");
            }
        };
        for reml in [false, true] {
            let want = ms[0].solution(&theta, reml).unwrap();
            let cv0 = ms[0].condvar(&theta).unwrap();
            for m in &mut ms[1..] {
                let got = m.solution(&theta, reml).unwrap();
                close(&got.beta, &want.beta, "beta");
                close(&got.u.concat(), &want.u.concat(), "u");
                close(&got.b.concat(), &want.b.concat(), "b");
                close(&got.rx, &want.rx, "rx");
                close(&[got.objective, got.pwrss, got.ldl2, got.ldrx2], &[want.objective, want.pwrss, want.ldl2, want.ldrx2], "deviance");
                let cv = m.condvar(&theta).unwrap();
                close(&cv.concat(), &cv0.concat(), "condvar");
            }
        }
        let ms0: Vec<Vec<f64>> = ms[0].moment_start().concat().into_iter().map(|v| vec![v]).collect();
        for m in &ms[1..] {
            close(&m.moment_start().concat(), &ms0.concat(), "moment start");
        }
        // a new response, and the rows in chunks, on the sparse layout
        let y2: Vec<f64> = y.iter().map(|v| 0.5 * v - 1.0).collect();
        let rows2 = Rows { y: &y2, ..rows_ref(&refs, &z, &x, &y, w.as_deref()) };
        let mut fresh = Lmm::with_layout(terms.clone(), 3, &rows2, Layout::Sparse).unwrap();
        ms[1].set_y(&rows2).unwrap();
        let mut chunked = Lmm::with_layout(terms.clone(), 3, &rows2, Layout::Sparse).unwrap();
        chunked.clear_values();
        let n = y.len();
        for (a, b) in [(0, 50), (50, 111), (111, n)] {
            let chunk = Rows {
                refs: refs.iter().map(|v| &v[a..b]).collect(),
                z: z.iter().zip(&terms).map(|(v, t)| &v[a * t.s..b * t.s]).collect(),
                x: &x[3 * a..3 * b],
                y: &y2[a..b],
                w: w.as_deref().map(|w| &w[a..b]),
            };
            chunked.add_chunk(&chunk, a).unwrap();
        }
        chunked.finish_values();
        for reml in [false, true] {
            let f = fresh.objective(&theta, reml);
            assert!((ms[1].objective(&theta, reml) - f).abs() < 1e-10 * f.abs());
            assert!((chunked.objective(&theta, reml) - f).abs() < 1e-10 * f.abs());
        }
    }

    #[test]
    fn gradient_on_the_sparse_layouts_equals_finite_differences() {
        let thetas = vec![vec![0.9, 0.2, 0.4, 0.7, 1.1, -0.3, 0.5], vec![1.3, -0.4, 0.0, 0.5, 0.0, 0.0, 0.8]];
        let (tn, rn) = nested_design(90);
        let (ts, rs) = star_design(9, 30, 3, 3);
        for (terms, refs) in [(tn, rn), (ts, rs)] {
            let (z, x, y, w) = rows_for(4, &terms, &refs, 2, true);
            let rows = rows_ref(&refs, &z, &x, &y, w.as_deref());
            for (layout, sn) in LAYOUTS {
                let mut m = Lmm::build(terms.clone(), 2, &rows, layout, sn).unwrap();
                check_gradient_of(&mut m, &thetas);
            }
        }
    }

    #[test]
    fn nested_levels_keep_the_factor_free_of_fill() {
        // each level of term 0 meets one level of each later term, each level of term 1 one
        // of term 2: the factor of the rest block has the pattern of the block itself
        let (terms, refs) = nested_design(150);
        let (z, x, y, w) = rows_for(1, &terms, &refs, 2, false);
        let rows = rows_ref(&refs, &z, &x, &y, w.as_deref());
        let m = Lmm::build(terms.clone(), 2, &rows, Layout::Sparse, Some(false)).unwrap();
        let sp = m.sp.as_ref().unwrap();
        assert_eq!(sp.nnz_l(), sp.nnz(), "fill in a nested design");
        // C is block diagonal by level of term 2 with the X / y border: per district 2 schools
        // of 1 column and its own 2 columns, linked to each other (5 x 4 x 3 / 2 ... counted):
        // column entries = own block rows + linked rows + 3 trailing rows
        let qz = 10 + 5 * 2;
        let per_school = 1 + 2 + 3; // itself, its district's 2 columns, X and y
        let per_district = (2 + 3) + (1 + 3); // a district's 2 columns: own lower block + trailing
        assert_eq!(sp.nnz(), 10 * per_school + 5 * per_district + 6, "qz {qz}");
        // a partially crossed design fills in, and the supernodal and simplicial factors agree
        let (ts, rs) = star_design(3, 200, 8, 4);
        let (z, x, y, w) = rows_for(1, &ts, &rs, 2, false);
        let rows = rows_ref(&rs, &z, &x, &y, w.as_deref());
        let a = Lmm::build(ts.clone(), 2, &rows, Layout::Sparse, Some(false)).unwrap();
        let b = Lmm::build(ts, 2, &rows, Layout::Sparse, Some(true)).unwrap();
        assert!(!a.sp.as_ref().unwrap().is_supernodal() && b.sp.as_ref().unwrap().is_supernodal());
        assert!(a.sp.as_ref().unwrap().nnz_l() > a.sp.as_ref().unwrap().nnz());
    }

    #[test]
    fn the_layout_is_chosen_from_the_pattern() {
        // partially crossed with 1,000 random effects after term 0: sparse
        let (terms, refs) = star_design(3, 3000, 40, 20);
        let (z, x, y, _) = rows_for(1, &terms, &refs, 2, false);
        let m = Lmm::new(terms, 2, &rows_ref(&refs, &z, &x, &y, None)).unwrap();
        assert!(m.is_sparse(), "rest {}", m.rest_size());
        // fully crossed: every level of term 0 meets most levels of term 1: dense
        let n = 20_000;
        let mut g = Lcg(4);
        let refs: Vec<Vec<u32>> = vec![(0..n).map(|_| g.level(400)).collect(), (0..n).map(|_| g.level(200)).collect()];
        let terms = vec![Term { nlev: 400, s: 1, lambda: vec![(0, 0, 0)] }, Term { nlev: 200, s: 1, lambda: vec![(0, 0, 1)] }];
        let (z, x, y, _) = rows_for(1, &terms, &refs, 1, false);
        let m = Lmm::new(terms, 1, &rows_ref(&refs, &z, &x, &y, None)).unwrap();
        assert!(!m.is_sparse());
        // few random effects after term 0: dense
        let (terms, refs) = nested_design(120);
        let (z, x, y, _) = rows_for(1, &terms, &refs, 2, false);
        assert!(!Lmm::new(terms, 2, &rows_ref(&refs, &z, &x, &y, None)).unwrap().is_sparse());
    }

    #[test]
    fn nested_designs_beyond_the_dense_limit_are_fitted() {
        // 30,000 classes in 15,000 schools: 15,000 school effects, more than a dense block
        // may hold, and a factor without fill
        let n = 60_000;
        let class: Vec<u32> = (0..n).map(|i| (i % 30_000) as u32).collect();
        let school: Vec<u32> = class.iter().map(|&c| c / 2).collect();
        let terms = vec![Term { nlev: 30_000, s: 1, lambda: vec![(0, 0, 0)] }, Term { nlev: 15_000, s: 1, lambda: vec![(0, 0, 1)] }];
        let refs = vec![class, school];
        let (z, x, y, _) = rows_for(6, &terms, &refs, 2, false);
        let rows = rows_ref(&refs, &z, &x, &y, None);
        let mut m = Lmm::new(terms.clone(), 2, &rows).unwrap();
        assert!(m.is_sparse() && m.rest_size() > MAX_DENSE);
        // the same model with the terms the other way round (schools first: each meets two
        // classes, so the 30,000 class effects form linked pairs) has the same criterion
        let mut swapped = Lmm::new(vec![terms[1].clone(), terms[0].clone()], 2, &Rows { refs: vec![&refs[1], &refs[0]], z: vec![&z[1], &z[0]], ..rows_ref(&refs, &z, &x, &y, None) }).unwrap();
        assert!(swapped.is_sparse());
        for (th, reml) in [([0.6, 0.8], true), ([1.2, 0.3], false), ([0.0, 0.5], true)] {
            let f = m.objective(&th, reml);
            let g = swapped.objective(&th, reml); // (each term keeps its theta)
            assert!(f.is_finite() && (f - g).abs() < 1e-9 * f.abs(), "{f} vs {g}");
        }
        let out = m.optimize(&[1.0, 1.0], &[0.0, 0.0], true, &Default::default()).unwrap();
        assert!(matches!(out.stop, crate::optim::Stop::Converged | crate::optim::Stop::NoProgress), "{:?}", out.stop);
        assert!(out.decrement < 1e-8, "{}", out.decrement);
        // a block that is dense and too large is still refused, before allocating it
        let n = 12_500;
        let refs = vec![vec![0u32; n], (0..n as u32).collect::<Vec<_>>()];
        let terms = vec![Term { nlev: 1, s: 1, lambda: vec![(0, 0, 0)] }, Term { nlev: n, s: 1, lambda: vec![(0, 0, 1)] }];
        let (z, x, y, _) = rows_for(6, &terms, &refs, 1, false);
        let err = Lmm::new(terms, 1, &rows_ref(&refs, &z, &x, &y, None)).err().expect("refused");
        assert!(matches!(err, CoreError::TooLarge { size: 12_502, .. }), "{err:?}");
    }


    /// Where an evaluation of a star-sized partially crossed model spends its time
    /// (`cargo test --release bench_star_like -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn bench_star_like() {
        let (terms, refs) = star_design_moving(3, 10_500, 80, 16, 0.012);
        let p = 23;
        let (z, x, y, _) = rows_for(1, &terms, &refs, p, false);
        let rows = rows_ref(&refs, &z, &x, &y, None);
        let t = std::time::Instant::now();
        let mut m = Lmm::new(terms, p, &rows).unwrap();
        eprintln!("build {:?}, sparse {}", t.elapsed(), m.is_sparse());
        let theta = [0.9, 0.2, 0.4, 0.7, 1.1, -0.3, 0.5];
        let reps = 20;
        let t = std::time::Instant::now();
        for i in 0..reps {
            let th: Vec<f64> = theta.iter().map(|v| v * (1.0 + 1e-9 * i as f64)).collect();
            m.objective(&th, true);
        }
        eprintln!("objective {:?}", t.elapsed() / reps);
        m.set_lambda(&theta);
        let s0 = m.terms[0].s;
        let nl0 = m.terms[0].nlev;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let ctx = LevelCtx { terms: &m.terms, lam: &m.lam, a11: &m.a11, ar1: &m.ar1, colptr: &m.colptr, idx: &m.idx, off: &m.off, qz: m.qz };
            ctx.levels(0, nl0, &mut m.l11, &mut m.bmat);
        }
        eprintln!("levels {:?}", t.elapsed() / reps);
        let svec: Vec<usize> = m.terms.iter().map(|t| t.s).collect();
        let mut sp = m.sp.take().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..reps {
            sp.form(&m.arr, &mut m.c, &m.lam, &svec);
        }
        eprintln!("form {:?} (nnz C {})", t.elapsed() / reps, sp.nnz());
        let t = std::time::Instant::now();
        for _ in 0..reps {
            sp.rank_update(&mut m.c, &m.colptr, &m.idx, &m.bmat, s0);
        }
        eprintln!("update {:?}", t.elapsed() / reps);
        sp.form(&m.arr, &mut m.c, &m.lam, &svec);
        sp.rank_update(&mut m.c, &m.colptr, &m.idx, &m.bmat, s0);
        let t = std::time::Instant::now();
        for _ in 0..reps {
            assert!(sp.factor(&m.c));
        }
        eprintln!("factor {:?} (nnz L {}, supernodal {})", t.elapsed() / reps, sp.nnz_l(), sp.is_supernodal());
        let t = std::time::Instant::now();
        sp.selected_inverse(m.qz + p);
        eprintln!("selected inverse {:?}", t.elapsed());
        m.sp = Some(sp);
        let mut g = vec![0.0; 7];
        let t = std::time::Instant::now();
        m.objective_gradient(&theta, true, &mut g);
        eprintln!("objective + gradient {:?}", t.elapsed());
    }
}
