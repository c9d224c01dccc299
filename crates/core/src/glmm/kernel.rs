//! Families, links and the per-row work of PIRLS, written to vectorise.
//!
//! PIRLS spends its time on one transcendental pair per row and pass (an exponential for the
//! mean, a logarithm for the deviance). The C library's scalar `exp`/`log1p` cost 7 and 17 ns;
//! the branch-free versions below (Cody-Waite reduction and short polynomials, accurate to
//! about 1 ulp) let LLVM process four rows at a time, and the loops over rows run in small
//! chunks so that the sums are formed with independent partial accumulators. On x86-64 the
//! chunk loops are compiled twice and the AVX2 copy is chosen at run time.
//!
//! lme4's clamping (glmFamily.cpp) is kept: the inverse logit and complementary log-log lie in
//! [eps, 1 - eps], the inverse log link and mu_eta of logit / cloglog / log are at least eps,
//! the binomial variance is at least eps.

pub(crate) const EPS: f64 = f64::EPSILON;
/// log(eps) and log(1 - eps)
const LN_EPS: f64 = -36.043_653_389_117_15;
const LN_1M_EPS: f64 = -2.220_446_049_250_313e-16;

/// Conditional distribution of the response.
///
/// `Gamma` and `InverseGaussian` have a dispersion parameter that lme4 does not estimate
/// inside the criterion: PIRLS minimises the unit deviances plus |u|^2 (no dispersion
/// factor), and the criterion plugs phi = sum of unit deviances / sum(w) into R's
/// `family$aic` (see [`dispersion_aic`]). `NegBinomial(theta)` is MASS's
/// `negative.binomial(theta)`: V(mu) = mu + mu^2 / theta with theta fixed (glmer.nb's outer
/// optimisation changes it between fits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    Binomial,
    Poisson,
    Gamma,
    InverseGaussian,
    NegBinomial(f64),
}

/// Link functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Logit,
    Probit,
    Cloglog,
    Log,
    Identity,
    Sqrt,
    /// 1 / mu (Gamma's canonical link)
    Inverse,
    /// 1 / mu^2 (the inverse Gaussian's canonical link)
    InverseSquare,
}

/// lgamma(a) - ((a - 1/2) log a - a + log(2 pi) / 2), the error of Stirling's formula: its
/// asymptotic series for a >= 15 (next term below 1e-16 relative), else from lgamma.
pub(crate) fn stirlerr(a: f64) -> f64 {
    if a >= 15.0 {
        let r = 1.0 / a;
        let r2 = r * r;
        r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 * (1.0 / 1680.0 - r2 * (1.0 / 1188.0)))))
    } else {
        libm::lgamma(a) - ((a - 0.5) * a.ln() - a + 0.5 * (2.0 * std::f64::consts::PI).ln())
    }
}

/// R's `family$aic(y, n, mu, wt, dev)` for the dispersion families, which depends on the
/// rows only through the total deviance `dev` (phi = dev / sum(w)), sum(w) and
/// sum(w log y); it includes R's "+ 2" for the dispersion parameter. For Gamma,
/// -2 sum w log dgamma(y; 1/phi, mu phi) = 2 W lgamma(a) + 2 a W log(phi) + W + 2 a W +
/// 2 sum w log y with a = 1/phi (from the unit deviance 2 w (log mu + y / mu - log y - 1)),
/// = W log(2 pi phi) + 2 W stirlerr(a) + W + 2 sum w log y by Stirling's formula: without
/// the cancellation of terms of size W a log a (1e8 for a shape of 1e4), which would leave
/// noise of 1e-8 in the criterion. None for the other families.
pub(crate) fn dispersion_aic(dist: Dist, dev: f64, sumw: f64, sumwlogy: f64) -> Option<f64> {
    match dist {
        Dist::Gamma => {
            let phi = dev / sumw;
            let a = 1.0 / phi;
            Some(sumw * (2.0 * std::f64::consts::PI * phi).ln() + 2.0 * sumw * stirlerr(a) + sumw + 2.0 * sumwlogy + 2.0)
        }
        Dist::InverseGaussian => {
            let phi = dev / sumw;
            Some(sumw * ((2.0 * std::f64::consts::PI * phi).ln() + 1.0) + 3.0 * sumwlogy + 2.0)
        }
        _ => None,
    }
}

impl Dist {
    /// The family of R's name (`"binomial"`, `"poisson"`, `"Gamma"`, `"inverse.gaussian"`;
    /// `"negative.binomial"` needs [`parse`](Self::parse) with its theta).
    pub fn from_name(s: &str) -> Option<Dist> {
        Dist::parse(s, None)
    }
    /// As [`from_name`](Self::from_name), with the family's parameter (the negative
    /// binomial's theta, positive and finite).
    pub fn parse(s: &str, param: Option<f64>) -> Option<Dist> {
        match s {
            "binomial" => Some(Dist::Binomial),
            "poisson" => Some(Dist::Poisson),
            "Gamma" | "gamma" => Some(Dist::Gamma),
            "inverse.gaussian" | "inverse_gaussian" => Some(Dist::InverseGaussian),
            "negative.binomial" | "negative_binomial" => match param {
                Some(t) if t > 0.0 && t.is_finite() => Some(Dist::NegBinomial(t)),
                _ => None,
            },
            _ => None,
        }
    }
    pub fn canonical(self) -> Link {
        match self {
            Dist::Binomial => Link::Logit,
            Dist::Poisson | Dist::NegBinomial(_) => Link::Log,
            Dist::Gamma => Link::Inverse,
            Dist::InverseGaussian => Link::InverseSquare,
        }
    }
    /// Gamma and inverse Gaussian: the criterion is R's aic at the deviance-based dispersion.
    pub fn has_dispersion(self) -> bool {
        matches!(self, Dist::Gamma | Dist::InverseGaussian)
    }
    #[inline(always)]
    pub fn variance(self, mu: f64) -> f64 {
        match self {
            Dist::Binomial => (mu * (1.0 - mu)).max(EPS),
            Dist::Poisson => mu,
            Dist::Gamma => mu * mu,
            Dist::InverseGaussian => mu * mu * mu,
            Dist::NegBinomial(t) => mu + mu * mu / t,
        }
    }
    /// dV / dmu
    #[inline(always)]
    pub fn dvariance(self, mu: f64) -> f64 {
        match self {
            Dist::Binomial => 1.0 - 2.0 * mu,
            Dist::Poisson => 1.0,
            Dist::Gamma => 2.0 * mu,
            Dist::InverseGaussian => 3.0 * mu * mu,
            Dist::NegBinomial(t) => 1.0 + 2.0 * mu / t,
        }
    }
    /// Starting mean from the data (R's `family$initialize`), for a fresh PIRLS.
    pub(crate) fn mustart(self, y: f64, wt: f64) -> f64 {
        match self {
            Dist::Binomial => (wt * y + 0.5) / (wt + 1.0),
            Dist::Poisson => y + 0.1,
            Dist::Gamma | Dist::InverseGaussian => y,
            // MASS's negative.binomial()$initialize
            Dist::NegBinomial(_) => y + if y == 0.0 { 1.0 / 6.0 } else { 0.0 },
        }
    }
    /// y is in the family's support (positive for Gamma and inverse Gaussian).
    pub(crate) fn in_support(self, y: f64) -> bool {
        match self {
            Dist::Binomial => (0.0..=1.0).contains(&y),
            Dist::Poisson | Dist::NegBinomial(_) => y >= 0.0,
            Dist::Gamma | Dist::InverseGaussian => y > 0.0,
        }
    }
}

/// Standard normal distribution function.
#[inline]
pub(crate) fn pnorm(x: f64) -> f64 {
    0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

#[inline]
pub(crate) fn dnorm(x: f64) -> f64 {
    const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    INV_SQRT_2PI * (-0.5 * x * x).exp()
}

impl Link {
    pub fn from_name(s: &str) -> Option<Link> {
        match s {
            "logit" => Some(Link::Logit),
            "probit" => Some(Link::Probit),
            "cloglog" => Some(Link::Cloglog),
            "log" => Some(Link::Log),
            "identity" => Some(Link::Identity),
            "sqrt" => Some(Link::Sqrt),
            "inverse" => Some(Link::Inverse),
            "1/mu^2" => Some(Link::InverseSquare),
            _ => None,
        }
    }
    pub fn linkfun(self, mu: f64) -> f64 {
        match self {
            Link::Logit => (mu / (1.0 - mu)).ln(),
            Link::Probit => {
                // Newton on pnorm; only used for starting values
                let mut x = 0.0;
                for _ in 0..60 {
                    let d = dnorm(x).max(1e-300);
                    let step = (pnorm(x) - mu) / d;
                    x -= step;
                    if step.abs() < 1e-14 {
                        break;
                    }
                }
                x
            }
            Link::Cloglog => (-(-mu).ln_1p()).ln(),
            Link::Log => mu.ln(),
            Link::Identity => mu,
            Link::Sqrt => mu.sqrt(),
            Link::Inverse => 1.0 / mu,
            Link::InverseSquare => 1.0 / (mu * mu),
        }
    }
    #[inline(always)]
    pub fn linkinv(self, eta: f64) -> f64 {
        match self {
            Link::Logit => {
                let mu = if eta >= 0.0 {
                    1.0 / (1.0 + (-eta).exp())
                } else {
                    let e = eta.exp();
                    e / (1.0 + e)
                };
                mu.clamp(EPS, 1.0 - EPS)
            }
            // lme4 clamps the probit mean from above only
            Link::Probit => pnorm(eta).min(1.0 - EPS),
            Link::Cloglog => (-(-eta.exp()).exp_m1()).clamp(EPS, 1.0 - EPS),
            Link::Log => eta.exp().max(EPS),
            Link::Identity => eta,
            Link::Sqrt => eta * eta,
            Link::Inverse => 1.0 / eta,
            Link::InverseSquare => 1.0 / eta.sqrt(),
        }
    }
    #[inline(always)]
    pub fn mu_eta(self, eta: f64) -> f64 {
        match self {
            Link::Logit => {
                let e = (-eta.abs()).exp();
                (e / ((1.0 + e) * (1.0 + e))).max(EPS)
            }
            Link::Probit => dnorm(eta),
            Link::Cloglog => (eta - eta.exp()).exp().max(EPS),
            Link::Log => eta.exp().max(EPS),
            Link::Identity => 1.0,
            Link::Sqrt => 2.0 * eta,
            Link::Inverse => -1.0 / (eta * eta),
            Link::InverseSquare => -0.5 / (eta * eta.sqrt()),
        }
    }
    /// d^2 mu / d eta^2 (of the unclamped inverse link)
    #[inline(always)]
    pub fn mu_eta2(self, eta: f64) -> f64 {
        match self {
            Link::Logit => {
                let mu = 1.0 / (1.0 + (-eta).exp());
                mu * (1.0 - mu) * (1.0 - 2.0 * mu)
            }
            Link::Probit => -eta * dnorm(eta),
            Link::Cloglog => {
                let ee = eta.exp();
                (eta - ee).exp() * (1.0 - ee)
            }
            Link::Log => eta.exp(),
            Link::Identity => 0.0,
            Link::Sqrt => 2.0,
            Link::Inverse => 2.0 / (eta * eta * eta),
            Link::InverseSquare => 0.75 / (eta * eta * eta.sqrt()),
        }
    }
}

pub(crate) fn lfact(k: f64) -> f64 {
    libm::lgamma(k + 1.0)
}

fn xlogx(x: f64) -> f64 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

/// Per-row constants of the deviance residual and of -2 log p(y | mu) (R's `family$aic`
/// without the parameter term), so that a pass over the rows needs only log(mu),
/// log(1 - mu) and mu:
///
/// ```text
///   devres_i       = dc_i - 2 (dy_i log mu_i + dn_i log(1 - mu_i)) + 2 wt_i mu_i [Poisson]
///   -2 log p(y_i)  = ac_i - 2 (ay_i log mu_i + an_i log(1 - mu_i)) + 2 wt_i mu_i [Poisson]
/// ```
pub(crate) struct RowConsts {
    pub dc: Vec<f64>,
    pub dy: Vec<f64>,
    pub dn: Vec<f64>,
    pub ac: Vec<f64>,
    pub ay: Vec<f64>,
    pub an: Vec<f64>,
}

impl RowConsts {
    /// `ntrials`: binomial trials when they are not the weights (R's `n`), else None.
    pub(crate) fn new(dist: Dist, y: &[f64], wt: &[f64], ntrials: Option<&[f64]>) -> RowConsts {
        let n = y.len();
        let (mut dc, mut dy, mut dn) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let (mut ac, mut ay, mut an) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        match dist {
            Dist::Binomial => {
                let nt = ntrials.map(|v| v.to_vec());
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
            // The dispersion families' deviance is formed from y and mu directly (dy = y,
            // dn = w, dc = 0; see `GenericK::dev`): their criterion multiplies errors in the
            // total deviance D by about n / D (1 / phi), so the cancellation of a constant +
            // y / mu + log mu form (terms of size log y summing to D ~ n phi) would cost
            // digits; r - log1p(r), r = (y - mu) / mu, does not. Their -2 log p is not a sum
            // over rows (`dispersion_aic`): ac, ay, an repeat the deviance's (below) and the
            // criterion replaces the total.
            Dist::Gamma | Dist::InverseGaussian => {
                for i in 0..n {
                    dy[i] = y[i];
                    dn[i] = wt[i];
                }
            }
            Dist::NegBinomial(t) => {
                // 2 w (y log(y / mu) - (y + t) log((y + t) / (mu + t))) with lmu = log mu and
                // l1mu = log(mu + t) (`GenericK::row_f`); -2 log dnbinom(y; t, mu) is the
                // same terms in mu plus 2 w (log y! + lgamma(t) - lgamma(y + t) - t log t)
                for i in 0..n {
                    let (yi, wi) = (y[i], wt[i]);
                    let ypt = yi + t;
                    dc[i] = 2.0 * wi * (xlogx(yi) - ypt * ypt.ln());
                    dy[i] = wi * yi;
                    dn[i] = -wi * ypt;
                    ac[i] = 2.0 * wi * (lfact(yi) + libm::lgamma(t) - libm::lgamma(ypt) - t * t.ln());
                    ay[i] = dy[i];
                    an[i] = dn[i];
                }
            }
        }
        if dist.has_dispersion() {
            ac.copy_from_slice(&dc);
            ay.copy_from_slice(&dy);
            an.copy_from_slice(&dn);
        }
        RowConsts { dc, dy, dn, ac, ay, an }
    }
}

/// Per-row values of a family and link as the engine computes them (the conformance test
/// compares them with the Python families): the mean, d mu / d eta, the variance, the
/// deviance residuals, and -2 log p(y | mu) summed (R's `family$aic` without the parameter
/// term; binomial weights are the trials unless `ntrials` has some > 1).
#[derive(Clone, Debug)]
pub struct FamilyEval {
    pub mu: Vec<f64>,
    pub mu_eta: Vec<f64>,
    pub variance: Vec<f64>,
    pub dev_resids: Vec<f64>,
    pub aic: f64,
}

/// See [`FamilyEval`]. Uses the same kernels (and so the same clamps and fast exp/log)
/// as PIRLS.
pub fn family_eval(dist: Dist, link: Link, y: &[f64], eta: &[f64], wt: &[f64], ntrials: Option<&[f64]>) -> crate::error::CoreResult<FamilyEval> {
    use crate::error::CoreError as E;
    let n = y.len();
    E::check_len("eta", eta.len(), n)?;
    E::check_len("wt", wt.len(), n)?;
    if let Some(t) = ntrials {
        E::check_len("ntrials", t.len(), n)?;
    }
    for i in 0..n {
        if !(wt[i] >= 0.0 && wt[i].is_finite()) || !y[i].is_finite() || !eta[i].is_finite() {
            return Err(E::Data(format!("row {i}: y, eta and wt must be finite, wt non-negative")));
        }
        if !dist.in_support(y[i]) {
            return Err(E::Data(format!("row {i}: y = {} is outside the {dist:?} support", y[i])));
        }
    }
    let c = RowConsts::new(dist, y, wt, ntrials);
    struct DL {
        dist: Dist,
        link: Link,
    }
    let me = DL { dist, link };
    let mut out = FamilyEval { mu: vec![0.0; n], mu_eta: vec![0.0; n], variance: vec![0.0; n], dev_resids: vec![0.0; n], aic: 0.0 };
    with_kernel!(me, k => {
        for i in 0..n {
            let v = k.row(eta[i], y[i], wt[i]);
            out.mu[i] = v.mu;
            out.mu_eta[i] = link.mu_eta(eta[i]);
            out.variance[i] = dist.variance(v.mu);
            out.dev_resids[i] = c.dc[i] + k.dev(&v, c.dy[i], c.dn[i], wt[i]);
            let pois = if dist == Dist::Poisson { 2.0 * wt[i] * v.mu } else { 0.0 };
            out.aic += c.ac[i] - 2.0 * (c.ay[i] * v.lmu + c.an[i] * v.l1mu) + pois;
        }
    });
    let sumw: f64 = wt.iter().sum();
    let sumwlogy: f64 = y.iter().zip(wt).map(|(a, w)| if *w > 0.0 { w * a.ln() } else { 0.0 }).sum();
    if let Some(a) = dispersion_aic(dist, out.dev_resids.iter().sum(), sumw, sumwlogy) {
        out.aic = a;
    }
    Ok(out)
}

// ============================================================================================
// branch-free exp and log
// ============================================================================================

const INV_FACT: [f64; 14] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362880.0,
    1.0 / 3628800.0,
    1.0 / 39916800.0,
    1.0 / 479001600.0,
    1.0 / 6227020800.0,
];

/// a * b + c, fused when `F` (only instantiated with `F = true` inside functions compiled
/// with the FMA feature; elsewhere `mul_add` would be a slow library call).
#[inline(always)]
fn madd<const F: bool>(a: f64, b: f64, c: f64) -> f64 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^x with about 1 ulp error, no branches (so that loops calling it vectorise). Arguments
/// below -708 give e^-708 (PIRLS clamps such means anyway), above 709.78 infinity.
#[inline(always)]
pub fn exp_fast(x: f64) -> f64 {
    exp_f::<false>(x)
}

#[inline(always)]
fn exp_f<const F: bool>(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238_2e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    let xc = x.max(-708.0).min(709.0);
    let t = madd::<F>(xc, LOG2E, MAGIC);
    let nf = t - MAGIC;
    let r = madd::<F>(-nf, LN2_LO, madd::<F>(-nf, LN2_HI, xc)); // |r| <= ln(2) / 2
    // Taylor to degree 13 by Estrin's scheme (short dependency chains)
    let c = &INV_FACT;
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let q01 = madd::<F>(c[1], r, c[0]);
    let q23 = madd::<F>(c[3], r, c[2]);
    let q45 = madd::<F>(c[5], r, c[4]);
    let q67 = madd::<F>(c[7], r, c[6]);
    let q89 = madd::<F>(c[9], r, c[8]);
    let q1011 = madd::<F>(c[11], r, c[10]);
    let q1213 = madd::<F>(c[13], r, c[12]);
    let q03 = madd::<F>(q23, r2, q01);
    let q47 = madd::<F>(q67, r2, q45);
    let q811 = madd::<F>(q1011, r2, q89);
    let q07 = madd::<F>(q47, r4, q03);
    let q813 = madd::<F>(q1213, r4, q811);
    let p = madd::<F>(q813, r8, q07);
    // 2^n from the low bits of t
    let bits = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(1023) << 52;
    let v = p * f64::from_bits(bits);
    let v = if x > 709.78 { f64::INFINITY } else { v };
    if x.is_nan() {
        x
    } else {
        v
    }
}

/// ln(a) for a in [1, 2] with about 1 ulp error, no branches.
#[inline(always)]
pub fn ln_1_2(a: f64) -> f64 {
    ln12_f::<false>(a)
}

#[inline(always)]
fn ln12_f<const F: bool>(a: f64) -> f64 {
    const LN_2: f64 = std::f64::consts::LN_2;
    let big = a > std::f64::consts::SQRT_2;
    let m = if big { a * 0.5 } else { a };
    let f = m - 1.0; // exact; |f| <= 0.415
    let s = f / (2.0 + f); // ln(m) = 2 atanh(s), |s| <= 0.1716
    let z = s * s;
    // sum_{k=1..10} z^(k-1) / (2k + 1) by Estrin
    let z2 = z * z;
    let z4 = z2 * z2;
    let z8 = z4 * z4;
    let q01 = madd::<F>(1.0 / 5.0, z, 1.0 / 3.0);
    let q23 = madd::<F>(1.0 / 9.0, z, 1.0 / 7.0);
    let q45 = madd::<F>(1.0 / 13.0, z, 1.0 / 11.0);
    let q67 = madd::<F>(1.0 / 17.0, z, 1.0 / 15.0);
    let q89 = madd::<F>(1.0 / 21.0, z, 1.0 / 19.0);
    let q03 = madd::<F>(q23, z2, q01);
    let q47 = madd::<F>(q67, z2, q45);
    let q07 = madd::<F>(q47, z4, q03);
    let q = madd::<F>(q89, z8, q07);
    let two_s = 2.0 * s;
    let l = madd::<F>(two_s * z, q, two_s);
    if big {
        l + LN_2
    } else {
        l
    }
}

// ============================================================================================
// the per-row work
// ============================================================================================

/// What one row contributes at a given eta.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RowVal {
    pub mu: f64,
    /// IRLS weight wt * mu_eta^2 / V(mu)
    pub w: f64,
    /// the score in eta, wt * mu_eta * (y - mu) / V(mu) (= w r)
    pub wr: f64,
    /// working residual (y - mu) / mu_eta
    pub r: f64,
    /// log(mu) and log(1 - mu) (binomial; 0 for Poisson)
    pub lmu: f64,
    pub l1mu: f64,
}

/// Derivatives for the gradient of the Laplace criterion.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RowDeriv {
    /// IRLS (expected-information) weight
    pub w: f64,
    /// score wt * mu_eta (y - mu) / V
    pub wr: f64,
    /// observed information -d score / d eta
    pub wo: f64,
    /// d w / d eta
    pub wp: f64,
}

/// The per-row work of one family and link; monomorphised so that the canonical links
/// inline their special forms.
pub(crate) trait Kernel: Copy {
    /// the row's values; `F` selects fused multiply-adds (see `madd`)
    fn row_f<const F: bool>(&self, eta: f64, y: f64, wt: f64) -> RowVal;
    #[inline(always)]
    fn row(&self, eta: f64, y: f64, wt: f64) -> RowVal {
        self.row_f::<false>(eta, y, wt)
    }
    /// the deviance residual without its per-row constant: dev_i = dc_i + dev(...)
    fn dev(&self, v: &RowVal, dy: f64, dn: f64, wt: f64) -> f64;
    /// The size of the terms `dev` is formed from (sum of their absolute values): its
    /// rounding error is a few ulps of this, not of the result. For counts of 1e7 the
    /// terms 2 y log mu and 2 mu are ~1e9 while their sum with the row constant, the
    /// deviance residual, can be ~1; PIRLS compares penalised deviances only to this
    /// resolution (`pirls::pdev_noise`).
    fn dev_mag(&self, v: &RowVal, dy: f64, dn: f64, wt: f64) -> f64;
    fn deriv(&self, eta: f64, y: f64, wt: f64) -> RowDeriv;
    /// The same from the stored mean (canonical links need no transcendental function).
    #[inline(always)]
    fn deriv_mu(&self, eta: f64, _mu: f64, y: f64, wt: f64) -> RowDeriv {
        self.deriv(eta, y, wt)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct LogitK;
#[derive(Clone, Copy)]
pub(crate) struct PoissonLogK;
#[derive(Clone, Copy)]
pub(crate) struct GenericK {
    pub dist: Dist,
    pub link: Link,
}

impl Kernel for LogitK {
    #[inline(always)]
    fn row_f<const F: bool>(&self, eta: f64, y: f64, wt: f64) -> RowVal {
        let e = exp_f::<F>(-eta.abs());
        let onepe = 1.0 + e;
        let opi = 1.0 / onepe;
        // log(1 + e), with the rounding error of 1 + e added back (the log1p trick)
        let l1p = madd::<F>(e - (onepe - 1.0), opi, ln12_f::<F>(onepe));
        let pos = eta >= 0.0;
        let mu = if pos { opi } else { e * opi };
        let lmu = if pos { -l1p } else { eta - l1p };
        let l1mu = if pos { -eta - l1p } else { -l1p };
        let lo = mu < EPS;
        let hi = mu > 1.0 - EPS;
        let mu = if lo { EPS } else if hi { 1.0 - EPS } else { mu };
        let lmu = if lo { LN_EPS } else if hi { LN_1M_EPS } else { lmu };
        let l1mu = if lo { LN_1M_EPS } else if hi { LN_EPS } else { l1mu };
        let me_raw = e * opi * opi;
        let clamped = lo | hi | (me_raw < EPS);
        let mueta = me_raw.max(EPS);
        let res = y - mu;
        // unclamped, mu_eta = V(mu): w = wt mu_eta and the score is wt (y - mu); clamped,
        // lme4's V = max(eps, mu (1 - mu)) is eps
        let (w, wr) = if clamped {
            (wt * mueta * mueta * (1.0 / EPS), wt * mueta * res * (1.0 / EPS))
        } else {
            (wt * mueta, wt * res)
        };
        RowVal { mu, w, wr, r: res / mueta, lmu, l1mu }
    }
    #[inline(always)]
    fn dev(&self, v: &RowVal, dy: f64, dn: f64, _wt: f64) -> f64 {
        -2.0 * (dy * v.lmu + dn * v.l1mu)
    }
    #[inline(always)]
    fn dev_mag(&self, v: &RowVal, dy: f64, dn: f64, _wt: f64) -> f64 {
        2.0 * ((dy * v.lmu).abs() + (dn * v.l1mu).abs())
    }
    #[inline(always)]
    fn deriv(&self, eta: f64, y: f64, wt: f64) -> RowDeriv {
        let v = self.row(eta, y, wt);
        // canonical link: observed = expected information, w = wt mu (1 - mu)
        RowDeriv { w: v.w, wr: v.wr, wo: v.w, wp: v.w * (1.0 - 2.0 * v.mu) }
    }
    #[inline(always)]
    fn deriv_mu(&self, eta: f64, mu: f64, y: f64, wt: f64) -> RowDeriv {
        if !(mu > EPS && mu < 1.0 - EPS) {
            return self.deriv(eta, y, wt); // lme4's clamps
        }
        let w = wt * mu * (1.0 - mu);
        RowDeriv { w, wr: wt * (y - mu), wo: w, wp: w * (1.0 - 2.0 * mu) }
    }
}

impl Kernel for PoissonLogK {
    #[inline(always)]
    fn row_f<const F: bool>(&self, eta: f64, y: f64, wt: f64) -> RowVal {
        let m = exp_f::<F>(eta);
        let small = m < EPS;
        let mu = if small { EPS } else { m };
        let lmu = if small { LN_EPS } else { eta };
        let res = y - mu;
        RowVal { mu, w: wt * mu, wr: wt * res, r: res / mu, lmu, l1mu: 0.0 }
    }
    #[inline(always)]
    fn dev(&self, v: &RowVal, dy: f64, _dn: f64, wt: f64) -> f64 {
        -2.0 * dy * v.lmu + 2.0 * wt * v.mu
    }
    #[inline(always)]
    fn dev_mag(&self, v: &RowVal, dy: f64, _dn: f64, wt: f64) -> f64 {
        2.0 * ((dy * v.lmu).abs() + wt * v.mu)
    }
    #[inline(always)]
    fn deriv(&self, eta: f64, y: f64, wt: f64) -> RowDeriv {
        let v = self.row(eta, y, wt);
        RowDeriv { w: v.w, wr: v.wr, wo: v.w, wp: v.w }
    }
    #[inline(always)]
    fn deriv_mu(&self, eta: f64, mu: f64, y: f64, wt: f64) -> RowDeriv {
        if !(mu > EPS) {
            return self.deriv(eta, y, wt);
        }
        let w = wt * mu;
        RowDeriv { w, wr: wt * (y - mu), wo: w, wp: w }
    }
}

impl Kernel for GenericK {
    #[inline(always)]
    fn row_f<const F: bool>(&self, eta: f64, y: f64, wt: f64) -> RowVal {
        let mu = self.link.linkinv(eta);
        let mueta = self.link.mu_eta(eta);
        let iv = 1.0 / self.dist.variance(mu);
        let (lmu, l1mu) = match self.dist {
            Dist::Binomial => (mu.ln(), (-mu).ln_1p()),
            Dist::Poisson => (mu.ln(), 0.0),
            // the dispersion families' deviance uses mu itself (`dev`)
            Dist::Gamma | Dist::InverseGaussian => (0.0, 0.0),
            // lmu = log mu, l1mu = log(mu + theta) (see `RowConsts::new`)
            Dist::NegBinomial(t) => (mu.ln(), (mu + t).ln()),
        };
        let res = y - mu;
        RowVal { mu, w: wt * mueta * mueta * iv, wr: wt * mueta * res * iv, r: res / mueta, lmu, l1mu }
    }
    #[inline(always)]
    fn dev(&self, v: &RowVal, dy: f64, dn: f64, wt: f64) -> f64 {
        match self.dist {
            Dist::Binomial | Dist::NegBinomial(_) => -2.0 * (dy * v.lmu + dn * v.l1mu),
            Dist::Poisson => -2.0 * dy * v.lmu + 2.0 * wt * v.mu,
            // dy = y, dn = w; a non-positive mean (identity or inverse link) is outside the
            // family: NaN, so that PIRLS halves its step
            Dist::Gamma => {
                let r = (dy - v.mu) / v.mu;
                // log(y / mu): from r near 0 (where the deviance is second order in r), from
                // y / mu itself far from it (1 + r loses the digits of a ratio near 0)
                let l = if r.abs() < 0.5 { r.ln_1p() } else { (dy / v.mu).ln() };
                if v.mu > 0.0 {
                    2.0 * dn * (r - l)
                } else {
                    f64::NAN
                }
            }
            Dist::InverseGaussian => {
                let d = dy - v.mu;
                if v.mu > 0.0 {
                    dn * d * d / (dy * v.mu * v.mu)
                } else {
                    f64::NAN
                }
            }
        }
    }
    #[inline(always)]
    fn dev_mag(&self, v: &RowVal, dy: f64, dn: f64, wt: f64) -> f64 {
        match self.dist {
            Dist::Binomial | Dist::NegBinomial(_) => 2.0 * ((dy * v.lmu).abs() + (dn * v.l1mu).abs()),
            Dist::Poisson => 2.0 * ((dy * v.lmu).abs() + wt * v.mu),
            // formed from r = (y - mu) / mu directly: accurate relative to |r| (the result,
            // r - log1p(r) ~ r^2 / 2, is smaller, but its error is second order in r's)
            Dist::Gamma => 2.0 * dn * ((dy - v.mu) / v.mu).abs(),
            Dist::InverseGaussian => self.dev(v, dy, dn, wt).abs(),
        }
    }
    #[inline(always)]
    fn deriv(&self, eta: f64, y: f64, wt: f64) -> RowDeriv {
        let mu = self.link.linkinv(eta);
        let m1 = self.link.mu_eta(eta);
        let m2 = self.link.mu_eta2(eta);
        let var = self.dist.variance(mu);
        let dv = self.dist.dvariance(mu);
        let w = wt * m1 * m1 / var;
        // d(mu_eta / V) / d eta
        let dratio = m2 / var - m1 * m1 * dv / (var * var);
        RowDeriv {
            w,
            wr: wt * m1 * (y - mu) / var,
            wo: w - wt * (y - mu) * dratio,
            wp: wt * (2.0 * m1 * m2 / var - m1 * m1 * m1 * dv / (var * var)),
        }
    }
}

// ============================================================================================
// loops over rows, in chunks, with an AVX2 copy
// ============================================================================================

const CH: usize = 32;

#[inline(always)]
fn sum4(a: &[f64; CH]) -> [f64; 4] {
    let mut acc = [0.0; 4];
    for j in (0..CH).step_by(4) {
        acc[0] += a[j];
        acc[1] += a[j + 1];
        acc[2] += a[j + 2];
        acc[3] += a[j + 3];
    }
    acc
}

/// Rows of one group of the scalar engine at eta = offb + z * bu:
/// [sum of deviance residuals without constants, sum z w r, sum w z^2, the size of the
/// deviance's terms (`Kernel::dev_mag`) when `M`, else 0]. PIRLS needs the size only when
/// two penalised deviances are within 1e-12 of each other (`pirls::no_increase`), so the
/// usual pass leaves it out: on small binomial data it is a tenth of the row's work.
#[inline(always)]
fn group_pass_impl<K: Kernel, const F: bool, const M: bool>(k: &K, z: &[f64], offb: &[f64], y: &[f64], wt: &[f64], dy: &[f64], dn: &[f64], bu: f64) -> [f64; 4] {
    let n = z.len();
    let mut bd = [0.0f64; CH];
    let mut bs = [0.0f64; CH];
    let mut bh = [0.0f64; CH];
    let mut bm = [0.0f64; CH];
    let (mut ad, mut as_, mut ah, mut am) = ([0.0f64; 4], [0.0f64; 4], [0.0f64; 4], [0.0f64; 4]);
    let mut i0 = 0;
    while i0 < n {
        let m = (n - i0).min(CH);
        if m < CH {
            bd = [0.0; CH];
            bs = [0.0; CH];
            bh = [0.0; CH];
            bm = [0.0; CH];
        }
        let (zc, oc, yc, wc, dyc, dnc) =
            (&z[i0..i0 + m], &offb[i0..i0 + m], &y[i0..i0 + m], &wt[i0..i0 + m], &dy[i0..i0 + m], &dn[i0..i0 + m]);
        let (bdm, bsm, bhm, bmm) = (&mut bd[..m], &mut bs[..m], &mut bh[..m], &mut bm[..m]);
        for j in 0..m {
            let eta = madd::<F>(zc[j], bu, oc[j]);
            let v = k.row_f::<F>(eta, yc[j], wc[j]);
            bdm[j] = k.dev(&v, dyc[j], dnc[j], wc[j]);
            if M {
                bmm[j] = k.dev_mag(&v, dyc[j], dnc[j], wc[j]);
            }
            bsm[j] = v.wr * zc[j];
            bhm[j] = v.w * zc[j] * zc[j];
        }
        let (d4, s4, h4, m4) = (sum4(&bd), sum4(&bs), sum4(&bh), sum4(&bm));
        for q in 0..4 {
            ad[q] += d4[q];
            as_[q] += s4[q];
            ah[q] += h4[q];
            am[q] += m4[q];
        }
        i0 += m;
    }
    let s = |a: [f64; 4]| (a[0] + a[1]) + (a[2] + a[3]);
    [s(ad), s(as_), s(ah), s(am)]
}

/// Every row at the given eta: mean, IRLS weight and working response eta - base + r into
/// the outputs; returns [the sum of deviance residuals without constants, the size of the
/// deviance's terms (`Kernel::dev_mag`)].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fill_impl<K: Kernel, const F: bool>(
    k: &K,
    eta: &[f64],
    base: &[f64],
    y: &[f64],
    wt: &[f64],
    dy: &[f64],
    dn: &[f64],
    mu: &mut [f64],
    w: &mut [f64],
    wresp: &mut [f64],
) -> [f64; 2] {
    let n = eta.len();
    let mut bd = [0.0f64; CH];
    let mut bm = [0.0f64; CH];
    let (mut ad, mut am) = ([0.0f64; 4], [0.0f64; 4]);
    let mut i0 = 0;
    while i0 < n {
        let m = (n - i0).min(CH);
        if m < CH {
            bd = [0.0; CH];
            bm = [0.0; CH];
        }
        let r = i0..i0 + m;
        let (ec, bc, yc, wc, dyc, dnc) = (&eta[r.clone()], &base[r.clone()], &y[r.clone()], &wt[r.clone()], &dy[r.clone()], &dn[r.clone()]);
        let (muc, woc, wrc) = (&mut mu[r.clone()], &mut w[r.clone()], &mut wresp[r]);
        let (bdm, bmm) = (&mut bd[..m], &mut bm[..m]);
        for j in 0..m {
            let v = k.row_f::<F>(ec[j], yc[j], wc[j]);
            bdm[j] = k.dev(&v, dyc[j], dnc[j], wc[j]);
            bmm[j] = k.dev_mag(&v, dyc[j], dnc[j], wc[j]);
            muc[j] = v.mu;
            woc[j] = v.w;
            wrc[j] = ec[j] - bc[j] + v.r;
        }
        let (d4, m4) = (sum4(&bd), sum4(&bm));
        for q in 0..4 {
            ad[q] += d4[q];
            am[q] += m4[q];
        }
        i0 += m;
    }
    let s = |a: [f64; 4]| (a[0] + a[1]) + (a[2] + a[3]);
    [s(ad), s(am)]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_pass_avx2<K: Kernel, const M: bool>(k: &K, z: &[f64], offb: &[f64], y: &[f64], wt: &[f64], dy: &[f64], dn: &[f64], bu: f64) -> [f64; 4] {
    group_pass_impl::<K, true, M>(k, z, offb, y, wt, dy, dn, bu)
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_avx2<K: Kernel>(
    k: &K,
    eta: &[f64],
    base: &[f64],
    y: &[f64],
    wt: &[f64],
    dy: &[f64],
    dn: &[f64],
    mu: &mut [f64],
    w: &mut [f64],
    wresp: &mut [f64],
) -> [f64; 2] {
    fill_impl::<K, true>(k, eta, base, y, wt, dy, dn, mu, w, wresp)
}

/// Whether the AVX2 + FMA copies of the loops can run here.
pub(crate) fn have_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn group_pass<K: Kernel>(
    avx2: bool,
    k: &K,
    z: &[f64],
    offb: &[f64],
    y: &[f64],
    wt: &[f64],
    dy: &[f64],
    dn: &[f64],
    bu: f64,
    mag: bool,
) -> [f64; 4] {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: only called when the CPU has AVX2 (checked by have_avx2)
        return unsafe {
            if mag {
                group_pass_avx2::<K, true>(k, z, offb, y, wt, dy, dn, bu)
            } else {
                group_pass_avx2::<K, false>(k, z, offb, y, wt, dy, dn, bu)
            }
        };
    }
    let _ = avx2;
    if mag {
        group_pass_impl::<K, false, true>(k, z, offb, y, wt, dy, dn, bu)
    } else {
        group_pass_impl::<K, false, false>(k, z, offb, y, wt, dy, dn, bu)
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn fill<K: Kernel>(
    avx2: bool,
    k: &K,
    eta: &[f64],
    base: &[f64],
    y: &[f64],
    wt: &[f64],
    dy: &[f64],
    dn: &[f64],
    mu: &mut [f64],
    w: &mut [f64],
    wresp: &mut [f64],
) -> [f64; 2] {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: only called when the CPU has AVX2 (checked by have_avx2)
        return unsafe { fill_avx2(k, eta, base, y, wt, dy, dn, mu, w, wresp) };
    }
    let _ = avx2;
    fill_impl::<K, false>(k, eta, base, y, wt, dy, dn, mu, w, wresp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stirlerr_is_continuous_and_exact() {
        // both branches at the switch, and the series against lgamma where both are accurate
        let d = stirlerr(15.0) - (libm::lgamma(15.0) - (14.5 * 15f64.ln() - 15.0 + 0.5 * (2.0 * std::f64::consts::PI).ln()));
        assert!(d.abs() < 1e-14, "{d}");
        assert!((stirlerr(1.0) - (1.0 - 0.5 * (2.0 * std::f64::consts::PI).ln())).abs() < 1e-15);
        assert!((stirlerr(1e6) - 1.0 / 12e6).abs() < 1e-20);
    }

    #[test]
    fn exp_and_ln_are_accurate() {
        let mut worst: f64 = 0.0;
        let mut x = -745.0;
        while x < 709.0 {
            let (a, b) = (exp_fast(x), x.exp());
            if x > -708.0 {
                worst = worst.max(((a - b) / b).abs());
            }
            x += 0.0137;
        }
        assert!(worst < 6e-16, "exp: worst relative error {worst}");
        assert_eq!(exp_fast(800.0), f64::INFINITY);
        assert!(exp_fast(f64::NAN).is_nan());
        let mut worst: f64 = 0.0;
        let mut a = 1.0;
        while a <= 2.0 {
            let (u, v) = (ln_1_2(a), a.ln());
            worst = worst.max((u - v).abs() / v.abs().max(1e-300));
            a += 1.3e-4;
        }
        assert!(worst < 4e-16, "ln: worst relative error {worst}");
        // log(1 + e) for tiny e: absolute error at the rounding of 1 + e
        assert!((ln_1_2(1.0 + 1e-12) - 1e-12f64.ln_1p()).abs() < 2e-16);
    }

    #[test]
    fn kernels_agree_with_the_generic_formulas() {
        let g = GenericK { dist: Dist::Binomial, link: Link::Logit };
        let p = GenericK { dist: Dist::Poisson, link: Link::Log };
        for &eta in &[-40.0f64, -20.0, -3.3, -0.2, 0.0, 0.7, 5.0, 30.0, 40.0] {
            for &y in &[0.0, 1.0, 0.25] {
                if eta.abs() > 25.0 {
                    continue; // there log(mu) of the rounded mean (lme4, GenericK) loses digits
                }
                let (a, b) = (LogitK.row(eta, y, 2.0), g.row(eta, y, 2.0));
                for (u, v) in [(a.mu, b.mu), (a.w, b.w), (a.wr, b.wr), (a.lmu, b.lmu), (a.l1mu, b.l1mu)] {
                    // log(mu) of a mean near 1 is more accurate here than log of the rounded mean
                    assert!((u - v).abs() <= 1e-13 * v.abs() + 1e-15, "logit eta={eta}: {u} vs {v}");
                }
                let (da, db) = (LogitK.deriv(eta, y, 2.0), g.deriv(eta, y, 2.0));
                if eta.abs() < 30.0 {
                    for (u, v) in [(da.w, db.w), (da.wo, db.wo), (da.wp, db.wp)] {
                        // the generic observed information cancels to ~1e-16 absolute
                        assert!((u - v).abs() <= 1e-11 * v.abs() + 1e-13, "logit deriv eta={eta}: {u} vs {v}");
                    }
                }
            }
            if eta < 30.0 {
                let (a, b) = (PoissonLogK.row(eta, 3.0, 1.5), p.row(eta, 3.0, 1.5));
                for (u, v) in [(a.mu, b.mu), (a.w, b.w), (a.wr, b.wr), (a.lmu, b.lmu)] {
                    assert!((u - v).abs() <= 1e-13 * v.abs().max(1e-300), "poisson eta={eta}: {u} vs {v}");
                }
            }
        }
    }

    /// Random rows for `dist` (binomial proportions with trial weights, Bernoulli rows and
    /// Poisson counts, with y = 0 and y = 1 boundaries) and eta drawn from the bulk and from
    /// the extremes where the clamps of the inverse links act. `wide`: eta may reach the
    /// ends of exp's range (links whose mean is finite there).
    fn random_rows(g: &mut crate::testutil::Lcg, n: usize, dist: Dist, link: Link) -> [Vec<f64>; 6] {
        const EXTREME: [f64; 14] = [-800.0, -745.0, -708.5, -100.0, -40.0, -36.04, -20.0, 20.0, 36.04, 40.0, 100.0, 700.0, 708.5, 745.0];
        let (mut eta, mut y, mut wt, mut dy, mut dn, mut z) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let u = g.next();
            let mut e = if u < 0.3 { EXTREME[g.level(EXTREME.len()) as usize] } else { 12.0 * g.next() - 6.0 };
            match (dist, link) {
                // the mean must stay a valid Poisson mean (positive, finite)
                (Dist::Poisson, Link::Log) => e = e.min(700.0),
                (Dist::Poisson, _) => e = 0.05 + e.abs().min(40.0),
                _ => {}
            }
            let (yi, wi) = match dist {
                Dist::Binomial => {
                    if g.next() < 0.5 {
                        ((g.next() < 0.5) as u8 as f64, 1.0) // Bernoulli
                    } else {
                        let m = 1.0 + g.level(20) as f64;
                        let k = g.level(m as usize + 1) as f64; // 0..=m: boundaries included
                        (k / m, m)
                    }
                }
                Dist::Poisson | Dist::NegBinomial(_) => (g.level(12) as f64, 0.5 + 2.0 * g.next()),
                Dist::Gamma | Dist::InverseGaussian => (0.05 + 4.0 * g.next(), 0.5 + 2.0 * g.next()),
            };
            eta.push(e);
            y.push(yi);
            wt.push(wi);
            dy.push(wi * yi);
            dn.push(if dist == Dist::Binomial { wi * (1.0 - yi) } else { 0.0 });
            z.push(2.0 * g.next() - 1.0);
        }
        [eta, y, wt, dy, dn, z]
    }

    /// Largest |a - b| / max(|a|, |b|) over pairs (0 where both are equal, infinities
    /// included; a NaN on one side only counts as infinitely different).
    fn worst_rel(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(&u, &v)| {
                if u == v || (u.is_nan() && v.is_nan()) {
                    0.0
                } else if u.is_nan() || v.is_nan() || u.is_infinite() || v.is_infinite() {
                    f64::INFINITY
                } else {
                    (u - v).abs() / u.abs().max(v.abs())
                }
            })
            .fold(0.0, f64::max)
    }

    /// One kernel through both copies of the row loops at the same rows. Returns the worst
    /// relative differences, portable vs AVX2: [mu, w, working residual r, the deviance and
    /// magnitude sums of `fill`, the four sums of `group_pass` at eta = offb (bu = 0), the
    /// same at bu != 0].
    fn both_paths<K: Kernel>(k: &K, rows: &[Vec<f64>; 6]) -> [f64; 6] {
        let [eta, y, wt, dy, dn, z] = rows;
        let n = eta.len();
        let base = vec![0.0; n];
        let mut out = [[vec![0.0; n], vec![0.0; n], vec![0.0; n]], [vec![0.0; n], vec![0.0; n], vec![0.0; n]]];
        let mut dev = [[0.0; 2]; 2];
        let (mut gp0, mut gp1) = ([[0.0; 4]; 2], [[0.0; 4]; 2]);
        let bu = 0.37;
        let offb: Vec<f64> = eta.iter().zip(z.iter()).map(|(e, zi)| e - zi * bu).collect();
        for (j, avx) in [false, true].into_iter().enumerate() {
            let [mu, w, wr] = &mut out[j];
            dev[j] = fill(avx, k, eta, &base, y, wt, dy, dn, mu, w, wr);
            // bu = 0: eta = z * 0 + offb is exact with or without the fused multiply-add
            gp0[j] = group_pass(avx, k, z, eta, y, wt, dy, dn, 0.0, true);
            gp1[j] = group_pass(avx, k, z, &offb, y, wt, dy, dn, bu, true);
        }
        // the working response is eta - base + r: compare r itself
        let r: Vec<Vec<f64>> = (0..2).map(|j| out[j][2].iter().zip(eta.iter()).map(|(a, e)| a - e).collect()).collect();
        [
            worst_rel(&out[0][0], &out[1][0]),
            worst_rel(&out[0][1], &out[1][1]),
            worst_rel(&r[0], &r[1]),
            worst_rel(&dev[0], &dev[1]),
            worst_rel(&gp0[0], &gp0[1]),
            worst_rel(&gp1[0], &gp1[1]),
        ]
    }

    /// The AVX2 copies of `fill` and `group_pass` (compiled with FMA) against the portable
    /// ones, for every family/link the kernels serve, on the same random rows.
    ///
    /// * `GenericK` calls the library's exp/log/erfc, which do not depend on the target
    ///   features: its per-row values and sums are bitwise equal.
    /// * `LogitK` and `PoissonLogK` use the branch-free exp/log with fused multiply-adds in
    ///   the AVX2 copy: each fused step rounds once instead of twice, so the two agree to a
    ///   few ulp, asserted at 1e-15 relative (measured: at most 3.4e-16, for the working residual).
    /// * With bu != 0, eta = z * bu + offb is itself formed by a fused multiply-add, so
    ///   the two copies see linear predictors 1 ulp apart, and a kernel amplifies that by
    ///   its condition number |eta d log f / d eta| (the complementary log-log near the
    ///   upper clamp: ~e^eta ~ 40 at eta = 3.7). That is not a kernel difference; it is
    ///   checked at 1e-13 (measured: 2.3e-14 for cloglog, 3.6e-16 otherwise).
    #[test]
    fn avx2_and_portable_loops_agree() {
        let mut g = crate::testutil::Lcg(20261201);
        let combos = [
            (Dist::Binomial, Link::Logit),
            (Dist::Binomial, Link::Probit),
            (Dist::Binomial, Link::Cloglog),
            (Dist::Poisson, Link::Log),
            (Dist::Poisson, Link::Sqrt),
            (Dist::Poisson, Link::Identity),
        ];
        if !have_avx2() {
            // the dispatch then runs the portable copy twice: say so rather than pass quietly
            println!("avx2_and_portable_loops_agree: no AVX2 + FMA on this CPU; only the portable loops were checked");
        }
        for (dist, link) in combos {
            let rows = random_rows(&mut g, 1003, dist, link);
            let gen = both_paths(&GenericK { dist, link }, &rows);
            println!("{dist:?}/{link:?} generic: {gen:?}");
            assert_eq!(gen[..5], [0.0; 5], "{dist:?}/{link:?}: generic kernel not bitwise equal");
            assert!(gen[5] <= 1e-13, "{dist:?}/{link:?}: group_pass at bu != 0 differs by {}", gen[5]);
            let spec = match (dist, link) {
                (Dist::Binomial, Link::Logit) => Some(both_paths(&LogitK, &rows)),
                (Dist::Poisson, Link::Log) => Some(both_paths(&PoissonLogK, &rows)),
                _ => None,
            };
            if let Some(d) = spec {
                println!("{dist:?}/{link:?} special: {d:?}");
                for (what, v) in ["mu", "w", "r", "deviance", "group sums", "group sums (bu != 0)"].iter().zip(d) {
                    let tol = if *what == "group sums (bu != 0)" { 1e-13 } else { 1e-15 };
                    assert!(v <= tol, "{dist:?}/{link:?} special kernel: {what} differ by {v} (> {tol})");
                }
            }
        }
    }

    #[test]
    #[ignore]
    fn bench_group_pass() {
        let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        let reps = 5_000_000 / n;
        let z = vec![1.0; n];
        let offb: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 / 300.0 - 1.5).collect();
        let y: Vec<f64> = (0..n).map(|i| (i % 3 == 0) as u8 as f64).collect();
        let wt = vec![1.0; n];
        let dy = y.clone();
        let dn: Vec<f64> = y.iter().map(|v| 1.0 - v).collect();
        for avx in [false, true] {
            let t = std::time::Instant::now();
            let mut acc = 0.0;
            for r in 0..reps {
                acc += group_pass(avx, &LogitK, &z, &offb, &y, &wt, &dy, &dn, 0.01 * r as f64, false)[0];
            }
            println!("avx2={avx}: {:.2} ns/row ({acc})", t.elapsed().as_secs_f64() * 1e9 / (reps * n) as f64);
        }
        let mut eta = offb.clone();
        let (mut mu, mut w, mut wr) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for avx in [false, true] {
            let t = std::time::Instant::now();
            let mut acc = 0.0;
            for r in 0..reps {
                eta[0] = r as f64;
                acc += fill(avx, &LogitK, &eta, &offb, &y, &wt, &dy, &dn, &mut mu, &mut w, &mut wr)[0];
            }
            println!("fill avx2={avx}: {:.2} ns/row ({acc})", t.elapsed().as_secs_f64() * 1e9 / (reps * n) as f64);
        }
    }

    #[test]
    fn derivative_formulas_match_finite_differences() {
        for (dist, link) in [
            (Dist::Binomial, Link::Probit),
            (Dist::Binomial, Link::Cloglog),
            (Dist::Binomial, Link::Logit),
            (Dist::Poisson, Link::Log),
            (Dist::Poisson, Link::Sqrt),
        ] {
            let k = GenericK { dist, link };
            for &eta in &[-1.3, -0.2, 0.4, 1.1] {
                let eta = if link == Link::Sqrt { eta + 2.0 } else { eta };
                let y = if dist == Dist::Binomial { 1.0 } else { 2.0 };
                let d = k.deriv(eta, y, 1.7);
                let h = 1e-6;
                let (p, m) = (k.row(eta + h, y, 1.7), k.row(eta - h, y, 1.7));
                let wp = (p.w - m.w) / (2.0 * h);
                let wo = -(p.wr - m.wr) / (2.0 * h);
                assert!((wp - d.wp).abs() < 1e-6 * (1.0 + d.wp.abs()), "{dist:?}/{link:?} wp {wp} vs {}", d.wp);
                assert!((wo - d.wo).abs() < 1e-6 * (1.0 + d.wo.abs()), "{dist:?}/{link:?} wo {wo} vs {}", d.wo);
            }
        }
    }
}
