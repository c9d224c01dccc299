//! multilevel-core: the numerical core of the `multilevel` Python package.
//!
//! No Python types here: the crate is tested with `cargo test` and wrapped by a thin PyO3
//! module (crates/py). See `lmm` for the linear mixed model engine, `glmm` for the
//! generalized one and `error` for the one error type both report.

pub mod cells;
pub mod error;
pub mod glmm;
pub mod lmm;
pub mod optim;
pub mod pattern;
pub mod small;
#[cfg(test)]
mod testutil;
