//! Matrix products for the CPU kernels through the `gemm` crate (the one burn-flex's matmul
//! uses; AVX-512 micro-kernels where the CPU has them), behind a safe, bounds-checked API:
//! strided views into slices, checked against the slice before the raw call.
#![allow(unsafe_code)]

/// A read-only strided matrix in a slice: element `(i, j)` at `offset + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A writable matrix with unit column stride (rows of `cols` consecutive elements, `rs` apart).
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
}

fn last_index(offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return None;
    }
    Some(offset + (rows - 1) * rs + (cols - 1) * cs)
}

impl<'a> MatRef<'a> {
    /// The view; panics if it reaches outside `data`.
    pub fn new(
        data: &'a [f32],
        offset: usize,
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Self {
        if let Some(last) = last_index(offset, rows, cols, rs, cs) {
            assert!(last < data.len(), "matrix view out of bounds");
        }
        Self {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// Columns `j0..j0 + cols` of the view (inside it, so inside `data`).
    fn columns(self, j0: usize, cols: usize) -> Self {
        assert!(j0 + cols <= self.cols, "column block out of the view");
        Self {
            offset: self.offset + j0 * self.cs,
            cols,
            ..self
        }
    }

    /// The transpose (a view of the same elements).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

impl<'a> MatMut<'a> {
    /// The view; panics if it reaches outside `data` or rows overlap (`rs < cols`).
    pub fn new(
        data: &'a mut [f32],
        offset: usize,
        (rows, cols): (usize, usize),
        rs: usize,
    ) -> Self {
        assert!(rows <= 1 || rs >= cols, "overlapping rows");
        if let Some(last) = last_index(offset, rows, cols, rs, 1) {
            assert!(last < data.len(), "matrix view out of bounds");
        }
        Self {
            data,
            offset,
            rows,
            cols,
            rs,
        }
    }
}

/// `dst = alpha · lhs · rhs`, or `dst += alpha · lhs · rhs` when `accumulate`; single-threaded
/// (the kernels parallelise over heads and rows themselves).
pub fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, alpha: f32, accumulate: bool) {
    product(dst, lhs, rhs, alpha, accumulate, gemm::Parallelism::None);
}

/// [`matmul`] on every core (through rayon) when the product is large enough to pay for it.
pub fn matmul_parallel(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>) {
    matmul_parallel_into(dst, lhs, rhs, false);
}

/// Products of at most this many rows (decode steps, short prompts) are split over column
/// blocks, one thread per block, instead of through `gemm`'s own parallel split.
const THIN_ROWS: usize = 64;

/// Columns per block of a thin product: the AVX-512 micro-kernel's 64 rows (`gemm` runs such a
/// product transposed, output columns along the vector lanes); a block of weights stays in L2
/// and a core that falls behind holds little of the work. Blocks of 32, 64, 128, 256 and 512
/// in the d4 model's decode (`bench infer`, 2-core VM, medians of 5–6 rounds): b1 1.36 / 1.12 /
/// 1.21–1.28 / 1.16 / 1.23 ms, b32 6.97 / 6.02–6.10 / 5.92–6.30 / 6.83 / 7.87 ms.
const COLUMN_BLOCK: usize = 64;

/// [`matmul_parallel`], added to `dst` when `accumulate`.
///
/// A thin product (a batch-32 decode step: `[32, 256] · [256, 8192]`) splits its columns into
/// blocks of [`COLUMN_BLOCK`], one `gemm` call per block on rayon's threads: `gemm`'s own split
/// of such a product ran at 88–108 GFLOP/s on a 2-core AVX-512 VM, blocks of 64 columns at
/// 134–166 (`[32, 256] · [256, 8192]`, 2 threads, median of 5 × 100 calls, two runs).
pub fn matmul_parallel_into(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    match split(dst.rows, dst.cols, lhs.cols) {
        Split::None => product(dst, lhs, rhs, 1.0, accumulate, gemm::Parallelism::None),
        Split::Columns => column_blocks(dst, lhs, rhs, accumulate),
        Split::Gemm => product(dst, lhs, rhs, 1.0, accumulate, gemm::Parallelism::Rayon(0)),
    }
}

/// How [`matmul_parallel_into`] runs an `m × k · k × n` product on the current pool.
#[derive(Debug, PartialEq)]
enum Split {
    /// Too small to pay for a second thread.
    None,
    /// Thin: blocks of columns, one thread each.
    Columns,
    /// `gemm`'s own parallel split.
    Gemm,
}

fn split(m: usize, n: usize, k: usize) -> Split {
    if m * n * k < 1 << 18 {
        Split::None
    } else if m <= THIN_ROWS && n >= 2 * COLUMN_BLOCK && rayon::current_num_threads() > 1 {
        Split::Columns
    } else {
        Split::Gemm
    }
}

fn check_shapes(dst: &MatMut<'_>, lhs: &MatRef<'_>, rhs: &MatRef<'_>) -> (usize, usize, usize) {
    assert_eq!(dst.rows, lhs.rows, "matmul: rows");
    assert_eq!(dst.cols, rhs.cols, "matmul: columns");
    assert_eq!(lhs.cols, rhs.rows, "matmul: inner dimension");
    (dst.rows, dst.cols, lhs.cols)
}

fn product(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    alpha: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, n, k) = check_shapes(&dst, &lhs, &rhs);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                let row = dst.offset + i * dst.rs;
                dst.data[row..row + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: every view was checked against its slice on construction (the last element it
    // addresses is in bounds, strides are non-negative), `dst` is the only mutable borrow and
    // its rows do not overlap, and the shapes agree (asserted above).
    unsafe {
        raw_gemm(
            dst.data.as_mut_ptr().add(dst.offset),
            dst.rs,
            lhs,
            rhs,
            (alpha, accumulate),
            parallelism,
        );
    }
}

/// [`product`] over blocks of [`COLUMN_BLOCK`] columns in parallel, each block single-threaded.
fn column_blocks(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    use rayon::prelude::*;
    let (m, n, k) = check_shapes(&dst, &lhs, &rhs);
    if m == 0 || n == 0 || k == 0 {
        return product(dst, lhs, rhs, 1.0, accumulate, gemm::Parallelism::None);
    }
    // Raw addresses cross the threads: the blocks write disjoint columns of `dst`, and no
    // reference to `dst`'s elements exists while they do (`dst` is borrowed for the call).
    let dst_rs = dst.rs;
    let dst_at = dst.data.as_mut_ptr().wrapping_add(dst.offset) as usize;
    (0..n.div_ceil(COLUMN_BLOCK)).into_par_iter().for_each(|b| {
        let j0 = b * COLUMN_BLOCK;
        let rhs = rhs.columns(j0, COLUMN_BLOCK.min(n - j0));
        // SAFETY: as in `product`, for the block's columns of `dst`, those of the checked
        // sub-view `rhs` (inside the first `n`); blocks do not overlap, so each element of
        // `dst` is written by one thread only.
        unsafe {
            raw_gemm(
                (dst_at as *mut f32).add(j0),
                dst_rs,
                lhs,
                rhs,
                (1.0, accumulate),
                gemm::Parallelism::None,
            );
        }
    });
}

/// `gemm::gemm` of `lhs · rhs` (checked views whose shapes agree) into `dst`: `lhs.rows ×
/// rhs.cols` elements, unit column stride, row stride `dst_rs`.
///
/// # Safety
/// `dst` must address those elements inside a live allocation, and no other thread may
/// access them during the call.
unsafe fn raw_gemm(
    dst: *mut f32,
    dst_rs: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    (alpha, accumulate): (f32, bool),
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract for `dst`; `lhs` and `rhs` are checked views.
    unsafe {
        gemm::gemm(
            lhs.rows,
            rhs.cols,
            lhs.cols,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_the_definition() {
        // lhs 3×4 row-major inside a larger buffer, rhs used transposed.
        let a: Vec<f32> = (0..20).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..12).map(|i| (i as f32).sin()).collect();
        let lhs = MatRef::new(&a, 2, (3, 4), (5, 1));
        let rhs = MatRef::new(&b, 0, (2, 4), (4, 1)).t(); // 4×2
        let mut out = vec![1.0f32; 3 * 3];
        matmul(MatMut::new(&mut out, 0, (3, 2), 3), lhs, rhs, 2.0, true);
        for i in 0..3 {
            for j in 0..2 {
                let want: f32 =
                    (0..4).map(|p| a[2 + i * 5 + p] * b[j * 4 + p]).sum::<f32>() * 2.0 + 1.0;
                assert!((out[i * 3 + j] - want).abs() < 1e-5);
            }
            assert_eq!(out[i * 3 + 2], 1.0, "column outside the view untouched");
        }
    }

    #[test]
    fn thin_products_in_column_blocks_match_the_definition() {
        // Rows few enough for the column-block path, columns not a multiple of the block,
        // rhs a transposed view, with and without accumulation; on a pool of 3 threads so
        // the blocks run in parallel whatever the machine.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        let (m, k, n) = (5, 401, 2 * COLUMN_BLOCK + 19);
        assert_eq!(pool.install(|| split(m, n, k)), Split::Columns);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        for accumulate in [false, true] {
            let mut out = vec![0.5f32; m * (n + 3)];
            pool.install(|| {
                matmul_parallel_into(
                    MatMut::new(&mut out, 1, (m, n), n + 3),
                    MatRef::new(&a, 0, (m, k), (k, 1)),
                    MatRef::new(&b, 0, (n, k), (k, 1)).t(),
                    accumulate,
                )
            });
            for i in 0..m {
                let row = &out[1 + i * (n + 3)..];
                for j in 0..n {
                    let dot: f64 = (0..k).map(|p| (a[i * k + p] * b[j * k + p]) as f64).sum();
                    let want = dot as f32 + if accumulate { 0.5 } else { 0.0 };
                    assert!(
                        (row[j] - want).abs() < 1e-4,
                        "({i}, {j}): {} vs {want}",
                        row[j]
                    );
                }
                assert_eq!(row[n], 0.5, "the padding after each row untouched");
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn views_are_bounds_checked() {
        let a = vec![0.0f32; 8];
        let _ = MatRef::new(&a, 1, (2, 4), (4, 1));
    }
}
