//! Rust errors as the Python classes of `multilevel.errors`.
//!
//! The classes live in Python (they subclass the built-in exceptions users expect, e.g.
//! `DataError(MultilevelError, ValueError)`), so they are looked up at raise time with
//! `py.import("multilevel.errors")`: one definition, no copy of the hierarchy here, and
//! `except ValueError` / `except RuntimeError` in older callers keeps working.
//!
//! | core                          | Python                      |
//! |-------------------------------|-----------------------------|
//! | `CoreError::Data`             | `multilevel.errors.DataError`      (ValueError)   |
//! | `CoreError::ModelSpec`        | `multilevel.errors.ModelSpecError` (ValueError)   |
//! | `CoreError::TooLarge`         | `multilevel.errors.ModelSpecError` (ValueError)   |
//! | `CoreError::Numerical`        | `multilevel.errors.FitError`       (RuntimeError) |
//!
//! Argument errors found in the bindings themselves (lengths, layouts) are `DataError`s
//! built the same way ([`data_err`]).

use multilevel_core::error::CoreError;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Which class of `multilevel.errors` a core error becomes.
fn class_name(e: &CoreError) -> &'static str {
    match e {
        CoreError::Data(_) => "DataError",
        CoreError::ModelSpec(_) | CoreError::TooLarge { .. } => "ModelSpecError",
        CoreError::Numerical(_) => "FitError",
    }
}

/// An instance of `multilevel.errors.<name>` with `msg`. Should the module not import
/// (the extension used without its package), the built-in base class is raised instead.
fn raise(name: &'static str, msg: String) -> PyErr {
    Python::attach(|py| {
        let cls = py
            .import("multilevel.errors")
            .and_then(|m| m.getattr(name))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match cls {
            Ok(cls) => PyErr::from_type(cls, msg),
            Err(_) if name == "FitError" => PyRuntimeError::new_err(msg),
            Err(_) => PyValueError::new_err(msg),
        }
    })
}

/// The Python exception for a core error.
pub fn core_err(e: CoreError) -> PyErr {
    raise(class_name(&e), e.to_string())
}

/// A `DataError` raised by the bindings (argument lengths, memory layout).
pub fn data_err(msg: impl Into<String>) -> PyErr {
    raise("DataError", msg.into())
}

/// A `ModelSpecError` raised by the bindings (unknown family or link, ...).
pub fn spec_err(msg: impl Into<String>) -> PyErr {
    raise("ModelSpecError", msg.into())
}

/// A `FitError` raised by the bindings (a factorisation that failed).
pub fn fit_err(msg: impl Into<String>) -> PyErr {
    raise("FitError", msg.into())
}
