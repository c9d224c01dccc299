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
//! Two engines share this interface. One scalar random-effect term (`(1 | g)`, `(0 + x | g)`)
//! makes `Lambda' Z' W Z Lambda + I` diagonal, so PIRLS runs group by group on rows sorted by
//! group, with no matrix at all (and the group's rows stay in cache while it converges). Every
//! other model reuses the blocked Cholesky of the LMM engine (`Lmm::reweight` + `solution`) on
//! the working response.
//!
//! Rows are stored sorted by the levels of term 0; every array handed out is in the caller's
//! row order.

use crate::error::{CoreError, CoreResult};
use crate::lmm::{Lmm, Rows, Term};
use crate::pattern::RowGroups;
use CoreError as E;
use crate::small;

mod crossed;
mod kernel;

pub use kernel::{exp_fast, ln_1_2, Dist, Link};
use crossed::Crossed;
use kernel::{fill, group_pass, have_avx2, GenericK, Kernel, LogitK, PoissonLogK};

// ============================================================================================
// quadrature
// ============================================================================================

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

/// Where PIRLS stands between iterations.
struct PirlsIter {
    it: usize,
    /// the previous relative step (for the noise-floor test)
    prev: f64,
    /// no step taken yet from the starting values
    fresh: bool,
    dev: f64,
    pdev: f64,
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
    /// quadratically)
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
    /// `step` and `prev` are relative step sizes (already divided by 1 + |value|).
    #[inline]
    fn converged(&self, step: f64, prev: f64) -> bool {
        step <= self.tol || (step <= self.floor && step >= 0.5 * prev)
    }
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
    /// run the AVX2 copies of the row loops
    avx2: bool,
    info: EvalInfo,
    pub control: PirlsControl,
    // ---- engines ----
    scalar: bool,
    /// every term scalar (and more than one): the dedicated solver with gradients, and the
    /// same with the fixed-effect columns (nAGQ = 0 PIRLS, R_X)
    crossed: Option<Crossed>,
    crossed_x: Option<Crossed>,
    /// first-order prediction of the modes from the last gradient: (theta, beta) there, the
    /// modes, and du/d(theta, beta) (q x (ntheta + p), column-major)
    pred: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
    lmm_u: Option<Lmm>,
    lmm_b: Option<Lmm>,
}

fn lfact(k: f64) -> f64 {
    libm::lgamma(k + 1.0)
}

fn xlogx(x: f64) -> f64 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

/// Normal equations of the joint (u, beta) PIRLS step with one scalar term.
struct JointSystem {
    h: Vec<f64>,
    g: Vec<f64>,
    c: Vec<f64>,
    xwx: Vec<f64>,
    xwy: Vec<f64>,
}

impl JointSystem {
    fn new(nl: usize, p: usize) -> Self {
        JointSystem { h: vec![0.0; nl], g: vec![0.0; nl], c: vec![0.0; nl * p], xwx: vec![0.0; p * p], xwy: vec![0.0; p] }
    }
    fn clear(&mut self) {
        for v in [&mut self.h, &mut self.g, &mut self.c, &mut self.xwx, &mut self.xwy] {
            v.iter_mut().for_each(|a| *a = 0.0);
        }
    }
}

macro_rules! with_kernel {
    ($self:ident, $k:ident => $body:expr) => {
        match ($self.dist, $self.link) {
            (Dist::Binomial, Link::Logit) => {
                let $k = LogitK;
                $body
            }
            (Dist::Poisson, Link::Log) => {
                let $k = PoissonLogK;
                $body
            }
            (dist, link) => {
                let $k = GenericK { dist, link };
                $body
            }
        }
    };
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
            if dist == Dist::Binomial && !(0.0..=1.0).contains(&y[i]) {
                return shape("binomial response must lie in [0, 1]".into());
            }
            if dist == Dist::Poisson && y[i] < 0.0 {
                return shape("Poisson response must be non-negative".into());
            }
        }
        // ---- per-row constants of the deviance residuals and of -2 log p(y | mu) ----
        let (mut dc, mut dy, mut dn) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let (mut ac, mut ay, mut an) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        match dist {
            Dist::Binomial => {
                let nt = rows.ntrials.map(take);
                // R's binomial()$aic: m <- if (any(n > 1)) n else wt
                let use_n = nt.as_ref().map(|v| v.iter().any(|&t| t > 1.0)).unwrap_or(false);
                for i in 0..n {
                    let (yi, wi) = (y[i], wt[i]);
                    dc[i] = 2.0 * wi * (xlogx(yi) + xlogx(1.0 - yi));
                    dy[i] = wi * yi;
                    dn[i] = wi * (1.0 - yi);
                    let m = if use_n { nt.as_ref().unwrap()[i] } else { wi };
                    let mm = m.round();
                    let yy = (m * yi).round();
                    let fac = if mm <= 0.0 { 0.0 } else { wi / mm };
                    ay[i] = fac * yy;
                    an[i] = fac * (mm - yy);
                    let lchoose = if mm > 0.0 { lfact(mm) - lfact(yy) - lfact(mm - yy) } else { 0.0 };
                    ac[i] = -2.0 * fac * lchoose;
                }
            }
            Dist::Poisson => {
                for i in 0..n {
                    let (yi, wi) = (y[i], wt[i]);
                    dc[i] = 2.0 * wi * (xlogx(yi) - yi);
                    dy[i] = wi * yi;
                    ac[i] = 2.0 * wi * lfact(yi);
                    ay[i] = wi * yi;
                }
            }
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
        let aic_from_dev = (0..n).all(|i| close(ay[i], dy[i]) && close(an[i], dn[i]));
        let mut sat_grp = vec![0.0; nl0];
        let mut dcsum = vec![0.0; nl0];
        for l in 0..nl0 {
            sat_grp[l] = (gstart[l]..gstart[l + 1]).map(|i| ac[i] - dc[i]).sum();
            dcsum[l] = dc[gstart[l]..gstart[l + 1]].iter().sum();
        }
        let dc_total: f64 = dcsum.iter().sum();
        let mut uoff = vec![0usize; terms.len() + 1];
        for (k, t) in terms.iter().enumerate() {
            uoff[k + 1] = uoff[k] + t.nlev * t.s;
        }
        let q = uoff[terms.len()];
        let scalar = terms.len() == 1 && terms[0].s == 1;
        let crossed = if !scalar && terms.iter().all(|t| t.s == 1) {
            let nlev: Vec<usize> = terms.iter().map(|t| t.nlev).collect();
            // the solver's dense block holds every level after term 0's, and the fixed
            // effects when nAGQ = 0 or R_X need them: refuse it here, before any allocation
            let qr: usize = nlev[1..].iter().sum();
            E::check_dense(qr + p, || {
                format!(
                    "the crossed random-effect terms after the first (the one with most levels) have \
                     {qr} levels together, with the {p} fixed effects"
                )
            })?;
            Some(Crossed::new(&nlev, &refs, &gstart, 0))
        } else {
            // the general path builds the LMM engine on first use (with X for nAGQ = 0 and
            // R_X): check its dense block now rather than fail inside an evaluation
            let qz: usize = terms[1..].iter().map(|t| t.nlev * t.s).sum();
            E::check_dense(qz + p + 1, || {
                format!(
                    "the random-effect terms after the first (the one with most levels) have {qz} \
                     coefficients together, with the {p} fixed effects and the response"
                )
            })?;
            None
        };
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
            avx2: have_avx2(),
            info: EvalInfo::default(),
            control: PirlsControl::default(),
            terms,
            scalar,
            crossed,
            crossed_x: None,
            pred: None,
            lmm_u: None,
            lmm_b: None,
        })
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
    /// True when the model has one scalar random-effect term (the matrix-free engine; the
    /// only case where adaptive quadrature is defined).
    pub fn is_scalar(&self) -> bool {
        self.scalar
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

    fn unsort(&self, a: &[f64]) -> Vec<f64> {
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

    fn lambdas(&self, theta: &[f64]) -> Vec<Vec<f64>> {
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

    fn check_theta(&self, theta: &[f64]) -> CoreResult<()> {
        let need = self.terms.iter().flat_map(|t| t.lambda.iter().map(|e| e.2 + 1)).max().unwrap_or(0);
        if theta.len() < need {
            return Err(E::Data(format!("theta has {} values, the terms need {need}", theta.len())));
        }
        Ok(())
    }

    fn set_offb(&mut self, beta: &[f64]) -> CoreResult<()> {
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

    // ---------------------------------------------------------------------------------------
    // public criteria
    // ---------------------------------------------------------------------------------------

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
    fn guard(&mut self, f: impl FnOnce(&mut Self) -> CoreResult<f64>) -> f64 {
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

    fn laplace_inner(&mut self, theta: &[f64], beta: &[f64]) -> CoreResult<f64> {
        self.check_theta(theta)?;
        self.theta_last = theta.to_vec();
        self.set_offb(beta)?;
        self.predict_modes(theta, beta);
        if self.scalar {
            with_kernel!(self, k => self.scalar_u(k, theta[self.terms[0].lambda[0].2], None))?;
        } else {
            with_kernel!(self, k => self.general_u(k, theta))?;
        }
        Ok(self.info.objective)
    }

    fn agq_inner(&mut self, theta: &[f64], beta: &[f64], nodes: &[f64], weights: &[f64]) -> CoreResult<f64> {
        if !self.scalar {
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

    fn joint_inner(&mut self, theta: &[f64]) -> CoreResult<f64> {
        self.check_theta(theta)?;
        self.theta_last = theta.to_vec();
        if self.scalar {
            with_kernel!(self, k => self.scalar_joint(k, theta[self.terms[0].lambda[0].2]))?;
        } else {
            with_kernel!(self, k => self.general_joint(k, theta))?;
        }
        Ok(self.info.objective)
    }

    // ---------------------------------------------------------------------------------------
    // the scalar engine: one term with one column, rows sorted by group
    // ---------------------------------------------------------------------------------------

    /// One pass over group l's rows at u_l: (sum of deviance residuals, sum W r z, sum W z^2).
    #[inline(always)]
    fn group_pass<K: Kernel>(&self, k: K, l: usize, th: f64, ul: f64) -> (f64, f64, f64) {
        let r = self.gstart[l]..self.gstart[l + 1];
        let [d, s, h] = group_pass(
            self.avx2,
            &k,
            &self.z[0][r.clone()],
            &self.offb[r.clone()],
            &self.y[r.clone()],
            &self.wt[r.clone()],
            &self.dy[r.clone()],
            &self.dn[r],
            th * ul,
        );
        (self.dcsum[l] + d, s, h)
    }

    /// -2 log p(y | mu) of rows r at the given linear predictor (for data where it is not
    /// deviance + constant).
    fn rows_aic<K: Kernel>(&self, k: K, r: std::ops::Range<usize>, eta: impl Fn(usize) -> f64) -> f64 {
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

    /// u-only PIRLS group by group; then Laplace, or AGQ with `quad`.
    fn scalar_u<K: Kernel>(&mut self, k: K, th: f64, quad: Option<(&[f64], &[f64])>) -> CoreResult<()> {
        let nl = self.terms[0].nlev;
        let ctl = self.control;
        let (mut aic, mut dev, mut usq, mut ldl2, mut lmult) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut maxit = 0;
        for l in 0..nl {
            let mut ul = if self.warm { self.u[l] } else { 0.0 };
            let (mut dv, mut s, mut h) = self.group_pass(k, l, th, ul);
            let mut pdev = dv + ul * ul;
            let mut it = 0;
            let mut prev = f64::INFINITY;
            loop {
                let d2 = th * th * h + 1.0;
                let step = (th * s - ul) / d2;
                if !step.is_finite() || !pdev.is_finite() {
                    return Err(E::Numerical(format!("PIRLS: non-finite deviance in group {l}")));
                }
                let rel = step.abs() / (1.0 + ul.abs());
                if ctl.converged(rel, prev) {
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
                    let (dn, sn, hn) = self.group_pass(k, l, th, un);
                    let pn = dn + un * un;
                    if pn <= pdev + 1e-12 * (1.0 + pdev.abs()) {
                        ul = un;
                        dv = dn;
                        s = sn;
                        h = hn;
                        pdev = pn;
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
                    let (dk, _, _) = self.group_pass(k, l, th, uk);
                    let devc = dk + uk * uk;
                    mult += wk * (0.5 * zk * zk - 0.5 * (devc - devc0)).exp();
                }
                lmult += mult.ln();
            }
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

    /// Gradient of the Laplace criterion in (theta, beta) at the mode found by the last
    /// [`laplace`](Self::laplace) call (see [`has_gradient`](Self::has_gradient); `None`
    /// otherwise or when there was no successful evaluation). The formulas below are for
    /// one scalar term; `crossed_gradient` has the general all-scalar case.
    ///
    /// With d_j = 1 + theta^2 sum W z^2 (the IRLS weights W) and the mode u_j solving
    /// theta sum_i z_i s_i = u_j (s the score in eta), the criterion is
    /// -2 log p(y | u) + |u|^2 + sum_j log d_j. The first two terms are stationary in u, so
    /// only their explicit derivatives enter; log d_j changes with eta through W' = dW/deta,
    /// and eta moves with the parameters directly and through the mode, whose derivatives
    /// come from differentiating the mode equation (with the observed information Wo; for
    /// canonical links Wo = W):
    ///   du_j/dbeta = -theta sum_i Wo_i z_i x_i / (1 + theta^2 sum Wo z^2),
    ///   du_j/dtheta = (sum_i z_i s_i - theta u_j sum Wo z^2) / (1 + theta^2 sum Wo z^2).
    pub fn laplace_gradient(&mut self) -> Option<Vec<f64>> {
        self.laplace_gradient_opt(true)
    }

    /// As [`laplace_gradient`](Self::laplace_gradient); `jacobian` also keeps du/d(theta,
    /// beta) to predict the modes of the next evaluations (skip it for points that will
    /// not be revisited, such as the columns of a finite-difference Hessian).
    pub fn laplace_gradient_opt(&mut self, jacobian: bool) -> Option<Vec<f64>> {
        if !self.has_gradient() || !self.warm || !self.info.objective.is_finite() {
            return None;
        }
        if !self.scalar {
            self.refresh_state();
            return with_kernel!(self, k => self.crossed_gradient(k, jacobian));
        }
        let ti = self.terms[0].lambda[0].2;
        let th = *self.theta_last.get(ti)?;
        let ntheta = self.theta_last.len();
        let (g, jt, jb) = with_kernel!(self, k => self.scalar_gradient(k, th));
        let mut out = vec![0.0; ntheta + self.p];
        out[ti] = g[0];
        out[ntheta..].copy_from_slice(&g[1..]);
        let nl = self.u.len();
        let mut jac = vec![0.0; nl * (ntheta + self.p)];
        jac[ti * nl..(ti + 1) * nl].copy_from_slice(&jt);
        jac[ntheta * nl..].copy_from_slice(&jb);
        if jacobian {
            let x0: Vec<f64> = self.theta_last.iter().chain(self.beta.iter()).copied().collect();
            self.pred = Some((x0, self.u.clone(), jac));
        }
        Some(out)
    }

    /// Start PIRLS from the modes predicted to first order from the last gradient evaluation
    /// (a warm start one order better than the last modes: steps of 1e-4 in the parameters
    /// leave errors of 1e-8, which one Newton step removes).
    fn predict_modes(&mut self, theta: &[f64], beta: &[f64]) {
        let Some((x0, u0, jac)) = &self.pred else { return };
        let nx = x0.len();
        if nx != theta.len() + beta.len() {
            return;
        }
        let q = u0.len();
        let mut dx = Vec::with_capacity(nx);
        for (j, v) in theta.iter().chain(beta.iter()).enumerate() {
            dx.push(v - x0[j]);
        }
        // only near the point of the gradient (else the last modes are the better guess)
        if dx.iter().zip(x0).any(|(d, x)| d.abs() > 0.05 * (1.0 + x.abs())) {
            return;
        }
        let mut u = u0.clone();
        for (j, d) in dx.iter().enumerate() {
            if *d != 0.0 {
                let col = &jac[j * q..(j + 1) * q];
                for (a, c) in u.iter_mut().zip(col) {
                    *a += c * d;
                }
            }
        }
        if u.iter().all(|v| v.is_finite()) {
            self.u = u;
            self.warm = true;
            self.state_ok = false;
        }
    }

    fn ensure_crossed_x(&mut self, joint: bool) {
        if joint && self.crossed_x.is_none() && self.crossed.is_some() {
            let nlev: Vec<usize> = self.terms.iter().map(|t| t.nlev).collect();
            self.crossed_x = Some(Crossed::new(&nlev, &self.refs, &self.gstart, self.p));
        }
    }

    /// theta of each (scalar) term
    fn term_thetas(&self, theta: &[f64]) -> Vec<f64> {
        self.terms.iter().map(|t| theta[t.lambda[0].2]).collect()
    }

    /// Whether [`laplace_gradient`](Self::laplace_gradient) is available: one scalar term
    /// (any link), or all terms scalar with a canonical link (logit, Poisson log).
    pub fn has_gradient(&self) -> bool {
        self.scalar
            || (self.crossed.is_some()
                && matches!((self.dist, self.link), (Dist::Binomial, Link::Logit) | (Dist::Poisson, Link::Log)))
    }

    /// Gradient for all-scalar (crossed / nested) terms and a canonical link, at the modes of
    /// the last evaluation. With h_i = a_i' M^-1 a_i (a_i = Lambda' z_i), G_i = M^-1 a_i on
    /// the row's levels, W' = dW/deta and w = M^-1 Lambda' Z' (W' h) (one adjoint solve for
    /// the modes' dependence on the parameters), per row
    /// c_i = -2 s_i + W'_i h_i - W_i (Z Lambda w)_i and
    ///   d/dbeta = sum_i c_i x_i,
    ///   d/dtheta_t = sum_i z_it u_t(i) c_i + 2 sum_i W_i z_it G_it + sum_i z_it w_t(i) s_i.
    fn crossed_gradient<K: Kernel>(&mut self, k: K, jacobian: bool) -> Option<Vec<f64>> {
        let th = self.term_thetas(&self.theta_last);
        let (n, p, nt) = (self.n, self.p, self.terms.len());
        let g = self.crossed.as_mut()?.row_inverse_products(&th, &self.refs, &self.z);
        let mut s_ = vec![0.0; n];
        let mut w_ = vec![0.0; n];
        let mut wph = vec![0.0; n];
        let mut v = vec![0.0; self.u.len()];
        for i in 0..n {
            let d = k.deriv_mu(self.eta[i], self.mu[i], self.y[i], self.wt[i]);
            let mut h = 0.0;
            for t in 0..nt {
                h += th[t] * self.z[t][i] * g[i * nt + t];
            }
            s_[i] = d.wr;
            w_[i] = d.w;
            wph[i] = d.wp * h;
            for t in 0..nt {
                v[self.uoff[t] + self.refs[t][i] as usize] += th[t] * self.z[t][i] * wph[i];
            }
        }
        let n0 = self.terms[0].nlev;
        let w = self.crossed.as_ref()?.solve(&v[..n0], &v[n0..]);
        let mut gb = vec![0.0; p];
        let mut gt = vec![0.0; nt];
        for i in 0..n {
            let mut tz = 0.0;
            for t in 0..nt {
                tz += th[t] * self.z[t][i] * w[self.uoff[t] + self.refs[t][i] as usize];
            }
            let c = -2.0 * s_[i] + wph[i] - w_[i] * tz;
            let xi = &self.x[i * p..(i + 1) * p];
            for a in 0..p {
                gb[a] += c * xi[a];
            }
            for t in 0..nt {
                let j = self.uoff[t] + self.refs[t][i] as usize;
                let zit = self.z[t][i];
                gt[t] += zit * self.u[j] * c + 2.0 * w_[i] * zit * g[i * nt + t] + zit * w[j] * s_[i];
            }
        }
        let ntheta = self.theta_last.len();
        let mut out = vec![0.0; ntheta + p];
        for (t, term) in self.terms.iter().enumerate() {
            out[term.lambda[0].2] += gt[t];
        }
        out[ntheta..].copy_from_slice(&gb);
        if !jacobian {
            return Some(out);
        }
        // du/d(theta, beta) for the next warm start: M^-1 r with
        // r_beta_c = -Lambda'Z'W x_c, r_theta_t = Lambda_t'Z's - Lambda'Z'W (z_t u_t)
        let q = self.u.len();
        let mut jac = vec![0.0; q * (ntheta + p)];
        let mut r = vec![0.0; q];
        let cr = self.crossed.as_ref()?;
        for col in 0..(ntheta + p) {
            r.iter_mut().for_each(|v| *v = 0.0);
            let term_t = if col < ntheta { self.terms.iter().position(|tm| tm.lambda[0].2 == col) } else { None };
            if col < ntheta && term_t.is_none() {
                continue;
            }
            for i in 0..n {
                let val = if let Some(t) = term_t {
                    let j = self.uoff[t] + self.refs[t][i] as usize;
                    r[j] += self.z[t][i] * s_[i];
                    -w_[i] * self.z[t][i] * self.u[j]
                } else {
                    -w_[i] * self.x[i * p + (col - ntheta)]
                };
                for t in 0..nt {
                    r[self.uoff[t] + self.refs[t][i] as usize] += th[t] * self.z[t][i] * val;
                }
            }
            let sol = cr.solve(&r[..n0], &r[n0..]);
            jac[col * q..(col + 1) * q].copy_from_slice(&sol);
        }
        if jacobian {
            let x0: Vec<f64> = self.theta_last.iter().chain(self.beta.iter()).copied().collect();
            self.pred = Some((x0, self.u.clone(), jac));
        }
        Some(out)
    }

    /// [d/dtheta, d/dbeta...] for the scalar engine at the stored modes, and du/dtheta
    /// (nl) and du/dbeta (nl x p, column-major).
    fn scalar_gradient<K: Kernel>(&self, k: K, th: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (p, nl) = (self.p, self.terms[0].nlev);
        let mut gb = vec![0.0; p]; // -2 X's + sum_j ...
        let mut gt = 0.0;
        let mut co = vec![0.0; p];
        let mut a = vec![0.0; p];
        let th2 = th * th;
        let mut jt = vec![0.0; nl];
        let mut jb = vec![0.0; nl * p];
        for l in 0..nl {
            let ul = self.u[l];
            let bu = th * ul;
            let (mut sj, mut hj, mut hoj, mut bj) = (0.0, 0.0, 0.0, 0.0);
            co.iter_mut().for_each(|v| *v = 0.0);
            a.iter_mut().for_each(|v| *v = 0.0);
            for i in self.gstart[l]..self.gstart[l + 1] {
                let zi = self.z[0][i];
                let eta = self.offb[i] + zi * bu;
                let d = k.deriv(eta, self.y[i], self.wt[i]);
                let xi = &self.x[i * p..(i + 1) * p];
                sj += zi * d.wr;
                hj += d.w * zi * zi;
                let woz = d.wo * zi;
                hoj += woz * zi;
                let wpz2 = d.wp * zi * zi;
                bj += wpz2 * zi;
                for c in 0..p {
                    gb[c] -= 2.0 * d.wr * xi[c];
                    co[c] += woz * xi[c];
                    a[c] += wpz2 * xi[c];
                }
            }
            let dj = 1.0 + th2 * hj;
            let dobs = 1.0 + th2 * hoj;
            for c in 0..p {
                gb[c] += th2 / dj * (a[c] - bj * th2 * co[c] / dobs);
            }
            let dudt = (sj - th * ul * hoj) / dobs;
            gt += -2.0 * ul * sj + (2.0 * th * hj + th2 * bj * (ul + th * dudt)) / dj;
            jt[l] = dudt;
            for c in 0..p {
                jb[c * nl + l] = -th * co[c] / dobs;
            }
        }
        let mut out = Vec::with_capacity(p + 1);
        out.push(gt);
        out.extend_from_slice(&gb);
        (out, jt, jb)
    }

    /// One PIRLS iteration once the next mode (`unew`, and `bnew` when `joint`) is known:
    /// report convergence, or step towards it, halving the step until the penalised deviance
    /// (from `pass`, the caller's pass over the rows) does not increase. Returns true when
    /// converged. Shared by the scalar fast path and the general path.
    fn pirls_advance(
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

    /// nAGQ = 0 with one scalar term: Fisher scoring over (u, beta); the fixed effects couple
    /// the groups, so every step is a pass over all rows and a p x p Schur complement.
    fn scalar_joint<K: Kernel>(&mut self, k: K, th: f64) -> CoreResult<()> {
        let (p, nl) = (self.p, self.terms[0].nlev);
        let mut sys = JointSystem::new(nl, p);
        let mut unew = vec![0.0; nl];
        let mut bnew = vec![0.0; p];
        let fresh = !self.warm;
        let usq = |u: &[f64]| u.iter().map(|v| v * v).sum::<f64>();
        let dev;
        let pdev;
        if fresh {
            self.u.iter_mut().for_each(|v| *v = 0.0);
            self.scalar_joint_pass(k, th, true, &mut sys);
            dev = f64::INFINITY;
            pdev = f64::INFINITY;
        } else {
            dev = self.scalar_joint_pass(k, th, false, &mut sys);
            pdev = dev + usq(&self.u);
        }
        let mut st = PirlsIter { it: 0, prev: f64::INFINITY, fresh, dev, pdev };
        let mut s = vec![0.0; p * p];
        let mut rb = vec![0.0; p];
        loop {
            // the penalised normal equations: block diagonal in u, a p x p Schur complement
            s.copy_from_slice(&sys.xwx);
            rb.copy_from_slice(&sys.xwy);
            for l in 0..nl {
                let d = th * th * sys.h[l] + 1.0;
                let c = &sys.c[l * p..(l + 1) * p];
                let g = th * sys.g[l];
                for a in 0..p {
                    rb[a] -= th * c[a] * g / d;
                    for b in 0..=a {
                        s[a + b * p] -= th * th * c[a] * c[b] / d;
                    }
                }
            }
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
                let mut v = th * sys.g[l];
                for a in 0..p {
                    v -= th * c[a] * bnew[a];
                }
                unew[l] = v / d;
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
        let b = self.beta.clone();
        self.set_offb(&b)?;
        // keep the u-only working response (eta - offset - X beta + r)
        for i in 0..self.n {
            self.wresp[i] -= self.offb[i] - self.off[i];
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
    /// starting means when `fresh`: stores eta, mu, W and the working response
    /// eta - offset + r, accumulates the normal equations, returns the deviance.
    fn scalar_joint_pass<K: Kernel>(&mut self, k: K, th: f64, fresh: bool, sys: &mut JointSystem) -> f64 {
        let (p, nl) = (self.p, self.terms[0].nlev);
        sys.clear();
        for l in 0..nl {
            let bu = th * self.u[l];
            for i in self.gstart[l]..self.gstart[l + 1] {
                self.eta[i] = if fresh {
                    self.link.linkfun(self.dist.mustart(self.y[i], self.wt[i]))
                } else {
                    let xi = &self.x[i * p..(i + 1) * p];
                    let mut e = self.off[i] + self.z[0][i] * bu;
                    for a in 0..p {
                        e += xi[a] * self.beta[a];
                    }
                    e
                };
            }
        }
        let dev = self.dc_total
            + fill(self.avx2, &k, &self.eta, &self.off, &self.y, &self.wt, &self.dy, &self.dn, &mut self.mu, &mut self.w, &mut self.wresp);
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
                    let wx = w * xi[a];
                    sys.xwy[a] += wx * yt;
                    for b in 0..=a {
                        sys.xwx[a + b * p] += wx * xi[b];
                    }
                }
            }
            sys.h[l] = hl;
            sys.g[l] = gl;
        }
        dev
    }

    // ---------------------------------------------------------------------------------------
    // the general engine: the LMM's blocked Cholesky on the working response
    // ---------------------------------------------------------------------------------------

    /// eta = base + Z Lambda u for every row, then the family's values; returns the sum of
    /// deviance residuals. `base` is offb (u-only) or off + X beta (joint). Fills the
    /// working response `eta - base0 + r` where base0 is offb for u-only and off for joint.
    fn general_pass<K: Kernel>(&mut self, k: K, lams: &[Vec<f64>], joint: bool) -> f64 {
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
    fn add_zb(&mut self, lams: &[Vec<f64>]) {
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
    fn refresh_state(&mut self) {
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

    /// -2 log p(y | u) at the stored eta, given the deviance there.
    fn total_aic(&self, dev: f64) -> f64 {
        if self.aic_from_dev {
            dev + self.sat_grp.iter().sum::<f64>()
        } else {
            with_kernel!(self, k => self.rows_aic(k, 0..self.n, |i| self.eta[i]))
        }
    }

    fn ensure_lmm(&mut self, joint: bool) -> CoreResult<()> {
        let slot_empty = if joint { self.lmm_b.is_none() } else { self.lmm_u.is_none() };
        if !slot_empty {
            return Ok(());
        }
        let ones = vec![1.0; self.n];
        let rows = Rows {
            refs: self.refs.iter().map(|v| v.as_slice()).collect(),
            z: self.z.iter().map(|v| v.as_slice()).collect(),
            x: if joint { &self.x[..] } else { &[][..] },
            y: &self.y,
            w: Some(&ones),
        };
        let m = Lmm::new(self.terms.clone(), if joint { self.p } else { 0 }, &rows)?;
        if joint {
            self.lmm_b = Some(m);
        } else {
            self.lmm_u = Some(m);
        }
        Ok(())
    }

    /// Reweight the chosen LMM with the current weights and working response and solve.
    fn lmm_solve(&mut self, theta: &[f64], joint: bool) -> CoreResult<crate::lmm::Solution> {
        self.ensure_lmm(joint)?;
        let rows = Rows {
            refs: self.refs.iter().map(|v| v.as_slice()).collect(),
            z: self.z.iter().map(|v| v.as_slice()).collect(),
            x: if joint { &self.x[..] } else { &[][..] },
            y: &self.wresp,
            w: Some(&self.w),
        };
        let m = if joint { self.lmm_b.as_mut() } else { self.lmm_u.as_mut() }.unwrap();
        m.reweight(&rows)?;
        m.solution(theta, false)
            .ok_or_else(|| E::Numerical("PIRLS: the penalised least-squares system is not positive definite".into()))
    }

    fn general_u<K: Kernel>(&mut self, k: K, theta: &[f64]) -> CoreResult<()> {
        self.pirls_general(k, theta, false)
    }

    fn general_joint<K: Kernel>(&mut self, k: K, theta: &[f64]) -> CoreResult<()> {
        self.pirls_general(k, theta, true)
    }

    fn pirls_general<K: Kernel>(&mut self, k: K, theta: &[f64], joint: bool) -> CoreResult<()> {
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
            let (unew, bnew) = if self.crossed.is_some() {
                let th = self.term_thetas(theta);
                self.ensure_crossed_x(joint);
                let cr = if joint { self.crossed_x.as_mut() } else { self.crossed.as_mut() }.unwrap();
                let x: &[f64] = if joint { &self.x } else { &[] };
                let (u, b) = cr.factor_solve(&th, &self.refs, &self.z, x, &self.w, &self.wresp).ok_or_else(|| {
                    E::Numerical("PIRLS: the penalised least-squares system is not positive definite".into())
                })?;
                ldl2 = cr.logdet;
                (u, b)
            } else {
                let sol = self.lmm_solve(theta, joint)?;
                ldl2 = sol.ldl2;
                (sol.u.concat(), sol.beta)
            };
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

    // ---------------------------------------------------------------------------------------
    // quantities at the mode
    // ---------------------------------------------------------------------------------------

    /// Conditional covariance of b = Lambda u given the data at the current weights (the
    /// mode of the last evaluation), per term level-major s x s blocks (column-major):
    /// Lambda (Lambda' Z' W Z Lambda + I)^-1 Lambda'.
    pub fn condvar(&mut self, theta: &[f64]) -> CoreResult<Vec<Vec<f64>>> {
        self.check_theta(theta)?;
        if self.scalar {
            let th = theta[self.terms[0].lambda[0].2];
            return Ok(vec![self.d2.iter().map(|d| th * th / d).collect()]);
        }
        self.refresh_state();
        if self.crossed.is_some() {
            let th = self.term_thetas(theta);
            let cr = self.crossed.as_mut().unwrap();
            cr.factor_solve(&th, &self.refs, &self.z, &[], &self.w, &self.wresp)
                .ok_or_else(|| E::Numerical("factorisation failed".into()))?;
            let d = cr.inverse_diagonal();
            return Ok((0..self.terms.len())
                .map(|t| (self.uoff[t]..self.uoff[t + 1]).map(|j| th[t] * th[t] * d[j]).collect())
                .collect());
        }
        self.ensure_lmm(false)?;
        let rows = Rows {
            refs: self.refs.iter().map(|v| v.as_slice()).collect(),
            z: self.z.iter().map(|v| v.as_slice()).collect(),
            x: &[],
            y: &self.wresp,
            w: Some(&self.w),
        };
        let m = self.lmm_u.as_mut().unwrap();
        m.reweight(&rows)?;
        m.condvar(theta).ok_or_else(|| E::Numerical("factorisation failed".into()))
    }

    /// The p x p lower Cholesky factor R_X of the fixed-effects block (Schur complement of
    /// the random effects) at the current weights, column-major: lme4's
    /// `vcov(fit, use.hessian = FALSE)` is (R_X R_X')^-1.
    pub fn rx(&mut self, theta: &[f64]) -> CoreResult<Vec<f64>> {
        self.check_theta(theta)?;
        self.refresh_state();
        if self.crossed.is_some() {
            self.ensure_crossed_x(true);
            let th = self.term_thetas(theta);
            let yt: Vec<f64> = (0..self.n).map(|i| self.wresp[i] + self.offb[i] - self.off[i]).collect();
            let cr = self.crossed_x.as_mut().unwrap();
            cr.factor_solve(&th, &self.refs, &self.z, &self.x, &self.w, &yt)
                .ok_or_else(|| E::Numerical("the fixed-effects block is not positive definite".into()))?;
            return Ok(cr.rx());
        }
        self.ensure_lmm(true)?;
        // the working response of the (u, beta) system; R_X does not depend on it, but the
        // factor of the whole system must exist
        let yt: Vec<f64> = (0..self.n).map(|i| self.wresp[i] + self.offb[i] - self.off[i]).collect();
        let rows = Rows {
            refs: self.refs.iter().map(|v| v.as_slice()).collect(),
            z: self.z.iter().map(|v| v.as_slice()).collect(),
            x: &self.x,
            y: &yt,
            w: Some(&self.w),
        };
        let m = self.lmm_b.as_mut().unwrap();
        m.reweight(&rows)?;
        let sol = m
            .solution(theta, false)
            .ok_or_else(|| E::Numerical("the fixed-effects block is not positive definite".into()))?;
        Ok(sol.rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::Lcg;

    #[test]
    fn gauss_hermite_moments() {
        for n in [1usize, 2, 3, 5, 9, 15, 25, 40] {
            let (z, w) = gauss_hermite(n);
            let sw: f64 = w.iter().sum();
            assert!((sw - 1.0).abs() < 1e-13, "n={n}: sum w = {sw}");
            // E Z^2 = 1, E Z^4 = 3 (exact for n >= 3)
            let m2: f64 = z.iter().zip(&w).map(|(a, b)| a * a * b).sum();
            if n >= 2 {
                assert!((m2 - 1.0).abs() < 1e-12, "n={n}: m2 = {m2}");
            }
            if n >= 3 {
                let m4: f64 = z.iter().zip(&w).map(|(a, b)| a.powi(4) * b).sum();
                assert!((m4 - 3.0).abs() < 1e-11, "n={n}: m4 = {m4}");
            }
            for i in 1..n {
                assert!(z[i] > z[i - 1]);
            }
        }
    }

    /// A small problem: two crossed scalar terms or one term, Bernoulli or Poisson.
    struct Problem {
        terms: Vec<Term>,
        refs: Vec<Vec<u32>>,
        z: Vec<Vec<f64>>,
        x: Vec<f64>,
        y: Vec<f64>,
        p: usize,
    }

    fn problem(g: &mut Lcg, n: usize, terms: Vec<Term>, dist: Dist) -> Problem {
        let p = 2;
        let refs: Vec<Vec<u32>> = terms.iter().map(|t| (0..n).map(|_| g.level(t.nlev)).collect()).collect();
        let z: Vec<Vec<f64>> = terms
            .iter()
            .map(|t| (0..n * t.s).map(|i| if i % t.s == 0 { 1.0 } else { g.next() * 2.0 - 1.0 }).collect())
            .collect();
        let x: Vec<f64> = (0..n * p).map(|i| if i % p == 0 { 1.0 } else { g.next() * 2.0 - 1.0 }).collect();
        let y: Vec<f64> = (0..n)
            .map(|_| match dist {
                Dist::Binomial => (g.next() < 0.4) as u8 as f64,
                Dist::Poisson => (g.next() * 5.0).floor(),
            })
            .collect();
        Problem { terms, refs, z, x, y, p }
    }

    fn rows(pb: &Problem) -> GlmmRows<'_> {
        GlmmRows {
            refs: pb.refs.iter().map(|v| v.as_slice()).collect(),
            z: pb.z.iter().map(|v| v.as_slice()).collect(),
            x: &pb.x,
            y: &pb.y,
            wt: None,
            ntrials: None,
            offset: None,
        }
    }

    /// -2 log p(y | u) + |u|^2 by brute force (original row order), family constants included.
    fn penalised(pb: &Problem, dist: Dist, link: Link, theta: &[f64], beta: &[f64], u: &[f64]) -> (f64, Vec<f64>) {
        let n = pb.y.len();
        let mut off = 0;
        let mut eta = vec![0.0; n];
        for i in 0..n {
            eta[i] = (0..pb.p).map(|a| pb.x[i * pb.p + a] * beta[a]).sum();
        }
        for (k, t) in pb.terms.iter().enumerate() {
            let s = t.s;
            let mut lam = vec![0.0; s * s];
            for &(a, b, ti) in &t.lambda {
                lam[a + b * s] = theta[ti];
            }
            for i in 0..n {
                let lv = pb.refs[k][i] as usize;
                for r in 0..s {
                    let mut br = 0.0;
                    for c in 0..=r {
                        br += lam[r + c * s] * u[off + lv * s + c];
                    }
                    eta[i] += pb.z[k][i * s + r] * br;
                }
            }
            off += t.nlev * s;
        }
        let mut v = u.iter().map(|a| a * a).sum::<f64>();
        for i in 0..n {
            let mu = link.linkinv(eta[i]);
            let y = pb.y[i];
            v += match dist {
                Dist::Binomial => -2.0 * (y * mu.ln() + (1.0 - y) * (1.0 - mu).ln()),
                Dist::Poisson => -2.0 * (y * mu.ln() - mu - lfact(y)),
            };
        }
        (v, eta)
    }

    /// The exact (brute-force) Laplace criterion: minimise the penalised -2 log-likelihood by
    /// Newton with numerical derivatives... too slow; instead minimise by a dense Fisher
    /// scoring written independently, then log det of the dense (Lambda'Z'WZ Lambda + I).
    fn brute_laplace(pb: &Problem, dist: Dist, link: Link, theta: &[f64], beta: &[f64]) -> (f64, Vec<f64>) {
        let n = pb.y.len();
        let q: usize = pb.terms.iter().map(|t| t.nlev * t.s).sum();
        // dense Z Lambda (n x q)
        let mut zl = vec![0.0; n * q];
        let mut off = 0;
        for (k, t) in pb.terms.iter().enumerate() {
            let s = t.s;
            let mut lam = vec![0.0; s * s];
            for &(a, b, ti) in &t.lambda {
                lam[a + b * s] = theta[ti];
            }
            for i in 0..n {
                let lv = pb.refs[k][i] as usize;
                for c in 0..s {
                    let mut v = 0.0;
                    for r in c..s {
                        v += pb.z[k][i * s + r] * lam[r + c * s];
                    }
                    zl[i * q + off + lv * s + c] = v;
                }
            }
            off += t.nlev * s;
        }
        let mut u = vec![0.0; q];
        let fixed: Vec<f64> = (0..n).map(|i| (0..pb.p).map(|a| pb.x[i * pb.p + a] * beta[a]).sum()).collect();
        let mut hmat = vec![0.0; q * q];
        for _ in 0..200 {
            let eta: Vec<f64> = (0..n).map(|i| fixed[i] + (0..q).map(|j| zl[i * q + j] * u[j]).sum::<f64>()).collect();
            let mut grad: Vec<f64> = u.clone();
            hmat.iter_mut().for_each(|v| *v = 0.0);
            for j in 0..q {
                hmat[j + j * q] = 1.0;
            }
            for i in 0..n {
                let mu = link.linkinv(eta[i]);
                let me = link.mu_eta(eta[i]);
                let var = dist.variance(mu);
                let w = me * me / var;
                let sc = (pb.y[i] - mu) * me / var;
                for a in 0..q {
                    let za = zl[i * q + a];
                    if za == 0.0 {
                        continue;
                    }
                    grad[a] -= za * sc;
                    for b in 0..q {
                        hmat[a + b * q] += w * za * zl[i * q + b];
                    }
                }
            }
            let mut l = hmat.clone();
            assert!(small::chol_lower(&mut l, q));
            let mut step = grad.clone();
            small::solve_lower(&l, q, &mut step);
            small::solve_lower_t(&l, q, &mut step);
            let mx = step.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for j in 0..q {
                u[j] -= step[j];
            }
            if mx < 1e-13 {
                break;
            }
        }
        // weights at the mode
        let eta: Vec<f64> = (0..n).map(|i| fixed[i] + (0..q).map(|j| zl[i * q + j] * u[j]).sum::<f64>()).collect();
        hmat.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..q {
            hmat[j + j * q] = 1.0;
        }
        for i in 0..n {
            let mu = link.linkinv(eta[i]);
            let me = link.mu_eta(eta[i]);
            let w = me * me / dist.variance(mu);
            for a in 0..q {
                for b in 0..q {
                    hmat[a + b * q] += w * zl[i * q + a] * zl[i * q + b];
                }
            }
        }
        let mut l = hmat.clone();
        assert!(small::chol_lower(&mut l, q));
        let ld: f64 = 2.0 * (0..q).map(|j| l[j + j * q].ln()).sum::<f64>();
        let (pd, _) = penalised(pb, dist, link, theta, beta, &u);
        (pd + ld, u)
    }

    fn check_laplace(pb: &Problem, dist: Dist, link: Link, thetas: &[Vec<f64>]) {
        let mut m = Glmm::new(pb.terms.clone(), pb.p, &rows(pb), dist, link).unwrap();
        for theta in thetas {
            for beta in [[-0.3, 0.5], [0.2, -1.0]] {
                let got = m.try_laplace(theta, &beta).unwrap();
                let (want, u) = brute_laplace(pb, dist, link, theta, &beta);
                assert!((got - want).abs() < 1e-8 * want.abs(), "{dist:?}/{link:?} {got} vs {want} at {theta:?}");
                let mu: Vec<f64> = m.u().concat();
                for (a, b) in mu.iter().zip(&u) {
                    assert!((a - b).abs() < 1e-7, "u {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn laplace_general_engine_equals_brute_force() {
        let mut g = Lcg(11);
        let terms = vec![
            Term { nlev: 7, s: 2, lambda: vec![(0, 0, 0), (1, 0, 1), (1, 1, 2)] },
            Term { nlev: 4, s: 1, lambda: vec![(0, 0, 3)] },
        ];
        let thetas = vec![vec![1.0, 0.0, 1.0, 1.0], vec![0.8, -0.4, 0.3, 1.4], vec![0.0, 0.0, 0.0, 0.5]];
        for (dist, link) in [(Dist::Binomial, Link::Logit), (Dist::Binomial, Link::Probit), (Dist::Poisson, Link::Log)] {
            let pb = problem(&mut g, 80, terms.clone(), dist);
            check_laplace(&pb, dist, link, &thetas);
        }
    }

    #[test]
    fn laplace_scalar_engine_equals_brute_force() {
        let mut g = Lcg(5);
        let terms = vec![Term { nlev: 9, s: 1, lambda: vec![(0, 0, 0)] }];
        let thetas = vec![vec![1.0], vec![0.3], vec![2.5], vec![0.0]];
        for (dist, link) in
            [(Dist::Binomial, Link::Logit), (Dist::Binomial, Link::Cloglog), (Dist::Binomial, Link::Probit), (Dist::Poisson, Link::Log)]
        {
            let pb = problem(&mut g, 70, terms.clone(), dist);
            check_laplace(&pb, dist, link, &thetas);
        }
    }

    #[test]
    fn joint_pirls_is_the_joint_mode() {
        // nAGQ = 0: beta from PIRLS must minimise the penalised deviance over (u, beta); the
        // scalar and the general engines must agree
        let mut g = Lcg(3);
        let terms = vec![Term { nlev: 6, s: 1, lambda: vec![(0, 0, 0)] }];
        let pb = problem(&mut g, 60, terms.clone(), Dist::Binomial);
        let mut a = Glmm::new(terms.clone(), 2, &rows(&pb), Dist::Binomial, Link::Logit).unwrap();
        let mut b = Glmm::new(terms.clone(), 2, &rows(&pb), Dist::Binomial, Link::Logit).unwrap();
        b.scalar = false;
        let th = [0.9];
        let fa = a.laplace_joint(&th);
        let fb = b.laplace_joint(&th);
        assert!((fa - fb).abs() < 1e-9 * fa.abs(), "{fa} vs {fb}");
        let beta = a.beta().to_vec();
        for (x, y) in beta.iter().zip(b.beta()) {
            assert!((x - y).abs() < 1e-8);
        }
        // the penalised deviance at (u, beta) is stationary in beta
        let u = a.u().concat();
        let f0 = penalised(&pb, Dist::Binomial, Link::Logit, &th, &beta, &u).0;
        for j in 0..2 {
            for h in [1e-4, -1e-4] {
                let mut bb = beta.clone();
                bb[j] += h;
                // re-minimise over u at the perturbed beta
                let mut c = Glmm::new(terms.clone(), 2, &rows(&pb), Dist::Binomial, Link::Logit).unwrap();
                c.try_laplace(&th, &bb).unwrap();
                let f1 = penalised(&pb, Dist::Binomial, Link::Logit, &th, &bb, &c.u().concat()).0;
                assert!(f1 >= f0 - 1e-9, "beta is not the joint mode: {f1} < {f0}");
            }
        }
        // the objective is the Laplace formula at the joint mode
        let lap = a.try_laplace(&th, &beta).unwrap();
        assert!((lap - fa).abs() < 1e-8 * fa.abs());
    }

    #[test]
    fn agq_with_one_node_is_laplace_without_constants() {
        let mut g = Lcg(8);
        let terms = vec![Term { nlev: 5, s: 1, lambda: vec![(0, 0, 0)] }];
        let pb = problem(&mut g, 50, terms.clone(), Dist::Poisson);
        let mut m = Glmm::new(terms, 2, &rows(&pb), Dist::Poisson, Link::Log).unwrap();
        let th = [0.7];
        let beta = [0.4, -0.2];
        let lap = m.laplace(&th, &beta);
        let info = m.info();
        let (z, w) = gauss_hermite(1);
        let a1 = m.agq(&th, &beta, &z, &w);
        // nAGQ = 1 quadrature is Laplace on the deviance-residual scale
        assert!((a1 - (info.dev + info.usq + info.ldl2)).abs() < 1e-10);
        assert!((lap - a1 - (info.aic - info.dev)).abs() < 1e-9);
        // many nodes: close to the integral, which Laplace approximates
        let (z, w) = gauss_hermite(30);
        let a30 = m.agq(&th, &beta, &z, &w);
        assert!((a30 - a1).abs() < 0.5, "{a30} vs {a1}");
    }

    #[test]
    fn scalar_laplace_gradient_matches_finite_differences() {
        let mut g = Lcg(31);
        let terms = vec![Term { nlev: 7, s: 1, lambda: vec![(0, 0, 0)] }];
        for (dist, link) in
            [(Dist::Binomial, Link::Logit), (Dist::Binomial, Link::Probit), (Dist::Binomial, Link::Cloglog), (Dist::Poisson, Link::Log)]
        {
            let mut pb = problem(&mut g, 90, terms.clone(), dist);
            // a non-trivial z (random slope without intercept) exercises the z^3 terms
            for v in pb.z[0].iter_mut() {
                *v = 0.5 + g.next();
            }
            let mut m = Glmm::new(terms.clone(), 2, &rows(&pb), dist, link).unwrap();
            for x in [[0.8, -0.3, 0.5], [1.7, 0.2, -0.6], [0.2, 0.1, 0.1]] {
                m.laplace(&x[..1], &x[1..]);
                let grad = m.laplace_gradient().unwrap();
                for j in 0..3 {
                    let h = 1e-5;
                    let (mut xp, mut xm) = (x, x);
                    xp[j] += h;
                    xm[j] -= h;
                    let fd = (m.laplace(&xp[..1], &xp[1..]) - m.laplace(&xm[..1], &xm[1..])) / (2.0 * h);
                    assert!((fd - grad[j]).abs() < 1e-5 * (1.0 + fd.abs()), "{dist:?}/{link:?} x={x:?} j={j}: {fd} vs {}", grad[j]);
                }
            }
        }
    }

    #[test]
    fn crossed_engine_matches_brute_force_and_its_gradient_finite_differences() {
        let mut g = Lcg(77);
        let terms = vec![
            Term { nlev: 11, s: 1, lambda: vec![(0, 0, 0)] },
            Term { nlev: 5, s: 1, lambda: vec![(0, 0, 1)] },
            Term { nlev: 3, s: 1, lambda: vec![(0, 0, 2)] },
        ];
        for (dist, link) in [(Dist::Binomial, Link::Logit), (Dist::Poisson, Link::Log), (Dist::Binomial, Link::Probit)] {
            let mut pb = problem(&mut g, 150, terms.clone(), dist);
            for v in pb.z[1].iter_mut() {
                *v = 0.3 + g.next(); // a scalar slope term
            }
            let mut m = Glmm::new(terms.clone(), 2, &rows(&pb), dist, link).unwrap();
            assert!(m.crossed.is_some());
            check_laplace(&pb, dist, link, &[vec![0.9, 0.5, 0.3], vec![1.4, 0.0, 0.8]]);
            if !m.has_gradient() {
                continue;
            }
            for x in [[0.9, 0.5, 0.3, -0.2, 0.4], [1.4, 0.2, 0.8, 0.3, -0.5]] {
                m.laplace(&x[..3], &x[3..]);
                let grad = m.laplace_gradient().unwrap();
                for j in 0..5 {
                    let h = 1e-5;
                    let (mut xp, mut xm) = (x, x);
                    xp[j] += h;
                    xm[j] -= h;
                    let fd = (m.laplace(&xp[..3], &xp[3..]) - m.laplace(&xm[..3], &xm[3..])) / (2.0 * h);
                    assert!((fd - grad[j]).abs() < 1e-5 * (1.0 + fd.abs()), "{dist:?} x={x:?} j={j}: {fd} vs {}", grad[j]);
                }
                // conditional variances and R_X agree with the LMM engine's
                let cv = m.condvar(&x[..3]).unwrap();
                let rx = m.rx(&x[..3]).unwrap();
                let cr = m.crossed.take();
                let cv2 = m.condvar(&x[..3]).unwrap();
                let rx2 = m.rx(&x[..3]).unwrap();
                m.crossed = cr;
                for (a, b) in cv.concat().iter().zip(cv2.concat().iter()) {
                    assert!((a - b).abs() < 1e-10 * (1.0 + b.abs()), "condvar {a} vs {b}");
                }
                for (a, b) in rx.iter().zip(rx2.iter()) {
                    assert!((a - b).abs() < 1e-10 * (1.0 + b.abs()), "rx {a} vs {b}");
                }
            }
            // nAGQ = 0 through the crossed solver and through the LMM engine
            let mut a = Glmm::new(terms.clone(), 2, &rows(&pb), dist, link).unwrap();
            let mut b = Glmm::new(terms.clone(), 2, &rows(&pb), dist, link).unwrap();
            b.crossed = None;
            let th = [0.8, 0.4, 0.6];
            let (fa, fb) = (a.laplace_joint(&th), b.laplace_joint(&th));
            assert!((fa - fb).abs() < 1e-9 * fa.abs(), "{fa} vs {fb}");
            for (u, v) in a.beta().iter().zip(b.beta()) {
                assert!((u - v).abs() < 1e-8);
            }
        }
    }

    #[test]
    fn predicted_modes_are_first_order_accurate() {
        let mut g = Lcg(91);
        for terms in [
            vec![Term { nlev: 9, s: 1, lambda: vec![(0, 0, 0)] }],
            vec![Term { nlev: 9, s: 1, lambda: vec![(0, 0, 0)] }, Term { nlev: 4, s: 1, lambda: vec![(0, 0, 1)] }],
        ] {
            let pb = problem(&mut g, 120, terms.clone(), Dist::Binomial);
            let nth = terms.len();
            let mut m = Glmm::new(terms.clone(), 2, &rows(&pb), Dist::Binomial, Link::Logit).unwrap();
            let x: Vec<f64> = [0.9, 0.6].iter().take(nth).chain([-0.2, 0.4].iter()).copied().collect();
            m.laplace(&x[..nth], &x[nth..]);
            m.laplace_gradient().unwrap();
            let (x0, u0, jac) = m.pred.clone().unwrap();
            let q = u0.len();
            for j in 0..x.len() {
                let h = 1e-3;
                let mut xp = x.clone();
                xp[j] += h;
                let mut fresh = Glmm::new(terms.clone(), 2, &rows(&pb), Dist::Binomial, Link::Logit).unwrap();
                fresh.laplace(&xp[..nth], &xp[nth..]);
                let up = fresh.u().concat();
                for a in 0..q {
                    let pred = u0[a] + jac[j * q + a] * (xp[j] - x0[j]);
                    assert!((pred - up[a]).abs() < 1e-5, "j={j} a={a}: {pred} vs {}", up[a]);
                }
            }
        }
    }

    #[test]
    fn condvar_and_rx_match_dense() {
        let mut g = Lcg(21);
        let terms = vec![Term { nlev: 6, s: 1, lambda: vec![(0, 0, 0)] }];
        let pb = problem(&mut g, 40, terms.clone(), Dist::Binomial);
        let mut a = Glmm::new(terms.clone(), 2, &rows(&pb), Dist::Binomial, Link::Logit).unwrap();
        let mut b = Glmm::new(terms.clone(), 2, &rows(&pb), Dist::Binomial, Link::Logit).unwrap();
        b.scalar = false;
        let th = [1.3];
        let beta = [0.1, 0.7];
        a.laplace(&th, &beta);
        b.laplace(&th, &beta);
        let ca = a.condvar(&th).unwrap();
        let cb = b.condvar(&th).unwrap();
        for (x, y) in ca[0].iter().zip(&cb[0]) {
            assert!((x - y).abs() < 1e-10, "{x} vs {y}");
        }
        let ra = a.rx(&th).unwrap();
        let rb = b.rx(&th).unwrap();
        for (x, y) in ra.iter().zip(&rb) {
            assert!((x - y).abs() < 1e-10);
        }
    }
}
