//! Thin PyO3 wrapper around multilevel-core. Arrays cross the boundary without copies where
//! numpy's layout allows; the GIL is released while the core computes.

use multilevel_core::lmm::{Lmm, Rows, Term};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
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
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be C-contiguous")))
}

fn slice2<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'a, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be C-contiguous")))
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

#[pymethods]
impl LmmCore {
    /// LmmCore(refs, z, nlev, lambdas, x, y, w=None)
    ///
    /// refs: list of uint32 arrays (n,); z: list of float64 arrays (n, s_k); nlev: levels per
    /// term; lambdas: per term a list of (row, col, theta_index) for the nonzeros of Lambda;
    /// x: (n, p); y: (n,); w: prior weights (n,) or None. Term 0 should have the most levels.
    #[new]
    #[pyo3(signature = (refs, z, nlev, lambdas, x, y, w=None))]
    fn new(
        py: Python<'_>,
        refs: Vec<Bound<'_, numpy::PyArray1<u32>>>,
        z: Vec<Bound<'_, numpy::PyArray2<f64>>>,
        nlev: Vec<usize>,
        lambdas: Vec<Vec<(usize, usize, usize)>>,
        x: Bound<'_, numpy::PyArray2<f64>>,
        y: PyReadonlyArray1<'_, f64>,
        w: Option<PyReadonlyArray1<'_, f64>>,
    ) -> PyResult<Self> {
        if refs.len() != z.len() || refs.len() != nlev.len() || refs.len() != lambdas.len() {
            return Err(PyValueError::new_err("refs, z, nlev and lambdas must have one entry per term"));
        }
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
        let inner = py.detach(|| Lmm::new(terms, p, &rows)).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(LmmCore {
            inner,
            refs: refs.into_iter().map(|a| a.unbind()).collect(),
            z: z.into_iter().map(|a| a.unbind()).collect(),
            x: x.unbind(),
        })
    }

    /// Profiled deviance (reml=False) or REML criterion at theta (without the weights term).
    fn objective(&mut self, py: Python<'_>, theta: PyReadonlyArray1<'_, f64>, reml: bool) -> PyResult<f64> {
        let th = slice(&theta, "theta")?.to_vec();
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.objective(&th, reml)))
    }

    /// Estimates at theta as a dict: objective, beta, u, b (lists per term), pwrss, ldl2,
    /// ldrx2, rx (p x p lower, column-major flattened).
    fn solution<'py>(&mut self, py: Python<'py>, theta: PyReadonlyArray1<'_, f64>, reml: bool) -> PyResult<Bound<'py, PyDict>> {
        let th = slice(&theta, "theta")?.to_vec();
        let inner = &mut self.inner;
        let sol = py
            .detach(|| inner.solution(&th, reml))
            .ok_or_else(|| PyRuntimeError::new_err("the fixed-effects block is not positive definite"))?;
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
        let th = slice(&theta, "theta")?.to_vec();
        let inner = &mut self.inner;
        let cv = py
            .detach(|| inner.condvar(&th))
            .ok_or_else(|| PyRuntimeError::new_err("factorisation failed"))?;
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
            .map_err(|e| PyValueError::new_err(e.to_string()))
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
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Starting values for the diagonals of Lambda, per term and column (see the core docs).
    fn moment_start(&self) -> Vec<Vec<f64>> {
        self.inner.moment_start()
    }

    #[getter]
    fn rest_size(&self) -> usize {
        self.inner.rest_size()
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LmmCore>()?;
    Ok(())
}
