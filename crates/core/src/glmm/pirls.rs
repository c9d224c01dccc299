//! PIRLS for the matrix representations (crossed, general): the iteration with step
//! halving shared with the scalar engine's joint path (`pirls_advance`), and the passes over
//! all rows that form eta, the IRLS weights and the working response. The scalar engine's
//! group-by-group iteration is in `solver/scalar.rs` (it never forms a system).
//!
//! PIRLS works at any scale of the data (counts of 1e7, binomial trials of 1e9), where the
//! penalised deviance is a small difference of large terms and the penalty |u|^2 a tiny part
//! of it:
//!
//! * comparisons of penalised deviances allow for their rounding level ([`pdev_noise`]),
//!   not only for 1e-12 of their value: a group's deviance of 0.4 summed from terms of 5e4
//!   carries errors of 1e-11, and a Newton step that lowers it by 1e-13 used to be refused
//!   forever (PIRLS then ran into its iteration limit);
//! * the steps come from the score: the scalar and crossed representations solve for
//!   (du, dbeta) with the right-hand side (Lambda' Z' W r - u, X' W r), r the working
//!   residual, which is small near the mode and so is its rounding; the LMM engine (general
//!   representation) solves for the modes of a response, given relative to offset + X beta
//!   (of the size of Z Lambda u, not of eta). The equations of the new mode from the
//!   working response eta - offset + r carry rounding errors of eps W |eta|;
//! * directions that change beta and u (or two crossed terms) together without moving eta
//!   (an intercept against the mean of u) are fixed by the penalty alone, with a curvature
//!   of ~n_groups / theta^2 against the deviance's ~W: their steps cannot shrink below the
//!   rounding of the score amplified by that ratio (1e-9 .. 1e-7 at counts of 1e7), while
//!   they change nothing the criterion depends on at first order. PIRLS therefore also stops
//!   when its steps no longer shrink and the decrease they promise is below the rounding
//!   level of the penalised deviance ([`PirlsControl`], `step_decrease`);
//! * nAGQ = 0 warm-starts at a new theta from the same b = Lambda u (`Glmm::keep_b`), the
//!   scalar engine's Schur complement of the fixed effects is a sum of positive parts
//!   (`JointSystem::within`), and the scalar engine takes the last Newton step it computes
//!   (the gradient's error is the score left at the mode times W).

use super::kernel::{fill, Kernel};
use super::{EvalInfo, Glmm, E};
use crate::error::CoreResult;

/// The rounding level of a penalised deviance summed over `n` rows from terms whose
/// absolute values add up to `mag` (`Kernel::dev_mag`, the row constants, |u|^2): each term
/// carries a few ulps, and the chunked sums add errors growing like the square root of the
/// number of additions. Two penalised deviances closer than this cannot be ordered.
#[inline]
pub(in crate::glmm) fn pdev_noise(mag: f64, n: usize) -> f64 {
    f64::EPSILON * mag * (8.0 + (n as f64).sqrt())
}

/// The step-halving test: the trial `pn` does not increase the penalised deviance `pdev`
/// beyond what rounding (`noise`, of either value) or 1e-12 of it can explain.
#[inline]
pub(in crate::glmm) fn no_increase(pn: f64, pdev: f64, noise: f64) -> bool {
    pn.is_finite() && pn <= pdev + (1e-12 * (1.0 + pdev.abs())).max(noise)
}

/// Where PIRLS stands between iterations.
pub(super) struct PirlsIter {
    pub(super) it: usize,
    /// the previous relative step (for the noise-floor test)
    pub(super) prev: f64,
    /// no step taken yet from the starting values
    pub(super) fresh: bool,
    pub(super) dev: f64,
    pub(super) pdev: f64,
    /// the rounding level of `pdev` ([`pdev_noise`])
    pub(super) noise: f64,
}

impl Glmm {
    /// One PIRLS iteration once the next mode (`unew`, and `bnew` when `joint`) is known:
    /// report convergence, or step towards it, halving the step until the penalised deviance
    /// (from `pass`, the caller's pass over the rows: [deviance, size of its terms]) does not
    /// increase. Returns true when converged. Shared by the scalar fast path and the general
    /// path.
    pub(in crate::glmm) fn pirls_advance(
        &mut self,
        unew: &[f64],
        bnew: &[f64],
        joint: bool,
        st: &mut PirlsIter,
        mut pass: impl FnMut(&mut Self) -> [f64; 2],
    ) -> CoreResult<bool> {
        let ctl = self.control;
        let rel = |new: &[f64], old: &[f64]| {
            new.iter().zip(old).fold(0.0f64, |m, (a, b)| m.max((a - b).abs() / (1.0 + b.abs())))
        };
        let mut maxstep = rel(unew, &self.u);
        if joint {
            maxstep = maxstep.max(rel(bnew, &self.beta));
        }
        if !maxstep.is_finite() {
            return Err(E::Numerical("PIRLS: non-finite step".into()));
        }
        if !st.fresh
            && (ctl.converged(maxstep, st.prev)
                || (maxstep >= st.prev && self.step_decrease(unew, bnew, joint) <= st.noise))
        {
            return Ok(true);
        }
        st.prev = if st.fresh { f64::INFINITY } else { maxstep };
        st.it += 1;
        if st.it > ctl.maxit {
            return Err(E::Numerical(format!("PIRLS did not converge in {} iterations", ctl.maxit)));
        }
        let (u0, b0) = (self.u.clone(), self.beta.clone());
        let mut fac = 1.0;
        let mut halvings = 0;
        loop {
            for (j, v) in self.u.iter_mut().enumerate() {
                *v = u0[j] + fac * (unew[j] - u0[j]);
            }
            if joint {
                for (a, v) in self.beta.iter_mut().enumerate() {
                    *v = b0[a] + fac * (bnew[a] - b0[a]);
                }
            }
            let [dn, mag] = pass(self);
            let usq = self.u.iter().map(|v| v * v).sum::<f64>();
            let pn = dn + usq;
            let noise = pdev_noise(mag + usq, self.n);
            if no_increase(pn, st.pdev, noise.max(st.noise)) {
                st.dev = dn;
                st.pdev = pn;
                st.noise = noise;
                break;
            }
            halvings += 1;
            if halvings > ctl.max_halvings {
                return Err(E::Numerical("PIRLS step-halvings failed to reduce the deviance".into()));
            }
            fac *= 0.5;
        }
        st.fresh = false;
        Ok(false)
    }

    /// The decrease of the penalised deviance the Fisher-scoring step to (`unew`, `bnew`)
    /// promises, |W^(1/2) (Z Lambda du + X db)|^2 + |du|^2 at the current weights (the step
    /// solves the quadratic model, so its decrease is the model's curvature along it).
    pub(in crate::glmm) fn step_decrease(&self, unew: &[f64], bnew: &[f64], joint: bool) -> f64 {
        let lams = self.lambdas(&self.theta_last);
        let du: Vec<f64> = unew.iter().zip(&self.u).map(|(a, b)| a - b).collect();
        let mut de = vec![0.0; self.n];
        if joint {
            let p = self.p;
            let db: Vec<f64> = bnew.iter().zip(&self.beta).map(|(a, b)| a - b).collect();
            for (i, d) in de.iter_mut().enumerate() {
                *d = self.x[i * p..(i + 1) * p].iter().zip(&db).map(|(x, b)| x * b).sum();
            }
        }
        self.add_zlam(&lams, &du, &mut de);
        de.iter().zip(&self.w).map(|(d, w)| w * d * d).sum::<f64>() + du.iter().map(|v| v * v).sum::<f64>()
    }

    pub(in crate::glmm) fn pirls_general<K: Kernel>(&mut self, k: K, theta: &[f64], joint: bool) -> CoreResult<()> {
        let lams = self.lambdas(theta);
        let fresh = !self.warm;
        if fresh {
            self.u.iter_mut().for_each(|v| *v = 0.0);
        }
        let usq = |u: &[f64]| u.iter().map(|v| v * v).sum::<f64>();
        let incr = self.steps_in_u();
        let (dev, pdev, noise);
        if joint && fresh {
            // first step from the family's starting means (glm's initialize), from beta = 0
            // (the solve gives the change of beta)
            self.beta.iter_mut().for_each(|v| *v = 0.0);
            self.offb.copy_from_slice(&self.off);
            for i in 0..self.n {
                let eta = self.link.linkfun(self.dist.mustart(self.y[i], self.wt[i]));
                let v = k.row(eta, self.y[i], self.wt[i]);
                self.eta[i] = eta;
                self.mu[i] = v.mu;
                self.w[i] = v.w;
                self.wresp[i] = eta - self.off[i] + v.r;
            }
            // (with u = 0 the step from there is the new mode itself: the working response)
            (dev, pdev, noise) = (f64::INFINITY, f64::INFINITY, 0.0);
        } else {
            let [d, mag] = self.general_pass(k, &lams, joint, incr);
            let us = usq(&self.u);
            (dev, pdev, noise) = (d, d + us, pdev_noise(mag + us, self.n));
        }
        let mut st = PirlsIter { it: 0, prev: f64::INFINITY, fresh, dev, pdev, noise };
        let mut ldl2;
        loop {
            // joint: the solve gives the change of beta (the working response is relative to
            // offset + X beta), and with `incr` the change of u
            let (mut unew, mut bnew, ld) = self.pls_solve(theta, joint)?;
            if incr {
                for (a, v) in unew.iter_mut().zip(&self.u) {
                    *a += v;
                }
            }
            if joint {
                for (b, v) in bnew.iter_mut().zip(&self.beta) {
                    *b += v;
                }
            }
            ldl2 = ld;
            if self.pirls_advance(&unew, &bnew, joint, &mut st, |me| me.general_pass(k, &lams, joint, incr))? {
                break;
            }
        }
        if joint {
            // the last pass was at the converged beta: offb is the u-only one there
            let b = self.beta.clone();
            self.set_offb(&b)?;
        }
        if incr {
            // the last pass (never the fresh one) left r: keep the working response
            for i in 0..self.n {
                self.wresp[i] += self.eta[i] - self.offb[i];
            }
        }
        let (dev, it) = (st.dev, st.it);
        let aic = self.total_aic(dev);
        let us = usq(&self.u);
        self.warm = true;
        self.state_ok = true;
        self.info = EvalInfo { objective: aic + us + ldl2, aic, dev, usq: us, ldl2, iterations: it };
        Ok(())
    }

    /// eta = offb + Z Lambda u for every row, then the family's values; returns [the sum of
    /// deviance residuals, the size of its terms]. offb = offset + X beta is recomputed
    /// first when `joint` (beta moves with u). Fills the working response eta - offb + r,
    /// or the working residual r itself when `resid`.
    pub(in crate::glmm) fn general_pass<K: Kernel>(&mut self, k: K, lams: &[Vec<f64>], joint: bool, resid: bool) -> [f64; 2] {
        let p = self.p;
        if joint {
            for i in 0..self.n {
                let xi = &self.x[i * p..(i + 1) * p];
                let mut e = self.off[i];
                for a in 0..p {
                    e += xi[a] * self.beta[a];
                }
                self.offb[i] = e;
            }
        }
        self.eta.copy_from_slice(&self.offb);
        self.add_zb(lams);
        // eta - base is exactly 0 with base = eta
        let base = if resid { &self.eta } else { &self.offb };
        let [d, mag] = fill(self.avx2, &k, &self.eta, base, &self.y, &self.wt, &self.dy, &self.dn, &mut self.mu, &mut self.w, &mut self.wresp);
        [self.dc_total + d, self.dc_abs + mag]
    }

    /// eta += Z Lambda u
    pub(in crate::glmm) fn add_zb(&mut self, lams: &[Vec<f64>]) {
        let mut eta = std::mem::take(&mut self.eta);
        self.add_zlam(lams, &self.u, &mut eta);
        self.eta = eta;
    }

    /// out += Z Lambda u for every row (u in the layout of `self.u`)
    pub(in crate::glmm) fn add_zlam(&self, lams: &[Vec<f64>], u: &[f64], out: &mut [f64]) {
        let nt = self.terms.len();
        for kk in 0..nt {
            let t = &self.terms[kk];
            let s = t.s;
            let uk = &u[self.uoff[kk]..self.uoff[kk + 1]];
            let mut bk = vec![0.0; uk.len()];
            for lv in 0..t.nlev {
                for i in 0..s {
                    let mut v = 0.0;
                    for j in 0..=i {
                        v += lams[kk][i + j * s] * uk[lv * s + j];
                    }
                    bk[lv * s + i] = v;
                }
            }
            let (z, refs) = (&self.z[kk], &self.refs[kk]);
            if s == 1 {
                for i in 0..self.n {
                    out[i] += z[i] * bk[refs[i] as usize];
                }
            } else {
                for i in 0..self.n {
                    let lv = refs[i] as usize;
                    let zi = &z[i * s..(i + 1) * s];
                    let bl = &bk[lv * s..(lv + 1) * s];
                    let mut e = 0.0;
                    for c in 0..s {
                        e += zi[c] * bl[c];
                    }
                    out[i] += e;
                }
            }
        }
    }

    /// Recompute eta, mu, W and the (u-only) working response from the current u, beta and
    /// theta (the scalar engine does not store them while it iterates).
    pub(in crate::glmm) fn refresh_state(&mut self) {
        if self.state_ok {
            return;
        }
        let lams = self.lambdas(&self.theta_last.clone());
        self.eta.copy_from_slice(&self.offb);
        self.add_zb(&lams);
        with_kernel!(self, k => {
            fill(self.avx2, &k, &self.eta, &self.offb, &self.y, &self.wt, &self.dy, &self.dn, &mut self.mu, &mut self.w, &mut self.wresp);
        });
        self.state_ok = true;
    }
}
