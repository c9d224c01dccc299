//! Tests of the GLMM engine against brute-force dense formulas.


use super::*;
use super::kernel::lfact;

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
            Dist::Poisson | Dist::NegBinomial(_) => (g.next() * 5.0).floor(),
            Dist::Gamma | Dist::InverseGaussian => 0.2 + 3.0 * g.next(),
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
            Dist::NegBinomial(t) => {
                let lp = libm::lgamma(y + t) - libm::lgamma(t) - lfact(y) + t * t.ln() + y * mu.ln() - (y + t) * (mu + t).ln();
                -2.0 * lp
            }
            // the dispersion families' penalised criterion is the deviance (no constants)
            Dist::Gamma => 2.0 * ((mu / y).ln() + y / mu - 1.0),
            Dist::InverseGaussian => (y - mu) * (y - mu) / (y * mu * mu),
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
        assert!(crate::small::chol_lower(&mut l, q));
        let mut step = grad.clone();
        crate::small::solve_lower(&l, q, &mut step);
        crate::small::solve_lower_t(&l, q, &mut step);
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
    assert!(crate::small::chol_lower(&mut l, q));
    let ld: f64 = 2.0 * (0..q).map(|j| l[j + j * q].ln()).sum::<f64>();
    let (pd, _) = penalised(pb, dist, link, theta, beta, &u);
    (pd + ld, u)
}

/// The dispersion families' criterion is R's aic at phi = D / n, not the deviance D that
/// `penalised` (and so `brute_laplace`) adds: the difference aic(D) - D, with the aic formed
/// row by row as R's Gamma()$aic / inverse.gaussian()$aic do.
fn dispersion_aic_direct(pb: &Problem, dist: Dist, link: Link, theta: &[f64], beta: &[f64], u: &[f64]) -> f64 {
    let (pd, eta) = penalised(pb, dist, link, theta, beta, u);
    let dev = pd - u.iter().map(|a| a * a).sum::<f64>();
    let n = pb.y.len() as f64;
    let phi = dev / n;
    let mut aic = 2.0;
    for (i, &y) in pb.y.iter().enumerate() {
        let mu = link.linkinv(eta[i]);
        aic += match dist {
            Dist::Gamma => {
                let (a, sc) = (1.0 / phi, mu * phi);
                -2.0 * (-libm::lgamma(a) - a * sc.ln() + (a - 1.0) * y.ln() - y / sc)
            }
            Dist::InverseGaussian => (2.0 * std::f64::consts::PI * phi).ln() + 1.0 + 3.0 * y.ln(),
            _ => unreachable!(),
        };
    }
    aic - dev
}

fn check_laplace(pb: &Problem, dist: Dist, link: Link, thetas: &[Vec<f64>]) {
    let mut m = Glmm::new(pb.terms.clone(), pb.p, &rows(pb), dist, link).unwrap();
    for theta in thetas {
        for beta in [[-0.3, 0.5], [0.2, -1.0]] {
            let got = m.try_laplace(theta, &beta).unwrap();
            let (mut want, u) = brute_laplace(pb, dist, link, theta, &beta);
            if dist.has_dispersion() {
                want += dispersion_aic_direct(pb, dist, link, theta, &beta, &u);
            }
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
    for (dist, link) in [
        (Dist::Binomial, Link::Logit),
        (Dist::Binomial, Link::Probit),
        (Dist::Poisson, Link::Log),
        (Dist::NegBinomial(1.7), Link::Log),
        (Dist::Gamma, Link::Log),
    ] {
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
        [(Dist::Binomial, Link::Logit), (Dist::Binomial, Link::Cloglog), (Dist::Binomial, Link::Probit), (Dist::Poisson, Link::Log),
         (Dist::NegBinomial(2.5), Link::Log), (Dist::Gamma, Link::Log), (Dist::InverseGaussian, Link::Log)]
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
    b.solver = Solver::General { u: None, ub: None };
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
        assert!(matches!(m.solver, Solver::Crossed { .. }));
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
            let cr = std::mem::replace(&mut m.solver, Solver::General { u: None, ub: None });
            let cv2 = m.condvar(&x[..3]).unwrap();
            let rx2 = m.rx(&x[..3]).unwrap();
            m.solver = cr;
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
        b.solver = Solver::General { u: None, ub: None };
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
    b.solver = Solver::General { u: None, ub: None };
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
