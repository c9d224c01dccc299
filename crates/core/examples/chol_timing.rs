//! Times faer's dense Cholesky at the sizes the LMM engine meets (InstEval: 1145).
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor as llt;
use faer::{MatMut, Par};
use std::time::Instant;

fn main() {
    for &n in &[503usize, 1145, 2000] {
        let mut a = vec![0.0; n * n];
        for j in 0..n {
            for i in 0..n {
                a[i + j * n] = 1.0 / (1.0 + (i as f64 - j as f64).abs());
            }
            a[j + j * n] += n as f64;
        }
        for par in [Par::Seq, Par::rayon(0)] {
            let mut mem = MemBuffer::new(llt::cholesky_in_place_scratch::<f64>(n, par, Default::default()));
            let reps = 20;
            let t = Instant::now();
            for _ in 0..reps {
                let mut c = a.clone();
                let stack = MemStack::new(&mut mem);
                llt::cholesky_in_place(MatMut::from_column_major_slice_mut(&mut c, n, n), Default::default(), par, stack, Default::default()).unwrap();
            }
            println!("n={n} par={par:?}: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / reps as f64);
        }
    }
}
