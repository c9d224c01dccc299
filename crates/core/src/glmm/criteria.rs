//! The criteria lme4 optimises (Laplace, nAGQ = 0, adaptive Gauss-Hermite) as entry points:
//! argument checks, the warm start, the call to the representation's PIRLS (`solver`), and
//! -2 log p(y | u) from the deviance. Also the Gauss-Hermite rule itself.

use super::kernel::Kernel;
use super::{Glmm, E};
use crate::error::CoreResult;

/// Gauss-Hermite rule for the standard normal: nodes z_k and weights w_k (sum 1), so that
/// E f(Z) ~ sum_k w_k f(z_k) (lme4's `GHrule`). Newton on the orthonormal Hermite recurrence
/// from the classical starting guesses (Golub-Welsch accuracy for n up to ~100).
pub fn gauss_hermite(n: usize) -> (Vec<f64>, Vec<f64>) {
    assert!(n >= 1);
    // physicists' Hermite (weight exp(-x^2)), then x -> sqrt(2) x, w -> w / sqrt(pi)
    let pim4 = std::f64::consts::PI.powf(-0.25);
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    let m = n.div_ceil(2);
    let nf = n as f64;
    let mut z = 0.0f64;
    let eval = |z: f64| -> (f64, f64) {
        let mut p1 = pim4;
        let mut p2 = 0.0;
        for j in 0..n {
            let p3 = p2;
            p2 = p1;
            let jf = j as f64;
            p1 = z * (2.0 / (jf + 1.0)).sqrt() * p2 - (jf / (jf + 1.0)).sqrt() * p3;
        }
        (p1, (2.0 * nf).sqrt() * p2)
    };
    for i in 0..m {
        z = match i {
            0 => (2.0 * nf + 1.0).sqrt() - 1.85575 * (2.0 * nf + 1.0).powf(-0.16667),
            1 => z - 1.14 * nf.powf(0.426) / z,
            2 => 1.86 * z - 0.86 * x[0],
            3 => 1.91 * z - 0.91 * x[1],
            _ => 2.0 * z - x[i - 2],
        };
        let mut pp = 1.0;
        for _ in 0..100 {
            let (p1, d) = eval(z);
            pp = d;
            let z1 = z;
            z = z1 - p1 / pp;
            if (z - z1).abs() <= 1e-15 * z.abs().max(1.0) {
                break;
            }
        }
        let (_, d) = eval(z);
        pp = if d.is_finite() { d } else { pp };
        if n % 2 == 1 && i == m - 1 {
            z = 0.0; // the middle node of an odd rule
            pp = eval(0.0).1;
        }
        x[i] = z;
        x[n - 1 - i] = -z;
        w[i] = 2.0 / (pp * pp);
        w[n - 1 - i] = w[i];
    }
    let sp = std::f64::consts::PI.sqrt();
    let mut nodes: Vec<f64> = x.iter().map(|v| v * std::f64::consts::SQRT_2).collect();
    let mut weights: Vec<f64> = w.iter().map(|v| v / sp).collect();
    nodes.reverse();
    weights.reverse();
    (nodes, weights)
}

impl Glmm {
    /// Laplace deviance at (theta, beta): PIRLS over u only, lme4's nAGQ = 1 criterion.
    /// Returns +inf when PIRLS fails (and forgets the warm start).
    pub fn laplace(&mut self, theta: &[f64], beta: &[f64]) -> f64 {
        self.guard(|m| m.laplace_inner(theta, beta))
    }

    /// Adaptive Gauss-Hermite deviance with `nodes`/`weights` from [`gauss_hermite`] (one
    /// scalar term only), lme4's nAGQ > 1 criterion (no saturated-model term).
    pub fn agq(&mut self, theta: &[f64], beta: &[f64], nodes: &[f64], weights: &[f64]) -> f64 {
        self.guard(|m| m.agq_inner(theta, beta, nodes, weights))
    }

    /// lme4's nAGQ = 0 criterion at theta: PIRLS over u and beta together, then the Laplace
    /// formula at the joint mode. beta is left in `beta()`.
    pub fn laplace_joint(&mut self, theta: &[f64]) -> f64 {
        self.guard(|m| m.joint_inner(theta))
    }

    /// Run an evaluation; on failure forget the warm start and report +inf.
    pub(in crate::glmm) fn guard(&mut self, f: impl FnOnce(&mut Self) -> CoreResult<f64>) -> f64 {
        match f(self) {
            Ok(v) if v.is_finite() => v,
            _ => {
                self.reset();
                self.info.objective = f64::INFINITY;
                f64::INFINITY
            }
        }
    }

    /// The same as [`laplace`](Self::laplace) but reporting why it failed.
    pub fn try_laplace(&mut self, theta: &[f64], beta: &[f64]) -> CoreResult<f64> {
        self.laplace_inner(theta, beta)
    }

    /// The same as [`laplace_joint`](Self::laplace_joint) but reporting why it failed (the
    /// warm start is kept, as the optimiser's next evaluation would see it).
    pub fn try_laplace_joint(&mut self, theta: &[f64]) -> CoreResult<f64> {
        self.joint_inner(theta)
    }

    pub(in crate::glmm) fn laplace_inner(&mut self, theta: &[f64], beta: &[f64]) -> CoreResult<f64> {
        self.check_theta(theta)?;
        self.theta_last = theta.to_vec();
        self.set_offb(beta)?;
        self.predict_modes(theta, beta);
        self.run_u(theta)?;
        Ok(self.info.objective)
    }

    pub(in crate::glmm) fn agq_inner(&mut self, theta: &[f64], beta: &[f64], nodes: &[f64], weights: &[f64]) -> CoreResult<f64> {
        if !self.is_scalar() {
            return Err(E::ModelSpec(
                "adaptive Gauss-Hermite quadrature needs a single scalar random-effect term".into(),
            ));
        }
        if nodes.len() != weights.len() || nodes.is_empty() {
            return Err(E::Data("nodes and weights must have the same, positive length".into()));
        }
        self.check_theta(theta)?;
        self.theta_last = theta.to_vec();
        self.set_offb(beta)?;
        let th = theta[self.terms[0].lambda[0].2];
        with_kernel!(self, k => self.scalar_u(k, th, Some((nodes, weights))))?;
        Ok(self.info.objective)
    }

    pub(in crate::glmm) fn joint_inner(&mut self, theta: &[f64]) -> CoreResult<f64> {
        self.check_theta(theta)?;
        if self.warm && self.theta_last.len() == theta.len() && self.theta_last != theta {
            let old = std::mem::take(&mut self.theta_last);
            self.keep_b(&old, theta);
        }
        self.theta_last = theta.to_vec();
        self.run_joint(theta)?;
        Ok(self.info.objective)
    }

    /// -2 log p(y | mu) of rows r at the given linear predictor (for data where it is not
    /// deviance + constant).
    pub(in crate::glmm) fn rows_aic<K: Kernel>(&self, k: K, r: std::ops::Range<usize>, eta: impl Fn(usize) -> f64) -> f64 {
        let mut a = 0.0;
        for i in r {
            let v = k.row(eta(i), self.y[i], self.wt[i]);
            a += self.ac[i] - 2.0 * (self.ay[i] * v.lmu + self.an[i] * v.l1mu);
            if self.poisson {
                a += 2.0 * self.wt[i] * v.mu;
            }
        }
        a
    }

    /// -2 log p(y | u) at the stored eta, given the deviance there.
    pub(in crate::glmm) fn total_aic(&self, dev: f64) -> f64 {
        if let Some(a) = self.dispersion_aic(dev) {
            a
        } else if self.aic_from_dev {
            dev + self.sat_grp.iter().sum::<f64>()
        } else {
            with_kernel!(self, k => self.rows_aic(k, 0..self.n, |i| self.eta[i]))
        }
    }
}
