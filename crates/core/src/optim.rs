//! A bound-constrained quasi-Newton minimiser for smooth objectives with an exact gradient:
//! the optimiser of the covariance parameters, run inside the core so that an evaluation
//! costs no call into Python.
//!
//! Only lower bounds (an SD is >= 0; other parameters are free, `-inf`). The method is
//! Bertsekas' projected Newton (1982) with a BFGS model of the Hessian:
//!
//! * the eps-active set holds the coordinates within eps of their bound whose gradient points
//!   out of the feasible set (eps shrinks with the projected gradient); they take a scaled
//!   gradient step, the others a Newton step on the model restricted to them; the step is
//!   projected onto the bounds and backtracked (Armijo). This is what lets a variance reach 0
//!   exactly (a singular fit) instead of creeping towards it;
//! * the model starts as the Hessian by forward differences of the gradient (k gradients for
//!   k parameters; without it BFGS spends its first iterations learning the scales, which on
//!   a mixed model differ by orders of magnitude) and is updated by damped BFGS (Powell's
//!   damping keeps it positive definite where the objective is not convex);
//! * convergence is the Newton decrement g' B^-1 g / 2 over the free coordinates, the
//!   deviance a Newton step would still gain. When the BFGS model says converged, the
//!   Hessian is taken afresh by differences and the decrement recomputed with it: a stop
//!   short of the optimum (the BFGS model can be wrong on a flat ridge) is caught here and
//!   the iterations go on from the new model. So the point returned is a verified optimum to
//!   `dec_tol`, not the place where a trust region happened to shrink.
//!
//! Every evaluation is logged (point, value), in order.

/// Settings of [`minimize`].
#[derive(Clone, Debug)]
pub struct Options {
    /// the most evaluations (of value and gradient) in all
    pub maxeval: usize,
    /// stop when the Newton decrement (predicted gain of a Newton step) is below this
    pub dec_tol: f64,
    /// difference Hessians (start, final check) up to this many parameters; beyond, the BFGS
    /// model alone
    pub max_fd_dim: usize,
    /// how many times a converged BFGS model may be replaced by a difference Hessian that
    /// disagrees with it before the search gives up
    pub max_refresh: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { maxeval: 10_000, dec_tol: 1e-10, max_fd_dim: 50, max_refresh: 4 }
    }
}

/// Why [`minimize`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// the Newton decrement is below `dec_tol`
    Converged,
    /// `maxeval` evaluations
    MaxEval,
    /// no step along the (projected) Newton direction decreases the objective: the
    /// rounding floor of the objective, where the decrement is as small as the data can tell
    NoProgress,
    /// the objective or its gradient is not finite at the start
    NotFinite,
}

/// What [`minimize`] found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub x: Vec<f64>,
    pub f: f64,
    pub grad: Vec<f64>,
    /// the last Hessian model (k x k, column-major): a difference Hessian when the run ended
    /// with the final check, else BFGS's
    pub hess: Vec<f64>,
    /// predicted decrease of a Newton step at x over the free coordinates
    pub decrement: f64,
    pub nfev: usize,
    pub stop: Stop,
    /// every evaluation: (point, value)
    pub log: Vec<(Vec<f64>, f64)>,
}

/// The objective and its gradient with a count and a log of the evaluations.
struct Counted<F> {
    f: F,
    nfev: usize,
    log: Vec<(Vec<f64>, f64)>,
}

impl<F: FnMut(&[f64], &mut [f64]) -> f64> Counted<F> {
    fn eval(&mut self, x: &[f64], g: &mut [f64]) -> f64 {
        let v = (self.f)(x, g);
        self.nfev += 1;
        self.log.push((x.to_vec(), v));
        v
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Coordinates that are held at their bound: within `eps` of it with the gradient pointing
/// outwards.
fn held(x: &[f64], g: &[f64], lower: &[f64], eps: f64) -> Vec<bool> {
    x.iter().zip(g).zip(lower).map(|((&xi, &gi), &li)| li.is_finite() && xi - li <= eps && gi > 0.0).collect()
}

/// Solve B_FF d = -g_F (F the coordinates not held) by Cholesky, shifting the diagonal until
/// it factors; d_i = 0 elsewhere. Returns (d, g_F' B_FF^-1 g_F / 2).
fn newton_direction(b: &[f64], g: &[f64], hold: &[bool]) -> (Vec<f64>, f64) {
    let k = g.len();
    let free: Vec<usize> = (0..k).filter(|&i| !hold[i]).collect();
    let m = free.len();
    let mut d = vec![0.0; k];
    if m == 0 {
        return (d, 0.0);
    }
    let scale = free.iter().map(|&i| b[i + i * k].abs()).fold(0.0, f64::max).max(1e-300);
    let mut shift = 0.0;
    let mut l = vec![0.0; m * m];
    for _ in 0..60 {
        for (jj, &j) in free.iter().enumerate() {
            for (ii, &i) in free.iter().enumerate() {
                l[ii + jj * m] = b[i + j * k];
            }
            l[jj + jj * m] += shift;
        }
        if crate::small::chol_lower(&mut l, m) {
            let mut v: Vec<f64> = free.iter().map(|&i| -g[i]).collect();
            crate::small::solve_lower(&l, m, &mut v);
            let dec = 0.5 * dot(&v, &v);
            crate::small::solve_lower_t(&l, m, &mut v);
            for (ii, &i) in free.iter().enumerate() {
                d[i] = v[ii];
            }
            return (d, dec);
        }
        shift = if shift == 0.0 { 1e-10 * scale } else { shift * 10.0 };
    }
    (d, f64::INFINITY)
}

/// The symmetric `h` (k x k) with its eigenvalues replaced by their absolute values, at
/// least 1e-8 of the largest: far from the optimum a difference Hessian can be indefinite,
/// and BFGS updates of an indefinite model stay indefinite (s'Bs < 0 stops the updates and
/// the shifted model takes tiny steps). The absolute values keep the step's length along
/// directions of negative curvature (the "saddle-free" Newton step) instead of blowing it up.
/// At a minimum the Hessian is positive definite and comes back unchanged.
fn positive_definite(h: Vec<f64>, k: usize) -> Vec<f64> {
    let hm = faer::MatRef::from_column_major_slice(&h, k, k);
    let Ok(eig) = hm.self_adjoint_eigen(faer::Side::Lower) else {
        return h;
    };
    let s = eig.S().column_vector();
    let lmin = (0..k).map(|i| s[i]).fold(f64::INFINITY, f64::min);
    if lmin > 0.0 {
        return h;
    }
    let big = (0..k).map(|i| s[i].abs()).fold(0.0, f64::max).max(1e-300);
    let lam: Vec<f64> = (0..k).map(|i| s[i].abs().max(1e-8 * big)).collect();
    let u = eig.U();
    let mut out = vec![0.0; k * k];
    for j in 0..k {
        for i in 0..k {
            out[i + j * k] = (0..k).map(|q| u[(i, q)] * lam[q] * u[(j, q)]).sum();
        }
    }
    out
}

/// Minimise `f` (value; gradient into its second argument) from `x0` subject to
/// `x >= lower` (`-inf` for a free coordinate).
pub fn minimize<F>(f: F, x0: &[f64], lower: &[f64], opts: &Options) -> Outcome
where
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    let k = x0.len();
    assert_eq!(lower.len(), k, "one lower bound per parameter");
    let mut fun = Counted { f, nfev: 0, log: Vec::new() };
    let project = |x: &mut [f64]| {
        for (xi, &li) in x.iter_mut().zip(lower) {
            if *xi < li {
                *xi = li;
            }
        }
    };
    let mut x = x0.to_vec();
    project(&mut x);
    let mut g = vec![0.0; k];
    let mut fx = fun.eval(&x, &mut g);
    let finish = |x, fx, g, hess, decrement, stop, fun: Counted<F>| Outcome {
        x,
        f: fx,
        grad: g,
        hess,
        decrement,
        nfev: fun.nfev,
        stop,
        log: fun.log,
    };
    if !fx.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return finish(x, fx, g, vec![0.0; k * k], f64::INFINITY, Stop::NotFinite, fun);
    }
    if k == 0 {
        return finish(x, fx, g, Vec::new(), 0.0, Stop::Converged, fun);
    }
    let use_fd = k <= opts.max_fd_dim;
    // the Hessian by forward differences of the gradient (forward: never across a bound)
    let fd_hessian = |x: &[f64], g: &[f64], fun: &mut Counted<F>| -> Option<Vec<f64>> {
        let mut h = vec![0.0; k * k];
        let mut gp = vec![0.0; k];
        let mut xp = x.to_vec();
        for j in 0..k {
            let step = 1e-5 * x[j].abs().max(0.1);
            xp[j] = x[j] + step;
            let fp = fun.eval(&xp, &mut gp);
            xp[j] = x[j];
            if !fp.is_finite() || gp.iter().any(|v| !v.is_finite()) {
                return None;
            }
            for i in 0..k {
                h[i + j * k] = (gp[i] - g[i]) / step;
            }
        }
        for j in 0..k {
            for i in 0..j {
                let v = 0.5 * (h[i + j * k] + h[j + i * k]);
                h[i + j * k] = v;
                h[j + i * k] = v;
            }
        }
        Some(positive_definite(h, k))
    };
    let identity = |scale: f64| {
        let mut b = vec![0.0; k * k];
        for i in 0..k {
            b[i + i * k] = scale;
        }
        b
    };
    let gnorm = dot(&g, &g).sqrt();
    let b0 = if use_fd { fd_hessian(&x, &g, &mut fun) } else { None };
    let mut fresh = b0.is_some(); // b is a difference Hessian at x (not a BFGS model)
    let mut scale_first = b0.is_none();
    let mut b = b0.unwrap_or_else(|| identity((gnorm / 0.5).max(1e-8)));
    let mut refreshes = 0;
    // trust radius of the Newton steps (Euclidean, in the parameters' own units: relative
    // SDs and correlation-like entries of Lambda, of order 1)
    let mut radius = 1.0_f64.max(0.5 * dot(&x, &x).sqrt());
    let mut gn = vec![0.0; k];
    loop {
        if fun.nfev >= opts.maxeval {
            let hold = held(&x, &g, lower, 0.0);
            let (_, dec) = newton_direction(&b, &g, &hold);
            return finish(x, fx, g, b, dec, Stop::MaxEval, fun);
        }
        // Bertsekas' eps-active set, eps shrinking with the projected gradient
        let pg: f64 = (0..k)
            .map(|i| {
                let xi = (x[i] - g[i]).max(lower[i]);
                (x[i] - xi) * (x[i] - xi)
            })
            .sum::<f64>()
            .sqrt();
        let eps = pg.min(1e-3);
        let hold = held(&x, &g, lower, eps);
        let (mut d, dec) = newton_direction(&b, &g, &hold);
        // held coordinates: a gradient step scaled by the model's curvature
        for i in 0..k {
            if hold[i] {
                d[i] = -g[i] / b[i + i * k].abs().max(1e-12);
            }
        }
        let at_bound = held(&x, &g, lower, 0.0);
        let stuck_on_bounds = (0..k).all(|i| at_bound[i] || !hold[i]);
        if dec <= opts.dec_tol && stuck_on_bounds {
            if fresh || !use_fd || refreshes >= opts.max_refresh {
                // one last Newton step on the model (the polish: quadratic convergence makes
                // the remaining gain negligible), kept if it lowers the objective
                let mut dec_left = dec;
                if dec > 0.0 && fun.nfev < opts.maxeval {
                    let mut xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + b).collect();
                    project(&mut xn);
                    if xn != x {
                        let fnew = fun.eval(&xn, &mut gn);
                        if fnew.is_finite() && fnew < fx && gn.iter().all(|v| v.is_finite()) {
                            dec_left = (dec - (fx - fnew)).max(0.0);
                            x = xn;
                            fx = fnew;
                            g.copy_from_slice(&gn);
                        }
                    }
                }
                return finish(x, fx, g, b, dec_left, Stop::Converged, fun);
            }
            // the BFGS model says converged: check with a difference Hessian
            match fd_hessian(&x, &g, &mut fun) {
                Some(h) => {
                    b = h;
                    fresh = true;
                    refreshes += 1;
                    continue;
                }
                None => return finish(x, fx, g, b, dec, Stop::Converged, fun),
            }
        }
        // a step no longer than the trust radius: far from the optimum the model's Newton
        // step can be long (an indefinite start made positive definite), and projecting a
        // long step sends every SD it decreases onto its bound at once
        let dn = dot(&d, &d).sqrt();
        if dn > radius {
            d.iter_mut().for_each(|v| *v *= radius / dn);
        }
        // projected backtracking search, the step length from a quadratic through f(0),
        // f'(0) and the rejected value (kept within [0.1, 0.5] of the last)
        let mut alpha = 1.0;
        let mut accepted = None;
        let mut xn = vec![0.0; k];
        for _ in 0..40 {
            for i in 0..k {
                xn[i] = x[i] + alpha * d[i];
            }
            project(&mut xn);
            if xn == x {
                break; // the step no longer moves x: nothing left to gain along d
            }
            let slope: f64 = (0..k).map(|i| g[i] * (xn[i] - x[i])).sum();
            let fnew = fun.eval(&xn, &mut gn);
            // Armijo on the projected path (its slope is negative by Bertsekas' choice of
            // the held set; the plain decrease guards the rounding floor)
            if fnew.is_finite() && gn.iter().all(|v| v.is_finite()) && fnew <= fx + 1e-4 * slope.min(0.0) && fnew < fx {
                accepted = Some((fnew, alpha));
                break;
            }
            if fun.nfev >= opts.maxeval {
                break;
            }
            // slope / alpha: the directional derivative per unit alpha (of the projected path)
            let next = if fnew.is_finite() && slope < 0.0 {
                let s1 = slope / alpha;
                let curv = fnew - fx - s1 * alpha;
                if curv > 0.0 { -s1 * alpha * alpha / (2.0 * curv) } else { 0.5 * alpha }
            } else {
                0.25 * alpha
            };
            alpha = next.clamp(0.1 * alpha, 0.5 * alpha);
        }
        let accepted = accepted.map(|(fnew, alpha)| {
            // the radius follows the steps: doubled after a full step that reached it,
            // the step taken after a shortened one
            let len = alpha * dot(&d, &d).sqrt();
            if alpha == 1.0 {
                if len >= 0.99 * radius {
                    radius *= 2.0;
                }
            } else {
                radius = len.max(1e-8);
            }
            fnew
        });
        let Some(fnew) = accepted else {
            if fun.nfev >= opts.maxeval {
                continue; // reports MaxEval
            }
            if !fresh && use_fd && refreshes < opts.max_refresh {
                // the BFGS model may be what fails: retry with a difference Hessian
                if let Some(h) = fd_hessian(&x, &g, &mut fun) {
                    b = h;
                    fresh = true;
                    refreshes += 1;
                    continue;
                }
            }
            let hold0 = held(&x, &g, lower, 0.0);
            let (_, dec0) = newton_direction(&b, &g, &hold0);
            return finish(x, fx, g, b, dec0, Stop::NoProgress, fun);
        };
        // damped BFGS update of the model
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if scale_first && sy > 0.0 {
            b = identity(dot(&y, &y) / sy);
            scale_first = false;
        }
        let bs: Vec<f64> = (0..k).map(|i| (0..k).map(|j| b[i + j * k] * s[j]).sum()).collect();
        let sbs = dot(&s, &bs);
        if sbs > 0.0 && sbs.is_finite() {
            let (yv, sr) = if sy >= 0.2 * sbs {
                (y, sy)
            } else {
                let th = 0.8 * sbs / (sbs - sy);
                let r: Vec<f64> = y.iter().zip(&bs).map(|(yi, bi)| th * yi + (1.0 - th) * bi).collect();
                let sr = dot(&s, &r);
                (r, sr)
            };
            if sr > 0.0 {
                for j in 0..k {
                    for i in 0..k {
                        b[i + j * k] += yv[i] * yv[j] / sr - bs[i] * bs[j] / sbs;
                    }
                }
            }
        }
        x.copy_from_slice(&xn);
        g.copy_from_slice(&gn);
        fx = fnew;
        fresh = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        let (a, b) = (x[0], x[1]);
        g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
        g[1] = 200.0 * (b - a * a);
        (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
    }

    #[test]
    fn unconstrained_rosenbrock_reaches_the_minimum() {
        let out = minimize(rosenbrock, &[-1.2, 1.0], &[f64::NEG_INFINITY; 2], &Options::default());
        assert_eq!(out.stop, Stop::Converged);
        assert!((out.x[0] - 1.0).abs() < 1e-7 && (out.x[1] - 1.0).abs() < 1e-7, "{:?}", out.x);
        assert!(out.f < 1e-14);
        assert_eq!(out.log.len(), out.nfev);
        // the log's best value is the answer
        let best = out.log.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
        assert_eq!(best, out.f);
    }

    #[test]
    fn bound_is_reached_exactly_when_the_minimum_lies_beyond_it() {
        // min of (x0 + 1)^2 + (x1 - 2)^2 + x0 x1 / 2 over x0 >= 0: x0 = 0 exactly, x1 = 2
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = 2.0 * (x[0] + 1.0) + 0.5 * x[1];
            g[1] = 2.0 * (x[1] - 2.0) + 0.5 * x[0];
            (x[0] + 1.0).powi(2) + (x[1] - 2.0).powi(2) + 0.5 * x[0] * x[1]
        };
        let out = minimize(f, &[3.0, -1.0], &[0.0, f64::NEG_INFINITY], &Options::default());
        assert_eq!(out.stop, Stop::Converged);
        assert_eq!(out.x[0], 0.0);
        assert!((out.x[1] - 2.0).abs() < 1e-8);
        assert!(out.decrement <= 1e-10);
    }

    #[test]
    fn interior_minimum_next_to_a_bound_is_not_taken_for_the_bound() {
        // minimum at x = (1e-3, 0.5): close to the bound but inside it
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = 2e4 * (x[0] - 1e-3);
            g[1] = 2.0 * (x[1] - 0.5);
            1e4 * (x[0] - 1e-3).powi(2) + (x[1] - 0.5).powi(2)
        };
        let out = minimize(f, &[1.0, 0.0], &[0.0, 0.0], &Options::default());
        assert_eq!(out.stop, Stop::Converged);
        assert!((out.x[0] - 1e-3).abs() < 1e-9 && (out.x[1] - 0.5).abs() < 1e-9, "{:?}", out.x);
    }

    #[test]
    fn without_difference_hessians_bfgs_still_converges() {
        let opts = Options { max_fd_dim: 0, ..Options::default() };
        let out = minimize(rosenbrock, &[-1.2, 1.0], &[f64::NEG_INFINITY; 2], &opts);
        assert_eq!(out.stop, Stop::Converged);
        assert!((out.x[0] - 1.0).abs() < 1e-5, "{:?}", out.x);
    }

    #[test]
    fn maxeval_is_respected_and_reported() {
        let opts = Options { maxeval: 7, ..Options::default() };
        let out = minimize(rosenbrock, &[-1.2, 1.0], &[f64::NEG_INFINITY; 2], &opts);
        assert_eq!(out.stop, Stop::MaxEval);
        assert!(out.nfev <= 7 && out.log.len() == out.nfev);
    }

    #[test]
    fn non_finite_start_is_reported() {
        let f = |_: &[f64], g: &mut [f64]| {
            g[0] = 0.0;
            f64::INFINITY
        };
        let out = minimize(f, &[1.0], &[0.0], &Options::default());
        assert_eq!(out.stop, Stop::NotFinite);
    }
}
