//! The penalised least-squares system of PIRLS when every random-effect term is scalar
//! (crossed or nested intercepts such as `(1 | id) + (1 | item)`), with what the gradient
//! of the Laplace criterion needs: selected entries of the inverse and solves.
//!
//! M = Lambda' Z' W Z Lambda + I is laid out as in the LMM engine: term 0 (most levels) is
//! diagonal, the other terms form one dense block of size qr, and the block between them is
//! sparse by level of term 0:
//!
//! ```text
//!   M = [ diag(m0)  B' ]      S = C - sum_l B_l B_l' / m0_l  (Schur complement, dense)
//!       [ B         C  ]      log|M| = sum log m0 + log|S|
//! ```
//!
//! The inverse has M^-1[l, l] = (1 + B_l' P B_l / m0_l) / m0_l, M^-1[l, r] = -(P B_l)_r / m0_l
//! and M^-1[r, r'] = P[r, r'] with P = S^-1; a row only meets the entries of its own levels,
//! and those come from P restricted to each level's pattern.
//!
//! With `p > 0` the fixed-effect columns X join the dense block after the other terms
//! (unpenalised, unscaled): the same factor then solves PIRLS for (u, beta) together
//! (nAGQ = 0), and its trailing p x p block is R_X. log|M| uses the Z part only.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor as llt;
use faer::{MatMut, MatRef, Par};

use crate::error::CoreResult;
use crate::glmm::{Glmm, E};
use crate::pattern::{LevelPattern, RowGroups};

use super::Solver;

/// Pattern and workspace of the system.
pub(crate) struct Crossed {
    k: usize,
    n0: usize,
    /// rest indices of the random effects; the dense block has qd = qr + p
    qr: usize,
    p: usize,
    qd: usize,
    /// start of term k (k >= 1) among the rest indices
    roff: Vec<usize>,
    /// per level of term 0: the rest indices it meets, sorted (CSC-like)
    colptr: Vec<usize>,
    idx: Vec<u32>,
    /// per term k >= 1 and row: the entry (into idx) of its (level of term 0, level of term k)
    slot: Vec<Vec<u32>>,
    // ---- values ----
    a0: Vec<f64>,
    g0: Vec<f64>,
    bv: Vec<f64>,
    arr: Vec<f64>,
    gr: Vec<f64>,
    // ---- factor ----
    m0: Vec<f64>,
    b: Vec<f64>,
    /// Cholesky factor of S (lower, column-major qr x qr)
    s: Vec<f64>,
    mem: MemBuffer,
    pub logdet: f64,
    /// P = S^-1 (filled by `inverse`)
    pinv: Vec<f64>,
}

impl Crossed {
    /// `refs[k]` are the levels of term k for the rows, sorted by the levels of term 0
    /// (level l's rows are `gstart[l]..gstart[l + 1]`).
    pub fn new(nlev: &[usize], refs: &[Vec<u32>], gstart: &[usize], p: usize) -> Crossed {
        let k = nlev.len();
        let n0 = nlev[0];
        // the rows are sorted by the levels of term 0; every term has one column
        let groups = RowGroups::sorted(gstart);
        let refs_s: Vec<&[u32]> = refs.iter().map(|r| r.as_slice()).collect();
        // the fixed-effect columns trail every level's pattern
        let LevelPattern { off: roff, qz: qr, colptr, idx, slot } =
            LevelPattern::new(nlev, &vec![1; k], &refs_s, &groups, p);
        let nent = idx.len();
        let qd = qr + p;
        let mem = MemBuffer::new(llt::cholesky_in_place_scratch::<f64>(qd.max(1), Par::Seq, Default::default()));
        Crossed {
            k,
            n0,
            qr,
            p,
            qd,
            roff,
            colptr,
            idx,
            slot,
            a0: vec![0.0; n0],
            g0: vec![0.0; n0],
            bv: vec![0.0; nent],
            arr: vec![0.0; qd * qd],
            gr: vec![0.0; qd],
            m0: vec![0.0; n0],
            b: vec![0.0; nent],
            s: vec![0.0; qd * qd],
            mem,
            logdet: 0.0,
            pinv: Vec::new(),
        }
    }

    /// Rest index of row i in term t >= 1.
    #[inline]
    fn rest(&self, refs: &[Vec<u32>], t: usize, i: usize) -> usize {
        self.roff[t] + refs[t][i] as usize
    }

    /// Accumulate the weighted cross products, scale by theta, factor; then solve for the
    /// modes of the working response `yw` (and beta, when the system has X: `x` row-major
    /// n x p). Returns (u: term 0 levels then the rest; beta) or None when the dense block is
    /// not positive definite. With `shift` (u in the same layout) the right-hand side is
    /// [Lambda' Z' W yw - u; X' W yw]: with the working residual as `yw` that is the
    /// score, and the solution the PIRLS step (du, dbeta).
    #[allow(clippy::too_many_arguments)]
    pub fn factor_solve(
        &mut self,
        th: &[f64],
        refs: &[Vec<u32>],
        z: &[Vec<f64>],
        x: &[f64],
        w: &[f64],
        yw: &[f64],
        shift: Option<&[f64]>,
    ) -> Option<(Vec<f64>, Vec<f64>)> {
        let (k, qr, qd, p) = (self.k, self.qr, self.qd, self.p);
        self.a0.iter_mut().for_each(|v| *v = 0.0);
        self.g0.iter_mut().for_each(|v| *v = 0.0);
        self.bv.iter_mut().for_each(|v| *v = 0.0);
        self.arr.iter_mut().for_each(|v| *v = 0.0);
        self.gr.iter_mut().for_each(|v| *v = 0.0);
        // the row's entries of the dense block: (index, value) for the other terms and X
        let m = k - 1 + p;
        let mut rs = vec![0usize; m];
        let mut zs = vec![0.0f64; m];
        for i in 0..w.len() {
            let wi = w[i];
            let l = refs[0][i] as usize;
            let z0 = z[0][i];
            let wz0 = wi * z0;
            let wy = wi * yw[i];
            self.a0[l] += wz0 * z0;
            self.g0[l] += wz0 * yw[i];
            for t in 1..k {
                let zt = z[t][i];
                self.bv[self.slot[t][i] as usize] += wz0 * zt;
                rs[t - 1] = self.roff[t] + refs[t][i] as usize;
                zs[t - 1] = zt;
            }
            if p > 0 {
                let xe = self.colptr[l + 1] - p;
                let xi = &x[i * p..(i + 1) * p];
                for c in 0..p {
                    self.bv[xe + c] += wz0 * xi[c];
                    rs[k - 1 + c] = qr + c;
                    zs[k - 1 + c] = xi[c];
                }
            }
            // rs is increasing (terms in order, then the X columns): the lower triangle is
            // the pairs bb <= a
            for a in 0..m {
                let (ra, za) = (rs[a], zs[a]);
                self.gr[ra] += za * wy;
                let wa = wi * za;
                for bb in 0..=a {
                    self.arr[ra + rs[bb] * qd] += wa * zs[bb];
                }
            }
        }
        self.factor(th)?;
        // right-hand side [Lambda' Z' W yw; X' W yw]
        let th0 = th[0];
        let mut c0: Vec<f64> = self.g0.iter().map(|v| th0 * v).collect();
        let mut cr = self.gr.clone();
        for t in 1..k {
            let (a, e) = (self.roff[t], if t + 1 < k { self.roff[t + 1] } else { qr });
            for v in &mut cr[a..e] {
                *v *= th[t];
            }
        }
        if let Some(u) = shift {
            for (c, v) in c0.iter_mut().zip(&u[..self.n0]) {
                *c -= v;
            }
            for (c, v) in cr[..qr].iter_mut().zip(&u[self.n0..]) {
                *c -= v;
            }
        }
        let mut sol = self.solve(&c0, &cr);
        let beta = sol.split_off(self.n0 + qr);
        Some((sol, beta))
    }

    /// The p x p lower factor R_X of the fixed-effects block (column-major; vcov of beta
    /// conditional on theta is (R_X R_X')^-1), from the last factorisation.
    pub fn rx(&self) -> Vec<f64> {
        let (qr, qd, p) = (self.qr, self.qd, self.p);
        let mut out = vec![0.0; p * p];
        for j in 0..p {
            for i in j..p {
                out[i + j * p] = self.s[(qr + i) + (qr + j) * qd];
            }
        }
        out
    }

    fn term_of_rest(&self, r: usize) -> usize {
        let mut t = self.k - 1;
        while t > 1 && self.roff[t] > r {
            t -= 1;
        }
        t
    }

    /// Scale the accumulated products by theta and factor M.
    fn factor(&mut self, th: &[f64]) -> Option<()> {
        let (n0, qr, qd) = (self.n0, self.qr, self.qd);
        let th0 = th[0];
        for l in 0..n0 {
            self.m0[l] = th0 * th0 * self.a0[l] + 1.0;
        }
        // scale of each dense index: theta of its term, 1 for the X columns
        let mut thr = vec![1.0; qd];
        for (r, v) in thr.iter_mut().enumerate().take(qr) {
            *v = th[self.term_of_rest(r)];
        }
        for e in 0..self.idx.len() {
            self.b[e] = th0 * thr[self.idx[e] as usize] * self.bv[e];
        }
        for j in 0..qd {
            for i in j..qd {
                self.s[i + j * qd] = thr[i] * thr[j] * self.arr[i + j * qd];
            }
            if j < qr {
                self.s[j + j * qd] += 1.0;
            }
        }
        for l in 0..n0 {
            let (e0, e1) = (self.colptr[l], self.colptr[l + 1]);
            let inv = 1.0 / self.m0[l];
            for eb in e0..e1 {
                let (jb, vb) = (self.idx[eb] as usize, self.b[eb] * inv);
                for ea in eb..e1 {
                    let ia = self.idx[ea] as usize;
                    self.s[ia + jb * qd] -= self.b[ea] * vb;
                }
            }
        }
        let mut ld = self.m0.iter().map(|v| v.ln()).sum::<f64>();
        if qd > 0 {
            let stack = MemStack::new(&mut self.mem);
            let sm = MatMut::from_column_major_slice_mut(&mut self.s, qd, qd);
            if llt::cholesky_in_place(sm, Default::default(), Par::Seq, stack, Default::default()).is_err() {
                return None;
            }
            for j in 0..qr {
                ld += 2.0 * self.s[j + j * qd].ln();
            }
        }
        self.logdet = ld;
        self.pinv.clear();
        Some(())
    }

    /// M^-1 [c0; cr] with the current factor (cr has the dense block's length, qr + p).
    pub fn solve(&self, c0: &[f64], cr: &[f64]) -> Vec<f64> {
        let (n0, qr) = (self.n0, self.qd);
        let mut y = cr.to_vec();
        for l in 0..n0 {
            let f = c0[l] / self.m0[l];
            for e in self.colptr[l]..self.colptr[l + 1] {
                y[self.idx[e] as usize] -= self.b[e] * f;
            }
        }
        // S x = y by the Cholesky factor
        let s = &self.s;
        for i in 0..qr {
            let mut v = y[i];
            for j in 0..i {
                v -= s[i + j * qr] * y[j];
            }
            y[i] = v / s[i + i * qr];
        }
        for i in (0..qr).rev() {
            let mut v = y[i];
            for j in (i + 1)..qr {
                v -= s[j + i * qr] * y[j];
            }
            y[i] = v / s[i + i * qr];
        }
        let mut out = vec![0.0; n0 + qr];
        for l in 0..n0 {
            let mut v = c0[l];
            for e in self.colptr[l]..self.colptr[l + 1] {
                v -= self.b[e] * y[self.idx[e] as usize];
            }
            out[l] = v / self.m0[l];
        }
        out[n0..].copy_from_slice(&y);
        out
    }

    /// P = S^-1 (dense; systems without X only).
    fn inverse(&mut self) {
        debug_assert_eq!(self.p, 0);
        let qr = self.qr;
        if !self.pinv.is_empty() || qr == 0 {
            return;
        }
        let mut linv = vec![0.0; qr * qr];
        faer::linalg::triangular_inverse::invert_lower_triangular(
            MatMut::from_column_major_slice_mut(&mut linv, qr, qr),
            MatRef::from_column_major_slice(&self.s, qr, qr),
            Par::Seq,
        );
        for j in 0..qr {
            for i in 0..j {
                linv[i + j * qr] = 0.0;
            }
        }
        let mut p = vec![0.0; qr * qr];
        let lm = MatRef::from_column_major_slice(&linv, qr, qr);
        faer::linalg::matmul::matmul(
            MatMut::from_column_major_slice_mut(&mut p, qr, qr),
            faer::Accum::Replace,
            lm.transpose(),
            lm,
            1.0,
            Par::Seq,
        );
        self.pinv = p;
    }

    /// For every row i: G_i = M^-1[E_i, E_i] a_i with a_i = (theta_t z_it)_t and E_i the row's
    /// levels (term 0, then the rest). Writes G (n x k, row-major) and returns it.
    pub fn row_inverse_products(&mut self, th: &[f64], refs: &[Vec<u32>], z: &[Vec<f64>]) -> Vec<f64> {
        self.inverse();
        let (k, qr, n0) = (self.k, self.qr, self.n0);
        let n = refs[0].len();
        // per level of term 0: y_l = P[idx_l, idx_l] B_l and q_l = B_l' y_l
        let mut y = vec![0.0; self.idx.len()];
        let mut minv_ll = vec![0.0; n0];
        for l in 0..n0 {
            let (e0, e1) = (self.colptr[l], self.colptr[l + 1]);
            let mut q = 0.0;
            for ea in e0..e1 {
                let ia = self.idx[ea] as usize;
                let mut v = 0.0;
                for eb in e0..e1 {
                    v += self.pinv[ia + self.idx[eb] as usize * qr] * self.b[eb];
                }
                y[ea] = v;
                q += self.b[ea] * v;
            }
            let m = self.m0[l];
            minv_ll[l] = (1.0 + q / m) / m;
        }
        let mut out = vec![0.0; n * k];
        let mut a = vec![0.0; k];
        let mut rs = vec![0usize; k];
        let mut es = vec![0usize; k];
        for i in 0..n {
            let l = refs[0][i] as usize;
            let m = self.m0[l];
            for t in 0..k {
                a[t] = th[t] * z[t][i];
            }
            for t in 1..k {
                rs[t] = self.rest(refs, t, i);
                es[t] = self.slot[t][i] as usize;
            }
            let g = &mut out[i * k..(i + 1) * k];
            let mut g0 = minv_ll[l] * a[0];
            for t in 1..k {
                let mlr = -y[es[t]] / m;
                g0 += mlr * a[t];
                let mut gt = mlr * a[0];
                for t2 in 1..k {
                    gt += self.pinv[rs[t] + rs[t2] * qr] * a[t2];
                }
                g[t] = gt;
            }
            g[0] = g0;
        }
        out
    }

    /// Diagonal of M^-1 in u order (term 0 levels, then the rest): conditional variances of
    /// u at the current weights.
    pub fn inverse_diagonal(&mut self) -> Vec<f64> {
        self.inverse();
        let (n0, qr) = (self.n0, self.qr);
        let mut out = vec![0.0; n0 + qr];
        for l in 0..n0 {
            let (e0, e1) = (self.colptr[l], self.colptr[l + 1]);
            let mut q = 0.0;
            for ea in e0..e1 {
                let ia = self.idx[ea] as usize;
                for eb in e0..e1 {
                    q += self.b[ea] * self.pinv[ia + self.idx[eb] as usize * qr] * self.b[eb];
                }
            }
            out[l] = (1.0 + q / self.m0[l]) / self.m0[l];
        }
        for r in 0..qr {
            out[n0 + r] = self.pinv[r + r * qr];
        }
        out
    }
}

// ---- the crossed representation as the GLMM uses it ----

impl Glmm {
    /// Build the (u, beta) system if `joint` and it does not exist yet.
    fn ensure_crossed_x(&mut self, joint: bool) {
        if let Solver::Crossed { ub, .. } = &mut self.solver {
            if joint && ub.is_none() {
                let nlev: Vec<usize> = self.terms.iter().map(|t| t.nlev).collect();
                *ub = Some(Crossed::new(&nlev, &self.refs, &self.gstart, self.p));
            }
        }
    }

    /// Factor at the stored weights and solve for the modes of the response `yw` (the stored
    /// working response by default), or with `shift` for the step (see `Crossed::factor_solve`).
    fn crossed_factor_solve(
        &mut self,
        theta: &[f64],
        joint: bool,
        yw: Option<&[f64]>,
        shift: bool,
    ) -> CoreResult<(&mut Crossed, Vec<f64>, Vec<f64>)> {
        let th = self.term_thetas(theta);
        self.ensure_crossed_x(joint);
        let Solver::Crossed { u, ub } = &mut self.solver else {
            return Err(E::ModelSpec("not the crossed representation".into()));
        };
        let cr = if joint { ub.as_mut().expect("ensure_crossed_x built it") } else { u };
        let x: &[f64] = if joint { &self.x } else { &[] };
        let (uu, b) = cr
            .factor_solve(&th, &self.refs, &self.z, x, &self.w, yw.unwrap_or(&self.wresp), shift.then_some(&self.u[..]))
            .ok_or_else(|| E::Numerical("PIRLS: the penalised least-squares system is not positive definite".into()))?;
        Ok((cr, uu, b))
    }

    /// The PIRLS step (du, dbeta) and log|L|^2, from the working residual r in `wresp`
    /// (`pirls_general` keeps r there for this representation): the right-hand side is the
    /// score, small near the mode, where the equations of the new mode itself carry the
    /// rounding of W |Z Lambda u| (see `solver/scalar.rs`, `scalar_joint`).
    pub(in crate::glmm) fn crossed_solve(&mut self, theta: &[f64], joint: bool) -> CoreResult<(Vec<f64>, Vec<f64>, f64)> {
        let (cr, du, db) = self.crossed_factor_solve(theta, joint, None, true)?;
        Ok((du, db, cr.logdet))
    }

    pub(in crate::glmm) fn crossed_condvar(&mut self, theta: &[f64]) -> CoreResult<Vec<Vec<f64>>> {
        self.refresh_state();
        let th = self.term_thetas(theta);
        let (cr, _, _) = self.crossed_factor_solve(theta, false, None, false).map_err(|_| E::Numerical("factorisation failed".into()))?;
        let d = cr.inverse_diagonal();
        Ok((0..self.terms.len())
            .map(|t| (self.uoff[t]..self.uoff[t + 1]).map(|j| th[t] * th[t] * d[j]).collect())
            .collect())
    }

    pub(in crate::glmm) fn crossed_rx(&mut self, theta: &[f64]) -> CoreResult<Vec<f64>> {
        self.refresh_state();
        let yt: Vec<f64> = (0..self.n).map(|i| self.wresp[i] + self.offb[i] - self.off[i]).collect();
        let (cr, _, _) = self
            .crossed_factor_solve(theta, true, Some(&yt), false)
            .map_err(|_| E::Numerical("the fixed-effects block is not positive definite".into()))?;
        Ok(cr.rx())
    }
}
