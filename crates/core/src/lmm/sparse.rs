//! The rest block (the terms after term 0, then X and y) as a sparse matrix, factored by
//! faer's sparse Cholesky with a fill-reducing order.
//!
//! After term 0 is eliminated, the rest block is C = Lambda' A Lambda + I - sum_l B_l B_l'.
//! Its pattern over the random effects is fixed by the grouping codes alone: two levels of
//! later terms are linked when a row carries both (A) or a level of term 0 meets both (the
//! rank update by B_l). For nested designs (classes in schools after pupils in classes) each
//! level of term 0 meets one level of every later term and C is block diagonal with an X / y
//! border, and its factor has no fill at all; partially crossed designs (students who change
//! teachers or schools) link levels within and across groups, and an approximate minimum
//! degree order on the graph of levels keeps the fill small. The dense block of the dense
//! representation holds all of these zeros and costs r^3 / 3 per evaluation.
//!
//! Layout (all fixed before the optimiser starts):
//!
//! * C in the engine's own index order (terms' levels, then X, then y), lower triangle,
//!   compressed by columns: column j of a random effect holds its own level block's rows at
//!   and below j, then the linked levels' rows (each level block contiguous), then the p + 1
//!   rows of X and y, which every column has; the columns of X and y hold their dense lower
//!   part. `pos` finds an entry.
//! * The order the factor uses: the level blocks in an AMD order of the graph of levels (a
//!   level's s columns stay together), then X and y last, as they are. The factor of the
//!   permuted matrix is faer's (simplicial or supernodal, faer chooses by its flop count);
//!   its values are read through a column view (`lcol`, `lrow`, `lslot`: row and value slot
//!   of every stored entry, column by column, in the permuted order).
//! * `cmap` maps every entry of C to the slot of the same entry of the factor (the factor's
//!   pattern contains C's), so that the selected inverse can be read on C's pattern.
//!
//! The log-determinants are sums of logs of the factor's diagonal (X and y come last, so their
//! diagonal is where the dense factor has it); the penalised least squares solution is one
//! back substitution; the selected inverse (entries of (L L')^-1 on the pattern of L, which
//! the gradient and the conditional variances need) is Takahashi's recursion over the columns.

use crate::pattern::RowGroups;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::LltRegularization;
use faer::perm::PermRef;
use faer::sparse::linalg::{amd, SupernodalThreshold};
use faer::sparse::linalg::cholesky::{
    factorize_symbolic_cholesky, CholeskySymbolicParams, SymbolicCholesky, SymbolicCholeskyRaw, SymmetricOrdering,
};
use faer::sparse::{SparseColMatRef, SymbolicSparseColMatRef};
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{MatMut, MatRef, Par, Side};

/// Most nonzeros the sparse factor (and the pattern of the rest block) may have: with its
/// values, its column view and its selected inverse (24 bytes an entry) about as much memory
/// as the largest dense block the engine accepts (`MAX_DENSE`^2 doubles).
pub const MAX_SPARSE_NNZ: usize = 40_000_000;

/// The sparse representation of the rest block; see the module documentation.
pub(crate) struct SparseRest {
    r: usize,
    qz: usize,
    /// C's pattern (lower, by columns, engine order)
    pub(crate) colptr: Vec<u32>,
    pub(crate) rowidx: Vec<u32>,
    /// per random-effect rest index: its term, the start and the end of its level's block
    pub(crate) rterm: Vec<u16>,
    pub(crate) rblk: Vec<u32>,
    pub(crate) bend: Vec<u32>,
    /// per level l of term 0: the positions in C of the pairs (a >= b) of its random-effect
    /// entries, `lvpos[lvoff[l]..lvoff[l + 1]]`, b-major
    pub(crate) lvoff: Vec<usize>,
    pub(crate) lvpos: Vec<u32>,
    symbolic: SymbolicCholesky<u32>,
    lval: Vec<f64>,
    mem: MemBuffer,
    /// column view of the factor (permuted order); the first entry of a column is its diagonal
    lcol: Vec<usize>,
    lrow: Vec<u32>,
    lslot: Vec<u32>,
    /// engine index -> factor index
    pinv: Vec<u32>,
    /// position in C -> slot in the factor's values
    cmap: Vec<u32>,
    /// the selected inverse on the factor's slots, its size m (0: not computed) and the
    /// workspace of the recursion (allocated on first use)
    z: Vec<f64>,
    zm: usize,
    zpos: Vec<u32>,
    zacc: Vec<f64>,
    /// workspace of the X / y block's update
    gx: Vec<f64>,
    gxx: Vec<f64>,
}

/// Levels of term 0 per matrix product in the update of the X / y block.
const TRAIL_CHUNK: usize = 2048;

/// What the sparse representation would cost, to weigh against the dense one.
pub(crate) struct SparseCost {
    /// multiply-adds of one numerical factorisation (sum of squared column counts / 2)
    pub flops: f64,
    /// entries of C and of the factor
    pub nnz_c: usize,
    pub nnz_l: usize,
}

/// The levels of the other terms each level of term 0 meets (`LevelPattern`'s `colptr` and
/// `idx`), borrowed.
#[derive(Clone, Copy)]
pub(crate) struct LevelRef<'a> {
    pub colptr: &'a [usize],
    pub idx: &'a [u32],
}

/// The shape of the rest block: the terms as (levels, columns) (term 0's for the
/// workspace), where each later term's levels start among the rest indices (`off`), their
/// total `qz`, and the `trailing` dense columns (X and y).
pub(crate) struct RestShape<'a> {
    pub nlev: &'a [usize],
    pub s: &'a [usize],
    pub off: &'a [usize],
    pub qz: usize,
    pub trailing: usize,
}

impl SparseRest {
    /// Pairs of levels the pattern analysis visits (with repeats): the work of `build`, known
    /// from the level pattern alone.
    /// Also None when one level of term 0 alone meets so many random effects that their
    /// pairs exceed `MAX_SPARSE_NNZ` (the pattern holds them all).
    pub(crate) fn pair_bound(shape: &RestShape, n: usize, lp: LevelRef) -> Option<f64> {
        let nt = shape.nlev.len();
        let per_row = ((nt - 1) * (nt.saturating_sub(2))) as f64 / 2.0;
        let mut total = n as f64 * per_row;
        let nl0 = lp.colptr.len() - 1;
        for l in 0..nl0 {
            let z = (lp.colptr[l + 1] - lp.colptr[l] - shape.trailing) as f64;
            if z * (z + 1.0) / 2.0 > MAX_SPARSE_NNZ as f64 {
                return None;
            }
            total += z * z / 2.0;
        }
        Some(total)
    }

    /// The pattern, the order and the symbolic factorisation. `None` when the factor would
    /// exceed `MAX_SPARSE_NNZ` (or faer refuses the sizes).
    pub(crate) fn build(shape: &RestShape, refs: &[&[u32]], lp: LevelRef, supernodal: Option<bool>) -> Option<(SparseRest, SparseCost)> {
        let nt = shape.nlev.len();
        let qz = shape.qz;
        let r = qz + shape.trailing;
        // ---- the graph of levels (nodes: the levels of terms 1..) ----
        let mut noff = vec![0usize; nt + 1];
        for k in 1..nt {
            noff[k + 1] = noff[k] + shape.nlev[k];
        }
        let nb = noff[nt];
        let mut nstart = vec![0usize; nb + 1];
        let mut nsize = vec![0usize; nb];
        for k in 1..nt {
            for lv in 0..shape.nlev[k] {
                nstart[noff[k] + lv] = shape.off[k] + lv * shape.s[k];
                nsize[noff[k] + lv] = shape.s[k];
            }
        }
        nstart[nb] = qz;
        // node, term and block of each random-effect rest index
        let mut node_of = vec![0u32; qz];
        let mut rterm = vec![0u16; qz];
        let mut rblk = vec![0u32; qz];
        let mut bend = vec![0u32; qz];
        for k in 1..nt {
            for lv in 0..shape.nlev[k] {
                let b = noff[k] + lv;
                for i in nstart[b]..nstart[b] + nsize[b] {
                    node_of[i] = b as u32;
                    rterm[i] = k as u16;
                    rblk[i] = nstart[b] as u32;
                    bend[i] = (nstart[b] + nsize[b]) as u32;
                }
            }
        }
        // Neighbours of each node with a higher index (the lower pattern, by columns), from
        // the rows that carry it and the levels of term 0 that meet it, with a marker per
        // node: work sum over rows (nt - 1)^2 + sum over levels of term 0 (nodes met)^2,
        // memory the result.
        let nl0 = lp.colptr.len() - 1;
        let groups: Vec<RowGroups> = (0..nt).map(|k| if k == 0 { RowGroups::sorted(&[0]) } else { RowGroups::by_level(refs[k], shape.nlev[k]) }).collect();
        // the nodes each level of term 0 meets, and the levels of term 0 each node is met by
        let mut lnodes_ptr = Vec::with_capacity(nl0 + 1);
        let mut lnodes: Vec<u32> = Vec::new();
        for l in 0..nl0 {
            lnodes_ptr.push(lnodes.len());
            for e in lp.colptr[l]..lp.colptr[l + 1] {
                let ix = lp.idx[e] as usize;
                if ix >= qz {
                    break;
                }
                let b = node_of[ix];
                if lnodes.last() != Some(&b) || lnodes.len() == lnodes_ptr[l] {
                    lnodes.push(b);
                }
            }
        }
        lnodes_ptr.push(lnodes.len());
        let mut inc_ptr = vec![0usize; nb + 1];
        for &b in &lnodes {
            inc_ptr[b as usize + 1] += 1;
        }
        for b in 0..nb {
            inc_ptr[b + 1] += inc_ptr[b];
        }
        let mut inc = vec![0u32; lnodes.len()];
        {
            let mut next = inc_ptr.clone();
            for l in 0..nl0 {
                for &b in &lnodes[lnodes_ptr[l]..lnodes_ptr[l + 1]] {
                    inc[next[b as usize]] = l as u32;
                    next[b as usize] += 1;
                }
            }
        }
        let mut mark = vec![u32::MAX; nb];
        let mut ncol = vec![0u32; nb + 1];
        let mut nrow: Vec<u32> = Vec::new();
        let mut nbrs: Vec<u32> = Vec::new();
        for k in 1..nt {
            for lv in 0..shape.nlev[k] {
                let b = noff[k] + lv;
                nbrs.clear();
                mark[b] = b as u32;
                for &t in groups[k].rows(lv) {
                    for k2 in (k + 1)..nt {
                        let a = noff[k2] + refs[k2][t as usize] as usize;
                        if mark[a] != b as u32 {
                            mark[a] = b as u32;
                            nbrs.push(a as u32);
                        }
                    }
                }
                for &l in &inc[inc_ptr[b]..inc_ptr[b + 1]] {
                    let l = l as usize;
                    for &a in &lnodes[lnodes_ptr[l]..lnodes_ptr[l + 1]] {
                        if a as usize > b && mark[a as usize] != b as u32 {
                            mark[a as usize] = b as u32;
                            nbrs.push(a);
                        }
                    }
                }
                nbrs.sort_unstable();
                nrow.extend_from_slice(&nbrs);
                ncol[b + 1] = nrow.len() as u32;
                if nrow.len() > MAX_SPARSE_NNZ {
                    return None;
                }
            }
        }
        drop((groups, inc, inc_ptr, mark));

        // ---- the order: AMD on the graph of levels, then X and y ----
        let mut nperm = vec![0u32; nb];
        let mut nperm_inv = vec![0u32; nb];
        if nb > 0 {
            let g = SymbolicSparseColMatRef::new_checked(nb, nb, &ncol, None, &nrow);
            let mut mem = MemBuffer::try_new(amd::order_scratch::<u32>(nb, nrow.len())).ok()?;
            amd::order(&mut nperm, &mut nperm_inv, g, amd::Control::default(), MemStack::new(&mut mem)).ok()?;
        }
        let mut perm = Vec::with_capacity(r);
        for &b in &nperm {
            let b = b as usize;
            for i in nstart[b]..nstart[b] + nsize[b] {
                perm.push(i as u32);
            }
        }
        for i in qz..r {
            perm.push(i as u32);
        }
        let mut pinv = vec![0u32; r];
        for (new, &old) in perm.iter().enumerate() {
            pinv[old as usize] = new as u32;
        }

        // ---- C's pattern, engine order ----
        let mut nnz_c = 0usize;
        for b in 0..nb {
            let s = nsize[b];
            let linked: usize = nrow[ncol[b] as usize..ncol[b + 1] as usize].iter().map(|&a| nsize[a as usize]).sum();
            nnz_c += s * (s + 1) / 2 + s * (linked + shape.trailing);
        }
        nnz_c += shape.trailing * (shape.trailing + 1) / 2;
        if nnz_c > MAX_SPARSE_NNZ || nnz_c >= u32::MAX as usize {
            return None;
        }
        let mut colptr: Vec<u32> = Vec::with_capacity(r + 1);
        let mut rowidx: Vec<u32> = Vec::with_capacity(nnz_c);
        colptr.push(0);
        for b in 0..nb {
            let (st, s) = (nstart[b], nsize[b]);
            for c in 0..s {
                for i in (st + c)..(st + s) {
                    rowidx.push(i as u32);
                }
                for &a in &nrow[ncol[b] as usize..ncol[b + 1] as usize] {
                    let a = a as usize;
                    for i in nstart[a]..nstart[a] + nsize[a] {
                        rowidx.push(i as u32);
                    }
                }
                for i in qz..r {
                    rowidx.push(i as u32);
                }
                colptr.push(rowidx.len() as u32);
            }
        }
        for j in qz..r {
            for i in j..r {
                rowidx.push(i as u32);
            }
            colptr.push(rowidx.len() as u32);
        }
        debug_assert_eq!(rowidx.len(), nnz_c);

        // ---- symbolic factorisation ----
        let a = SymbolicSparseColMatRef::new_checked(r, r, &colptr, None, &rowidx);
        let order = SymmetricOrdering::Custom(PermRef::new_checked(&perm, &pinv, r));
        let mut params = CholeskySymbolicParams::default();
        params.supernodal_flop_ratio_threshold = match supernodal {
            None => SupernodalThreshold::AUTO,
            Some(true) => SupernodalThreshold::FORCE_SUPERNODAL,
            Some(false) => SupernodalThreshold::FORCE_SIMPLICIAL,
        };
        let symbolic = factorize_symbolic_cholesky(a, Side::Lower, order, params).ok()?;
        // the column view of the factor
        let (lcol, lrow, lslot) = column_view(&symbolic, r)?;
        let nnz_l = lrow.len();
        let mut flops = 0.0;
        for j in 0..r {
            let c = (lcol[j + 1] - lcol[j]) as f64;
            flops += c * c / 2.0;
        }
        let mut sp = SparseRest {
            r,
            qz,
            colptr,
            rowidx,
            rterm,
            rblk,
            bend,
            lvoff: Vec::new(),
            lvpos: Vec::new(),
            mem: MemBuffer::try_new(symbolic.factorize_numeric_llt_scratch::<f64>(Par::Seq, Default::default())).ok()?,
            lval: vec![0.0; symbolic.len_val()],
            symbolic,
            lcol,
            lrow,
            lslot,
            pinv,
            cmap: Vec::new(),
            z: Vec::new(),
            zm: 0,
            zpos: Vec::new(),
            zacc: Vec::new(),
            gx: vec![0.0; shape.trailing * TRAIL_CHUNK.min(nl0) * shape.s[0]],
            gxx: vec![0.0; shape.trailing * shape.trailing],
        };
        // C's entries in the factor
        let mut cmap = vec![0u32; nnz_c];
        for j in 0..r {
            for e in sp.colptr[j] as usize..sp.colptr[j + 1] as usize {
                let i = sp.rowidx[e] as usize;
                cmap[e] = sp.lslot_of(sp.pinv[i] as usize, sp.pinv[j] as usize)?;
            }
        }
        sp.cmap = cmap;
        // the pairs of term 0's levels
        let mut lvoff = Vec::with_capacity(nl0 + 1);
        let mut lvpos = Vec::new();
        for l in 0..nl0 {
            lvoff.push(lvpos.len());
            let e0 = lp.colptr[l];
            let z = lp.colptr[l + 1] - e0 - shape.trailing;
            for b in 0..z {
                let jb = lp.idx[e0 + b] as usize;
                for a in b..z {
                    lvpos.push(sp.pos(lp.idx[e0 + a] as usize, jb) as u32);
                }
            }
        }
        lvoff.push(lvpos.len());
        sp.lvoff = lvoff;
        sp.lvpos = lvpos;
        Some((sp, SparseCost { flops, nnz_c, nnz_l }))
    }

    /// Number of stored entries of C.
    pub(crate) fn nnz(&self) -> usize {
        self.rowidx.len()
    }

    /// C's pattern, to find entries (shared by the threads that accumulate the rows).
    #[inline]
    pub(crate) fn pat(&self) -> SpPat<'_> {
        SpPat { r: self.r, qz: self.qz, colptr: &self.colptr, rowidx: &self.rowidx, bend: &self.bend }
    }

    /// Position in C of the entry (i, j), i >= j (engine order). Panics if it is not stored.
    #[inline]
    pub(crate) fn pos(&self, i: usize, j: usize) -> usize {
        self.pat().pos(i, j)
    }

    /// Slot of the factor's entry (i, j) (permuted order, either triangle).
    fn lslot_of(&self, i: usize, j: usize) -> Option<u32> {
        let (i, j) = if i >= j { (i, j) } else { (j, i) };
        let rows = &self.lrow[self.lcol[j]..self.lcol[j + 1]];
        let t = rows.binary_search(&(i as u32)).ok()?;
        Some(self.lslot[self.lcol[j] + t])
    }

    /// C = Lambda' A Lambda + I on the random effects (Lambda the identity on X and y), on
    /// the pattern: `a` the cross products, `lam[k]` term k's s x s Lambda (column-major),
    /// `s[k]` its columns.
    pub(crate) fn form(&self, a: &[f64], c: &mut [f64], lam: &[Vec<f64>], s: &[usize]) {
        let (r, qz) = (self.r, self.qz);
        let cp = |j: usize| self.colptr[j] as usize;
        if s[1..].iter().all(|&v| v == 1) {
            // Lambda is diagonal: scale each entry by the theta of its row and of its column
            let th = |i: usize| if i < qz { lam[self.rterm[i] as usize][0] } else { 1.0 };
            for j in 0..r {
                let tj = th(j);
                for e in cp(j)..cp(j + 1) {
                    c[e] = a[e] * th(self.rowidx[e] as usize) * tj;
                }
            }
        } else {
            c.copy_from_slice(a);
            let maxs = s.iter().copied().max().unwrap_or(1);
            let mut buf = vec![0.0; maxs];
            // rows: Lambda_k' on every level block of the column outside its own block
            for j in 0..qz {
                let mut e = cp(j) + (self.bend[j] as usize - j);
                let end = cp(j + 1) - (r - qz);
                while e < end {
                    let i = self.rowidx[e] as usize;
                    let k = self.rterm[i] as usize;
                    let sk = s[k];
                    let lk = &lam[k];
                    if sk == 1 {
                        c[e] *= lk[0];
                    } else {
                        debug_assert_eq!(self.rblk[i] as usize, i);
                        for q in 0..sk {
                            let mut v = 0.0;
                            for t in q..sk {
                                v += lk[t + q * sk] * c[e + t];
                            }
                            buf[q] = v;
                        }
                        c[e..e + sk].copy_from_slice(&buf[..sk]);
                    }
                    e += sk;
                }
            }
            // columns: C[:, block] Lambda_k below each level block, and the block itself as
            // Lambda_k' A_kk Lambda_k
            let mut blk = vec![0.0; maxs * maxs];
            let mut tmp = vec![0.0; maxs * maxs];
            let mut out = vec![0.0; maxs * maxs];
            let mut j = 0;
            while j < qz {
                let k = self.rterm[j] as usize;
                let sk = s[k];
                let lk = &lam[k];
                // entries below the block: the same rows in each of its columns
                let len = cp(j + 1) - (cp(j) + sk);
                if sk == 1 {
                    for e in cp(j) + 1..cp(j + 1) {
                        c[e] *= lk[0];
                    }
                    c[cp(j)] = a[cp(j)] * lk[0] * lk[0];
                } else {
                    for t in 0..len {
                        for q in 0..sk {
                            buf[q] = c[cp(j + q) + (sk - q) + t];
                        }
                        for q in 0..sk {
                            let mut v = 0.0;
                            for u in q..sk {
                                v += buf[u] * lk[u + q * sk];
                            }
                            c[cp(j + q) + (sk - q) + t] = v;
                        }
                    }
                    for q in 0..sk {
                        for u in q..sk {
                            let v = a[cp(j + q) + (u - q)];
                            blk[u + q * sk] = v;
                            blk[q + u * sk] = v;
                        }
                    }
                    crate::small::congruence_t(lk, &blk[..sk * sk], sk, &mut tmp[..sk * sk], &mut out[..sk * sk]);
                    for q in 0..sk {
                        for u in q..sk {
                            c[cp(j + q) + (u - q)] = out[u + q * sk];
                        }
                    }
                }
                j += sk;
            }
        }
        for j in 0..qz {
            c[cp(j)] += 1.0;
        }
    }

    /// C -= sum_l B_l B_l' for the levels l of term 0: `bmat` (s0 values per entry of the
    /// level pattern `lp`): the random-effect pairs at the positions found when the pattern
    /// was built, the X / y rows of their columns as short dense products, and the dense
    /// X / y block as one matrix product over chunks of levels (`gx`: workspace).
    pub(crate) fn rank_update(&mut self, c: &mut [f64], lp_colptr: &[usize], lp_idx: &[u32], bmat: &[f64], s0: usize) {
        match s0 {
            1 => self.rank_update_s::<1>(c, lp_colptr, lp_idx, bmat),
            2 => self.rank_update_s::<2>(c, lp_colptr, lp_idx, bmat),
            3 => self.rank_update_s::<3>(c, lp_colptr, lp_idx, bmat),
            4 => self.rank_update_s::<4>(c, lp_colptr, lp_idx, bmat),
            _ => self.rank_update_any(c, lp_colptr, lp_idx, bmat, s0),
        }
        self.trailing_update(c, lp_colptr, bmat, s0);
    }

    /// The random-effect pairs and the X / y rows of their columns, for s0 = S.
    fn rank_update_s<const S: usize>(&self, c: &mut [f64], lp_colptr: &[usize], lp_idx: &[u32], bmat: &[f64]) {
        let p1 = self.r - self.qz;
        for l in 0..lp_colptr.len() - 1 {
            let (e0, e1) = (lp_colptr[l], lp_colptr[l + 1]);
            let z = e1 - e0 - p1;
            let bl = &bmat[e0 * S..e1 * S];
            let bx = &bl[z * S..];
            let mut kpos = self.lvoff[l];
            for b in 0..z {
                let bb: [f64; S] = bl[b * S..(b + 1) * S].try_into().unwrap();
                for a in b..z {
                    let ba = &bl[a * S..(a + 1) * S];
                    let mut v = 0.0;
                    for q in 0..S {
                        v += ba[q] * bb[q];
                    }
                    c[self.lvpos[kpos] as usize] -= v;
                    kpos += 1;
                }
                // the rows of X and y in the column of entry b
                let base = self.colptr[lp_idx[e0 + b] as usize + 1] as usize - p1;
                let cx = &mut c[base..base + p1];
                for a in 0..p1 {
                    let mut v = 0.0;
                    for q in 0..S {
                        v += bx[a * S + q] * bb[q];
                    }
                    cx[a] -= v;
                }
            }
        }
    }

    fn rank_update_any(&self, c: &mut [f64], lp_colptr: &[usize], lp_idx: &[u32], bmat: &[f64], s0: usize) {
        let p1 = self.r - self.qz;
        let dot = |x: usize, y: usize| -> f64 {
            let (bx, by) = (&bmat[x * s0..(x + 1) * s0], &bmat[y * s0..(y + 1) * s0]);
            bx.iter().zip(by).map(|(u, v)| u * v).sum()
        };
        for l in 0..lp_colptr.len() - 1 {
            let (e0, e1) = (lp_colptr[l], lp_colptr[l + 1]);
            let z = e1 - e0 - p1;
            let mut kpos = self.lvoff[l];
            for b in 0..z {
                for a in b..z {
                    c[self.lvpos[kpos] as usize] -= dot(e0 + a, e0 + b);
                    kpos += 1;
                }
                let base = self.colptr[lp_idx[e0 + b] as usize + 1] as usize - p1;
                for a in 0..p1 {
                    c[base + a] -= dot(e0 + z + a, e0 + b);
                }
            }
        }
    }

    /// The X / y block: C_xx -= G G', G the X / y rows of B over all levels (p + 1 rows),
    /// gathered TRAIL_CHUNK levels at a time into `gx` and multiplied by faer.
    fn trailing_update(&mut self, c: &mut [f64], lp_colptr: &[usize], bmat: &[f64], s0: usize) {
        let (r, qz) = (self.r, self.qz);
        let p1 = r - qz;
        let nl0 = lp_colptr.len() - 1;
        let width = TRAIL_CHUNK.min(nl0) * s0;
        debug_assert!(self.gx.len() >= p1 * width);
        self.gxx.iter_mut().for_each(|v| *v = 0.0);
        let mut l0 = 0;
        while l0 < nl0 {
            let l1 = (l0 + TRAIL_CHUNK).min(nl0);
            let ncol = (l1 - l0) * s0;
            for l in l0..l1 {
                let e = lp_colptr[l + 1] - p1;
                for q in 0..s0 {
                    let col = (l - l0) * s0 + q;
                    for a in 0..p1 {
                        self.gx[a + col * p1] = bmat[(e + a) * s0 + q];
                    }
                }
            }
            let g = MatRef::from_column_major_slice(&self.gx[..p1 * ncol], p1, ncol);
            triangular::matmul(
                MatMut::from_column_major_slice_mut(&mut self.gxx, p1, p1),
                BlockStructure::TriangularLower,
                faer::Accum::Add,
                g,
                BlockStructure::Rectangular,
                g.transpose(),
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
            l0 = l1;
        }
        for b in 0..p1 {
            let cb = self.colptr[qz + b] as usize;
            for a in b..p1 {
                c[cb + (a - b)] -= self.gxx[a + b * p1];
            }
        }
    }

    /// Factor C (values on the pattern). False if it is not positive definite.
    pub(crate) fn factor(&mut self, c: &[f64]) -> bool {
        let r = self.r;
        // SAFETY-free: the pattern was checked when the symbolic factorisation was built
        let pat = SymbolicSparseColMatRef::new_checked(r, r, &self.colptr, None, &self.rowidx);
        let a = SparseColMatRef::new(pat, c);
        let stack = MemStack::new(&mut self.mem);
        self.zm = 0;
        self.symbolic
            .factorize_numeric_llt(&mut self.lval, a, Side::Lower, LltRegularization::default(), Par::Seq, stack, Default::default())
            .is_ok()
    }

    /// Diagonal of the factor at (permuted) index j.
    #[inline]
    pub(crate) fn ldiag(&self, j: usize) -> f64 {
        self.lval[self.lslot[self.lcol[j]] as usize]
    }

    /// The factor's entry (i, j), i >= j, of the X / y rows and columns (which the order
    /// leaves in place): the fixed-effects factor and the response row.
    pub(crate) fn l_trailing(&self, i: usize, j: usize) -> f64 {
        debug_assert!(i >= j && j >= self.qz);
        let t = self.lcol[j] + (i - j);
        debug_assert_eq!(self.lrow[t] as usize, i);
        self.lval[self.lslot[t] as usize]
    }

    /// The penalised least squares solution from the factor: (beta, spherical effects of the
    /// rest terms in engine order). With L' x = l_yy e_y, x = -(u, beta, -1).
    pub(crate) fn pls(&self, p: usize) -> (Vec<f64>, Vec<f64>) {
        let r = self.r;
        let mut x = vec![0.0; r];
        x[r - 1] = 1.0;
        for j in (0..r - 1).rev() {
            let (c0, c1) = (self.lcol[j], self.lcol[j + 1]);
            let mut v = 0.0;
            for t in c0 + 1..c1 {
                v += self.lval[self.lslot[t] as usize] * x[self.lrow[t] as usize];
            }
            x[j] = -v / self.lval[self.lslot[c0] as usize];
        }
        let beta = (0..p).map(|a| -x[self.qz + a]).collect();
        let ur = (0..self.qz).map(|i| -x[self.pinv[i] as usize]).collect();
        (beta, ur)
    }

    /// The selected inverse: the entries of (L_m L_m')^-1 on the pattern of L_m, L_m the
    /// leading m x m block of the factor (the random effects, and X for m = qz + p), by
    /// Takahashi's recursion from the last column back.
    pub(crate) fn selected_inverse(&mut self, m: usize) {
        if self.zm == m && m > 0 {
            return;
        }
        if self.z.len() != self.lval.len() {
            self.z = vec![0.0; self.lval.len()];
            self.zpos = vec![u32::MAX; self.r];
            let maxc = (0..self.r).map(|j| self.lcol[j + 1] - self.lcol[j]).max().unwrap_or(0);
            self.zacc = vec![0.0; maxc];
        }
        let (lcol, lrow, lslot, lval) = (&self.lcol, &self.lrow, &self.lslot, &self.lval);
        let (z, pos, acc) = (&mut self.z, &mut self.zpos, &mut self.zacc);
        for j in (0..m).rev() {
            let c0 = lcol[j];
            // entries below the diagonal with rows < m (rows are sorted)
            let mut cend = c0 + 1;
            while cend < lcol[j + 1] && (lrow[cend] as usize) < m {
                cend += 1;
            }
            let ns = cend - c0 - 1;
            for t in 0..ns {
                pos[lrow[c0 + 1 + t] as usize] = t as u32;
                acc[t] = 0.0;
            }
            for b in 0..ns {
                let k = lrow[c0 + 1 + b] as usize;
                let lkj = lval[lslot[c0 + 1 + b] as usize];
                let k0 = lcol[k];
                acc[b] += z[lslot[k0] as usize] * lkj;
                for u in k0 + 1..lcol[k + 1] {
                    let i = lrow[u] as usize;
                    if i >= m {
                        break;
                    }
                    let a = pos[i];
                    if a == u32::MAX {
                        continue;
                    }
                    let a = a as usize;
                    let zik = z[lslot[u] as usize];
                    acc[a] += zik * lkj;
                    acc[b] += zik * lval[lslot[c0 + 1 + a] as usize];
                }
            }
            let ljj = lval[lslot[c0] as usize];
            let mut s = 0.0;
            for t in 0..ns {
                let v = -acc[t] / ljj;
                z[lslot[c0 + 1 + t] as usize] = v;
                s += v * lval[lslot[c0 + 1 + t] as usize];
                pos[lrow[c0 + 1 + t] as usize] = u32::MAX;
            }
            z[lslot[c0] as usize] = (1.0 / ljj - s) / ljj;
        }
        self.zm = m;
    }

    /// The selected inverse at C's position `e` (after `selected_inverse`).
    #[inline]
    pub(crate) fn z_at(&self, e: usize) -> f64 {
        self.z[self.cmap[e] as usize]
    }

    /// The selected inverse at the entry (i, j) of C (either triangle, engine order).
    #[inline]
    pub(crate) fn z_ij(&self, i: usize, j: usize) -> f64 {
        let e = if i >= j { self.pos(i, j) } else { self.pos(j, i) };
        self.z_at(e)
    }

    /// Whether the factor is supernodal (for the tests).
    #[cfg(test)]
    pub(crate) fn is_supernodal(&self) -> bool {
        matches!(self.symbolic.raw(), SymbolicCholeskyRaw::Supernodal(_))
    }

    /// Entries of the factor (for the tests: no fill for nested designs).
    #[cfg(test)]
    pub(crate) fn nnz_l(&self) -> usize {
        self.lrow.len()
    }
}

/// C's pattern (see `SparseRest`), borrowed.
#[derive(Clone, Copy)]
pub(crate) struct SpPat<'a> {
    r: usize,
    qz: usize,
    colptr: &'a [u32],
    rowidx: &'a [u32],
    bend: &'a [u32],
}

impl SpPat<'_> {
    /// Position in C of the entry (i, j), i >= j (engine order). Panics if it is not stored.
    #[inline]
    pub(crate) fn pos(&self, i: usize, j: usize) -> usize {
        debug_assert!(i >= j);
        let (c0, c1) = (self.colptr[j] as usize, self.colptr[j + 1] as usize);
        if j >= self.qz || i < self.bend[j] as usize {
            // the dense columns of X and y, or j's own level block (its first rows)
            return c0 + (i - j);
        }
        if i >= self.qz {
            // the rows of X and y close every column
            return c1 - (self.r - i);
        }
        let rows = &self.rowidx[c0..c1 - (self.r - self.qz)];
        c0 + rows.binary_search(&(i as u32)).expect("entry in the pattern of the rest block")
    }
}

/// Rows and value slots of the factor's entries, column by column (diagonal first, rows
/// increasing), for faer's simplicial or supernodal layout.
fn column_view(symbolic: &SymbolicCholesky<u32>, r: usize) -> Option<(Vec<usize>, Vec<u32>, Vec<u32>)> {
    let mut lcol = Vec::with_capacity(r + 1);
    let mut lrow: Vec<u32> = Vec::new();
    let mut lslot: Vec<u32> = Vec::new();
    match symbolic.raw() {
        SymbolicCholeskyRaw::Simplicial(s) => {
            let cp = s.col_ptr();
            let ri = s.row_idx();
            if ri.len() > MAX_SPARSE_NNZ {
                return None;
            }
            lrow.extend_from_slice(ri);
            lslot.extend(0..ri.len() as u32);
            lcol.extend(cp.iter().map(|&v| v as usize));
        }
        SymbolicCholeskyRaw::Supernodal(s) => {
            let ns = s.n_supernodes();
            let begin = s.supernode_begin();
            let end = s.supernode_end();
            let vptr = s.col_ptr_for_val();
            let total: usize = (0..ns)
                .map(|k| {
                    let w = (end[k] - begin[k]) as usize;
                    let pl = s.supernode(k).pattern().len();
                    w * (w + 1) / 2 + w * pl
                })
                .sum();
            if total > MAX_SPARSE_NNZ {
                return None;
            }
            lrow.reserve(total);
            lslot.reserve(total);
            let mut pairs: Vec<(u32, u32)> = Vec::new();
            lcol.push(0);
            for k in 0..ns {
                let (b, e) = (begin[k] as usize, end[k] as usize);
                let w = e - b;
                let pat = s.supernode(k).pattern();
                let nrows = w + pat.len();
                let base = vptr[k] as usize;
                for c in 0..w {
                    pairs.clear();
                    for rr in c..w {
                        pairs.push(((b + rr) as u32, (base + c * nrows + rr) as u32));
                    }
                    for (t, &i) in pat.iter().enumerate() {
                        pairs.push((i, (base + c * nrows + w + t) as u32));
                    }
                    pairs.sort_unstable();
                    for &(i, sl) in &pairs {
                        lrow.push(i);
                        lslot.push(sl);
                    }
                    lcol.push(lrow.len());
                }
            }
        }
    }
    if lcol.len() != r + 1 {
        return None;
    }
    Some((lcol, lrow, lslot))
}
