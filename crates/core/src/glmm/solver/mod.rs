//! The representations of the penalised least-squares system of PIRLS, and the one place
//! that chooses among them.
//!
//! `M = Lambda' Z' W Z Lambda + I` (with X for nAGQ = 0 and R_X) is held in one of three
//! ways, fixed when the model is built from the shape of its terms:
//!
//! * [`Solver::Scalar`] (`scalar.rs`): one scalar term. M is diagonal, so PIRLS runs group
//!   by group on rows sorted by group with no matrix at all; the only case where adaptive
//!   quadrature is defined. Its nAGQ = 0 variant adds a p x p Schur complement.
//! * [`Solver::Block`] (`block.rs`): one vector-valued term (`(1 + x | g)`). M is block
//!   diagonal (s x s per level), so PIRLS runs group by group as for one scalar term, with
//!   the exact gradient; nAGQ = 0 adds a p x p Schur complement (the LMM engine with X,
//!   built on first use, is its fallback).
//! * [`Solver::Crossed`] (`crossed.rs`): every term scalar, more than one (crossed or
//!   nested intercepts): a dedicated factorisation that also gives the selected inverse
//!   entries the gradient needs; a second copy with the X columns for (u, beta).
//! * [`Solver::General`] (`general.rs`): anything else, through the LMM engine's blocked
//!   Cholesky on the working response (built on first use, with and without X).
//!
//! Each representation therefore comes in a u-only and a (u, beta) flavour, six solver
//! states in all. Every `match` on the representation is in this file, one per operation
//! (PIRLS over u, over (u, beta), one penalised solve, conditional variances, R_X, the
//! gradient): adding a representation is one variant, one file with its methods, and one
//! arm in each of these. The dispatch happens once per evaluation or PIRLS iteration,
//! never inside a loop over rows (those are monomorphised per family by `with_kernel!`).

use super::{Glmm, E};
use crate::error::CoreResult;
use crate::lmm::{Lmm, Term};

pub(super) mod block;
mod crossed;
mod general;
mod scalar;

pub(crate) use crossed::Crossed;

pub(super) enum Solver {
    /// `ub`: the LMM engine with X, built on first use for R_X
    Scalar { ub: Option<Lmm> },
    /// `ub`: the LMM engine with X, built on first use when the joint Schur complement
    /// cannot be factored (see `block_joint`)
    Block { ub: Option<Lmm> },
    /// `u`: the system over u; `ub`: with the X columns (built on first use)
    Crossed { u: Crossed, ub: Option<Crossed> },
    /// the LMM engine without and with X (each built on first use)
    General { u: Option<Lmm>, ub: Option<Lmm> },
}

impl Solver {
    /// The representation for these terms (rows sorted by the levels of term 0, level l's
    /// rows `gstart[l]..gstart[l + 1]`). Refuses dense blocks over the size limit here,
    /// before anything is allocated, rather than inside an evaluation.
    pub(super) fn choose(terms: &[Term], refs: &[Vec<u32>], gstart: &[usize], p: usize) -> CoreResult<Solver> {
        if terms.len() == 1 && terms[0].s == 1 {
            return Ok(Solver::Scalar { ub: None });
        }
        if terms.len() == 1 {
            return Ok(Solver::Block { ub: None });
        }
        if terms.iter().all(|t| t.s == 1) {
            let nlev: Vec<usize> = terms.iter().map(|t| t.nlev).collect();
            // the dense block holds every level after term 0's, and the fixed effects when
            // nAGQ = 0 or R_X need them
            let qr: usize = nlev[1..].iter().sum();
            E::check_dense(qr + p, || {
                format!(
                    "the crossed random-effect terms after the first (the one with most levels) have \
                     {qr} levels together, with the {p} fixed effects"
                )
            })?;
            return Ok(Solver::Crossed { u: Crossed::new(&nlev, refs, gstart, 0), ub: None });
        }
        // the LMM engine's dense block, with X for nAGQ = 0 and R_X
        let qz: usize = terms[1..].iter().map(|t| t.nlev * t.s).sum();
        E::check_dense(qz + p + 1, || {
            format!(
                "the random-effect terms after the first (the one with most levels) have {qz} \
                 coefficients together, with the {p} fixed effects and the response"
            )
        })?;
        Ok(Solver::General { u: None, ub: None })
    }

    /// Where the LMM engine over u (`joint` false) or (u, beta) lives, if this
    /// representation uses one.
    fn lmm_slot(&mut self, joint: bool) -> Option<&mut Option<Lmm>> {
        match self {
            Solver::General { u, ub } => Some(if joint { ub } else { u }),
            Solver::Scalar { ub } | Solver::Block { ub } if joint => Some(ub),
            Solver::Scalar { .. } | Solver::Block { .. } | Solver::Crossed { .. } => None,
        }
    }
}

impl Glmm {
    /// True when the model has one scalar random-effect term (the matrix-free engine; the
    /// only case where adaptive quadrature is defined).
    pub fn is_scalar(&self) -> bool {
        matches!(self.solver, Solver::Scalar { .. })
    }

    /// theta of the single scalar term
    fn scalar_theta(&self, theta: &[f64]) -> f64 {
        theta[self.terms[0].lambda[0].2]
    }

    /// PIRLS over u at theta (offset + X beta already in `offb`); fills `info`.
    pub(super) fn run_u(&mut self, theta: &[f64]) -> CoreResult<()> {
        match self.solver {
            Solver::Scalar { .. } => {
                let th = self.scalar_theta(theta);
                with_kernel!(self, k => self.scalar_u(k, th, None))
            }
            Solver::Block { .. } => with_kernel!(self, k => self.block_u(k, theta)),
            Solver::Crossed { .. } | Solver::General { .. } => with_kernel!(self, k => self.pirls_general(k, theta, false)),
        }
    }

    /// PIRLS over (u, beta) at theta (nAGQ = 0); fills `info` and `beta`.
    pub(super) fn run_joint(&mut self, theta: &[f64]) -> CoreResult<()> {
        match self.solver {
            Solver::Scalar { .. } => {
                let th = self.scalar_theta(theta);
                with_kernel!(self, k => self.scalar_joint(k, th))
            }
            Solver::Block { .. } => {
                let r = with_kernel!(self, k => self.block_joint(k, theta));
                if r.is_ok() {
                    return r;
                }
                // the Schur complement did not factor (see `block_joint`): the LMM engine
                // from a cold start
                self.reset();
                with_kernel!(self, k => self.pirls_general(k, theta, true))
            }
            Solver::Crossed { .. } | Solver::General { .. } => with_kernel!(self, k => self.pirls_general(k, theta, true)),
        }
    }

    /// One penalised weighted least-squares solve at the stored weights and working
    /// response: the step to the next modes (du, and dbeta when `joint`; for the LMM engine,
    /// which solves for the modes of a response, u itself: see `steps_in_u`) and log|L|^2.
    pub(super) fn pls_solve(&mut self, theta: &[f64], joint: bool) -> CoreResult<(Vec<f64>, Vec<f64>, f64)> {
        match self.solver {
            Solver::Scalar { .. } => Err(E::ModelSpec("the scalar engine solves group by group, not by pls_solve".into())),
            // (only the joint fallback of `run_joint` gets here)
            Solver::Block { .. } if joint => self.general_solve(theta, joint),
            Solver::Block { .. } => Err(E::ModelSpec("the block engine solves group by group, not by pls_solve".into())),
            Solver::Crossed { .. } => self.crossed_solve(theta, joint),
            Solver::General { .. } => self.general_solve(theta, joint),
        }
    }

    /// Whether `pls_solve` gives du (from the working residual r, kept in `wresp` during
    /// PIRLS) rather than the new u (from the working response eta - offb + r).
    pub(super) fn steps_in_u(&self) -> bool {
        matches!(self.solver, Solver::Crossed { .. })
    }

    /// Conditional covariance of b = Lambda u given the data at the current weights (the
    /// mode of the last evaluation), per term level-major s x s blocks (column-major):
    /// Lambda (Lambda' Z' W Z Lambda + I)^-1 Lambda'.
    pub fn condvar(&mut self, theta: &[f64]) -> CoreResult<Vec<Vec<f64>>> {
        self.check_theta(theta)?;
        match self.solver {
            Solver::Scalar { .. } => {
                let th = self.scalar_theta(theta);
                Ok(vec![self.d2.iter().map(|d| th * th / d).collect()])
            }
            Solver::Block { .. } => self.block_condvar(theta),
            Solver::Crossed { .. } => self.crossed_condvar(theta),
            Solver::General { .. } => self.general_condvar(theta),
        }
    }

    /// The p x p lower Cholesky factor R_X of the fixed-effects block (Schur complement of
    /// the random effects) at the current weights, column-major: lme4's
    /// `vcov(fit, use.hessian = FALSE)` is (R_X R_X')^-1.
    pub fn rx(&mut self, theta: &[f64]) -> CoreResult<Vec<f64>> {
        self.check_theta(theta)?;
        match self.solver {
            // one scalar term: the joint system is only ever factored by the general path
            Solver::Scalar { .. } | Solver::General { .. } => self.general_rx(theta),
            Solver::Block { .. } => self.block_rx(theta),
            Solver::Crossed { .. } => self.crossed_rx(theta),
        }
    }

    /// Whether [`laplace_gradient`](Self::laplace_gradient) is available: one term, scalar
    /// or vector-valued (any link), or all terms scalar with a canonical link (logit,
    /// Poisson log).
    pub fn has_gradient(&self) -> bool {
        // the dispersion families' criterion is not stationary in u at the mode (PIRLS
        // minimises deviance + |u|^2, the criterion has aic(deviance) + |u|^2): no gradient
        if self.dist.has_dispersion() {
            return false;
        }
        match self.solver {
            Solver::Scalar { .. } | Solver::Block { .. } => true,
            Solver::Crossed { .. } => {
                matches!((self.dist, self.link), (super::Dist::Binomial, super::Link::Logit) | (super::Dist::Poisson, super::Link::Log))
            }
            Solver::General { .. } => false,
        }
    }

    /// The gradient at the stored modes (see `gradient.rs`), and du/d(theta, beta) kept in
    /// `pred` when `jacobian`.
    pub(super) fn gradient_at_mode(&mut self, jacobian: bool) -> Option<Vec<f64>> {
        match self.solver {
            Solver::Scalar { .. } => self.scalar_gradient_full(jacobian),
            Solver::Block { .. } => with_kernel!(self, k => self.block_gradient(k, jacobian)),
            Solver::Crossed { .. } => {
                self.refresh_state();
                with_kernel!(self, k => self.crossed_gradient(k, jacobian))
            }
            Solver::General { .. } => None,
        }
    }
}
