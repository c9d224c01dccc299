//! The exact gradient of the Laplace criterion at the mode (one scalar term with any link;
//! all-scalar terms with a canonical link), and the first-order prediction of the modes
//! from it that warm-starts the next evaluations.

use super::kernel::Kernel;
use super::solver::Solver;
use super::Glmm;

impl Glmm {
    /// Gradient of the Laplace criterion in (theta, beta) at the mode found by the last
    /// [`laplace`](Self::laplace) call (see [`has_gradient`](Self::has_gradient); `None`
    /// otherwise or when there was no successful evaluation). The formulas below are for
    /// one scalar term; `crossed_gradient` has the general all-scalar case.
    ///
    /// With d_j = 1 + theta^2 sum W z^2 (the IRLS weights W) and the mode u_j solving
    /// theta sum_i z_i s_i = u_j (s the score in eta), the criterion is
    /// -2 log p(y | u) + |u|^2 + sum_j log d_j. The first two terms are stationary in u, so
    /// only their explicit derivatives enter; log d_j changes with eta through W' = dW/deta,
    /// and eta moves with the parameters directly and through the mode, whose derivatives
    /// come from differentiating the mode equation (with the observed information Wo; for
    /// canonical links Wo = W):
    ///   du_j/dbeta = -theta sum_i Wo_i z_i x_i / (1 + theta^2 sum Wo z^2),
    ///   du_j/dtheta = (sum_i z_i s_i - theta u_j sum Wo z^2) / (1 + theta^2 sum Wo z^2).
    pub fn laplace_gradient(&mut self) -> Option<Vec<f64>> {
        self.laplace_gradient_opt(true)
    }

    /// As [`laplace_gradient`](Self::laplace_gradient); `jacobian` also keeps du/d(theta,
    /// beta) to predict the modes of the next evaluations (skip it for points that will
    /// not be revisited, such as the columns of a finite-difference Hessian).
    pub fn laplace_gradient_opt(&mut self, jacobian: bool) -> Option<Vec<f64>> {
        if !self.has_gradient() || !self.warm || !self.info.objective.is_finite() {
            return None;
        }
        self.gradient_at_mode(jacobian)
    }

    /// Start PIRLS from the modes predicted to first order from the last gradient evaluation
    /// (a warm start one order better than the last modes: steps of 1e-4 in the parameters
    /// leave errors of 1e-8, which one Newton step removes).
    pub(in crate::glmm) fn predict_modes(&mut self, theta: &[f64], beta: &[f64]) {
        let Some((x0, u0, jac)) = &self.pred else { return };
        let nx = x0.len();
        if nx != theta.len() + beta.len() {
            return;
        }
        let q = u0.len();
        let mut dx = Vec::with_capacity(nx);
        for (j, v) in theta.iter().chain(beta.iter()).enumerate() {
            dx.push(v - x0[j]);
        }
        // only near the point of the gradient (else the last modes are the better guess)
        if dx.iter().zip(x0).any(|(d, x)| d.abs() > 0.05 * (1.0 + x.abs())) {
            return;
        }
        let mut u = u0.clone();
        for (j, d) in dx.iter().enumerate() {
            if *d != 0.0 {
                let col = &jac[j * q..(j + 1) * q];
                for (a, c) in u.iter_mut().zip(col) {
                    *a += c * d;
                }
            }
        }
        if u.iter().all(|v| v.is_finite()) {
            self.u = u;
            self.warm = true;
            self.state_ok = false;
        }
    }

    /// Gradient for all-scalar (crossed / nested) terms and a canonical link, at the modes of
    /// the last evaluation. With h_i = a_i' M^-1 a_i (a_i = Lambda' z_i), G_i = M^-1 a_i on
    /// the row's levels, W' = dW/deta and w = M^-1 Lambda' Z' (W' h) (one adjoint solve for
    /// the modes' dependence on the parameters), per row
    /// c_i = -2 s_i + W'_i h_i - W_i (Z Lambda w)_i and
    ///   d/dbeta = sum_i c_i x_i,
    ///   d/dtheta_t = sum_i z_it u_t(i) c_i + 2 sum_i W_i z_it G_it + sum_i z_it w_t(i) s_i.
    pub(in crate::glmm) fn crossed_gradient<K: Kernel>(&mut self, k: K, jacobian: bool) -> Option<Vec<f64>> {
        let th = self.term_thetas(&self.theta_last);
        let (n, p, nt) = (self.n, self.p, self.terms.len());
        let Solver::Crossed { u: cr, .. } = &mut self.solver else { return None };
        let g = cr.row_inverse_products(&th, &self.refs, &self.z);
        let mut s_ = vec![0.0; n];
        let mut w_ = vec![0.0; n];
        let mut wph = vec![0.0; n];
        let mut v = vec![0.0; self.u.len()];
        for i in 0..n {
            let d = k.deriv_mu(self.eta[i], self.mu[i], self.y[i], self.wt[i]);
            let mut h = 0.0;
            for t in 0..nt {
                h += th[t] * self.z[t][i] * g[i * nt + t];
            }
            s_[i] = d.wr;
            w_[i] = d.w;
            wph[i] = d.wp * h;
            for t in 0..nt {
                v[self.uoff[t] + self.refs[t][i] as usize] += th[t] * self.z[t][i] * wph[i];
            }
        }
        let n0 = self.terms[0].nlev;
        let w = cr.solve(&v[..n0], &v[n0..]);
        let mut gb = vec![0.0; p];
        let mut gt = vec![0.0; nt];
        for i in 0..n {
            let mut tz = 0.0;
            for t in 0..nt {
                tz += th[t] * self.z[t][i] * w[self.uoff[t] + self.refs[t][i] as usize];
            }
            let c = -2.0 * s_[i] + wph[i] - w_[i] * tz;
            let xi = &self.x[i * p..(i + 1) * p];
            for a in 0..p {
                gb[a] += c * xi[a];
            }
            for t in 0..nt {
                let j = self.uoff[t] + self.refs[t][i] as usize;
                let zit = self.z[t][i];
                gt[t] += zit * self.u[j] * c + 2.0 * w_[i] * zit * g[i * nt + t] + zit * w[j] * s_[i];
            }
        }
        let ntheta = self.theta_last.len();
        let mut out = vec![0.0; ntheta + p];
        for (t, term) in self.terms.iter().enumerate() {
            out[term.lambda[0].2] += gt[t];
        }
        out[ntheta..].copy_from_slice(&gb);
        if !jacobian {
            return Some(out);
        }
        // du/d(theta, beta) for the next warm start: M^-1 r with
        // r_beta_c = -Lambda'Z'W x_c, r_theta_t = Lambda_t'Z's - Lambda'Z'W (z_t u_t)
        let q = self.u.len();
        let mut jac = vec![0.0; q * (ntheta + p)];
        let mut r = vec![0.0; q];
        for col in 0..(ntheta + p) {
            r.iter_mut().for_each(|v| *v = 0.0);
            let term_t = if col < ntheta { self.terms.iter().position(|tm| tm.lambda[0].2 == col) } else { None };
            if col < ntheta && term_t.is_none() {
                continue;
            }
            for i in 0..n {
                let val = if let Some(t) = term_t {
                    let j = self.uoff[t] + self.refs[t][i] as usize;
                    r[j] += self.z[t][i] * s_[i];
                    -w_[i] * self.z[t][i] * self.u[j]
                } else {
                    -w_[i] * self.x[i * p + (col - ntheta)]
                };
                for t in 0..nt {
                    r[self.uoff[t] + self.refs[t][i] as usize] += th[t] * self.z[t][i] * val;
                }
            }
            let sol = cr.solve(&r[..n0], &r[n0..]);
            jac[col * q..(col + 1) * q].copy_from_slice(&sol);
        }
        if jacobian {
            let x0: Vec<f64> = self.theta_last.iter().chain(self.beta.iter()).copied().collect();
            self.pred = Some((x0, self.u.clone(), jac));
        }
        Some(out)
    }

    /// [d/dtheta, d/dbeta...] for the scalar engine at the stored modes, and du/dtheta
    /// (nl) and du/dbeta (nl x p, column-major).
    pub(in crate::glmm) fn scalar_gradient<K: Kernel>(&self, k: K, th: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (p, nl) = (self.p, self.terms[0].nlev);
        let mut gb = vec![0.0; p]; // -2 X's + sum_j ...
        let mut gt = 0.0;
        let mut co = vec![0.0; p];
        let mut a = vec![0.0; p];
        let th2 = th * th;
        let mut jt = vec![0.0; nl];
        let mut jb = vec![0.0; nl * p];
        for l in 0..nl {
            let ul = self.u[l];
            let bu = th * ul;
            let (mut sj, mut hj, mut hoj, mut bj) = (0.0, 0.0, 0.0, 0.0);
            co.iter_mut().for_each(|v| *v = 0.0);
            a.iter_mut().for_each(|v| *v = 0.0);
            for i in self.gstart[l]..self.gstart[l + 1] {
                let zi = self.z[0][i];
                let eta = self.offb[i] + zi * bu;
                let d = k.deriv(eta, self.y[i], self.wt[i]);
                let xi = &self.x[i * p..(i + 1) * p];
                sj += zi * d.wr;
                hj += d.w * zi * zi;
                let woz = d.wo * zi;
                hoj += woz * zi;
                let wpz2 = d.wp * zi * zi;
                bj += wpz2 * zi;
                for c in 0..p {
                    gb[c] -= 2.0 * d.wr * xi[c];
                    co[c] += woz * xi[c];
                    a[c] += wpz2 * xi[c];
                }
            }
            let dj = 1.0 + th2 * hj;
            let dobs = 1.0 + th2 * hoj;
            for c in 0..p {
                gb[c] += th2 / dj * (a[c] - bj * th2 * co[c] / dobs);
            }
            let dudt = (sj - th * ul * hoj) / dobs;
            gt += -2.0 * ul * sj + (2.0 * th * hj + th2 * bj * (ul + th * dudt)) / dj;
            jt[l] = dudt;
            for c in 0..p {
                jb[c * nl + l] = -th * co[c] / dobs;
            }
        }
        let mut out = Vec::with_capacity(p + 1);
        out.push(gt);
        out.extend_from_slice(&gb);
        (out, jt, jb)
    }

    /// The scalar engine's gradient in the layout of (theta, beta), and its Jacobian of
    /// the modes kept for the next warm start when `jacobian`.
    pub(in crate::glmm) fn scalar_gradient_full(&mut self, jacobian: bool) -> Option<Vec<f64>> {
        let ti = self.terms[0].lambda[0].2;
        let th = *self.theta_last.get(ti)?;
        let ntheta = self.theta_last.len();
        let (g, jt, jb) = with_kernel!(self, k => self.scalar_gradient(k, th));
        let mut out = vec![0.0; ntheta + self.p];
        out[ti] = g[0];
        out[ntheta..].copy_from_slice(&g[1..]);
        let nl = self.u.len();
        let mut jac = vec![0.0; nl * (ntheta + self.p)];
        jac[ti * nl..(ti + 1) * nl].copy_from_slice(&jt);
        jac[ntheta * nl..].copy_from_slice(&jb);
        if jacobian {
            let x0: Vec<f64> = self.theta_last.iter().chain(self.beta.iter()).copied().collect();
            self.pred = Some((x0, self.u.clone(), jac));
        }
        Some(out)
    }
}
