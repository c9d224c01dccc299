//! Generalized linear mixed models: penalised iteratively reweighted least squares (PIRLS),
//! the Laplace approximation and adaptive Gauss-Hermite quadrature, as lme4 defines them.
//!
//! Model: y_i | u ~ family(mu_i), g(mu_i) = eta_i = offset_i + x_i' beta + z_i' Lambda(theta) u,
//! u ~ N(0, I). For given theta (and beta), PIRLS finds the conditional mode of u, the
//! minimiser of the penalised deviance
//!
//! ```text
//!   pdev(u) = sum_i devres_i(mu_i) + ||u||^2 ,
//! ```
//!
//! by Fisher scoring: each step solves a penalised weighted least-squares problem with the IRLS
//! weights W_i = wt_i mu_eta_i^2 / V(mu_i) and the working response eta - offset + (y - mu) / mu_eta,
//! halving the step while pdev goes up. Then (lme4 definitions):
//!
//! * Laplace (nAGQ = 1): `-2 log p(y | u, beta) + ||u||^2 + log|L|^2` at the mode, where
//!   `-2 log p` carries every constant (log binomial coefficients, log y!) and L is the Cholesky
//!   factor of `Lambda' Z' W Z Lambda + I` with the IRLS (expected, Fisher) weights, also for
//!   non-canonical links;
//! * nAGQ = 0: the same with beta found by PIRLS together with u;
//! * AGQ (nAGQ > 1, one scalar random-effect term): per group j the integral over u_j by
//!   Gauss-Hermite nodes centred at the mode and scaled by the conditional SD 1 / L_jj:
//!   `sum_j devc_j(u_j) + log|L|^2 - 2 sum_j log sum_k w_k exp(z_k^2/2 - (devc_j(u_j + z_k/L_jj)
//!   - devc_j(u_j))/2)` with `devc_j(u) = u^2 + sum over the group's rows of the deviance
//!   residuals`. Deviance residuals are relative to the saturated model, so this criterion
//!   leaves out `-2 sum log p(y | mu = y)`, exactly as lme4 reports it.
//!
//! Three representations of the penalised least-squares system share this interface
//! (`solver`): one scalar term (matrix-free, group by group), all terms scalar (a dedicated
//! crossed solver with the selected inverse the gradient needs), anything else (the LMM
//! engine's blocked Cholesky on the working response). The code is split by what changes
//! together, not by engine:
//!
//! * `mod.rs`: the model (rows, per-row constants of the deviance and of -2 log p), state;
//! * `criteria.rs`: the public criteria (Laplace, nAGQ = 0, AGQ) and the Gauss-Hermite rule;
//! * `pirls.rs`: the PIRLS iteration and the passes over all rows of the matrix paths;
//! * `gradient.rs`: the exact gradient and the first-order prediction of the modes;
//! * `solver/`: the representations, one file each, and the one place choosing among them;
//! * `kernel.rs`: families, links and the vectorised row loops. It stays one file: the
//!   families share the loops, the clamps and the fast exp/log, and the specialised
//!   kernels (logit, Poisson log) are checked against the generic formulas next to them;
//! * `macros.rs`: `with_kernel!`, the dispatch from (family, link) to a kernel type.
//!
//! Rows are stored sorted by the levels of term 0; every array handed out is in the caller's
//! row order.

use crate::error::{CoreError, CoreResult};
use crate::lmm::Term;
use crate::pattern::RowGroups;
use CoreError as E;

#[macro_use]
mod macros;
mod criteria;
mod gradient;
mod kernel;
mod pirls;
mod solver;
#[cfg(test)]
mod tests;

pub use criteria::gauss_hermite;
pub use kernel::{exp_fast, ln_1_2, Dist, Link};
use kernel::{have_avx2, RowConsts};
pub use kernel::{family_eval, FamilyEval};
use solver::Solver;

// ============================================================================================
// the model
// ============================================================================================

/// The rows of a GLMM, borrowed (caller's row order). `x` row-major n x p, `z[k]` n x s_k.
pub struct GlmmRows<'a> {
    pub refs: Vec<&'a [u32]>,
    pub z: Vec<&'a [f64]>,
    pub x: &'a [f64],
    /// response: 0/1 or a proportion (binomial), counts (Poisson)
    pub y: &'a [f64],
    /// prior weights (for cbind(s, f) responses the trials, times any user weights)
    pub wt: Option<&'a [f64]>,
    /// binomial only: the trials when they are not the weights (R's `n` of
    /// `binomial()$aic`); None means "1 per row"
    pub ntrials: Option<&'a [f64]>,
    pub offset: Option<&'a [f64]>,
}

/// Pieces of the criterion at the last evaluation.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalInfo {
    /// the criterion returned (Laplace, nAGQ = 0 or AGQ deviance)
    pub objective: f64,
    /// -2 log p(y | u, beta) with all constants (R's family aic without the parameter term)
    pub aic: f64,
    /// sum of deviance residuals (conditional deviance, `deviance(glmerfit)` in lme4)
    pub dev: f64,
    /// ||u||^2
    pub usq: f64,
    /// log det(L)^2
    pub ldl2: f64,
    /// PIRLS iterations (summed over groups for the scalar engine: the largest group count)
    pub iterations: usize,
}

pub struct Glmm {
    dist: Dist,
    link: Link,
    n: usize,
    p: usize,
    terms: Vec<Term>,
    /// position in the caller's order of each stored (sorted) row
    perm: Vec<u32>,
    // ---- rows, sorted by the levels of term 0 ----
    refs: Vec<Vec<u32>>,
    z: Vec<Vec<f64>>,
    x: Vec<f64>,
    y: Vec<f64>,
    wt: Vec<f64>,
    off: Vec<f64>,
    /// deviance residual = dc - 2 (dy lmu + dn l1mu) + 2 mc mu (dc kept only as sums:
    /// `dcsum`, `dc_total`)
    dy: Vec<f64>,
    dn: Vec<f64>,
    /// -2 log p(y | mu) = ac - 2 (ay lmu + an l1mu) + 2 mc mu
    ac: Vec<f64>,
    ay: Vec<f64>,
    an: Vec<f64>,
    /// mc = wt for Poisson, none for binomial
    poisson: bool,
    /// ay == dy and an == dn on every row: then -2 log p = deviance + sum(ac - dc)
    aic_from_dev: bool,
    /// sum of (ac - dc) per level of term 0 (used when aic_from_dev)
    sat_grp: Vec<f64>,
    /// start of each level of term 0 in the sorted rows
    gstart: Vec<usize>,
    // ---- state ----
    /// spherical random effects, all terms concatenated (level-major within a term)
    u: Vec<f64>,
    uoff: Vec<usize>,
    beta: Vec<f64>,
    /// offset + X beta (u-only PIRLS) in sorted order
    offb: Vec<f64>,
    eta: Vec<f64>,
    mu: Vec<f64>,
    w: Vec<f64>,
    /// working response for the LMM engine
    wresp: Vec<f64>,
    /// per level of term 0 for the scalar engine: the diagonal of L^2 and devc at the mode
    d2: Vec<f64>,
    /// u has been set by a converged PIRLS (warm start)
    warm: bool,
    /// eta, mu, w and wresp belong to the current u (the scalar engine leaves them stale)
    state_ok: bool,
    /// theta of the last evaluation
    theta_last: Vec<f64>,
    /// sum of dc per level of term 0, and in all
    dcsum: Vec<f64>,
    dc_total: f64,
    /// sum of |dc| per level of term 0, and in all: part of the size of the terms a
    /// deviance is summed from (`pirls::pdev_noise`)
    dcabs: Vec<f64>,
    dc_abs: f64,
    /// sum(w) and sum(w log y): the dispersion families' aic (`kernel::dispersion_aic`)
    sumw: f64,
    sumwlogy: f64,
    /// run the AVX2 copies of the row loops
    avx2: bool,
    info: EvalInfo,
    pub control: PirlsControl,
    // ---- engines ----
    /// the representation of the penalised least-squares system (see `solver`)
    solver: Solver,
    /// first-order prediction of the modes from the last gradient: (theta, beta) there, the
    /// modes, and du/d(theta, beta) (q x (ntheta + p), column-major)
    pred: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
}

/// PIRLS settings.
#[derive(Clone, Copy, Debug)]
pub struct PirlsControl {
    /// converged when no coordinate of u (and of beta) would move by more than
    /// tol * (1 + |value|) in the next step. The criterion is reported at the current point,
    /// so its error is of the order of tol times the gradient of log|L|^2: 1e-13 keeps it
    /// far below what a finite-difference Hessian (steps 1e-4) can see.
    pub tol: f64,
    /// ... or when the next step is below `floor` and no smaller than half the previous one:
    /// the steps have reached the rounding noise of the sums (Newton steps otherwise shrink
    /// quadratically). Also (not a setting), at any size, when the next step is no smaller
    /// than the previous one and the decrease of the penalised deviance it promises is below
    /// that deviance's rounding level (`pirls::pdev_noise`): the noise floor of data whose
    /// deviance is a small difference of large terms (counts of 1e5 and more), where the
    /// steps cannot shrink below ~1e-7 and no comparison of deviances could tell them apart.
    pub floor: f64,
    pub maxit: usize,
    pub max_halvings: usize,
}

impl Default for PirlsControl {
    fn default() -> Self {
        PirlsControl { tol: 1e-13, floor: 1e-8, maxit: 200, max_halvings: 40 }
    }
}

impl PirlsControl {
    /// The defaults for a family. The dispersion families' criterion, aic(deviance) + |u|^2
    /// + log det, is not stationary at the mode (PIRLS minimises deviance + |u|^2): an error
    /// du in the mode moves it to first order, by about 2 (1 / phi - 1) u du, so their PIRLS
    /// runs on to steps of 1e-12 before the noise-floor test may stop it.
    pub fn for_dist(dist: Dist) -> Self {
        let d = PirlsControl::default();
        if dist.has_dispersion() {
            PirlsControl { floor: 1e-12, ..d }
        } else {
            d
        }
    }

    /// `step` and `prev` are relative step sizes (already divided by 1 + |value|).
    #[inline]
    fn converged(&self, step: f64, prev: f64) -> bool {
        step <= self.tol || (step <= self.floor && step >= 0.5 * prev)
    }
}

impl Glmm {
    pub fn new(terms: Vec<Term>, p: usize, rows: &GlmmRows, dist: Dist, link: Link) -> CoreResult<Glmm> {
        let shape = |s: String| Err(E::Data(s));
        if terms.is_empty() {
            return Err(E::ModelSpec("no random-effect terms".into()));
        }
        let n = rows.y.len();
        if rows.refs.len() != terms.len() || rows.z.len() != terms.len() {
            return shape("refs and z need one entry per term".into());
        }
        if rows.x.len() != n * p {
            return shape(format!("x: length {}, expected {}", rows.x.len(), n * p));
        }
        for (k, t) in terms.iter().enumerate() {
            if rows.refs[k].len() != n || rows.z[k].len() != n * t.s {
                return shape(format!("term {k}: refs or z of the wrong length"));
            }
            if let Some(&bad) = rows.refs[k].iter().find(|&&l| l as usize >= t.nlev) {
                return shape(format!("term {k}: level {bad} >= nlev {}", t.nlev));
            }
            for &(i, j, _) in &t.lambda {
                if i < j || i >= t.s {
                    return Err(E::ModelSpec(format!("term {k}: lambda entry ({i},{j}) not lower")));
                }
            }
            if t.lambda.is_empty() {
                return Err(E::ModelSpec(format!("term {k}: lambda has no entries")));
            }
        }
        for (what, a) in [("wt", rows.wt), ("ntrials", rows.ntrials), ("offset", rows.offset)] {
            if let Some(a) = a {
                if a.len() != n {
                    return shape(format!("{what}: length {}, expected {n}", a.len()));
                }
            }
        }
        // ---- sort the rows by the levels of term 0 (counting sort, stable) ----
        let nl0 = terms[0].nlev;
        let RowGroups { start: gstart, order: perm } = RowGroups::by_level(rows.refs[0], nl0);
        let take = |a: &[f64]| -> Vec<f64> { perm.iter().map(|&i| a[i as usize]).collect() };
        let refs: Vec<Vec<u32>> =
            rows.refs.iter().map(|r| perm.iter().map(|&i| r[i as usize]).collect()).collect();
        let z: Vec<Vec<f64>> = terms
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let s = t.s;
                let mut out = vec![0.0; n * s];
                for (j, &i) in perm.iter().enumerate() {
                    out[j * s..(j + 1) * s].copy_from_slice(&rows.z[k][i as usize * s..(i as usize + 1) * s]);
                }
                out
            })
            .collect();
        let mut x = vec![0.0; n * p];
        for (j, &i) in perm.iter().enumerate() {
            x[j * p..(j + 1) * p].copy_from_slice(&rows.x[i as usize * p..(i as usize + 1) * p]);
        }
        let y = take(rows.y);
        let wt = rows.wt.map(take).unwrap_or_else(|| vec![1.0; n]);
        let off = rows.offset.map(take).unwrap_or_else(|| vec![0.0; n]);
        for i in 0..n {
            if !(wt[i] >= 0.0 && wt[i].is_finite()) {
                return shape("weights must be finite and non-negative".into());
            }
            if !y[i].is_finite() || !off[i].is_finite() {
                return shape("response and offset must be finite".into());
            }
            if !dist.in_support(y[i]) {
                return shape(match dist {
                    Dist::Binomial => "binomial response must lie in [0, 1]".into(),
                    Dist::Gamma | Dist::InverseGaussian => format!("{dist:?} response must be positive"),
                    _ => format!("{dist:?} response must be non-negative"),
                });
            }
        }
        // ---- per-row constants of the deviance residuals and of -2 log p(y | mu) ----
        let nt = rows.ntrials.map(take);
        let RowConsts { dc, dy, dn, ac, ay, an } = RowConsts::new(dist, &y, &wt, nt.as_deref());
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
        let aic_from_dev = (0..n).all(|i| close(ay[i], dy[i]) && close(an[i], dn[i]));
        let mut sat_grp = vec![0.0; nl0];
        let mut dcsum = vec![0.0; nl0];
        let mut dcabs = vec![0.0; nl0];
        for l in 0..nl0 {
            sat_grp[l] = (gstart[l]..gstart[l + 1]).map(|i| ac[i] - dc[i]).sum();
            dcsum[l] = dc[gstart[l]..gstart[l + 1]].iter().sum();
            dcabs[l] = dc[gstart[l]..gstart[l + 1]].iter().map(|v| v.abs()).sum();
        }
        let dc_total: f64 = dcsum.iter().sum();
        let dc_abs: f64 = dcabs.iter().sum();
        let sumw: f64 = wt.iter().sum();
        let sumwlogy: f64 = if dist.has_dispersion() {
            y.iter().zip(&wt).map(|(a, w)| if *w > 0.0 { w * a.ln() } else { 0.0 }).sum()
        } else {
            0.0
        };
        let mut uoff = vec![0usize; terms.len() + 1];
        for (k, t) in terms.iter().enumerate() {
            uoff[k + 1] = uoff[k] + t.nlev * t.s;
        }
        let q = uoff[terms.len()];
        let solver = Solver::choose(&terms, &refs, &gstart, p)?;
        Ok(Glmm {
            dist,
            link,
            n,
            p,
            perm,
            refs,
            z,
            x,
            y,
            wt,
            off,
            dy,
            dn,
            ac,
            ay,
            an,
            poisson: dist == Dist::Poisson,
            aic_from_dev,
            sat_grp,
            gstart,
            u: vec![0.0; q],
            uoff,
            beta: vec![0.0; p],
            offb: vec![0.0; n],
            eta: vec![0.0; n],
            mu: vec![0.0; n],
            w: vec![0.0; n],
            wresp: vec![0.0; n],
            d2: vec![1.0; nl0],
            warm: false,
            state_ok: false,
            theta_last: Vec::new(),
            dcsum,
            dc_total,
            dcabs,
            dc_abs,
            sumw,
            sumwlogy,
            avx2: have_avx2(),
            info: EvalInfo::default(),
            control: PirlsControl::for_dist(dist),
            terms,
            pred: None,
            solver,
        })
    }

    pub fn dist(&self) -> Dist {
        self.dist
    }

    /// Change the family's parameter (the negative binomial's theta, for glmer.nb's outer
    /// optimisation) keeping the warm start: the per-row constants are recomputed.
    pub fn set_dist(&mut self, dist: Dist) -> CoreResult<()> {
        if std::mem::discriminant(&dist) != std::mem::discriminant(&self.dist) {
            return Err(E::ModelSpec(format!("set_dist: {dist:?} is not a {:?} family", self.dist)));
        }
        let RowConsts { dc, dy, dn, ac, ay, an } = RowConsts::new(dist, &self.y, &self.wt, None);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
        self.aic_from_dev = (0..self.n).all(|i| close(ay[i], dy[i]) && close(an[i], dn[i]));
        let nl0 = self.terms[0].nlev;
        for l in 0..nl0 {
            let r = self.gstart[l]..self.gstart[l + 1];
            self.sat_grp[l] = r.clone().map(|i| ac[i] - dc[i]).sum();
            self.dcsum[l] = dc[r.clone()].iter().sum();
            self.dcabs[l] = dc[r].iter().map(|v| v.abs()).sum();
        }
        self.dc_total = self.dcsum.iter().sum();
        self.dc_abs = self.dcabs.iter().sum();
        (self.dy, self.dn, self.ac, self.ay, self.an) = (dy, dn, ac, ay, an);
        self.dist = dist;
        self.state_ok = false;
        self.pred = None;
        Ok(())
    }

    /// R's family aic of the dispersion families at the total deviance `dev`; None otherwise.
    pub(in crate::glmm) fn dispersion_aic(&self, dev: f64) -> Option<f64> {
        kernel::dispersion_aic(self.dist, dev, self.sumw, self.sumwlogy)
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

    pub fn info(&self) -> EvalInfo {
        self.info
    }

    pub fn beta(&self) -> &[f64] {
        &self.beta
    }

    /// Forget the warm start: the next PIRLS starts from u = 0 (and, for nAGQ = 0, from the
    /// family's starting means).
    pub fn reset(&mut self) {
        self.u.iter_mut().for_each(|v| *v = 0.0);
        self.warm = false;
        self.state_ok = false;
        self.pred = None;
    }

    /// Spherical random effects per term (level-major nlev x s).
    pub fn u(&self) -> Vec<Vec<f64>> {
        (0..self.terms.len()).map(|k| self.u[self.uoff[k]..self.uoff[k + 1]].to_vec()).collect()
    }

    /// Set u (per term, level-major), e.g. to restart from a known mode.
    pub fn set_u(&mut self, u: &[Vec<f64>]) -> CoreResult<()> {
        if u.len() != self.terms.len() {
            return Err(E::Data("u needs one entry per term".into()));
        }
        for (k, uk) in u.iter().enumerate() {
            if uk.len() != self.uoff[k + 1] - self.uoff[k] {
                return Err(E::Data(format!("u[{k}] has the wrong length")));
            }
            self.u[self.uoff[k]..self.uoff[k + 1]].copy_from_slice(uk);
        }
        self.warm = true;
        self.state_ok = false;
        Ok(())
    }

    /// b = Lambda(theta) u per term (level-major nlev x s).
    pub fn b(&self, theta: &[f64]) -> CoreResult<Vec<Vec<f64>>> {
        self.check_theta(theta)?;
        let lams = self.lambdas(theta);
        Ok((0..self.terms.len())
            .map(|k| {
                let t = &self.terms[k];
                let s = t.s;
                let uk = &self.u[self.uoff[k]..self.uoff[k + 1]];
                let mut bk = vec![0.0; uk.len()];
                for lv in 0..t.nlev {
                    for i in 0..s {
                        let mut v = 0.0;
                        for j in 0..=i {
                            v += lams[k][i + j * s] * uk[lv * s + j];
                        }
                        bk[lv * s + i] = v;
                    }
                }
                bk
            })
            .collect())
    }

    pub(in crate::glmm) fn unsort(&self, a: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.n];
        for (j, &i) in self.perm.iter().enumerate() {
            out[i as usize] = a[j];
        }
        out
    }

    /// Linear predictor at the last evaluation (caller's row order).
    pub fn eta(&mut self) -> Vec<f64> {
        self.refresh_state();
        self.unsort(&self.eta)
    }

    /// Mean at the last evaluation.
    pub fn mu(&mut self) -> Vec<f64> {
        self.refresh_state();
        self.unsort(&self.mu)
    }

    /// IRLS weights at the last evaluation.
    pub fn weights(&mut self) -> Vec<f64> {
        self.refresh_state();
        self.unsort(&self.w)
    }

    /// The warm start of the (u, beta) PIRLS at a new theta: the u with the same
    /// b = Lambda(theta) u as the last modes (u = 0 where Lambda(new) has a zero diagonal).
    /// Keeping u instead multiplies b, and so eta, by theta(new) / theta(old): a step of
    /// the outer optimiser from theta 1 to 7 then starts PIRLS from means e^30 times too
    /// large for a group with b = 5. From the same eta, PIRLS only has to undo the
    /// shrinkage that changed with theta; where theta(new) is tiny, the first step takes
    /// the large u back to about theta times the score (the penalty dominates).
    pub(in crate::glmm) fn keep_b(&mut self, old: &[f64], new: &[f64]) {
        let (lo, ln) = (self.lambdas(old), self.lambdas(new));
        for (kk, t) in self.terms.iter().enumerate() {
            let s = t.s;
            let (a, c) = (&lo[kk], &ln[kk]);
            for lv in 0..t.nlev {
                let u = &mut self.u[self.uoff[kk] + lv * s..self.uoff[kk] + (lv + 1) * s];
                let b: Vec<f64> = (0..s).map(|i| (0..=i).map(|j| a[i + j * s] * u[j]).sum()).collect();
                // Lambda(new) u = b by forward substitution
                for i in 0..s {
                    let mut v = b[i];
                    for j in 0..i {
                        v -= c[i + j * s] * u[j];
                    }
                    let d = c[i + i * s];
                    u[i] = if d != 0.0 && (v / d).is_finite() { v / d } else { 0.0 };
                }
            }
        }
        self.state_ok = false;
        self.pred = None;
    }

    pub(in crate::glmm) fn lambdas(&self, theta: &[f64]) -> Vec<Vec<f64>> {
        self.terms
            .iter()
            .map(|t| {
                let mut lam = vec![0.0; t.s * t.s];
                for &(i, j, ti) in &t.lambda {
                    lam[i + j * t.s] = theta[ti];
                }
                lam
            })
            .collect()
    }

    pub(in crate::glmm) fn check_theta(&self, theta: &[f64]) -> CoreResult<()> {
        let need = self.terms.iter().flat_map(|t| t.lambda.iter().map(|e| e.2 + 1)).max().unwrap_or(0);
        if theta.len() < need {
            return Err(E::Data(format!("theta has {} values, the terms need {need}", theta.len())));
        }
        Ok(())
    }

    pub(in crate::glmm) fn set_offb(&mut self, beta: &[f64]) -> CoreResult<()> {
        if beta.len() != self.p {
            return Err(E::Data(format!("beta has {} values, expected {}", beta.len(), self.p)));
        }
        let p = self.p;
        for i in 0..self.n {
            let xi = &self.x[i * p..(i + 1) * p];
            let mut v = self.off[i];
            for a in 0..p {
                v += xi[a] * beta[a];
            }
            self.offb[i] = v;
        }
        self.beta.copy_from_slice(beta);
        Ok(())
    }

    /// theta of each (scalar) term
    pub(in crate::glmm) fn term_thetas(&self, theta: &[f64]) -> Vec<f64> {
        self.terms.iter().map(|t| theta[t.lambda[0].2]).collect()
    }
}
