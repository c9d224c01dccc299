//! The block representation: one vector-valued random-effect term (s > 1 coefficients per
//! level, e.g. `(1 + x | g)`), so that `Lambda' Z' W Z Lambda + I` is block diagonal with one
//! s x s block per level. As for one scalar term (`scalar.rs`), PIRLS over u runs group by
//! group on rows sorted by group with no large matrix: each group's Newton step solves its
//! own s x s system, and a group's rows stay in cache while it converges. nAGQ = 0 couples
//! the groups through beta: a p x p Schur complement (the same algebra as the scalar
//! engine's `scalar_joint`, with s x s blocks).
//!
//! Before this representation such models went through the LMM engine's blocked Cholesky
//! (`general.rs`), which rebuilds and refactors the whole system at every PIRLS iteration
//! and has no gradient: hundreds of BOBYQA evaluations at ~0.1 ms each for Contraception's
//! `(urban | district)`, where this one takes a few tens of microseconds and gives the exact
//! gradient (`gradient.rs`, `block_gradient`) for Newton steps.

use super::super::kernel::{fill, Kernel};
use super::super::pirls::{no_increase, pdev_noise, PirlsIter};
use super::super::{EvalInfo, Glmm, E};
use crate::error::CoreResult;
use crate::small;

/// Rows per chunk of the passes below: the family's row function runs over a chunk's
/// linear predictors in a loop of its own, which vectorises (exp and log are branch-free),
/// and the s-dimensional sums follow in a second loop.
const CH: usize = 32;

/// One pass over a group's rows at the group's b = Lambda u: returns [the sum of deviance
/// residuals without their constants, the size of the deviance's terms when `M` (else 0)];
/// fills the score `g` = sum z wr (length s) and `h` = sum w z z' (s x s, lower triangle,
/// column-major). `F` selects fused multiply-adds (the AVX2 copy).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn block_pass_impl<K: Kernel, const F: bool, const M: bool>(
    k: &K,
    s: usize,
    z: &[f64],
    offb: &[f64],
    y: &[f64],
    wt: &[f64],
    dy: &[f64],
    dn: &[f64],
    b: &[f64],
    g: &mut [f64],
    h: &mut [f64],
) -> [f64; 2] {
    g.iter_mut().for_each(|v| *v = 0.0);
    h.iter_mut().for_each(|v| *v = 0.0);
    let n = offb.len();
    let (mut eb, mut db, mut mb, mut wrb, mut wb) = ([0.0f64; CH], [0.0f64; CH], [0.0f64; CH], [0.0f64; CH], [0.0f64; CH]);
    let (mut d, mut mag) = (0.0, 0.0);
    let mut i0 = 0;
    while i0 < n {
        let m = (n - i0).min(CH);
        let zc = &z[i0 * s..(i0 + m) * s];
        for j in 0..m {
            let mut e = offb[i0 + j];
            for a in 0..s {
                e += zc[j * s + a] * b[a];
            }
            eb[j] = e;
        }
        let (yc, wc, dyc, dnc) = (&y[i0..i0 + m], &wt[i0..i0 + m], &dy[i0..i0 + m], &dn[i0..i0 + m]);
        for j in 0..m {
            let v = k.row_f::<F>(eb[j], yc[j], wc[j]);
            db[j] = k.dev(&v, dyc[j], dnc[j], wc[j]);
            if M {
                mb[j] = k.dev_mag(&v, dyc[j], dnc[j], wc[j]);
            }
            wrb[j] = v.wr;
            wb[j] = v.w;
        }
        for j in 0..m {
            d += db[j];
            if M {
                mag += mb[j];
            }
            let zi = &zc[j * s..(j + 1) * s];
            for a in 0..s {
                g[a] += wrb[j] * zi[a];
                let wz = wb[j] * zi[a];
                for c in a..s {
                    h[c + a * s] += wz * zi[c];
                }
            }
        }
        i0 += m;
    }
    [d, mag]
}

/// `block_pass_impl` with the common term sizes as constants (the s-loops unrolled).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn block_pass_sized<K: Kernel, const F: bool, const M: bool>(
    k: &K,
    s: usize,
    z: &[f64],
    offb: &[f64],
    y: &[f64],
    wt: &[f64],
    dy: &[f64],
    dn: &[f64],
    b: &[f64],
    g: &mut [f64],
    h: &mut [f64],
) -> [f64; 2] {
    match s {
        2 => block_pass_impl::<K, F, M>(k, 2, z, offb, y, wt, dy, dn, b, g, h),
        3 => block_pass_impl::<K, F, M>(k, 3, z, offb, y, wt, dy, dn, b, g, h),
        _ => block_pass_impl::<K, F, M>(k, s, z, offb, y, wt, dy, dn, b, g, h),
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_pass_avx2<K: Kernel, const M: bool>(
    k: &K,
    s: usize,
    z: &[f64],
    offb: &[f64],
    y: &[f64],
    wt: &[f64],
    dy: &[f64],
    dn: &[f64],
    b: &[f64],
    g: &mut [f64],
    h: &mut [f64],
) -> [f64; 2] {
    block_pass_sized::<K, true, M>(k, s, z, offb, y, wt, dy, dn, b, g, h)
}

/// The derivatives of a group's rows at eta = offb + z' b (for the gradient), into
/// `out` = [w, wr, wo, wp] (each at least the group's length).
#[inline(always)]
fn block_deriv_impl<K: Kernel>(k: &K, s: usize, z: &[f64], offb: &[f64], y: &[f64], wt: &[f64], b: &[f64], out: &mut [Vec<f64>; 4]) {
    let [w, wr, wo, wp] = out;
    for i in 0..offb.len() {
        let mut e = offb[i];
        for a in 0..s {
            e += z[i * s + a] * b[a];
        }
        let d = k.deriv(e, y[i], wt[i]);
        (w[i], wr[i], wo[i], wp[i]) = (d.w, d.wr, d.wo, d.wp);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_deriv_avx2<K: Kernel>(k: &K, s: usize, z: &[f64], offb: &[f64], y: &[f64], wt: &[f64], b: &[f64], out: &mut [Vec<f64>; 4]) {
    block_deriv_impl(k, s, z, offb, y, wt, b, out)
}

impl Glmm {
    /// The row derivatives of group l at b (see `block_deriv_impl`).
    pub(in crate::glmm) fn block_deriv<K: Kernel>(&self, k: K, l: usize, b: &[f64], out: &mut [Vec<f64>; 4]) {
        let s = self.terms[0].s;
        let r = self.gstart[l]..self.gstart[l + 1];
        let z = &self.z[0][r.start * s..r.end * s];
        let (o, y, wt) = (&self.offb[r.clone()], &self.y[r.clone()], &self.wt[r]);
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: only when the CPU has AVX2 and FMA (`have_avx2`)
            unsafe { block_deriv_avx2(&k, s, z, o, y, wt, b, out) };
            return;
        }
        block_deriv_impl(&k, s, z, o, y, wt, b, out)
    }
}

/// b = Lambda u for one level (Lambda lower s x s, column-major).
#[inline]
pub(in crate::glmm) fn lam_mul(lam: &[f64], s: usize, u: &[f64], b: &mut [f64]) {
    for i in 0..s {
        let mut v = 0.0;
        for j in 0..=i {
            v += lam[i + j * s] * u[j];
        }
        b[i] = v;
    }
}

/// a = Lambda' z for one row.
#[inline]
pub(in crate::glmm) fn lam_t_mul(lam: &[f64], s: usize, z: &[f64], a: &mut [f64]) {
    for j in 0..s {
        let mut v = 0.0;
        for i in j..s {
            v += lam[i + j * s] * z[i];
        }
        a[j] = v;
    }
}

/// The lower Cholesky factor of M = I + Lambda' H Lambda into `m` (H given by its lower
/// triangle, column-major; `full` and `tmp` are s x s scratch). False if M is not positive
/// definite (only with non-finite weights: M - I is positive semi-definite).
pub(in crate::glmm) fn factor_m(lam: &[f64], h: &[f64], s: usize, full: &mut [f64], tmp: &mut [f64], m: &mut [f64]) -> bool {
    for a in 0..s {
        for c in a..s {
            full[c + a * s] = h[c + a * s];
            full[a + c * s] = h[c + a * s];
        }
    }
    small::congruence_t(lam, full, s, tmp, m);
    for a in 0..s {
        m[a + a * s] += 1.0;
    }
    small::chol_lower(m, s)
}

/// LU factorisation with partial pivoting of an s x s column-major matrix in place (for the
/// observed-information system of non-canonical links, which need not be positive
/// definite). False if singular.
pub(in crate::glmm) fn lu_factor(a: &mut [f64], s: usize, piv: &mut [usize]) -> bool {
    for j in 0..s {
        let mut p = j;
        for i in (j + 1)..s {
            if a[i + j * s].abs() > a[p + j * s].abs() {
                p = i;
            }
        }
        piv[j] = p;
        if !(a[p + j * s].abs() > 0.0) || !a[p + j * s].is_finite() {
            return false;
        }
        if p != j {
            for c in 0..s {
                a.swap(j + c * s, p + c * s);
            }
        }
        let d = a[j + j * s];
        for i in (j + 1)..s {
            a[i + j * s] /= d;
        }
        for c in (j + 1)..s {
            let f = a[j + c * s];
            for i in (j + 1)..s {
                a[i + c * s] -= a[i + j * s] * f;
            }
        }
    }
    true
}

/// Solve with the factors of [`lu_factor`].
pub(in crate::glmm) fn lu_solve(a: &[f64], s: usize, piv: &[usize], b: &mut [f64]) {
    for j in 0..s {
        b.swap(j, piv[j]);
    }
    for j in 0..s {
        for i in (j + 1)..s {
            b[i] -= a[i + j * s] * b[j];
        }
    }
    for j in (0..s).rev() {
        b[j] /= a[j + j * s];
        for i in 0..j {
            b[i] -= a[i + j * s] * b[j];
        }
    }
}

fn sq(u: &[f64]) -> f64 {
    u.iter().map(|v| v * v).sum()
}

/// Sums of the joint (u, beta) PIRLS step with one vector term, per group l: h = sum w z z'
/// (s x s lower), g = sum z w r (s), c = sum w z x' (s x p, row-major: row a is the p
/// products with z_a); X' W X (full square, only its lower triangle read) and X' W r.
pub(in crate::glmm) struct BlockJoint {
    h: Vec<f64>,
    g: Vec<f64>,
    c: Vec<f64>,
    xwx: Vec<f64>,
    xwy: Vec<f64>,
}

impl Glmm {
    /// Group l's pass at its modes `ul` (see `block_pass_impl`), with the group's row
    /// constants added: [deviance, size of its terms (with `mag`)].
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn block_group<K: Kernel>(&self, k: K, l: usize, lam: &[f64], ul: &[f64], bl: &mut [f64], g: &mut [f64], h: &mut [f64], mag: bool) -> [f64; 2] {
        let s = self.terms[0].s;
        lam_mul(lam, s, ul, bl);
        let r = self.gstart[l]..self.gstart[l + 1];
        let z = &self.z[0][r.start * s..r.end * s];
        let (o, y, wt, dy, dn) = (&self.offb[r.clone()], &self.y[r.clone()], &self.wt[r.clone()], &self.dy[r.clone()], &self.dn[r]);
        #[cfg(target_arch = "x86_64")]
        let [d, m] = if self.avx2 {
            // SAFETY: only when the CPU has AVX2 and FMA (`have_avx2`)
            unsafe {
                if mag {
                    block_pass_avx2::<K, true>(&k, s, z, o, y, wt, dy, dn, bl, g, h)
                } else {
                    block_pass_avx2::<K, false>(&k, s, z, o, y, wt, dy, dn, bl, g, h)
                }
            }
        } else if mag {
            block_pass_sized::<K, false, true>(&k, s, z, o, y, wt, dy, dn, bl, g, h)
        } else {
            block_pass_sized::<K, false, false>(&k, s, z, o, y, wt, dy, dn, bl, g, h)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let [d, m] = if mag {
            block_pass_sized::<K, false, true>(&k, s, z, o, y, wt, dy, dn, bl, g, h)
        } else {
            block_pass_sized::<K, false, false>(&k, s, z, o, y, wt, dy, dn, bl, g, h)
        };
        [self.dcsum[l] + d, self.dcabs[l] + m]
    }

    /// The rounding level of group l's penalised deviance at `ul` (`pirls::pdev_noise`): a
    /// pass of its own, taken only when a comparison is that close.
    fn block_noise<K: Kernel>(&self, k: K, l: usize, lam: &[f64], ul: &[f64]) -> f64 {
        let s = self.terms[0].s;
        let (mut b, mut g, mut h) = (vec![0.0; s], vec![0.0; s], vec![0.0; s * s]);
        let [_, mg] = self.block_group(k, l, lam, ul, &mut b, &mut g, &mut h, true);
        pdev_noise(mg + sq(ul), self.gstart[l + 1] - self.gstart[l])
    }

    /// u-only PIRLS group by group (Laplace): each group's Fisher-scoring step solves
    /// M_l du = Lambda' g_l - u_l with M_l = I + Lambda' H_l Lambda, halving it while the
    /// group's penalised deviance goes up; the convergence rules are the scalar engine's
    /// (`scalar_u`), with the promised decrease du' M_l du.
    pub(in crate::glmm) fn block_u<K: Kernel>(&mut self, k: K, theta: &[f64]) -> CoreResult<()> {
        let t = &self.terms[0];
        let (s, nl) = (t.s, t.nlev);
        let lam = self.lambdas(theta).swap_remove(0);
        let ctl = self.control;
        let mut ul = vec![0.0; s];
        let mut un = vec![0.0; s];
        let mut bl = vec![0.0; s];
        let (mut g, mut gn) = (vec![0.0; s], vec![0.0; s]);
        let (mut h, mut hn) = (vec![0.0; s * s], vec![0.0; s * s]);
        let (mut full, mut tmp, mut m) = (vec![0.0; s * s], vec![0.0; s * s], vec![0.0; s * s]);
        let (mut rhs, mut step) = (vec![0.0; s], vec![0.0; s]);
        let (mut aic, mut dev, mut usq, mut ldl2) = (0.0, 0.0, 0.0, 0.0);
        let mut maxit = 0;
        for l in 0..nl {
            if self.warm {
                ul.copy_from_slice(&self.u[l * s..(l + 1) * s]);
            } else {
                ul.iter_mut().for_each(|v| *v = 0.0);
            }
            let [mut dv, _] = self.block_group(k, l, &lam, &ul, &mut bl, &mut g, &mut h, false);
            let mut pdev = dv + sq(&ul);
            let mut noise: Option<f64> = None;
            let mut it = 0;
            let mut prev = f64::INFINITY;
            loop {
                if !factor_m(&lam, &h, s, &mut full, &mut tmp, &mut m) || !pdev.is_finite() {
                    return Err(E::Numerical(format!("PIRLS: non-finite deviance in group {l}")));
                }
                lam_t_mul(&lam, s, &g, &mut rhs);
                for a in 0..s {
                    rhs[a] -= ul[a];
                }
                step.copy_from_slice(&rhs);
                small::solve_lower(&m, s, &mut step);
                small::solve_lower_t(&m, s, &mut step);
                if step.iter().any(|v| !v.is_finite()) {
                    return Err(E::Numerical(format!("PIRLS: non-finite step in group {l}")));
                }
                let rel = step.iter().zip(&ul).fold(0.0f64, |mx, (d, u)| mx.max(d.abs() / (1.0 + u.abs())));
                // du' M du = rhs' du: the decrease the step promises (`PirlsControl::floor`)
                let promised: f64 = rhs.iter().zip(&step).map(|(a, b)| a * b).sum();
                if ctl.converged(rel, prev) || (rel >= prev && promised <= *noise.get_or_insert_with(|| self.block_noise(k, l, &lam, &ul))) {
                    // take the last Newton step too, as the scalar engine does (the
                    // gradient assumes a zero score in u; see `scalar_u`)
                    if rel > 4.0 * f64::EPSILON {
                        for a in 0..s {
                            ul[a] += step[a];
                        }
                    }
                    break;
                }
                prev = rel;
                it += 1;
                if it > ctl.maxit {
                    return Err(E::Numerical(format!("PIRLS did not converge in {} iterations", ctl.maxit)));
                }
                let mut fac = 1.0;
                let mut halvings = 0;
                loop {
                    for a in 0..s {
                        un[a] = ul[a] + fac * step[a];
                    }
                    let [dn, _] = self.block_group(k, l, &lam, &un, &mut bl, &mut gn, &mut hn, false);
                    let pn = dn + sq(&un);
                    let accept = if no_increase(pn, pdev, 0.0) {
                        Some(None)
                    } else if pn.is_finite() {
                        let noise_n = self.block_noise(k, l, &lam, &un);
                        let noise_o = *noise.get_or_insert_with(|| self.block_noise(k, l, &lam, &ul));
                        no_increase(pn, pdev, noise_o.max(noise_n)).then_some(Some(noise_n))
                    } else {
                        None
                    };
                    if let Some(noise_n) = accept {
                        ul.copy_from_slice(&un);
                        g.copy_from_slice(&gn);
                        h.copy_from_slice(&hn);
                        dv = dn;
                        pdev = pn;
                        noise = noise_n;
                        break;
                    }
                    halvings += 1;
                    if halvings > ctl.max_halvings {
                        return Err(E::Numerical("PIRLS step-halvings failed to reduce the deviance".into()));
                    }
                    fac *= 0.5;
                }
            }
            maxit = maxit.max(it);
            // the weights of the last pass define L (m was factored from them)
            ldl2 += 2.0 * (0..s).map(|a| m[a + a * s].ln()).sum::<f64>();
            self.u[l * s..(l + 1) * s].copy_from_slice(&ul);
            dev += dv;
            usq += sq(&ul);
            aic += if self.aic_from_dev {
                dv + self.sat_grp[l]
            } else {
                lam_mul(&lam, s, &ul, &mut bl);
                let (z, offb) = (&self.z[0], &self.offb);
                self.rows_aic(k, self.gstart[l]..self.gstart[l + 1], |i| {
                    offb[i] + (0..s).map(|a| z[i * s + a] * bl[a]).sum::<f64>()
                })
            };
        }
        if let Some(a) = self.dispersion_aic(dev) {
            aic = a; // a function of the total deviance, not a sum over groups
        }
        self.warm = true;
        self.state_ok = false;
        self.info = EvalInfo { objective: aic + usq + ldl2, aic, dev, usq, ldl2, iterations: maxit };
        Ok(())
    }

    /// nAGQ = 0 with one vector term: Fisher scoring over (u, beta). Every step is a pass
    /// over all rows and the p x p Schur complement S = X'WX - sum_l C_l' Lambda M_l^-1
    /// Lambda' C_l of the fixed effects; as in `scalar_joint` the right-hand side is the
    /// score (small near the mode), so the step, not the new mode, is solved for.
    ///
    /// S is formed as a difference (unlike the scalar engine's sum of positive parts, which
    /// needs each group's H_l invertible: a district without urban women has a singular
    /// H_l); for weights so large that X'WX loses the ~n_groups / theta^2 left in the
    /// directions constant within groups (counts of 1e7) S may fail to factor, and then
    /// the LMM engine's factorisation (`general.rs`) runs this criterion instead.
    pub(in crate::glmm) fn block_joint<K: Kernel>(&mut self, k: K, theta: &[f64]) -> CoreResult<()> {
        let t = &self.terms[0];
        let (s, nl, p) = (t.s, t.nlev, self.p);
        let lam = self.lambdas(theta).swap_remove(0);
        let mut sys = BlockJoint {
            h: vec![0.0; nl * s * s],
            g: vec![0.0; nl * s],
            c: vec![0.0; nl * s * p],
            xwx: vec![0.0; p * p],
            xwy: vec![0.0; p],
        };
        let fresh = !self.warm;
        let (dev, pdev, noise);
        if fresh {
            // from the family's starting means and beta = 0 (the solve gives the change)
            self.u.iter_mut().for_each(|v| *v = 0.0);
            self.beta.iter_mut().for_each(|v| *v = 0.0);
            self.block_joint_pass(k, &lam, true, &mut sys);
            (dev, pdev, noise) = (f64::INFINITY, f64::INFINITY, 0.0);
        } else {
            let [d, mag] = self.block_joint_pass(k, &lam, false, &mut sys);
            let us = sq(&self.u);
            (dev, pdev, noise) = (d, d + us, pdev_noise(mag + us, self.n));
        }
        let mut st = PirlsIter { it: 0, prev: f64::INFINITY, fresh, dev, pdev, noise };
        let (mut full, mut tmp) = (vec![0.0; s * s], vec![0.0; s * s]);
        let mut mf = vec![0.0; nl * s * s];
        let mut bmat = vec![0.0; nl * s * p];
        let mut e = vec![0.0; nl * s];
        let mut smat = vec![0.0; p * p];
        let mut rb = vec![0.0; p];
        let mut unew = vec![0.0; nl * s];
        let mut bnew = vec![0.0; p];
        let mut col = vec![0.0; s];
        let mut zx = vec![0.0; s];
        loop {
            smat.copy_from_slice(&sys.xwx);
            rb.copy_from_slice(&sys.xwy);
            for l in 0..nl {
                let ml = &mut mf[l * s * s..(l + 1) * s * s];
                if !factor_m(&lam, &sys.h[l * s * s..(l + 1) * s * s], s, &mut full, &mut tmp, ml) {
                    return Err(E::Numerical("PIRLS: the penalised least-squares system is not positive definite".into()));
                }
                // e = L^-1 (Lambda' g - u), B = L^-1 Lambda' C
                let el = &mut e[l * s..(l + 1) * s];
                lam_t_mul(&lam, s, &sys.g[l * s..(l + 1) * s], el);
                for a in 0..s {
                    el[a] -= self.u[l * s + a];
                }
                small::solve_lower(ml, s, el);
                let bl = &mut bmat[l * s * p..(l + 1) * s * p];
                for c in 0..p {
                    for a in 0..s {
                        zx[a] = sys.c[l * s * p + a * p + c];
                    }
                    lam_t_mul(&lam, s, &zx, &mut col);
                    small::solve_lower(ml, s, &mut col);
                    bl[c * s..(c + 1) * s].copy_from_slice(&col);
                }
                for a in 0..p {
                    let ba = &bl[a * s..(a + 1) * s];
                    rb[a] -= ba.iter().zip(el.iter()).map(|(x, y)| x * y).sum::<f64>();
                    for c in 0..=a {
                        let bc = &bl[c * s..(c + 1) * s];
                        smat[a + c * p] -= ba.iter().zip(bc).map(|(x, y)| x * y).sum::<f64>();
                    }
                }
            }
            if p > 0 {
                if !small::chol_lower(&mut smat, p) {
                    return Err(E::Numerical("PIRLS: the fixed-effects block is not positive definite".into()));
                }
                bnew.copy_from_slice(&rb);
                small::solve_lower(&smat, p, &mut bnew);
                small::solve_lower_t(&smat, p, &mut bnew);
            }
            // du_l = L^-T (e - B dbeta)
            for l in 0..nl {
                let du = &mut unew[l * s..(l + 1) * s];
                du.copy_from_slice(&e[l * s..(l + 1) * s]);
                let bl = &bmat[l * s * p..(l + 1) * s * p];
                for c in 0..p {
                    for a in 0..s {
                        du[a] -= bl[c * s + a] * bnew[c];
                    }
                }
                small::solve_lower_t(&mf[l * s * s..(l + 1) * s * s], s, du);
            }
            for (a, v) in unew.iter_mut().zip(&self.u) {
                *a += v;
            }
            for (b, v) in bnew.iter_mut().zip(&self.beta) {
                *b += v;
            }
            if self.pirls_advance(&unew, &bnew, true, &mut st, |me| me.block_joint_pass(k, &lam, false, &mut sys))? {
                break;
            }
        }
        // the last pass was at the converged (u, beta): its weights define L
        let mut ldl2 = 0.0;
        for l in 0..nl {
            let ml = &mut mf[l * s * s..(l + 1) * s * s];
            if !factor_m(&lam, &sys.h[l * s * s..(l + 1) * s * s], s, &mut full, &mut tmp, ml) {
                return Err(E::Numerical("PIRLS: the penalised least-squares system is not positive definite".into()));
            }
            ldl2 += 2.0 * (0..s).map(|a| ml[a + a * s].ln()).sum::<f64>();
        }
        // the last pass left the working residual r in wresp: keep the u-only working
        // response eta - offb + r
        let b = self.beta.clone();
        self.set_offb(&b)?;
        for i in 0..self.n {
            self.wresp[i] += self.eta[i] - self.offb[i];
        }
        let (dev, it) = (st.dev, st.it);
        let aic = self.total_aic(dev);
        let us = sq(&self.u);
        self.warm = true;
        self.state_ok = true;
        self.info = EvalInfo { objective: aic + us + ldl2, aic, dev, usq: us, ldl2, iterations: it };
        Ok(())
    }

    /// One pass of the joint block PIRLS at the current (u, beta), or at the family's
    /// starting means when `fresh` (u = 0, beta = 0): stores offb, eta, mu, W and in
    /// `wresp` the working residual r (fresh: the working response eta - offset + r); fills
    /// the sums of the step's normal equations; returns [the deviance, the size of its terms].
    fn block_joint_pass<K: Kernel>(&mut self, k: K, lam: &[f64], fresh: bool, sys: &mut BlockJoint) -> [f64; 2] {
        let t = &self.terms[0];
        let (s, nl, p) = (t.s, t.nlev, self.p);
        let mut bl = vec![0.0; s];
        for l in 0..nl {
            lam_mul(lam, s, &self.u[l * s..(l + 1) * s], &mut bl);
            for i in self.gstart[l]..self.gstart[l + 1] {
                let xi = &self.x[i * p..(i + 1) * p];
                let mut e = self.off[i];
                for a in 0..p {
                    e += xi[a] * self.beta[a];
                }
                self.offb[i] = e;
                self.eta[i] = if fresh {
                    self.link.linkfun(self.dist.mustart(self.y[i], self.wt[i]))
                } else {
                    e + (0..s).map(|a| self.z[0][i * s + a] * bl[a]).sum::<f64>()
                };
            }
        }
        let base = if fresh { &self.off } else { &self.eta };
        let [d, mag] = fill(self.avx2, &k, &self.eta, base, &self.y, &self.wt, &self.dy, &self.dn, &mut self.mu, &mut self.w, &mut self.wresp);
        self.block_sums(sys, true, true);
        [self.dc_total + d, self.dc_abs + mag]
    }

    /// The sums of `BlockJoint` at the stored weights (with `resp`, the stored `wresp` as
    /// the response; without `with_x`, h and g only).
    fn block_sums(&self, sys: &mut BlockJoint, resp: bool, with_x: bool) {
        // the common sizes as constants: the s-loops unroll
        match self.terms[0].s {
            2 => self.block_sums_s::<2>(sys, resp, with_x),
            3 => self.block_sums_s::<3>(sys, resp, with_x),
            _ => self.block_sums_s::<0>(sys, resp, with_x),
        }
    }

    /// `block_sums` for terms of `S` columns (0: any, read from the term).
    fn block_sums_s<const S: usize>(&self, sys: &mut BlockJoint, resp: bool, with_x: bool) {
        let t = &self.terms[0];
        let (s, nl) = (if S > 0 { S } else { t.s }, t.nlev);
        let p = if with_x { self.p } else { 0 };
        for v in [&mut sys.h, &mut sys.g, &mut sys.c, &mut sys.xwx, &mut sys.xwy] {
            v.iter_mut().for_each(|a| *a = 0.0);
        }
        for l in 0..nl {
            let hl = &mut sys.h[l * s * s..(l + 1) * s * s];
            let gl = &mut sys.g[l * s..(l + 1) * s];
            let cl = &mut sys.c[l * s * p..(l + 1) * s * p];
            for i in self.gstart[l]..self.gstart[l + 1] {
                let xi = &self.x[i * p..(i + 1) * p];
                let zi = &self.z[0][i * s..(i + 1) * s];
                let w = self.w[i];
                let yt = if resp { self.wresp[i] } else { 0.0 };
                // (contiguous inner loops over x, which vectorise)
                for a in 0..s {
                    let wz = w * zi[a];
                    gl[a] += wz * yt;
                    for c in a..s {
                        hl[c + a * s] += wz * zi[c];
                    }
                    for (r, xc) in cl[a * p..(a + 1) * p].iter_mut().zip(xi) {
                        *r += wz * xc;
                    }
                }
                // the full square (its upper part unused): whole rows of p vectorise, the
                // triangle's rows of varying length do not
                for a in 0..p {
                    let wx = w * xi[a];
                    sys.xwy[a] += wx * yt;
                    for (r, xc) in sys.xwx[a * p..(a + 1) * p].iter_mut().zip(xi) {
                        *r += wx * xc;
                    }
                }
            }
        }
    }

    /// Conditional covariance Lambda M_l^-1 Lambda' per level at the current weights.
    pub(in crate::glmm) fn block_condvar(&mut self, theta: &[f64]) -> CoreResult<Vec<Vec<f64>>> {
        self.refresh_state();
        let t = &self.terms[0];
        let (s, nl) = (t.s, t.nlev);
        let lam = self.lambdas(theta).swap_remove(0);
        let mut sys = BlockJoint { h: vec![0.0; nl * s * s], g: vec![0.0; nl * s], c: vec![], xwx: vec![], xwy: vec![] };
        self.block_sums(&mut sys, false, false);
        let (mut full, mut tmp, mut m, mut li) = (vec![0.0; s * s], vec![0.0; s * s], vec![0.0; s * s], vec![0.0; s * s]);
        let mut out = vec![0.0; nl * s * s];
        for l in 0..nl {
            if !factor_m(&lam, &sys.h[l * s * s..(l + 1) * s * s], s, &mut full, &mut tmp, &mut m) {
                return Err(E::Numerical("factorisation failed".into()));
            }
            // Lambda L^-T: its rows' inner products are the entries of Lambda M^-1 Lambda'
            small::invert_lower(&m, s, &mut li);
            // r = Lambda L^-T, column j of L^-T = row j of L^-1
            for i in 0..s {
                for j in 0..s {
                    let mut v = 0.0;
                    for c in 0..s {
                        v += lam[i + c * s] * li[j + c * s];
                    }
                    tmp[i + j * s] = v;
                }
            }
            let o = &mut out[l * s * s..(l + 1) * s * s];
            for i in 0..s {
                for j in 0..s {
                    o[i + j * s] = (0..s).map(|c| tmp[i + c * s] * tmp[j + c * s]).sum();
                }
            }
        }
        Ok(vec![out])
    }

    /// R_X at the current weights: the lower Cholesky factor of the Schur complement
    /// X'WX - sum_l C_l' Lambda M_l^-1 Lambda' C_l (column-major p x p).
    pub(in crate::glmm) fn block_rx(&mut self, theta: &[f64]) -> CoreResult<Vec<f64>> {
        self.refresh_state();
        let t = &self.terms[0];
        let (s, nl, p) = (t.s, t.nlev, self.p);
        let lam = self.lambdas(theta).swap_remove(0);
        let mut sys = BlockJoint { h: vec![0.0; nl * s * s], g: vec![0.0; nl * s], c: vec![0.0; nl * s * p], xwx: vec![0.0; p * p], xwy: vec![0.0; p] };
        self.block_sums(&mut sys, false, true);
        let (mut full, mut tmp, mut m) = (vec![0.0; s * s], vec![0.0; s * s], vec![0.0; s * s]);
        let mut bl = vec![0.0; s * p];
        let mut col = vec![0.0; s];
        let mut zx = vec![0.0; s];
        let mut smat = sys.xwx.clone();
        for l in 0..nl {
            if !factor_m(&lam, &sys.h[l * s * s..(l + 1) * s * s], s, &mut full, &mut tmp, &mut m) {
                return Err(E::Numerical("the fixed-effects block is not positive definite".into()));
            }
            for c in 0..p {
                for a in 0..s {
                    zx[a] = sys.c[l * s * p + a * p + c];
                }
                lam_t_mul(&lam, s, &zx, &mut col);
                small::solve_lower(&m, s, &mut col);
                bl[c * s..(c + 1) * s].copy_from_slice(&col);
            }
            for a in 0..p {
                for c in 0..=a {
                    smat[a + c * p] -= (0..s).map(|r| bl[a * s + r] * bl[c * s + r]).sum::<f64>();
                }
            }
        }
        if p > 0 && !small::chol_lower(&mut smat, p) {
            return Err(E::Numerical("the fixed-effects block is not positive definite".into()));
        }
        Ok(smat)
    }
}
