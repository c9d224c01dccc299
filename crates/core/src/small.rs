//! Kernels on small dense matrices (the s x s blocks of one random-effect term). The
//! grouping of rows by level that both engines start from is in `pattern`.
//!
//! Matrices are column-major slices of length s*s. The sizes here are the number of
//! columns of one term (1 for a random intercept, 2-4 for slopes), so plain loops beat
//! calling a general library; the big dense block goes to faer instead.

/// In-place lower Cholesky of an s x s column-major matrix (upper triangle ignored and zeroed).
/// Returns false if a pivot is not positive.
pub fn chol_lower(a: &mut [f64], s: usize) -> bool {
    for j in 0..s {
        let mut d = a[j + j * s];
        for k in 0..j {
            d -= a[j + k * s] * a[j + k * s];
        }
        if !(d > 0.0) {
            return false;
        }
        let d = d.sqrt();
        a[j + j * s] = d;
        for i in (j + 1)..s {
            let mut v = a[i + j * s];
            for k in 0..j {
                v -= a[i + k * s] * a[j + k * s];
            }
            a[i + j * s] = v / d;
        }
        for i in 0..j {
            a[i + j * s] = 0.0;
        }
    }
    true
}

/// Solve L x = b in place (forward substitution), L lower s x s column-major.
pub fn solve_lower(l: &[f64], s: usize, b: &mut [f64]) {
    for i in 0..s {
        let mut v = b[i];
        for k in 0..i {
            v -= l[i + k * s] * b[k];
        }
        b[i] = v / l[i + i * s];
    }
}

/// Solve L' x = b in place (back substitution), L lower s x s column-major.
pub fn solve_lower_t(l: &[f64], s: usize, b: &mut [f64]) {
    for i in (0..s).rev() {
        let mut v = b[i];
        for k in (i + 1)..s {
            v -= l[k + i * s] * b[k];
        }
        b[i] = v / l[i + i * s];
    }
}

/// out = Lam' A Lam for symmetric A (full, column-major) and lower-triangular Lam.
pub fn congruence_t(lam: &[f64], a: &[f64], s: usize, tmp: &mut [f64], out: &mut [f64]) {
    // tmp = A Lam
    for j in 0..s {
        for i in 0..s {
            let mut v = 0.0;
            for k in j..s {
                v += a[i + k * s] * lam[k + j * s];
            }
            tmp[i + j * s] = v;
        }
    }
    // out = Lam' tmp
    for j in 0..s {
        for i in 0..s {
            let mut v = 0.0;
            for k in i..s {
                v += lam[k + i * s] * tmp[k + j * s];
            }
            out[i + j * s] = v;
        }
    }
}

/// Inverse of a lower-triangular s x s matrix (column-major), result lower. No allocation:
/// column j of the inverse solves L x = e_j, whose first j entries are 0.
pub fn invert_lower(l: &[f64], s: usize, out: &mut [f64]) {
    for v in out.iter_mut() {
        *v = 0.0;
    }
    for j in 0..s {
        out[j + j * s] = 1.0 / l[j + j * s];
        for i in (j + 1)..s {
            let mut v = 0.0;
            for k in j..i {
                v -= l[i + k * s] * out[k + j * s];
            }
            out[i + j * s] = v / l[i + i * s];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_reconstructs() {
        let a = [4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
        let mut l = a;
        assert!(chol_lower(&mut l, 3));
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i + k * 3] * l[j + k * 3]).sum();
                assert!((v - a[i + j * 3]).abs() < 1e-12);
            }
        }
        let mut b = [1.0, 2.0, 3.0];
        solve_lower(&l, 3, &mut b);
        solve_lower_t(&l, 3, &mut b);
        // A x = [1,2,3]
        for i in 0..3 {
            let v: f64 = (0..3).map(|k| a[i + k * 3] * b[k]).sum();
            assert!((v - (i as f64 + 1.0)).abs() < 1e-12);
        }
    }

    #[test]
    fn lower_inverse_is_the_inverse() {
        let l = [2.0, 0.5, -1.0, 0.0, 3.0, 0.25, 0.0, 0.0, 1.5];
        let mut inv = [0.0; 9];
        invert_lower(&l, 3, &mut inv);
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i + k * 3] * inv[k + j * 3]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn not_positive_definite_is_reported() {
        let mut a = [1.0, 2.0, 2.0, 1.0];
        assert!(!chol_lower(&mut a, 2));
    }
}
