//! The scalar representation: one scalar random-effect term, so that
//! `Lambda' Z' W Z Lambda + I` is diagonal. PIRLS runs group by group on rows sorted by
//! group with no matrix at all (and the group's rows stay in cache while it converges);
//! AGQ integrates each group's u_j on the same passes. nAGQ = 0 couples the groups through
//! beta: a p x p Schur complement (`JointSystem`), solved for the change of beta (see
//! `pirls.rs` on why).

use super::super::kernel::{fill, group_pass, Kernel};
use super::super::pirls::{no_increase, pdev_noise, PirlsIter};
use super::super::{EvalInfo, Glmm, E};
use crate::error::CoreResult;
use crate::small;

/// Normal equations of the joint (u, beta) PIRLS step with one scalar term: per group l
/// h = sum w z^2, g = sum z w r, c = sum w z x; X' W r; and `within`.
pub(in crate::glmm) struct JointSystem {
    h: Vec<f64>,
    g: Vec<f64>,
    c: Vec<f64>,
    /// sum over groups of sum w (x - z c / h)(x - z c / h)' (lower, column-major). The Schur
    /// complement of the fixed effects is `within + sum_l c c' / (h (theta^2 h + 1))`, the
    /// same as X' W X - sum_l theta^2 c c' / (theta^2 h + 1) but a sum of positive
    /// semi-definite parts: the difference loses eps X' W X, which for large weights (counts
    /// of 1e7, or eta far out in a warm start) exceeds the ~n_groups / theta^2 that is left
    /// of the columns constant within groups, and then is not even positive definite.
    within: Vec<f64>,
    xwy: Vec<f64>,
}

impl JointSystem {
    fn new(nl: usize, p: usize) -> Self {
        JointSystem { h: vec![0.0; nl], g: vec![0.0; nl], c: vec![0.0; nl * p], within: vec![0.0; p * p], xwy: vec![0.0; p] }
    }
    fn clear(&mut self) {
        for v in [&mut self.h, &mut self.g, &mut self.c, &mut self.within, &mut self.xwy] {
            v.iter_mut().for_each(|a| *a = 0.0);
        }
    }
}

impl Glmm {
    /// One pass over group l's rows at u_l: (sum of deviance residuals, sum W r z, sum W z^2,
    /// the size of the terms the deviance is summed from when `mag`, else the row constants'
    /// size only).
    #[inline(always)]
    pub(in crate::glmm) fn group_pass<K: Kernel>(&self, k: K, l: usize, th: f64, ul: f64, mag: bool) -> (f64, f64, f64, f64) {
        let r = self.gstart[l]..self.gstart[l + 1];
        let [d, s, h, m] = group_pass(
            self.avx2,
            &k,
            &self.z[0][r.clone()],
            &self.offb[r.clone()],
            &self.y[r.clone()],
            &self.wt[r.clone()],
            &self.dy[r.clone()],
            &self.dn[r],
            th * ul,
            mag,
        );
        (self.dcsum[l] + d, s, h, self.dcabs[l] + m)
    }

    /// The rounding level of group l's penalised deviance at u_l (`pirls::pdev_noise`): a
    /// pass of its own, taken only when a comparison is that close.
    fn group_noise<K: Kernel>(&self, k: K, l: usize, th: f64, ul: f64) -> f64 {
        let nrows = self.gstart[l + 1] - self.gstart[l];
        let (_, _, _, mg) = self.group_pass(k, l, th, ul, true);
        pdev_noise(mg + ul * ul, nrows)
    }

    /// u-only PIRLS group by group; then Laplace, or AGQ with `quad`.
    pub(in crate::glmm) fn scalar_u<K: Kernel>(&mut self, k: K, th: f64, quad: Option<(&[f64], &[f64])>) -> CoreResult<()> {
        let nl = self.terms[0].nlev;
        let ctl = self.control;
        let (mut aic, mut dev, mut usq, mut ldl2, mut lmult) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut maxit = 0;
        for l in 0..nl {
            let mut ul = if self.warm { self.u[l] } else { 0.0 };
            let (mut dv, mut s, mut h, _) = self.group_pass(k, l, th, ul, false);
            let mut pdev = dv + ul * ul;
            // the rounding level of pdev, computed when first needed (`group_noise`)
            let mut noise: Option<f64> = None;
            let mut it = 0;
            let mut prev = f64::INFINITY;
            loop {
                let d2 = th * th * h + 1.0;
                let step = (th * s - ul) / d2;
                if !step.is_finite() || !pdev.is_finite() {
                    return Err(E::Numerical(format!("PIRLS: non-finite deviance in group {l}")));
                }
                let rel = step.abs() / (1.0 + ul.abs());
                // d2 step^2: the decrease the step promises (see `PirlsControl::floor`)
                if ctl.converged(rel, prev)
                    || (rel >= prev && d2 * step * step <= *noise.get_or_insert_with(|| self.group_noise(k, l, th, ul)))
                {
                    // take the last Newton step too (the weights stay those of the last
                    // pass, a change of second order in the criterion): the Laplace gradient
                    // assumes the score in u is zero, and its error is the score left times
                    // du/d(theta, beta), i.e. d2 times the step not taken. With counts of 1e7
                    // d2 ~ 1e9, and a step of 1e-13 left would move the gradient by 1e-4,
                    // as much as a finite-difference Hessian step of 1e-5 changes it. A step
                    // of a few ulps is rounding: leaving u alone then keeps a repeated
                    // evaluation at the same point (warm-started at its own mode) bit for bit
                    if rel > 4.0 * f64::EPSILON {
                        ul += step;
                    }
                    break;
                }
                prev = rel;
                it += 1;
                if it > ctl.maxit {
                    return Err(E::Numerical(format!("PIRLS did not converge in {} iterations", ctl.maxit)));
                }
                let mut st = step;
                let mut halvings = 0;
                loop {
                    let un = ul + st;
                    let (dn, sn, hn, _) = self.group_pass(k, l, th, un, false);
                    let pn = dn + un * un;
                    // a decrease, or an increase within 1e-12, needs no rounding level
                    // (`no_increase` allows the larger of the two)
                    let accept = if no_increase(pn, pdev, 0.0) {
                        Some(None)
                    } else if pn.is_finite() {
                        let noise_n = self.group_noise(k, l, th, un);
                        let noise_o = *noise.get_or_insert_with(|| self.group_noise(k, l, th, ul));
                        no_increase(pn, pdev, noise_o.max(noise_n)).then_some(Some(noise_n))
                    } else {
                        None
                    };
                    if let Some(noise_n) = accept {
                        ul = un;
                        dv = dn;
                        s = sn;
                        h = hn;
                        pdev = pn;
                        noise = noise_n;
                        break;
                    }
                    halvings += 1;
                    if halvings > ctl.max_halvings {
                        return Err(E::Numerical("PIRLS step-halvings failed to reduce the deviance".into()));
                    }
                    st *= 0.5;
                }
            }
            maxit = maxit.max(it);
            // the weights at the mode define L
            let (dv2, h2) = (dv, h);
            let _ = s;
            let d2 = th * th * h2 + 1.0;
            self.u[l] = ul;
            self.d2[l] = d2;
            dev += dv2;
            usq += ul * ul;
            ldl2 += d2.ln();
            aic += if self.aic_from_dev {
                dv2 + self.sat_grp[l]
            } else {
                let (r0, r1) = (self.gstart[l], self.gstart[l + 1]);
                let z = &self.z[0];
                let offb = &self.offb;
                self.rows_aic(k, r0..r1, |i| offb[i] + z[i] * th * ul)
            };
            if let Some((nodes, weights)) = quad {
                let sd = 1.0 / d2.sqrt();
                let devc0 = dv2 + ul * ul;
                let mut mult = 0.0;
                for (&zk, &wk) in nodes.iter().zip(weights) {
                    if zk == 0.0 {
                        mult += wk;
                        continue;
                    }
                    let uk = ul + zk * sd;
                    let (dk, _, _, _) = self.group_pass(k, l, th, uk, false);
                    let devc = dk + uk * uk;
                    mult += wk * (0.5 * zk * zk - 0.5 * (devc - devc0)).exp();
                }
                lmult += mult.ln();
            }
        }
        if let Some(a) = self.dispersion_aic(dev) {
            aic = a; // a function of the total deviance, not a sum over groups
        }
        self.warm = true;
        self.state_ok = false;
        let objective = match quad {
            None => aic + usq + ldl2,
            Some(_) => dev + usq + ldl2 - 2.0 * lmult,
        };
        self.info = EvalInfo { objective, aic, dev, usq, ldl2, iterations: maxit };
        Ok(())
    }

    /// nAGQ = 0 with one scalar term: Fisher scoring over (u, beta); the fixed effects couple
    /// the groups, so every step is a pass over all rows and a p x p Schur complement.
    ///
    /// The normal equations are those of the step (du, dbeta), whose right-hand side is the
    /// score (Lambda Z' W r - u, X' W r) with r the working residual: near the mode it is
    /// small and so is its rounding error. The equations of the new mode itself, with the
    /// working response eta - offset + r, carry rounding errors of eps W |eta| (or eps W
    /// |Z Lambda u|, relative to offset + X beta), which the weakly determined directions
    /// (beta against the mean of u) amplify by 1 / their curvature: 1e-4 in beta at counts
    /// of 1e7, against 1e-6 here.
    pub(in crate::glmm) fn scalar_joint<K: Kernel>(&mut self, k: K, th: f64) -> CoreResult<()> {
        let (p, nl) = (self.p, self.terms[0].nlev);
        let mut sys = JointSystem::new(nl, p);
        let mut unew = vec![0.0; nl];
        let mut bnew = vec![0.0; p];
        let fresh = !self.warm;
        let usq = |u: &[f64]| u.iter().map(|v| v * v).sum::<f64>();
        let (dev, pdev, noise);
        if fresh {
            // from the family's starting means and beta = 0 (the solve gives the change of beta)
            self.u.iter_mut().for_each(|v| *v = 0.0);
            self.beta.iter_mut().for_each(|v| *v = 0.0);
            self.scalar_joint_pass(k, th, true, &mut sys);
            (dev, pdev, noise) = (f64::INFINITY, f64::INFINITY, 0.0);
        } else {
            let [d, mag] = self.scalar_joint_pass(k, th, false, &mut sys);
            let us = usq(&self.u);
            (dev, pdev, noise) = (d, d + us, pdev_noise(mag + us, self.n));
        }
        let mut st = PirlsIter { it: 0, prev: f64::INFINITY, fresh, dev, pdev, noise };
        let mut s = vec![0.0; p * p];
        let mut rb = vec![0.0; p];
        loop {
            // the penalised normal equations: block diagonal in u, a p x p Schur complement
            s.copy_from_slice(&sys.within);
            rb.copy_from_slice(&sys.xwy);
            for l in 0..nl {
                let hl = sys.h[l];
                let d = th * th * hl + 1.0;
                let c = &sys.c[l * p..(l + 1) * p];
                let g = th * sys.g[l] - self.u[l];
                let f = if hl > 0.0 { 1.0 / (hl * d) } else { 0.0 };
                for a in 0..p {
                    rb[a] -= th * c[a] * g / d;
                    for b in 0..=a {
                        s[a + b * p] += c[a] * c[b] * f;
                    }
                }
            }
            // bnew and unew are first the changes, then the new values
            if p > 0 {
                if !small::chol_lower(&mut s, p) {
                    return Err(E::Numerical("PIRLS: the fixed-effects block is not positive definite".into()));
                }
                bnew.copy_from_slice(&rb);
                small::solve_lower(&s, p, &mut bnew);
                small::solve_lower_t(&s, p, &mut bnew);
            }
            for l in 0..nl {
                let d = th * th * sys.h[l] + 1.0;
                let c = &sys.c[l * p..(l + 1) * p];
                let mut v = th * sys.g[l] - self.u[l];
                for a in 0..p {
                    v -= th * c[a] * bnew[a];
                }
                unew[l] = self.u[l] + v / d;
            }
            for (b, v) in bnew.iter_mut().zip(&self.beta) {
                *b += v;
            }
            if self.pirls_advance(&unew, &bnew, true, &mut st, |me| me.scalar_joint_pass(k, th, false, &mut sys))? {
                break;
            }
        }
        // the last pass was at the converged (u, beta): its weights define L
        let mut ldl2 = 0.0;
        for l in 0..nl {
            let d = th * th * sys.h[l] + 1.0;
            self.d2[l] = d;
            ldl2 += d.ln();
        }
        // the last pass (never the fresh one) was at the converged (u, beta) and left the
        // working residual r in wresp: keep the u-only working response eta - offb + r
        let b = self.beta.clone();
        self.set_offb(&b)?;
        for i in 0..self.n {
            self.wresp[i] += self.eta[i] - self.offb[i];
        }
        let (dev, it) = (st.dev, st.it);
        let aic = self.total_aic(dev);
        let us = usq(&self.u);
        self.warm = true;
        self.state_ok = true;
        self.info = EvalInfo { objective: aic + us + ldl2, aic, dev, usq: us, ldl2, iterations: it };
        Ok(())
    }

    /// One pass of the joint scalar PIRLS at the current (u, beta), or at the family's
    /// starting means when `fresh` (u = 0, beta = 0): stores offb = offset + X beta, eta, mu,
    /// W and in `wresp` the working residual r (fresh: the working response eta - offset + r,
    /// the step from 0 being the new mode itself); accumulates the sums of the normal
    /// equations of the step; returns [the deviance, the size of its terms].
    pub(in crate::glmm) fn scalar_joint_pass<K: Kernel>(&mut self, k: K, th: f64, fresh: bool, sys: &mut JointSystem) -> [f64; 2] {
        let (p, nl) = (self.p, self.terms[0].nlev);
        sys.clear();
        for l in 0..nl {
            let bu = th * self.u[l];
            for i in self.gstart[l]..self.gstart[l + 1] {
                let xi = &self.x[i * p..(i + 1) * p];
                let mut e = self.off[i];
                for a in 0..p {
                    e += xi[a] * self.beta[a];
                }
                self.offb[i] = e;
                self.eta[i] = if fresh { self.link.linkfun(self.dist.mustart(self.y[i], self.wt[i])) } else { e + self.z[0][i] * bu };
            }
        }
        // eta - base is exactly 0 with base = eta
        let base = if fresh { &self.off } else { &self.eta };
        let [d, mag] = fill(self.avx2, &k, &self.eta, base, &self.y, &self.wt, &self.dy, &self.dn, &mut self.mu, &mut self.w, &mut self.wresp);
        for l in 0..nl {
            let (mut hl, mut gl) = (0.0, 0.0);
            let cl = &mut sys.c[l * p..(l + 1) * p];
            for i in self.gstart[l]..self.gstart[l + 1] {
                let xi = &self.x[i * p..(i + 1) * p];
                let zi = self.z[0][i];
                let (w, yt) = (self.w[i], self.wresp[i]);
                let wz = w * zi;
                hl += wz * zi;
                gl += wz * yt;
                for a in 0..p {
                    cl[a] += wz * xi[a];
                    sys.xwy[a] += w * xi[a] * yt;
                }
            }
            // the within-group part of X' W X: the scatter of x about its regression on z
            // in the group (see `JointSystem::within`)
            let m: Vec<f64> = cl.iter().map(|c| if hl > 0.0 { c / hl } else { 0.0 }).collect();
            for i in self.gstart[l]..self.gstart[l + 1] {
                let xi = &self.x[i * p..(i + 1) * p];
                let (w, zi) = (self.w[i], self.z[0][i]);
                for a in 0..p {
                    let wa = w * (xi[a] - zi * m[a]);
                    for b in 0..=a {
                        sys.within[a + b * p] += wa * (xi[b] - zi * m[b]);
                    }
                }
            }
            sys.h[l] = hl;
            sys.g[l] = gl;
        }
        [self.dc_total + d, self.dc_abs + mag]
    }
}
