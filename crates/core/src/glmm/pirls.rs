//! PIRLS for the matrix representations (crossed, general): the iteration with step
//! halving shared with the scalar engine's joint path (`pirls_advance`), and the passes over
//! all rows that form eta, the IRLS weights and the working response. The scalar engine's
//! group-by-group iteration is in `solver/scalar.rs` (it never forms a system).

use super::kernel::{fill, Kernel};
use super::{EvalInfo, Glmm, E};
use crate::error::CoreResult;

/// Where PIRLS stands between iterations.
pub(super) struct PirlsIter {
    pub(super) it: usize,
    /// the previous relative step (for the noise-floor test)
    pub(super) prev: f64,
    /// no step taken yet from the starting values
    pub(super) fresh: bool,
    pub(super) dev: f64,
    pub(super) pdev: f64,
}

impl Glmm {
    /// One PIRLS iteration once the next mode (`unew`, and `bnew` when `joint`) is known:
    /// report convergence, or step towards it, halving the step until the penalised deviance
    /// (from `pass`, the caller's pass over the rows) does not increase. Returns true when
    /// converged. Shared by the scalar fast path and the general path.
    pub(in crate::glmm) fn pirls_advance(
        &mut self,
        unew: &[f64],
        bnew: &[f64],
        joint: bool,
        st: &mut PirlsIter,
        mut pass: impl FnMut(&mut Self) -> f64,
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
        if !st.fresh && ctl.converged(maxstep, st.prev) {
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
            let dn = pass(self);
            let pn = dn + self.u.iter().map(|v| v * v).sum::<f64>();
            if pn.is_finite() && pn <= st.pdev + 1e-12 * (1.0 + st.pdev.abs()) {
                st.dev = dn;
                st.pdev = pn;
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

    pub(in crate::glmm) fn pirls_general<K: Kernel>(&mut self, k: K, theta: &[f64], joint: bool) -> CoreResult<()> {
        let lams = self.lambdas(theta);
        let fresh = !self.warm;
        if fresh {
            self.u.iter_mut().for_each(|v| *v = 0.0);
        }
        let usq = |u: &[f64]| u.iter().map(|v| v * v).sum::<f64>();
        let dev;
        let pdev;
        if joint && fresh {
            // first step from the family's starting means (glm's initialize)
            for i in 0..self.n {
                let eta = self.link.linkfun(self.dist.mustart(self.y[i], self.wt[i]));
                let v = k.row(eta, self.y[i], self.wt[i]);
                self.eta[i] = eta;
                self.mu[i] = v.mu;
                self.w[i] = v.w;
                self.wresp[i] = eta - self.off[i] + v.r;
            }
            dev = f64::INFINITY;
            pdev = f64::INFINITY;
        } else {
            dev = self.general_pass(k, &lams, joint);
            pdev = dev + usq(&self.u);
        }
        let mut st = PirlsIter { it: 0, prev: f64::INFINITY, fresh, dev, pdev };
        let mut ldl2;
        loop {
            let (unew, bnew, ld) = self.pls_solve(theta, joint)?;
            ldl2 = ld;
            if self.pirls_advance(&unew, &bnew, joint, &mut st, |me| me.general_pass(k, &lams, joint))? {
                break;
            }
        }
        if joint {
            let b = self.beta.clone();
            self.set_offb(&b)?;
            for i in 0..self.n {
                self.wresp[i] -= self.offb[i] - self.off[i];
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

    /// eta = base + Z Lambda u for every row, then the family's values; returns the sum of
    /// deviance residuals. `base` is offb (u-only) or off + X beta (joint). Fills the
    /// working response `eta - base0 + r` where base0 is offb for u-only and off for joint.
    pub(in crate::glmm) fn general_pass<K: Kernel>(&mut self, k: K, lams: &[Vec<f64>], joint: bool) -> f64 {
        let p = self.p;
        if joint {
            for i in 0..self.n {
                let xi = &self.x[i * p..(i + 1) * p];
                let mut e = self.off[i];
                for a in 0..p {
                    e += xi[a] * self.beta[a];
                }
                self.eta[i] = e;
            }
        } else {
            self.eta.copy_from_slice(&self.offb);
        }
        self.add_zb(lams);
        let base = if joint { &self.off } else { &self.offb };
        self.dc_total
            + fill(self.avx2, &k, &self.eta, base, &self.y, &self.wt, &self.dy, &self.dn, &mut self.mu, &mut self.w, &mut self.wresp)
    }

    /// eta += Z Lambda u
    pub(in crate::glmm) fn add_zb(&mut self, lams: &[Vec<f64>]) {
        let nt = self.terms.len();
        for kk in 0..nt {
            let t = &self.terms[kk];
            let s = t.s;
            let uk = &self.u[self.uoff[kk]..self.uoff[kk + 1]];
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
                    self.eta[i] += z[i] * bk[refs[i] as usize];
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
                    self.eta[i] += e;
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
