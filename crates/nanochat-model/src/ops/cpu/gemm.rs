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

/// [`matmul_parallel`], added to `dst` when `accumulate`.
pub fn matmul_parallel_into(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    let work = dst.rows * dst.cols * lhs.cols;
    let par = if work >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    product(dst, lhs, rhs, 1.0, accumulate, par);
}

fn product(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    alpha: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert_eq!(dst.rows, lhs.rows, "matmul: rows");
    assert_eq!(dst.cols, rhs.cols, "matmul: columns");
    assert_eq!(lhs.cols, rhs.rows, "matmul: inner dimension");
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
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
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr().add(dst.offset),
            1,
            dst.rs as isize,
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
    #[should_panic(expected = "out of bounds")]
    fn views_are_bounds_checked() {
        let a = vec![0.0f32; 8];
        let _ = MatRef::new(&a, 1, (2, 4), (4, 1));
    }
}
