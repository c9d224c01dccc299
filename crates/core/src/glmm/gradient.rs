//! The exact gradient of the Laplace criterion at the mode (one term, scalar or
//! vector-valued, with any link; all-scalar terms with a canonical link), and the
//! first-order prediction of the modes from it that warm-starts the next evaluations.

use super::kernel::Kernel;
use super::solver::block::{factor_m, lam_mul, lam_t_mul, lu_factor, lu_solve};
use super::solver::Solver;
use super::Glmm;
use crate::small;

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

    /// Gradient for one vector-valued term (block-diagonal M, one s x s block M_l =
    /// I + Lambda' H_l Lambda per level) at the modes of the last evaluation, any link. The
    /// all-scalar formulas (`crossed_gradient`) with s x s blocks: with a_i = Lambda' z_i,
    /// G_i = M_l^-1 a_i and h_i = a_i' G_i (M from the IRLS weights W), the adjoint
    /// w_l = Mo_l^-1 sum_i W'_i h_i a_i (Mo from the observed information Wo, which
    /// governs how the modes move: du = Mo^-1 r), and per row
    /// c_i = -2 s_i + W'_i h_i - Wo_i a_i' w_l (s the score in eta),
    ///   d/dbeta = sum_i c_i x_i,
    ///   d/dtheta_k = sum over Lambda's entries (a, b) holding theta_k of
    ///                sum_i z_ia (c_i u_lb + s_i w_lb + 2 W_i G_ib),
    /// the three parts being eta's explicit dependence on theta (through -2 log p, the
    /// weights in log|M| and the modes), the modes' dependence through Lambda' Z' s, and
    /// log|M|'s direct dependence on Lambda. Everything is per group: three passes over
    /// its rows and s x s solves.
    pub(in crate::glmm) fn block_gradient<K: Kernel>(&mut self, k: K, jacobian: bool) -> Option<Vec<f64>> {
        // the common sizes as constants: the s-loops below unroll
        match self.terms[0].s {
            2 => self.block_gradient_s::<K, 2>(k, jacobian),
            3 => self.block_gradient_s::<K, 3>(k, jacobian),
            _ => self.block_gradient_s::<K, 0>(k, jacobian),
        }
    }

    /// `block_gradient` for terms of `S` columns (0: any, read from the term).
    fn block_gradient_s<K: Kernel, const S: usize>(&mut self, k: K, jacobian: bool) -> Option<Vec<f64>> {
        let t = &self.terms[0];
        let s = if S > 0 { S } else { t.s };
        let (nl, p) = (t.nlev, self.p);
        let theta = self.theta_last.clone();
        let ntheta = theta.len();
        let lam = self.lambdas(&theta).swap_remove(0);
        let entries = t.lambda.clone();
        let q = self.u.len();
        let nx = ntheta + p;
        let mut jac = if jacobian { vec![0.0; q * nx] } else { Vec::new() };
        let maxg = (0..nl).map(|l| self.gstart[l + 1] - self.gstart[l]).max().unwrap_or(0);
        let mut der: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; maxg]);
        let mut hh = vec![0.0; maxg];
        let (mut h, mut ho) = (vec![0.0; s * s], vec![0.0; s * s]);
        let (mut full, mut tmp, mut m) = (vec![0.0; s * s], vec![0.0; s * s], vec![0.0; s * s]);
        let mut mo = vec![0.0; s * s];
        let mut piv = vec![0usize; s];
        let (mut bl, mut a, mut gi, mut wl, mut gsc) = (vec![0.0; s], vec![0.0; s], vec![0.0; s], vec![0.0; s], vec![0.0; s]);
        let mut co = vec![0.0; s * p];
        let mut pm = vec![0.0; s * s];
        let mut gb = vec![0.0; p];
        let mut r = vec![0.0; s];
        let (mut kmat, mut cmat) = (vec![0.0; s * s], vec![0.0; s * s]);
        let (mut vz, mut lw, mut zc) = (vec![0.0; s], vec![0.0; s], vec![0.0; s]);
        for l in 0..nl {
            let rows = self.gstart[l]..self.gstart[l + 1];
            let ul = &self.u[l * s..(l + 1) * s];
            lam_mul(&lam, s, ul, &mut bl);
            h.iter_mut().for_each(|x| *x = 0.0);
            ho.iter_mut().for_each(|x| *x = 0.0);
            gsc.iter_mut().for_each(|x| *x = 0.0);
            co.iter_mut().for_each(|x| *x = 0.0);
            // pass A: the row derivatives, H and Ho (lower), the score, Co = sum Wo z x'
            self.block_deriv(k, l, &bl, &mut der);
            let [dw, dwr, dwo, dwp] = &der;
            for (j, i) in rows.clone().enumerate() {
                let zi = &self.z[0][i * s..(i + 1) * s];
                for aa in 0..s {
                    gsc[aa] += dwr[j] * zi[aa];
                    for c in aa..s {
                        h[c + aa * s] += dw[j] * zi[aa] * zi[c];
                        ho[c + aa * s] += dwo[j] * zi[aa] * zi[c];
                    }
                }
                if jacobian {
                    // co row-major (row aa: the p products with z_aa), contiguous over x
                    let xi = &self.x[i * p..(i + 1) * p];
                    for aa in 0..s {
                        let wz = dwo[j] * zi[aa];
                        for (r, xc) in co[aa * p..(aa + 1) * p].iter_mut().zip(xi) {
                            *r += wz * xc;
                        }
                    }
                }
            }
            if !factor_m(&lam, &h, s, &mut full, &mut tmp, &mut m) {
                return None;
            }
            // Mo = I + Lambda' Ho Lambda, not necessarily positive definite
            for aa in 0..s {
                for c in aa..s {
                    full[c + aa * s] = ho[c + aa * s];
                    full[aa + c * s] = ho[c + aa * s];
                }
            }
            small::congruence_t(&lam, &full, s, &mut tmp, &mut mo);
            for aa in 0..s {
                mo[aa + aa * s] += 1.0;
            }
            if !lu_factor(&mut mo, s, &mut piv) {
                return None;
            }
            // per group: K = M^-1 Lambda' (so G_i = K z_i) and C = Lambda K (so
            // h_i = z_i' C z_i): no solve per row
            for jj in 0..s {
                // column jj of Lambda' is row jj of Lambda
                for aa in 0..s {
                    gi[aa] = lam[jj + aa * s];
                }
                small::solve_lower(&m, s, &mut gi);
                small::solve_lower_t(&m, s, &mut gi);
                kmat[jj * s..(jj + 1) * s].copy_from_slice(&gi);
            }
            for aa in 0..s {
                for bb in 0..s {
                    cmat[aa + bb * s] = (0..=aa).map(|c| lam[aa + c * s] * kmat[c + bb * s]).sum();
                }
            }
            // pass B: h_i and vz = Z' (W' h), v = Lambda' vz
            vz.iter_mut().for_each(|x| *x = 0.0);
            for (j, i) in rows.clone().enumerate() {
                let zi = &self.z[0][i * s..(i + 1) * s];
                let mut hi = 0.0;
                for bb in 0..s {
                    let mut cz = 0.0;
                    for aa in 0..s {
                        cz += cmat[aa + bb * s] * zi[aa];
                    }
                    hi += cz * zi[bb];
                }
                hh[j] = hi;
                for aa in 0..s {
                    vz[aa] += dwp[j] * hi * zi[aa];
                }
            }
            lam_t_mul(&lam, s, &vz, &mut wl);
            lu_solve(&mo, s, &piv, &mut wl);
            lam_mul(&lam, s, &wl, &mut lw);
            // pass C: c_i, the beta gradient and zc = sum z c
            zc.iter_mut().for_each(|x| *x = 0.0);
            for (j, i) in rows.clone().enumerate() {
                let zi = &self.z[0][i * s..(i + 1) * s];
                let tz: f64 = zi.iter().zip(&lw).map(|(x, y)| x * y).sum();
                let c = -2.0 * dwr[j] + dwp[j] * hh[j] - dwo[j] * tz;
                let xi = &self.x[i * p..(i + 1) * p];
                for cc in 0..p {
                    gb[cc] += c * xi[cc];
                }
                for aa in 0..s {
                    zc[aa] += c * zi[aa];
                }
            }
            // sum_i z_ia (c_i u_b + s_i w_b + 2 W_i G_ib) = zc_a u_b + gsc_a w_b + 2 (H K')_ab
            for bb in 0..s {
                for aa in 0..s {
                    let hk: f64 = (0..s)
                        .map(|c| {
                            let hv = if c >= aa { h[c + aa * s] } else { h[aa + c * s] };
                            hv * kmat[bb + c * s]
                        })
                        .sum();
                    pm[aa + bb * s] += zc[aa] * ul[bb] + gsc[aa] * wl[bb] + 2.0 * hk;
                }
            }
            // du_l/d(theta, beta) = Mo^-1 r: r_theta_k = E_k' g - Lambda' Ho E_k u,
            // r_beta_c = -Lambda' Co[:, c]
            if jacobian {
                for kk in 0..ntheta {
                    r.iter_mut().for_each(|x| *x = 0.0);
                    let mut any = false;
                    for &(ea, eb, ti) in &entries {
                        if ti != kk {
                            continue;
                        }
                        any = true;
                        r[eb] += gsc[ea];
                        // Ho E u = Ho[:, ea] u_eb
                        for cc in 0..s {
                            let hv = if cc >= ea { ho[cc + ea * s] } else { ho[ea + cc * s] };
                            full[cc] = hv * ul[eb];
                        }
                        lam_t_mul(&lam, s, &full[..s], &mut a);
                        for aa in 0..s {
                            r[aa] -= a[aa];
                        }
                    }
                    if any {
                        lu_solve(&mo, s, &piv, &mut r);
                        jac[kk * q + l * s..kk * q + (l + 1) * s].copy_from_slice(&r);
                    }
                }
                for cc in 0..p {
                    for aa in 0..s {
                        vz[aa] = co[aa * p + cc];
                    }
                    lam_t_mul(&lam, s, &vz, &mut r);
                    for x in r.iter_mut() {
                        *x = -*x;
                    }
                    lu_solve(&mo, s, &piv, &mut r);
                    let col = ntheta + cc;
                    jac[col * q + l * s..col * q + (l + 1) * s].copy_from_slice(&r);
                }
            }
        }
        let mut out = vec![0.0; nx];
        for &(ea, eb, ti) in &entries {
            out[ti] += pm[ea + eb * s];
        }
        out[ntheta..].copy_from_slice(&gb);
        if jacobian {
            let x0: Vec<f64> = theta.iter().chain(self.beta.iter()).copied().collect();
            self.pred = Some((x0, self.u.clone(), jac));
        }
        Some(out)
    }
}
