//! The general representation: the LMM engine's blocked Cholesky (`crate::lmm`) applied to
//! the working response with the IRLS weights, for any mix of terms. One LMM is kept per
//! flavour (over u, over (u, beta)), built on first use and reweighted in place at every
//! PIRLS iteration, so its pattern and workspace are allocated once.

use super::super::{Glmm, E};
use crate::error::CoreResult;
use crate::lmm::{Lmm, Rows, Solution};

impl Glmm {
    /// Build the LMM over u (`joint` false) or (u, beta) if it does not exist yet.
    fn ensure_lmm(&mut self, joint: bool) -> CoreResult<()> {
        let Some(slot) = self.solver.lmm_slot(joint) else {
            return Err(E::ModelSpec("this representation has no LMM engine".into()));
        };
        if slot.is_some() {
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
        *slot = Some(Lmm::new(self.terms.clone(), if joint { self.p } else { 0 }, &rows)?);
        Ok(())
    }

    /// Reweight the chosen LMM with the current weights and response `y` and return it.
    fn lmm_reweighted(&mut self, joint: bool, y: Option<&[f64]>) -> CoreResult<&mut Lmm> {
        self.ensure_lmm(joint)?;
        let rows = Rows {
            refs: self.refs.iter().map(|v| v.as_slice()).collect(),
            z: self.z.iter().map(|v| v.as_slice()).collect(),
            x: if joint { &self.x[..] } else { &[][..] },
            y: y.unwrap_or(&self.wresp),
            w: Some(&self.w),
        };
        let m = self.solver.lmm_slot(joint).and_then(|s| s.as_mut()).expect("ensure_lmm built it");
        m.reweight(&rows)?;
        Ok(m)
    }

    /// Reweight the chosen LMM with the current weights and working response and solve.
    fn lmm_solve(&mut self, theta: &[f64], joint: bool) -> CoreResult<Solution> {
        let m = self.lmm_reweighted(joint, None)?;
        m.solution(theta, false)
            .ok_or_else(|| E::Numerical("PIRLS: the penalised least-squares system is not positive definite".into()))
    }

    pub(in crate::glmm) fn general_solve(&mut self, theta: &[f64], joint: bool) -> CoreResult<(Vec<f64>, Vec<f64>, f64)> {
        let sol = self.lmm_solve(theta, joint)?;
        Ok((sol.u.concat(), sol.beta, sol.ldl2))
    }

    pub(in crate::glmm) fn general_condvar(&mut self, theta: &[f64]) -> CoreResult<Vec<Vec<f64>>> {
        self.refresh_state();
        let m = self.lmm_reweighted(false, None)?;
        m.condvar(theta).ok_or_else(|| E::Numerical("factorisation failed".into()))
    }

    pub(in crate::glmm) fn general_rx(&mut self, theta: &[f64]) -> CoreResult<Vec<f64>> {
        self.refresh_state();
        // the working response of the (u, beta) system; R_X does not depend on it, but the
        // factor of the whole system must exist
        let yt: Vec<f64> = (0..self.n).map(|i| self.wresp[i] + self.offb[i] - self.off[i]).collect();
        let m = self.lmm_reweighted(true, Some(&yt))?;
        let sol = m
            .solution(theta, false)
            .ok_or_else(|| E::Numerical("the fixed-effects block is not positive definite".into()))?;
        Ok(sol.rx)
    }
}
