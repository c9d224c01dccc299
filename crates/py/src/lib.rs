//! Thin PyO3 wrapper around multilevel-core. Arrays cross the boundary without copies where
//! numpy's layout allows; the GIL is released while the core computes.

mod error;

use error::{core_err, data_err, fit_err, spec_err};
use multilevel_core::glmm::{self, Dist, Glmm, GlmmRows, Link};
use multilevel_core::lmm::{Layout, Lmm, Rows, Term};
use multilevel_core::cells::CellMoments;
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The rows of a model, kept alive on the Python side so that the response or the weights
/// can be replaced later without passing X and Z again.
#[pyclass(module = "multilevel._core")]
struct LmmCore {
    inner: Lmm,
    refs: Vec<Py<numpy::PyArray1<u32>>>,
    z: Vec<Py<numpy::PyArray2<f64>>>,
    x: Py<numpy::PyArray2<f64>>,
}

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'a, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| data_err(format!("{what} must be C-contiguous")))
}

fn slice2<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'a, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| data_err(format!("{what} must be C-contiguous")))
}

/// Borrow the kept arrays as `Rows` with a new response (and weights) and run `f` on them.
fn with_rows<R>(
    py: Python<'_>,
    refs: &[Py<numpy::PyArray1<u32>>],
    z: &[Py<numpy::PyArray2<f64>>],
    x: &Py<numpy::PyArray2<f64>>,
    y: &[f64],
    w: Option<&[f64]>,
    f: impl FnOnce(&Rows) -> R,
) -> PyResult<R> {
    let refs: Vec<PyReadonlyArray1<u32>> = refs.iter().map(|a| a.bind(py).readonly()).collect();
    let zs: Vec<PyReadonlyArray2<f64>> = z.iter().map(|a| a.bind(py).readonly()).collect();
    let x = x.bind(py).readonly();
    let refs_s = refs.iter().map(|a| slice(a, "refs")).collect::<PyResult<Vec<_>>>()?;
    let z_s = zs.iter().map(|a| slice2(a, "Z")).collect::<PyResult<Vec<_>>>()?;
    let rows = Rows { refs: refs_s, z: z_s, x: slice2(&x, "X")?, y, w };
    Ok(f(&rows))
}

/// theta as a vector, long enough for the model's terms (the core indexes it unchecked).
fn lmm_theta(m: &Lmm, theta: &PyReadonlyArray1<'_, f64>) -> PyResult<Vec<f64>> {
    let th = slice(theta, "theta")?;
    if th.len() < m.n_theta() {
        return Err(data_err(format!("theta has {} values, the terms need {}", th.len(), m.n_theta())));
    }
    Ok(th.to_vec())
}

#[pymethods]
impl LmmCore {
    /// LmmCore(refs, z, nlev, lambdas, x, y, w=None, layout="auto")
    ///
    /// refs: list of uint32 arrays (n,); z: list of float64 arrays (n, s_k); nlev: levels per
    /// term; lambdas: per term a list of (row, col, theta_index) for the nonzeros of Lambda;
    /// x: (n, p); y: (n,); w: prior weights (n,) or None. Term 0 should have the most levels.
    /// layout: how the block of the later terms, X and y is held: "auto" (chosen from the
    /// pattern), "dense" or "sparse" (the tests compare them).
    #[new]
    #[pyo3(signature = (refs, z, nlev, lambdas, x, y, w=None, layout="auto"))]
    fn new(
        py: Python<'_>,
        refs: Vec<Bound<'_, numpy::PyArray1<u32>>>,
        z: Vec<Bound<'_, numpy::PyArray2<f64>>>,
        nlev: Vec<usize>,
        lambdas: Vec<Vec<(usize, usize, usize)>>,
        x: Bound<'_, numpy::PyArray2<f64>>,
        y: PyReadonlyArray1<'_, f64>,
        w: Option<PyReadonlyArray1<'_, f64>>,
        layout: &str,
    ) -> PyResult<Self> {
        if refs.len() != z.len() || refs.len() != nlev.len() || refs.len() != lambdas.len() {
            return Err(data_err("refs, z, nlev and lambdas must have one entry per term"));
        }
        let layout = match layout {
            "auto" => Layout::Auto,
            "dense" => Layout::Dense,
            "sparse" => Layout::Sparse,
            other => return Err(spec_err(format!("layout must be \"auto\", \"dense\" or \"sparse\", not {other:?}"))),
        };
        let terms: Vec<Term> = (0..refs.len())
            .map(|k| Term { nlev: nlev[k], s: z[k].shape()[1], lambda: lambdas[k].clone() })
            .collect();
        let p = x.shape()[1];
        let ro_refs: Vec<PyReadonlyArray1<u32>> = refs.iter().map(|a| a.readonly()).collect();
        let ro_z: Vec<PyReadonlyArray2<f64>> = z.iter().map(|a| a.readonly()).collect();
        let ro_x = x.readonly();
        let refs_s = ro_refs.iter().map(|a| slice(a, "refs")).collect::<PyResult<Vec<_>>>()?;
        let z_s = ro_z.iter().map(|a| slice2(a, "Z")).collect::<PyResult<Vec<_>>>()?;
        let ys = slice(&y, "y")?;
        let ws = match &w {
            Some(a) => Some(slice(a, "w")?),
            None => None,
        };
        let rows = Rows { refs: refs_s, z: z_s, x: slice2(&ro_x, "X")?, y: ys, w: ws };
        let inner = py.detach(|| Lmm::with_layout(terms, p, &rows, layout)).map_err(core_err)?;
        Ok(LmmCore {
            inner,
            refs: refs.into_iter().map(|a| a.unbind()).collect(),
            z: z.into_iter().map(|a| a.unbind()).collect(),
            x: x.unbind(),
        })
    }

    /// Profiled deviance (reml=False) or REML criterion at theta (without the weights term).
    fn objective(&mut self, py: Python<'_>, theta: PyReadonlyArray1<'_, f64>, reml: bool) -> PyResult<f64> {
        let th = lmm_theta(&self.inner, &theta)?;
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.objective(&th, reml)))
    }

    /// (objective, gradient in theta) at theta: the analytic gradient from the blocked factor.
    fn objective_gradient<'py>(&mut self, py: Python<'py>, theta: PyReadonlyArray1<'_, f64>, reml: bool) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
        let th = lmm_theta(&self.inner, &theta)?;
        let k = self.inner.n_theta();
        let inner = &mut self.inner;
        let mut g = vec![0.0; k];
        let f = py.detach(|| inner.objective_gradient(&th[..k], reml, &mut g));
        Ok((f, PyArray1::from_vec(py, g)))
    }

    /// Minimise the criterion over theta >= lower from theta0 inside the core (projected
    /// BFGS on the analytic gradient, difference-Hessian checks); a dict with theta, fun,
    /// grad, hess (k * k, column-major), decrement, feval, stop ("converged", "maxeval",
    /// "no_progress", "not_finite") and the log: log_theta (feval * k, row-major), log_fun.
    #[pyo3(signature = (theta0, lower, reml, maxeval=10_000, dec_tol=1e-10))]
    fn optimize<'py>(
        &mut self,
        py: Python<'py>,
        theta0: PyReadonlyArray1<'_, f64>,
        lower: PyReadonlyArray1<'_, f64>,
        reml: bool,
        maxeval: usize,
        dec_tol: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let th0 = slice(&theta0, "theta0")?.to_vec();
        let lo = slice(&lower, "lower")?.to_vec();
        let opts = multilevel_core::optim::Options { maxeval, dec_tol, ..Default::default() };
        let inner = &mut self.inner;
        let out = py.detach(|| inner.optimize(&th0, &lo, reml, &opts)).map_err(core_err)?;
        let stop = match out.stop {
            multilevel_core::optim::Stop::Converged => "converged",
            multilevel_core::optim::Stop::MaxEval => "maxeval",
            multilevel_core::optim::Stop::NoProgress => "no_progress",
            multilevel_core::optim::Stop::NotFinite => "not_finite",
        };
        let mut log_theta = Vec::with_capacity(out.log.len() * th0.len());
        let mut log_fun = Vec::with_capacity(out.log.len());
        for (t, v) in &out.log {
            log_theta.extend_from_slice(t);
            log_fun.push(*v);
        }
        let d = PyDict::new(py);
        d.set_item("theta", PyArray1::from_vec(py, out.x))?;
        d.set_item("fun", out.f)?;
        d.set_item("grad", PyArray1::from_vec(py, out.grad))?;
        d.set_item("hess", PyArray1::from_vec(py, out.hess))?;
        d.set_item("decrement", out.decrement)?;
        d.set_item("feval", out.nfev)?;
        d.set_item("stop", stop)?;
        d.set_item("log_theta", PyArray1::from_vec(py, log_theta))?;
        d.set_item("log_fun", PyArray1::from_vec(py, log_fun))?;
        Ok(d)
    }

    /// Estimates at theta as a dict: objective, beta, u, b (lists per term), pwrss, ldl2,
    /// ldrx2, rx (p x p lower, column-major flattened).
    fn solution<'py>(&mut self, py: Python<'py>, theta: PyReadonlyArray1<'_, f64>, reml: bool) -> PyResult<Bound<'py, PyDict>> {
        let th = lmm_theta(&self.inner, &theta)?;
        let inner = &mut self.inner;
        let sol = py
            .detach(|| inner.solution(&th, reml))
            .ok_or_else(|| fit_err("the fixed-effects block is not positive definite"))?;
        let d = PyDict::new(py);
        d.set_item("objective", sol.objective)?;
        d.set_item("beta", PyArray1::from_vec(py, sol.beta))?;
        d.set_item("u", sol.u.into_iter().map(|v| PyArray1::from_vec(py, v)).collect::<Vec<_>>())?;
        d.set_item("b", sol.b.into_iter().map(|v| PyArray1::from_vec(py, v)).collect::<Vec<_>>())?;
        d.set_item("pwrss", sol.pwrss)?;
        d.set_item("ldl2", sol.ldl2)?;
        d.set_item("ldrx2", sol.ldrx2)?;
        d.set_item("rx", PyArray1::from_vec(py, sol.rx))?;
        Ok(d)
    }

    /// Conditional covariances of b relative to sigma^2: per term a flat array of
    /// nlev * s * s (level-major, each block column-major).
    fn condvar<'py>(&mut self, py: Python<'py>, theta: PyReadonlyArray1<'_, f64>) -> PyResult<Vec<Bound<'py, PyArray1<f64>>>> {
        let th = lmm_theta(&self.inner, &theta)?;
        let inner = &mut self.inner;
        let cv = py
            .detach(|| inner.condvar(&th))
            .ok_or_else(|| fit_err("factorisation failed"))?;
        Ok(cv.into_iter().map(|v| PyArray1::from_vec(py, v)).collect())
    }

    /// Replace the response; only the response row of the cross products is recomputed.
    #[pyo3(signature = (y, w=None))]
    fn set_y(&mut self, py: Python<'_>, y: PyReadonlyArray1<'_, f64>, w: Option<PyReadonlyArray1<'_, f64>>) -> PyResult<()> {
        let ys = slice(&y, "y")?;
        let ws = match &w {
            Some(a) => Some(slice(a, "w")?),
            None => None,
        };
        let inner = &mut self.inner;
        with_rows(py, &self.refs, &self.z, &self.x, ys, ws, |rows| inner.set_y(rows))?
            .map_err(core_err)
    }

    /// Replace weights and response, keeping the pattern (for PIRLS).
    #[pyo3(signature = (y, w=None))]
    fn reweight(&mut self, py: Python<'_>, y: PyReadonlyArray1<'_, f64>, w: Option<PyReadonlyArray1<'_, f64>>) -> PyResult<()> {
        let ys = slice(&y, "y")?;
        let ws = match &w {
            Some(a) => Some(slice(a, "w")?),
            None => None,
        };
        let inner = &mut self.inner;
        with_rows(py, &self.refs, &self.z, &self.x, ys, ws, |rows| inner.reweight(rows))?
            .map_err(core_err)
    }

    /// Starting values for the diagonals of Lambda, per term and column (see the core docs).
    fn moment_start(&self) -> Vec<Vec<f64>> {
        self.inner.moment_start()
    }

    /// X beta + Z b for the model's rows (no offset); `b` per engine term, level-major.
    fn fitted<'py>(&self, py: Python<'py>, beta: PyReadonlyArray1<'_, f64>, b: Vec<PyReadonlyArray1<'_, f64>>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let beta_s = slice(&beta, "beta")?.to_vec();
        let b_v: Vec<Vec<f64>> = b.iter().map(|a| slice(a, "b").map(|s| s.to_vec())).collect::<PyResult<_>>()?;
        let p = self.inner.p();
        if beta_s.len() != p || b_v.len() != self.inner.terms().len() {
            return Err(data_err(format!("beta has {} values and b {} arrays; the model has {p} fixed effects and {} terms", beta_s.len(), b_v.len(), self.inner.terms().len())));
        }
        for (bk, t) in b_v.iter().zip(self.inner.terms()) {
            if bk.len() != t.nlev * t.s {
                return Err(data_err(format!("b: an array of length {}, expected {} (nlev * s)", bk.len(), t.nlev * t.s)));
            }
        }
        let n = self.inner.nobs();
        let dummy_y = vec![0.0; n];
        let out = with_rows(py, &self.refs, &self.z, &self.x, &dummy_y, None, |rows| {
            multilevel_core::lmm::linear_predictor(rows, p, &beta_s, &b_v)
        })?;
        Ok(PyArray1::from_vec(py, out))
    }

    #[getter]
    fn rest_size(&self) -> usize {
        self.inner.rest_size()
    }

    /// How the block of the later terms, X and y is held: "dense" or "sparse".
    #[getter]
    fn layout(&self) -> &'static str {
        if self.inner.is_sparse() {
            "sparse"
        } else {
            "dense"
        }
    }
}

/// A generalized linear mixed model bound to the compiled PIRLS engine. The rows are copied
/// (sorted by group) on construction; the warm start (the last conditional modes) is kept
/// between evaluations.
#[pyclass(module = "multilevel._core")]
struct GlmmCore {
    inner: Glmm,
}

fn opt_slice<'a>(a: &'a Option<PyReadonlyArray1<'a, f64>>, what: &str) -> PyResult<Option<&'a [f64]>> {
    match a {
        Some(a) => Ok(Some(slice(a, what)?)),
        None => Ok(None),
    }
}

#[pymethods]
impl GlmmCore {
    /// GlmmCore(refs, z, nlev, lambdas, x, y, family, link, wt=None, ntrials=None, offset=None)
    ///
    /// As LmmCore, plus family ("binomial", "poisson"), link ("logit", "probit", "cloglog",
    /// "log", "identity", "sqrt"), prior weights wt, the binomial trials when they differ
    /// from the weights (ntrials) and the offset.
    #[new]
    #[pyo3(signature = (refs, z, nlev, lambdas, x, y, family, link, wt=None, ntrials=None, offset=None, family_param=None))]
    fn new(
        py: Python<'_>,
        refs: Vec<PyReadonlyArray1<'_, u32>>,
        z: Vec<PyReadonlyArray2<'_, f64>>,
        nlev: Vec<usize>,
        lambdas: Vec<Vec<(usize, usize, usize)>>,
        x: PyReadonlyArray2<'_, f64>,
        y: PyReadonlyArray1<'_, f64>,
        family: &str,
        link: &str,
        wt: Option<PyReadonlyArray1<'_, f64>>,
        ntrials: Option<PyReadonlyArray1<'_, f64>>,
        offset: Option<PyReadonlyArray1<'_, f64>>,
        family_param: Option<f64>,
    ) -> PyResult<Self> {
        if refs.len() != z.len() || refs.len() != nlev.len() || refs.len() != lambdas.len() {
            return Err(data_err("refs, z, nlev and lambdas must have one entry per term"));
        }
        let dist = parse_dist(family, family_param)?;
        let link = Link::from_name(link).ok_or_else(|| spec_err(format!("unknown link {link:?}")))?;
        let terms: Vec<Term> = (0..refs.len())
            .map(|k| Term { nlev: nlev[k], s: z[k].shape()[1], lambda: lambdas[k].clone() })
            .collect();
        let p = x.shape()[1];
        let rows = GlmmRows {
            refs: refs.iter().map(|a| slice(a, "refs")).collect::<PyResult<Vec<_>>>()?,
            z: z.iter().map(|a| slice2(a, "Z")).collect::<PyResult<Vec<_>>>()?,
            x: slice2(&x, "X")?,
            y: slice(&y, "y")?,
            wt: opt_slice(&wt, "wt")?,
            ntrials: opt_slice(&ntrials, "ntrials")?,
            offset: opt_slice(&offset, "offset")?,
        };
        let inner = py.detach(|| Glmm::new(terms, p, &rows, dist, link)).map_err(core_err)?;
        Ok(GlmmCore { inner })
    }

    /// Laplace deviance at (theta, beta) (PIRLS over u only); inf if PIRLS fails.
    fn laplace(&mut self, py: Python<'_>, theta: PyReadonlyArray1<'_, f64>, beta: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
        let th = slice(&theta, "theta")?.to_vec();
        let be = slice(&beta, "beta")?.to_vec();
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.laplace(&th, &be)))
    }

    /// Laplace deviance and its gradient in (theta, beta) (see has_gradient; the gradient
    /// is None for other models or when PIRLS failed). `jacobian`: keep the modes'
    /// derivatives to warm-start the next evaluations near this point.
    #[pyo3(signature = (theta, beta, jacobian=true))]
    fn laplace_grad<'py>(
        &mut self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'_, f64>,
        beta: PyReadonlyArray1<'_, f64>,
        jacobian: bool,
    ) -> PyResult<(f64, Option<Bound<'py, PyArray1<f64>>>)> {
        let th = slice(&theta, "theta")?.to_vec();
        let be = slice(&beta, "beta")?.to_vec();
        let inner = &mut self.inner;
        let (f, g) = py.detach(|| {
            let f = inner.laplace(&th, &be);
            (f, if f.is_finite() { inner.laplace_gradient_opt(jacobian) } else { None })
        });
        Ok((f, g.map(|v| PyArray1::from_vec(py, v))))
    }

    /// Like laplace, but raises the PIRLS error instead of returning inf.
    fn try_laplace(&mut self, py: Python<'_>, theta: PyReadonlyArray1<'_, f64>, beta: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
        let th = slice(&theta, "theta")?.to_vec();
        let be = slice(&beta, "beta")?.to_vec();
        let inner = &mut self.inner;
        py.detach(|| inner.try_laplace(&th, &be)).map_err(core_err)
    }

    /// Adaptive Gauss-Hermite deviance (one scalar term) with the given rule.
    fn agq(
        &mut self,
        py: Python<'_>,
        theta: PyReadonlyArray1<'_, f64>,
        beta: PyReadonlyArray1<'_, f64>,
        nodes: PyReadonlyArray1<'_, f64>,
        weights: PyReadonlyArray1<'_, f64>,
    ) -> PyResult<f64> {
        let th = slice(&theta, "theta")?.to_vec();
        let be = slice(&beta, "beta")?.to_vec();
        let zn = slice(&nodes, "nodes")?.to_vec();
        let wn = slice(&weights, "weights")?.to_vec();
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.agq(&th, &be, &zn, &wn)))
    }

    /// Like laplace_joint, but raises the PIRLS error instead of returning inf.
    fn try_laplace_joint(&mut self, py: Python<'_>, theta: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
        let th = slice(&theta, "theta")?.to_vec();
        let inner = &mut self.inner;
        py.detach(|| inner.try_laplace_joint(&th)).map_err(core_err)
    }

    /// lme4's nAGQ = 0 criterion at theta (PIRLS over u and beta); beta is then `beta`.
    fn laplace_joint(&mut self, py: Python<'_>, theta: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
        let th = slice(&theta, "theta")?.to_vec();
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.laplace_joint(&th)))
    }

    /// Pieces of the last evaluation: objective, aic (-2 log p(y|u) with constants), dev
    /// (sum of deviance residuals), usq, ldl2, iterations.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = self.inner.info();
        let d = PyDict::new(py);
        d.set_item("objective", i.objective)?;
        d.set_item("aic", i.aic)?;
        d.set_item("dev", i.dev)?;
        d.set_item("usq", i.usq)?;
        d.set_item("ldl2", i.ldl2)?;
        d.set_item("iterations", i.iterations)?;
        Ok(d)
    }

    #[getter]
    fn beta<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.inner.beta().to_vec())
    }

    #[getter]
    fn is_scalar(&self) -> bool {
        self.inner.is_scalar()
    }

    /// The engine gives the exact gradient of the Laplace criterion (one scalar term, or
    /// all terms scalar with a canonical link).
    #[getter]
    fn has_gradient(&self) -> bool {
        self.inner.has_gradient()
    }

    /// Spherical random effects per term (level-major, flattened).
    fn u<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyArray1<f64>>> {
        self.inner.u().into_iter().map(|v| PyArray1::from_vec(py, v)).collect()
    }

    /// b = Lambda(theta) u per term (level-major, flattened).
    fn b<'py>(&self, py: Python<'py>, theta: PyReadonlyArray1<'_, f64>) -> PyResult<Vec<Bound<'py, PyArray1<f64>>>> {
        let th = slice(&theta, "theta")?;
        Ok(self.inner.b(th).map_err(core_err)?.into_iter().map(|v| PyArray1::from_vec(py, v)).collect())
    }

    /// Set the warm start u (per term, level-major).
    fn set_u(&mut self, u: Vec<PyReadonlyArray1<'_, f64>>) -> PyResult<()> {
        let uu: Vec<Vec<f64>> = u.iter().map(|a| slice(a, "u").map(|s| s.to_vec())).collect::<PyResult<_>>()?;
        self.inner.set_u(&uu).map_err(core_err)
    }

    /// Forget the warm start.
    fn reset(&mut self) {
        self.inner.reset();
    }

    fn eta<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.inner.eta())
    }
    fn mu<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.inner.mu())
    }
    /// IRLS weights at the last evaluation.
    fn weights<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.inner.weights())
    }

    /// Conditional covariances of b at the current weights, per term flat (nlev * s * s).
    fn condvar<'py>(&mut self, py: Python<'py>, theta: PyReadonlyArray1<'_, f64>) -> PyResult<Vec<Bound<'py, PyArray1<f64>>>> {
        let th = slice(&theta, "theta")?.to_vec();
        let inner = &mut self.inner;
        let cv = py.detach(|| inner.condvar(&th)).map_err(core_err)?;
        Ok(cv.into_iter().map(|v| PyArray1::from_vec(py, v)).collect())
    }

    /// R_X (p x p lower, column-major flattened) at the current weights.
    fn rx<'py>(&mut self, py: Python<'py>, theta: PyReadonlyArray1<'_, f64>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let th = slice(&theta, "theta")?.to_vec();
        let inner = &mut self.inner;
        let rx = py.detach(|| inner.rx(&th)).map_err(core_err)?;
        Ok(PyArray1::from_vec(py, rx))
    }

    /// Change the family's parameter (the negative binomial's theta), keeping the warm start.
    fn set_family_param(&mut self, param: f64) -> PyResult<()> {
        let name = match self.inner.dist() {
            Dist::NegBinomial(_) => "negative.binomial",
            _ => return Err(spec_err("set_family_param: only the negative binomial family has a parameter".to_string())),
        };
        let dist = parse_dist(name, Some(param))?;
        self.inner.set_dist(dist).map_err(core_err)
    }

    /// PIRLS settings: convergence tolerance on the steps and the iteration limit.
    #[pyo3(signature = (tol=None, maxit=None))]
    fn set_control(&mut self, tol: Option<f64>, maxit: Option<usize>) {
        if let Some(t) = tol {
            self.inner.control.tol = t;
        }
        if let Some(m) = maxit {
            self.inner.control.maxit = m;
        }
    }
}

/// The engine's family from R's name and its parameter (the negative binomial's theta).
fn parse_dist(family: &str, param: Option<f64>) -> PyResult<Dist> {
    Dist::parse(family, param).ok_or_else(|| {
        if family == "negative.binomial" || family == "negative_binomial" {
            spec_err(format!("the negative binomial family needs a positive, finite theta (family_param), not {param:?}"))
        } else {
            spec_err(format!(
                "unknown family {family:?} (the engine has \"binomial\", \"poisson\", \"Gamma\", \"inverse.gaussian\", \"negative.binomial\")"
            ))
        }
    })
}

/// Gauss-Hermite rule for the standard normal (lme4's GHrule): (nodes, weights summing to 1).
#[pyfunction]
fn gauss_hermite<'py>(py: Python<'py>, n: usize) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>)> {
    if n == 0 {
        return Err(spec_err(format!("gauss_hermite: the number of nodes must be positive, not {n}")));
    }
    let (z, w) = glmm::gauss_hermite(n);
    Ok((PyArray1::from_vec(py, z), PyArray1::from_vec(py, w)))
}

/// family_eval(family, link, y, eta, wt, ntrials=None) -> dict
///
/// The engine's per-row mu, mu_eta, variance and dev_resids at eta, and aic (-2 log p(y | mu)
/// summed, R's family$aic without the parameter term), for conformance tests against the
/// Python families.
#[pyfunction]
#[pyo3(signature = (family, link, y, eta, wt, ntrials=None, family_param=None))]
fn family_eval<'py>(
    py: Python<'py>,
    family: &str,
    link: &str,
    y: PyReadonlyArray1<'_, f64>,
    eta: PyReadonlyArray1<'_, f64>,
    wt: PyReadonlyArray1<'_, f64>,
    ntrials: Option<PyReadonlyArray1<'_, f64>>,
    family_param: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let dist = parse_dist(family, family_param)?;
    let link_v = Link::from_name(link).ok_or_else(|| spec_err(format!("unknown link {link:?}")))?;
    let nt = opt_slice(&ntrials, "ntrials")?;
    let r = glmm::family_eval(dist, link_v, slice(&y, "y")?, slice(&eta, "eta")?, slice(&wt, "wt")?, nt).map_err(core_err)?;
    let d = PyDict::new(py);
    d.set_item("mu", PyArray1::from_vec(py, r.mu))?;
    d.set_item("mu_eta", PyArray1::from_vec(py, r.mu_eta))?;
    d.set_item("variance", PyArray1::from_vec(py, r.variance))?;
    d.set_item("dev_resids", PyArray1::from_vec(py, r.dev_resids))?;
    d.set_item("aic", r.aic)?;
    Ok(d)
}

/// cell_moments_add(cells, v, w, count, wsum, c, m1, m2)
///
/// Add rows to per-cell moments in place (see multilevel_core::cells): `cells` (m,) int64,
/// `v` (m, dim) float64, `w` (m,) or None; `count` (n,) int64, `wsum` (n,), `c` and `m1`
/// (n, dim), `m2` (n, dim (dim + 1) / 2), all C-contiguous. Nothing changes on bad input.
#[pyfunction]
#[pyo3(signature = (cells, v, w, count, wsum, c, m1, m2))]
#[allow(clippy::too_many_arguments)]
fn cell_moments_add(
    py: Python<'_>,
    cells: PyReadonlyArray1<'_, i64>,
    v: PyReadonlyArray2<'_, f64>,
    w: Option<PyReadonlyArray1<'_, f64>>,
    mut count: PyReadwriteArray1<'_, i64>,
    mut wsum: PyReadwriteArray1<'_, f64>,
    mut c: PyReadwriteArray2<'_, f64>,
    mut m1: PyReadwriteArray2<'_, f64>,
    mut m2: PyReadwriteArray2<'_, f64>,
) -> PyResult<()> {
    let dim = v.shape()[1];
    if c.shape()[1] != dim || m1.shape()[1] != dim {
        return Err(data_err(format!("cell moments: c and m1 must have {dim} columns like v")));
    }
    let cells_s = slice(&cells, "cells")?;
    let v_s = slice2(&v, "v")?;
    let w_s = opt_slice(&w, "w")?;
    let mut_err = |what: &str| data_err(format!("{what} must be C-contiguous and writeable"));
    let count_s = count.as_slice_mut().map_err(|_| mut_err("count"))?;
    let wsum_s = wsum.as_slice_mut().map_err(|_| mut_err("wsum"))?;
    let c_s = c.as_slice_mut().map_err(|_| mut_err("c"))?;
    let m1_s = m1.as_slice_mut().map_err(|_| mut_err("m1"))?;
    let m2_s = m2.as_slice_mut().map_err(|_| mut_err("m2"))?;
    py.detach(|| {
        CellMoments { dim, count: count_s, wsum: wsum_s, c: c_s, m1: m1_s, m2: m2_s }
            .add(cells_s, v_s, w_s)
    })
    .map_err(core_err)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LmmCore>()?;
    m.add_class::<GlmmCore>()?;
    m.add_function(wrap_pyfunction!(gauss_hermite, m)?)?;
    m.add_function(wrap_pyfunction!(family_eval, m)?)?;
    m.add_function(wrap_pyfunction!(cell_moments_add, m)?)?;
    Ok(())
}
