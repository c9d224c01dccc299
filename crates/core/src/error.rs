//! The one error type of the core, shared by the LMM and GLMM engines.
//!
//! The variants follow what a caller can do about the failure, not which engine raised it,
//! so that the bindings can map each to one Python class (`multilevel.errors`):
//!
//! * [`CoreError::Data`]: the arrays handed in are inconsistent or out of the family's
//!   support (wrong lengths, level codes beyond `nlev`, negative weights, non-finite
//!   values, a binomial response outside [0, 1]). Fix the data.
//! * [`CoreError::ModelSpec`]: the arrays are fine but the model cannot be set up or the
//!   request does not apply to it (no random-effect terms, a Lambda pattern that is not
//!   lower triangular, adaptive quadrature on a vector-valued term).
//! * [`CoreError::TooLarge`]: a dense block the engine would have to allocate exceeds
//!   [`MAX_DENSE`]; refused before any allocation, with the size in the message.
//! * [`CoreError::Numerical`]: the computation itself failed (PIRLS did not converge, a
//!   system is not positive definite). The inputs were valid; the estimate is unusable.

use std::fmt;

/// Largest dense block (rows of one square matrix) the engines accept: 12000^2 doubles are
/// 1.15 GB and a Cholesky of that size takes seconds per evaluation.
pub const MAX_DENSE: usize = 12_000;

#[derive(Clone, Debug, PartialEq)]
pub enum CoreError {
    /// inconsistent or invalid input arrays
    Data(String),
    /// a model the engine cannot set up, or a request that does not apply to it
    ModelSpec(String),
    /// a dense `size` x `size` block over the limit; `what` says where it comes from
    TooLarge { what: String, size: usize, limit: usize },
    /// the computation failed on valid input (convergence, positive definiteness)
    Numerical(String),
}

pub type CoreResult<T> = Result<T, CoreError>;

impl CoreError {
    /// Refuse a dense `size` x `size` block over [`MAX_DENSE`] (call before allocating).
    pub fn check_dense(size: usize, what: impl FnOnce() -> String) -> CoreResult<()> {
        if size > MAX_DENSE {
            return Err(CoreError::TooLarge { what: what(), size, limit: MAX_DENSE });
        }
        Ok(())
    }

    /// Unless the lengths agree: `what: length got, expected want` as a data error.
    pub fn check_len(what: &str, got: usize, want: usize) -> CoreResult<()> {
        if got != want {
            return Err(CoreError::Data(format!("{what}: length {got}, expected {want}")));
        }
        Ok(())
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Data(s) | CoreError::ModelSpec(s) | CoreError::Numerical(s) => write!(f, "{s}"),
            CoreError::TooLarge { what, size, limit } => write!(
                f,
                "{what}; the engine holds them in one dense {size} x {size} block ({:.1} GB), \
                 which is more than it supports (at most {limit} rows)",
                (*size as f64) * (*size as f64) * 8e-9
            ),
        }
    }
}

impl std::error::Error for CoreError {}
