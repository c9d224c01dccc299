//! The analytic gradient of the profiled deviance from the blocked Cholesky factor.
//!
//! Write Lam~ = blockdiag(Lambda, I_p, 1) and A~ = [Z X y]'W[Z X y], so that the factored
//! matrix is M = Lam~' A~ Lam~ + diag(I_q, 0, 0) = L L'. Lambda is linear in theta,
//! Lambda = sum_i theta_i E_i, hence dM/dtheta_i = E~_i' A~ Lam~ + Lam~' A~ E~_i. Both criteria
//! are (up to constants) log det M_m + nu log r^2, with M_m the leading block of M over the
//! random effects (ML, nu = n) or the random and fixed effects (REML, nu = n - p) and r^2 the
//! penalised RSS (L's last diagonal squared). Then
//!
//! * d log det M_m = tr(M_m^-1 dM_m) = 2 tr(G Lam~' A~ E~_i), G = M_m^-1: only the entries of
//!   G on the pattern of A~ are needed (a "selected inverse"), which the blocked factor gives
//!   cheaply: with L_m = [[D, 0], [B, C]] (D block diagonal for term 0, C the dense factor of
//!   the rest) and P = (C C')^-1, G_rest = P, G_0,rest = -D^-T B' P and the diagonal blocks
//!   of G_00 are D_l^-T (I + B_l' P B_l) D_l^-1 -- the same pieces as the conditional
//!   variances (`condvar`);
//! * d r^2 = -2 (E_i u)' Z'W(y - X beta - Z b) (the envelope theorem on the penalised least
//!   squares problem), and Z'W times the residual comes from the cross products, not the rows.
//!
//! (Bates, Alday and Kokandakar 2025 derive the same expressions for MixedModels.jl's blocked
//! factor.) The cost is one factorisation plus, for the dense block of size r, a triangular
//! inverse and a product (~ 2/3 r^3): about an evaluation for nested models, up to three for
//! crossed ones with a large dense block -- and it replaces a handful of evaluations of a
//! derivative-free optimiser or 2 k of finite differences.

use super::sparse::SparseRest;
use super::{profiled, Lmm};
use crate::small;
use faer::linalg::matmul::triangular::BlockStructure;
use faer::{MatMut, MatRef};

/// Up to this size the inverse of the dense block is taken with plain loops (faer's set-up
/// costs more than the arithmetic of a 2 x 2 or 3 x 3).
const SMALL_DENSE: usize = 12;

impl Lmm {
    /// The solution of the penalised least squares problem from the current factor:
    /// (beta, spherical effects of term 0 level-major, spherical effects of the rest terms).
    pub(super) fn pls(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (r, qz, p) = (self.r, self.qz, self.p);
        let (beta, ur) = match &self.sp {
            Some(sp) => sp.pls(p),
            None => {
                let c = &self.c;
                let at = |i: usize, j: usize| c[i + j * r];
                let yr = r - 1;
                let mut beta = vec![0.0; p];
                for i in (0..p).rev() {
                    let mut v = at(yr, qz + i);
                    for k in (i + 1)..p {
                        v -= at(qz + k, qz + i) * beta[k];
                    }
                    beta[i] = v / at(qz + i, qz + i);
                }
                let mut ur = vec![0.0; qz];
                for i in 0..qz {
                    let mut v = at(yr, i);
                    for k in 0..p {
                        v -= at(qz + k, i) * beta[k];
                    }
                    ur[i] = v;
                }
                for i in (0..qz).rev() {
                    let mut v = ur[i];
                    for k in (i + 1)..qz {
                        v -= at(k, i) * ur[k];
                    }
                    ur[i] = v / at(i, i);
                }
                (beta, ur)
            }
        };
        let s0 = self.terms[0].s;
        let nl0 = self.terms[0].nlev;
        let mut u0 = vec![0.0; nl0 * s0];
        let mut v = vec![0.0; s0];
        for l in 0..nl0 {
            let (e0, e1) = (self.colptr[l], self.colptr[l + 1]);
            v.copy_from_slice(&self.bmat[(e1 - 1) * s0..e1 * s0]);
            for e in e0..e1 - 1 {
                let ix = self.idx[e] as usize;
                let coef = if ix < qz { ur[ix] } else { beta[ix - qz] };
                for cc in 0..s0 {
                    v[cc] -= self.bmat[e * s0 + cc] * coef;
                }
            }
            small::solve_lower_t(&self.l11[l * s0 * s0..(l + 1) * s0 * s0], s0, &mut v);
            u0[l * s0..(l + 1) * s0].copy_from_slice(&v);
        }
        (beta, u0, ur)
    }

    /// (term, level, s) of the rest index `ix` < qz.
    fn rest_term_of(&self, ix: usize) -> (usize, usize, usize) {
        let mut k = self.terms.len() - 1;
        while k > 1 && self.off[k] > ix {
            k -= 1;
        }
        let s = self.terms[k].s;
        (k, (ix - self.off[k]) / s, s)
    }

    /// P = (C_m C_m')^-1 for the leading m x m block of the dense factor, full (both
    /// triangles), column-major, into `self.gw_p`.
    fn dense_selected_inverse(&mut self, m: usize) {
        let r = self.r;
        self.gw_p.clear();
        self.gw_p.resize(m * m, 0.0);
        if m == 0 {
            return;
        }
        self.gw_inv.clear();
        self.gw_inv.resize(m * m, 0.0);
        if m <= SMALL_DENSE {
            let mut cz = vec![0.0; m * m];
            for j in 0..m {
                for i in j..m {
                    cz[i + j * m] = self.c[i + j * r];
                }
            }
            small::invert_lower(&cz, m, &mut self.gw_inv);
        } else {
            let cz = MatRef::from_column_major_slice_with_stride(&self.c[..], m, m, r);
            faer::linalg::triangular_inverse::invert_lower_triangular(
                MatMut::from_column_major_slice_mut(&mut self.gw_inv, m, m),
                cz,
                self.par,
            );
            // invert_lower_triangular leaves the strict upper part unspecified
            for j in 0..m {
                for i in 0..j {
                    self.gw_inv[i + j * m] = 0.0;
                }
            }
        }
        if m <= SMALL_DENSE {
            let inv = &self.gw_inv;
            for j in 0..m {
                for i in j..m {
                    // (inv' inv)[i, j] = sum_k inv[k, i] inv[k, j], k >= max(i, j) = i
                    let mut v = 0.0;
                    for k in i..m {
                        v += inv[k + i * m] * inv[k + j * m];
                    }
                    self.gw_p[i + j * m] = v;
                    self.gw_p[j + i * m] = v;
                }
            }
        } else {
            // P = inv' inv: only its lower triangle, from the triangular factors (m^3 / 3
            // flops instead of the 2 m^3 of a full product), then mirrored
            let invm = MatRef::from_column_major_slice(&self.gw_inv, m, m);
            faer::linalg::matmul::triangular::matmul(
                MatMut::from_column_major_slice_mut(&mut self.gw_p, m, m),
                BlockStructure::TriangularLower,
                faer::Accum::Replace,
                invm.transpose(),
                BlockStructure::TriangularUpper,
                invm,
                BlockStructure::TriangularLower,
                1.0,
                self.par,
            );
            for j in 0..m {
                for i in (j + 1)..m {
                    self.gw_p[j + i * m] = self.gw_p[i + j * m];
                }
            }
        }
    }

    /// The rest terms' part of the trace terms on the sparse pattern: H_k[c, r] += sum over
    /// term k's levels and a < m of (Lam~ P)[a, j_c] A~[a, j_r], j_c and j_r columns of one
    /// level's block (as the dense loop below). A~'s lower triangle is visited once; each
    /// stored entry serves both of its columns.
    fn sparse_rest_traces(&self, sp: &SparseRest, m: usize, h: &mut [Vec<f64>]) {
        let qz = self.qz;
        // (Lam~ P)[a, jc]
        let q_at = |a: usize, jc: usize| -> f64 {
            if a >= qz {
                return sp.z_ij(a, jc);
            }
            let k = sp.rterm[a] as usize;
            let ba = sp.rblk[a] as usize;
            let s = self.terms[k].s;
            let lam = &self.lam[k];
            let ia = a - ba;
            let mut v = 0.0;
            for t in 0..=ia {
                v += lam[ia + t * s] * sp.z_ij(ba + t, jc);
            }
            v
        };
        for j in 0..qz {
            let kj = sp.rterm[j] as usize;
            let bj = sp.rblk[j] as usize;
            let sj = self.terms[kj].s;
            let rj = j - bj;
            for e in sp.colptr[j] as usize..sp.colptr[j + 1] as usize {
                let i = sp.rowidx[e] as usize;
                if i >= m {
                    break;
                }
                let av = self.arr[e];
                for ck in 0..sj {
                    h[kj][ck + rj * sj] += q_at(i, bj + ck) * av;
                }
                if i != j && i < qz {
                    let ki = sp.rterm[i] as usize;
                    let bi = sp.rblk[i] as usize;
                    let si = self.terms[ki].s;
                    let ri = i - bi;
                    for ck in 0..si {
                        h[ki][ck + ri * si] += q_at(j, bi + ck) * av;
                    }
                }
            }
        }
    }

    /// The profiled deviance (ML) or REML criterion at theta, as `objective`, and its
    /// gradient in theta (one entry per theta index, `grad.len() >= n_theta()`). Where the
    /// factorisation fails: +inf and a gradient of NaN.
    pub fn objective_gradient(&mut self, theta: &[f64], reml: bool, grad: &mut [f64]) -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        if !self.factor(theta) {
            grad.iter_mut().for_each(|g| *g = f64::NAN);
            return f64::INFINITY;
        }
        let (ldl2, ldrx2, pwrss) = self.logdets();
        let (n, p, r, qz) = (self.n, self.p, self.r, self.qz);
        let f = profiled(n, p, ldl2, ldrx2, pwrss, reml);
        let nt = self.terms.len();
        let s0 = self.terms[0].s;
        let nl0 = self.terms[0].nlev;
        let yi = r - 1;
        let (beta, u0, ur) = self.pls();

        // ---- b = Lambda u ----
        let lam_mul = |lam: &[f64], s: usize, u: &[f64], out: &mut [f64]| {
            for i in 0..s {
                let mut v = 0.0;
                for j in 0..=i {
                    v += lam[i + j * s] * u[j];
                }
                out[i] = v;
            }
        };
        let mut b0 = vec![0.0; nl0 * s0];
        for l in 0..nl0 {
            lam_mul(&self.lam[0], s0, &u0[l * s0..(l + 1) * s0], &mut b0[l * s0..(l + 1) * s0]);
        }
        let mut br = vec![0.0; qz];
        for k in 1..nt {
            let sk = self.terms[k].s;
            for lv in 0..self.terms[k].nlev {
                let base = self.off[k] + lv * sk;
                lam_mul(&self.lam[k], sk, &ur[base..base + sk], &mut br[base..base + sk]);
            }
        }

        // ---- Z'W (y - X beta - Z b) from the cross products ----
        let mut zres0 = vec![0.0; nl0 * s0];
        let mut zresr = vec![0.0; qz];
        if let Some(sp) = &self.sp {
            for j in 0..qz {
                let mut v = self.arr[sp.pos(yi, j)];
                for a in 0..p {
                    v -= self.arr[sp.pos(qz + a, j)] * beta[a];
                }
                zresr[j] = v;
            }
            // A_zz br, A symmetric with its lower triangle stored
            for j in 0..qz {
                for e in sp.colptr[j] as usize..sp.colptr[j + 1] as usize {
                    let i = sp.rowidx[e] as usize;
                    if i >= qz {
                        break;
                    }
                    let av = self.arr[e];
                    zresr[j] -= av * br[i];
                    if i != j {
                        zresr[i] -= av * br[j];
                    }
                }
            }
        } else {
            for j in 0..qz {
                let col = j * r;
                let mut v = self.arr[yi + col];
                for a in 0..p {
                    v -= self.arr[qz + a + col] * beta[a];
                }
                for j2 in 0..qz {
                    v -= self.arr[j2 + col] * br[j2];
                }
                zresr[j] = v;
            }
        }
        for l in 0..nl0 {
            let (e0, e1) = (self.colptr[l], self.colptr[l + 1]);
            let xe = e1 - (p + 1);
            let a11 = &self.a11[l * s0 * s0..(l + 1) * s0 * s0];
            let bl = &b0[l * s0..(l + 1) * s0];
            for q in 0..s0 {
                let mut v = self.ar1[(e1 - 1) * s0 + q];
                for a in 0..p {
                    v -= self.ar1[(xe + a) * s0 + q] * beta[a];
                }
                for q2 in 0..s0 {
                    v -= a11[q + q2 * s0] * bl[q2];
                }
                for e in e0..xe {
                    v -= self.ar1[e * s0 + q] * br[self.idx[e] as usize];
                }
                zres0[l * s0 + q] = v;
            }
            for e in e0..xe {
                let mut v = 0.0;
                for q in 0..s0 {
                    v += self.ar1[e * s0 + q] * bl[q];
                }
                zresr[self.idx[e] as usize] -= v;
            }
        }

        // ---- the trace terms: H_k = sum over levels of the diagonal blocks of G Lam~' A~ ----
        let m = qz + if reml { p } else { 0 };
        if let Some(sp) = self.sp.as_mut() {
            sp.selected_inverse(m);
        } else {
            self.dense_selected_inverse(m);
        }
        let pm = std::mem::take(&mut self.gw_p);
        let mut gbx = std::mem::take(&mut self.gw_bx);
        let mut gpbx = std::mem::take(&mut self.gw_pbx);
        let ps = self.psel(&pm, m);
        let mut h: Vec<Vec<f64>> = self.terms.iter().map(|t| vec![0.0; t.s * t.s]).collect();
        // term 0's block accumulates apart from the others' (one flat buffer in the hot loop)
        let mut h0 = vec![0.0; s0 * s0];
        // term 0, level by level
        {
            let lam0 = &self.lam[0];
            let maxent = (0..nl0).map(|l| self.colptr[l + 1] - self.colptr[l]).max().unwrap_or(0);
            let mut q = vec![0.0; maxent * s0]; // Q_e = sum_e' P[e', e] B_e'
            let mut pl = vec![0.0; maxent * maxent]; // P over the level's random-effect entries
            // Under REML every level's entries end with the p columns of X, whose part of P
            // is the same for all levels: P_xx (p x p) and P_zx (row ia: P[qz + c, ia]) are
            // read once into dense arrays, and the X part of Q is formed from them with
            // contiguous loops. (Reading them entry by entry through the pattern for every
            // level cost ~(z + p)^2 lookups a level: 5x the whole objective on star's 25
            // fixed effects.)
            let px = if reml { p } else { 0 };
            let mut pxx = vec![0.0; px * px];
            let mut pzx = vec![0.0; qz * px];
            for c in 0..px {
                for c2 in 0..px {
                    pxx[c2 + c * px] = ps.at(qz + c2, qz + c);
                }
            }
            if px > 0 {
                for ia in 0..qz {
                    for c in 0..px {
                        pzx[ia * px + c] = ps.at(qz + c, ia);
                    }
                }
            }
            let mut qxt = vec![0.0; px * s0]; // Q_x transposed: s0 x p, column q contiguous
            // P_xx B_x for all levels at once: one matrix product (p^2 s0 multiply-adds a
            // level, the largest part of the X work, at the speed of a product)
            if px > 0 {
                let ncol = nl0 * s0;
                gbx.clear();
                gbx.resize(px * ncol, 0.0);
                gpbx.clear();
                gpbx.resize(px * ncol, 0.0);
                for l in 0..nl0 {
                    let xe = self.colptr[l + 1] - (p + 1);
                    for cc in 0..s0 {
                        let col = &mut gbx[(l * s0 + cc) * px..(l * s0 + cc + 1) * px];
                        for (c, v) in col.iter_mut().enumerate() {
                            *v = self.bmat[(xe + c) * s0 + cc];
                        }
                    }
                }
                faer::linalg::matmul::matmul(
                    MatMut::from_column_major_slice_mut(&mut gpbx, px, ncol),
                    faer::Accum::Replace,
                    MatRef::from_column_major_slice(&pxx, px, px),
                    MatRef::from_column_major_slice(&gbx, px, ncol),
                    1.0,
                    faer::Par::Seq,
                );
            }
            let mut gq = vec![0.0; maxent * s0]; // D^-T Q_e
            let mut dinv = vec![0.0; s0 * s0];
            let mut g00 = vec![0.0; s0 * s0];
            let mut tmp = vec![0.0; s0 * s0];
            let mut la = vec![0.0; s0 * s0];
            let mut ve = vec![0.0; s0];
            let mut buf = vec![0.0; self.terms.iter().map(|t| t.s).max().unwrap_or(1) * s0];
            for l in 0..nl0 {
                let (e0, e1) = (self.colptr[l], self.colptr[l + 1]);
                // entries inside M_m: the other terms' blocks, then X under REML (not y)
                let nrel = (e1 - e0) - if reml { 1 } else { p + 1 };
                let nz = (e1 - e0) - (p + 1);
                let bm = &self.bmat[e0 * s0..];
                let bx = &bm[nz * s0..(nz + px) * s0]; // X's rows of B, p x s0 row-major
                self.level_p(&ps, l, nz, &mut pl);
                for a in 0..nz {
                    let qa = &mut q[a * s0..(a + 1) * s0];
                    qa.iter_mut().for_each(|v| *v = 0.0);
                    for b in 0..nz {
                        let pv = pl[b + a * nz];
                        for c in 0..s0 {
                            qa[c] += pv * bm[b * s0 + c];
                        }
                    }
                    if px > 0 {
                        let za = &pzx[self.idx[e0 + a] as usize * px..][..px];
                        for (c, &w) in za.iter().enumerate() {
                            for cc in 0..s0 {
                                qa[cc] += w * bx[c * s0 + cc];
                            }
                        }
                    }
                }
                if px > 0 {
                    // Q_x = P_xz B_z + P_xx B_x, column by column of s0
                    qxt.copy_from_slice(&gpbx[l * s0 * px..(l + 1) * s0 * px]);
                    for cc in 0..s0 {
                        let qc = &mut qxt[cc * px..(cc + 1) * px];
                        for b in 0..nz {
                            let w = bm[b * s0 + cc];
                            let zb = &pzx[self.idx[e0 + b] as usize * px..][..px];
                            for (o, &v) in qc.iter_mut().zip(zb) {
                                *o += v * w;
                            }
                        }
                    }
                    for c in 0..px {
                        for cc in 0..s0 {
                            q[(nz + c) * s0 + cc] = qxt[cc * px + c];
                        }
                    }
                }
                let d = &self.l11[l * s0 * s0..(l + 1) * s0 * s0];
                small::invert_lower(d, s0, &mut dinv);
                // G00 = Dinv' (I + sum_e B_e Q_e') Dinv
                tmp.iter_mut().for_each(|v| *v = 0.0);
                for c in 0..s0 {
                    tmp[c + c * s0] = 1.0;
                }
                for a in 0..nrel {
                    for c2 in 0..s0 {
                        for c in 0..s0 {
                            tmp[c + c2 * s0] += bm[a * s0 + c] * q[a * s0 + c2];
                        }
                    }
                }
                small::congruence_t(&dinv, &tmp, s0, &mut la, &mut g00);
                // gq_e = Dinv' Q_e
                for a in 0..nrel {
                    for c in 0..s0 {
                        let mut v = 0.0;
                        for c2 in c..s0 {
                            v += dinv[c2 + c * s0] * q[a * s0 + c2];
                        }
                        gq[a * s0 + c] = v;
                    }
                }
                // H0 += G00 (Lam0' A11_l)
                let a11 = &self.a11[l * s0 * s0..(l + 1) * s0 * s0];
                for rr in 0..s0 {
                    for c2 in 0..s0 {
                        let mut v = 0.0;
                        for qq in c2..s0 {
                            v += lam0[qq + c2 * s0] * a11[qq + rr * s0];
                        }
                        la[c2 + rr * s0] = v;
                    }
                }
                for rr in 0..s0 {
                    for c in 0..s0 {
                        let mut v = 0.0;
                        for c2 in 0..s0 {
                            v += g00[c + c2 * s0] * la[c2 + rr * s0];
                        }
                        h0[c + rr * s0] += v;
                    }
                }
                // H0 -= sum_e gq_e V_e', V_e = (Lam~' A~)[idx_e, level l of term 0]; and the
                // cross part of the other terms' H_k
                let mut a = 0;
                while a < nrel {
                    let ix = self.idx[e0 + a] as usize;
                    let sk;
                    if ix < qz {
                        let (k, _, s) = self.rest_term_of(ix);
                        sk = s;
                        let lk = &self.lam[k];
                        // V for the block's sk entries: Lam_k' applied across the block
                        for rr in 0..s0 {
                            for aa in 0..sk {
                                let mut v = 0.0;
                                for qq in aa..sk {
                                    v += lk[qq + aa * sk] * self.ar1[(e0 + a + qq) * s0 + rr];
                                }
                                buf[aa * s0 + rr] = v;
                            }
                        }
                        for aa in 0..sk {
                            for rr in 0..s0 {
                                let vr = buf[aa * s0 + rr];
                                for c in 0..s0 {
                                    h0[c + rr * s0] -= gq[(a + aa) * s0 + c] * vr;
                                }
                            }
                        }
                        // H_k[c, r] -= gq_{e_c} . (Lam0' ar1_{e_r})
                        let hk = &mut h[k];
                        for rk in 0..sk {
                            for c0 in 0..s0 {
                                let mut v = 0.0;
                                for qq in c0..s0 {
                                    v += lam0[qq + c0 * s0] * self.ar1[(e0 + a + rk) * s0 + qq];
                                }
                                ve[c0] = v;
                            }
                            for ck in 0..sk {
                                let mut v = 0.0;
                                for c0 in 0..s0 {
                                    v += gq[(a + ck) * s0 + c0] * ve[c0];
                                }
                                hk[ck + rk * sk] -= v;
                            }
                        }
                    } else {
                        sk = 1;
                        for rr in 0..s0 {
                            let vr = self.ar1[(e0 + a) * s0 + rr];
                            for c in 0..s0 {
                                h0[c + rr * s0] -= gq[a * s0 + c] * vr;
                            }
                        }
                    }
                    a += sk;
                }
            }
        }
        // the other terms: the dense part, sum_a (P Lam~')[j_c, a] A~[a, j_r]
        if let Some(sp) = &self.sp {
            self.sparse_rest_traces(sp, m, &mut h);
        } else if qz > 0 {
            let mut w = vec![0.0; m];
            for k in 1..nt {
                let sk = self.terms[k].s;
                for lv in 0..self.terms[k].nlev {
                    let base = self.off[k] + lv * sk;
                    for ck in 0..sk {
                        let jc = base + ck;
                        // w = Lam~ P[:, jc]
                        let pc = &pm[jc * m..(jc + 1) * m];
                        let mut a = 0;
                        while a < m {
                            if a < qz {
                                let (t, _, st) = self.rest_term_of(a);
                                let lt = &self.lam[t];
                                for i in 0..st {
                                    let mut v = 0.0;
                                    for j in 0..=i {
                                        v += lt[i + j * st] * pc[a + j];
                                    }
                                    w[a + i] = v;
                                }
                                a += st;
                            } else {
                                w[a] = pc[a];
                                a += 1;
                            }
                        }
                        for rk in 0..sk {
                            let col = &self.arr[(base + rk) * r..(base + rk) * r + m];
                            let mut v = 0.0;
                            for a in 0..m {
                                v += w[a] * col[a];
                            }
                            h[k][ck + rk * sk] += v;
                        }
                    }
                }
            }
        }
        self.gw_p = pm;
        self.gw_bx = gbx;
        self.gw_pbx = gpbx;
        h[0] = h0;

        // ---- assemble: 2 tr(...) + nu d(r^2) / r^2 ----
        let nu = if reml { (n - p) as f64 } else { n as f64 };
        for (k, t) in self.terms.iter().enumerate() {
            let s = t.s;
            let (u, zr): (&[f64], &[f64]) = if k == 0 {
                (&u0, &zres0)
            } else {
                let sz = t.nlev * s;
                (&ur[self.off[k]..self.off[k] + sz], &zresr[self.off[k]..self.off[k] + sz])
            };
            for &(i, j, ti) in &t.lambda {
                // E_i has a 1 at (i, j) of every level's block
                let mut dr2 = 0.0;
                for lv in 0..t.nlev {
                    dr2 += u[lv * s + j] * zr[lv * s + i];
                }
                grad[ti] += 2.0 * h[k][j + i * s] - nu * 2.0 * dr2 / pwrss;
            }
        }
        f
    }
}
