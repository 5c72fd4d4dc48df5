//! A row-major matrix product as a column-major BLAS call: what the CUDA backend hands
//! cuBLASLt ([`crate::ops`]'s `cuda` module) for `C = op(L) · op(R)`, burn's tensors being
//! row-major. Pure arithmetic, so it is tested on any machine.
//!
//! A row-major `[rows, cols]` matrix with row stride `ld` is, read column-major, its transpose
//! `[cols, rows]` with leading dimension `ld`. So `C = op(L) · op(R)` (row-major) is the
//! column-major `Cᵀ = op(R)ᵀ · op(L)ᵀ`: BLAS's `A` is `R` (transposed iff `R` is), its `B` is
//! `L`, `m = N`, `n = M`, `k = K` (cuBLAS's usual row-major trick, as in cuBLASLt's samples).

/// A row-major operand as stored: `[rows, cols]`, row stride `ld` (elements, ≥ `cols`), and
/// whether the product uses its transpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMajor {
    /// Stored rows.
    pub rows: usize,
    /// Stored columns.
    pub cols: usize,
    /// Elements between the starts of two rows.
    pub ld: usize,
    /// The product uses the transpose.
    pub trans: bool,
}

impl RowMajor {
    /// The rows and columns of the operand as the product sees it.
    fn op_dims(&self) -> (usize, usize) {
        if self.trans {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
}

/// One column-major operand of the BLAS call: its stored layout and transpose flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColMajor {
    /// Stored rows (column-major).
    pub rows: u64,
    /// Stored columns.
    pub cols: u64,
    /// Leading dimension (elements between the starts of two columns).
    pub ld: i64,
    /// `op` is the transpose.
    pub trans: bool,
}

/// The column-major call `D[m, n] = op(A)[m, k] · op(B)[k, n]`, `A` being the row-major
/// product's right operand and `B` its left one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of `D` (the row-major product's columns, `N`).
    pub m: u64,
    /// Columns of `D` (the row-major product's rows, `M`).
    pub n: u64,
    /// The contracted dimension.
    pub k: u64,
    /// `A`: the right operand.
    pub a: ColMajor,
    /// `B`: the left operand.
    pub b: ColMajor,
    /// `C` and `D`: the output, `[m, n]` with leading dimension `ldc`.
    pub c: ColMajor,
}

/// The column-major call for the row-major `C[M, N] = op(lhs) · op(rhs)`, `C` stored with row
/// stride `ldc`. Fails when the inner dimensions differ or a row stride is shorter than its row.
pub fn row_major_product(lhs: RowMajor, rhs: RowMajor, ldc: usize) -> Result<Gemm, String> {
    let (m, k) = lhs.op_dims();
    let (k2, n) = rhs.op_dims();
    if k != k2 {
        return Err(format!("inner dimensions differ: [{m}, {k}] · [{k2}, {n}]"));
    }
    for (what, ld, cols) in [
        ("lhs", lhs.ld, lhs.cols),
        ("rhs", rhs.ld, rhs.cols),
        ("out", ldc, n),
    ] {
        if ld < cols.max(1) {
            return Err(format!("{what}: row stride {ld} < {cols} columns"));
        }
    }
    let col_major = |x: RowMajor| ColMajor {
        rows: x.cols as u64,
        cols: x.rows as u64,
        ld: x.ld as i64,
        trans: x.trans,
    };
    Ok(Gemm {
        m: n as u64,
        n: m as u64,
        k: k as u64,
        a: col_major(rhs),
        b: col_major(lhs),
        c: ColMajor {
            rows: n as u64,
            cols: m as u64,
            ld: ldc as i64,
            trans: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What BLAS computes for `g` on column-major storage (the definition of the call).
    fn blas(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        let at = |x: &ColMajor, s: &[f32], i: usize, j: usize| {
            let (r, c) = if x.trans { (j, i) } else { (i, j) };
            assert!(
                (r as u64) < x.rows && (c as u64) < x.cols,
                "read outside the layout"
            );
            s[r + c * x.ld as usize]
        };
        for i in 0..g.m as usize {
            for j in 0..g.n as usize {
                let mut acc = 0.0;
                for p in 0..g.k as usize {
                    acc += at(&g.a, a, i, p) * at(&g.b, b, p, j);
                }
                c[i + j * g.c.ld as usize] = acc;
            }
        }
    }

    /// A stored row-major matrix with padded rows, and the logical `op(x)` as rows.
    fn matrix(x: RowMajor, seed: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
        let mut s = vec![f32::NAN; x.rows * x.ld];
        for r in 0..x.rows {
            for c in 0..x.cols {
                s[r * x.ld + c] = ((r * 7 + c * 3 + seed) % 11) as f32 - 5.0;
            }
        }
        let (or, oc) = x.op_dims();
        let op = (0..or)
            .map(|i| {
                (0..oc)
                    .map(|j| {
                        if x.trans {
                            s[j * x.ld + i]
                        } else {
                            s[i * x.ld + j]
                        }
                    })
                    .collect()
            })
            .collect();
        (s, op)
    }

    #[test]
    fn the_column_major_call_computes_the_row_major_product() {
        // The linear layer's three products and their padded / transposed variants.
        for (m, k, n) in [(3, 5, 4), (1, 7, 2), (6, 1, 3)] {
            for (tl, tr) in [(false, false), (false, true), (true, false), (true, true)] {
                for pad in [0, 3] {
                    let (lr, lc) = if tl { (k, m) } else { (m, k) };
                    let (rr, rc) = if tr { (n, k) } else { (k, n) };
                    let lhs = RowMajor {
                        rows: lr,
                        cols: lc,
                        ld: lc + pad,
                        trans: tl,
                    };
                    let rhs = RowMajor {
                        rows: rr,
                        cols: rc,
                        ld: rc + pad,
                        trans: tr,
                    };
                    let ldc = n + pad;
                    let g = row_major_product(lhs, rhs, ldc).unwrap();
                    let (ls, lop) = matrix(lhs, 1);
                    let (rs, rop) = matrix(rhs, 2);
                    let mut c = vec![f32::NAN; m * ldc];
                    blas(&g, &rs, &ls, &mut c);
                    for i in 0..m {
                        for j in 0..n {
                            let want: f32 = (0..k).map(|p| lop[i][p] * rop[p][j]).sum();
                            assert_eq!(c[i * ldc + j], want, "{m}x{k}x{n} {tl} {tr} pad {pad}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mismatched_shapes_and_short_strides_are_refused() {
        let x = |rows, cols, ld| RowMajor {
            rows,
            cols,
            ld,
            trans: false,
        };
        assert!(
            row_major_product(x(2, 3, 3), x(4, 5, 5), 5)
                .unwrap_err()
                .contains("[2, 3] · [4, 5]")
        );
        assert!(
            row_major_product(x(2, 3, 2), x(3, 5, 5), 5)
                .unwrap_err()
                .starts_with("lhs")
        );
        assert!(
            row_major_product(x(2, 3, 3), x(3, 5, 5), 4)
                .unwrap_err()
                .starts_with("out")
        );
    }
}
