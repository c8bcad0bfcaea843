/* gemm.c - blocked single-precision GEMM with fused epilogues.
 *
 * C[M,N] = op(A)[M,K] * op(B)[K,N], where op() is the array or its
 * transpose read in place (never materialised): training needs Y = X*W,
 * dW = X^T*dZ and dX = dZ*W^T.
 *
 * The BLIS structure: for each kc-deep slice of the product, a
 * register-blocked micro-kernel computes each MR x NR tile of C from an
 * MR-row micro-panel of A and an NR-column micro-panel of B. Panels are read
 * in place through strides where they are whole (training's operands are
 * small enough to stay in cache); edge panels and transposed B are packed,
 * zero-padded. After the last slice, the epilogue (bias +
 * activation, activation derivative, or the optimizer update) runs on the
 * tile while it is still in L1.
 *
 * Threads split the tile grid by whole micro-panels of either C's rows or
 * its columns; each thread packs what it needs into its own buffer, so
 * there is no barrier inside a product (the caller puts one before C is
 * read) and every element of C is summed in the same order whatever the
 * number of threads.
 */
#include "cdnn.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CDNN_X86 1
#include <immintrin.h>
#endif

/* Blocking sizes, in elements. KC_MAX: the deepest slice of any path (each
 * path's kc keeps its A and B micro-panels together in a 32-48 KB L1:
 * (6+16)*256*4 = 22 KB for AVX2, (8+32)*128*4 = 20 KB for AVX-512).
 * MC: a packed A block (MC x kc, <= 144 KB) stays in a 512 KB+ L2. NC: a
 * thread's packed B block (kc x NC, <= 1 MB) stays in L2/L3. MC is a
 * multiple of every path's mr. */
#define KC_MAX 256
#define MC     144
#define NC     1024
#define MR_MAX 16
/* From this many rows of C (per thread) on, B is packed rather than read in place. */
#define PACK_B_MIN_ROWS 48
/* Percent of each thread's share of a gradient's row panels that goes to the common, dynamic pool. */
#define TAIL_PERCENT 15
/* Below this many flops a standalone product runs on one thread: waking a
 * second thread costs a few microseconds, as much as ~100k flops. */
#define GEMM_SERIAL_FLOPS 200000L
#define NR_MAX            32

size_t cdnn_gemm_pack_floats(void)
{
    /* A block, B block, one edge tile, alignment slack; a multiple of 16 floats (64 bytes). */
    return (size_t)(MC + MR_MAX) * KC_MAX + (size_t)(NC + NR_MAX) * KC_MAX + (size_t)MR_MAX * NR_MAX + 16;
}

/* ---- micro-kernels: c[MR x NR] (=|+=) sum_k a[k][0..MR) * b[k][0..NR) --- */

#define G_MR 4
#define G_NR 8
static void kernel_generic(int kc, const float *a, long si, long sk, const float *b, long ldb, float *c, int ldc,
                           int accumulate)
{
    float acc[G_MR][G_NR] = {{0}};
    for (int k = 0; k < kc; k++, a += sk, b += ldb)
        for (int i = 0; i < G_MR; i++)
            for (int j = 0; j < G_NR; j++) acc[i][j] += a[i * si] * b[j];
    for (int i = 0; i < G_MR; i++)
        for (int j = 0; j < G_NR; j++) c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

#ifdef CDNN_X86
__attribute__((target("avx2,fma"))) static void kernel_avx2(int kc, const float *a, long si, long sk, const float *b,
                                                            long ldb, float *c, int ldc, int accumulate)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a, *a1 = a + si, *a2 = a + 2 * si, *a3 = a + 3 * si, *a4 = a + 4 * si, *a5 = a + 5 * si;
    for (int k = 0; k < kc; k++, b += ldb) {
        long o = k * sk;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), x;
        x = _mm256_broadcast_ss(a0 + o);
        c00 = _mm256_fmadd_ps(x, b0, c00);
        c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + o);
        c10 = _mm256_fmadd_ps(x, b0, c10);
        c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + o);
        c20 = _mm256_fmadd_ps(x, b0, c20);
        c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + o);
        c30 = _mm256_fmadd_ps(x, b0, c30);
        c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a4 + o);
        c40 = _mm256_fmadd_ps(x, b0, c40);
        c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a5 + o);
        c50 = _mm256_fmadd_ps(x, b0, c50);
        c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    __m256 r[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    for (int i = 0; i < 6; i++) {
        float *ci = c + (size_t)i * ldc;
        if (accumulate) {
            r[2 * i] = _mm256_add_ps(r[2 * i], _mm256_loadu_ps(ci));
            r[2 * i + 1] = _mm256_add_ps(r[2 * i + 1], _mm256_loadu_ps(ci + 8));
        }
        _mm256_storeu_ps(ci, r[2 * i]);
        _mm256_storeu_ps(ci + 8, r[2 * i + 1]);
    }
}

/* Tiles of any size up to 6x16: R rows and V vectors of 8 columns, unrolled
 * by the compiler for each constant (R, V) of the switch below. */
__attribute__((always_inline, target("avx2,fma"))) static inline void
avx2_tile(int R, int V, int kc, const float *a, long si, long sk, const float *b, long ldb, __m256 *acc)
{
    /* named accumulators: GCC keeps an array of vectors in memory */
    const __m256 z = _mm256_setzero_ps();
    __m256 r00 = z, r01 = z, r10 = z, r11 = z, r20 = z, r21 = z, r30 = z, r31 = z, r40 = z, r41 = z, r50 = z, r51 = z;
    for (int k = 0; k < kc; k++, b += ldb) {
        const float *ak = a + k * sk;
        __m256 b0 = _mm256_loadu_ps(b), b1 = V > 1 ? _mm256_loadu_ps(b + 8) : z, x;
        // clang-format off
#define ROW(i, c0, c1)                                                                                                 \
    if (R > i) {                                                                                                       \
        x = _mm256_broadcast_ss(ak + i * si);                                                                          \
        c0 = _mm256_fmadd_ps(x, b0, c0);                                                                               \
        if (V > 1) c1 = _mm256_fmadd_ps(x, b1, c1);                                                                    \
    }
        ROW(0, r00, r01) ROW(1, r10, r11) ROW(2, r20, r21) ROW(3, r30, r31) ROW(4, r40, r41) ROW(5, r50, r51)
#undef ROW
        // clang-format on
    }
    acc[0] = r00;
    acc[1] = r01;
    acc[2] = r10;
    acc[3] = r11;
    acc[4] = r20;
    acc[5] = r21;
    acc[6] = r30;
    acc[7] = r31;
    acc[8] = r40;
    acc[9] = r41;
    acc[10] = r50;
    acc[11] = r51;
}

/* acc[2i+v] for rows < rows and vectors covering cols, computed from a
 * (rows read in place, none beyond `rows`) and b (16 readable columns). */
__attribute__((target("avx2,fma"))) static void avx2_tile_any(int rows, int cols, int kc, const float *a, long si,
                                                              long sk, const float *b, long ldb, __m256 *acc)
{
    switch (rows * 2 + (cols > 8)) {
        // clang-format off
#define TILE_CASE(R) \
    case 2 * R: avx2_tile(R, 1, kc, a, si, sk, b, ldb, acc); break; \
    case 2 * R + 1: avx2_tile(R, 2, kc, a, si, sk, b, ldb, acc); break;
    TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6)
#undef TILE_CASE
            // clang-format on
            default : break;
    }
}

/* One or two rows of C, few_rows_avx2 below: D depths (of W's rows k..k+D-1) into the running sums
 * t (row r at t + r * ldt) of nv whole vectors of 8 columns and a last one of the lanes in tm (or
 * none), from zero when first. */
__attribute__((always_inline, target("avx2,fma"))) static inline void
avx2_rows_block(int R, int D, const float *a, long lda, const float *b, long ldb, int nv, __m256i tm, int tail,
                float *t, int ldt, int first)
{
    __m256 x0[8], x1[8];
    for (int q = 0; q < D; q++) {
        x0[q] = _mm256_broadcast_ss(a + q);
        if (R > 1) x1[q] = _mm256_broadcast_ss(a + lda + q);
    }
    const __m256 z = _mm256_setzero_ps();
    for (int v = 0; v < nv; v++) {
        float *t0 = t + 8 * v, *t1 = t0 + ldt;
        __m256 s0 = first ? z : _mm256_load_ps(t0), s1 = R > 1 && !first ? _mm256_load_ps(t1) : z;
        for (int q = 0; q < D; q++) {
            const __m256 w = _mm256_loadu_ps(b + q * ldb + 8 * v);
            s0 = _mm256_fmadd_ps(x0[q], w, s0);
            if (R > 1) s1 = _mm256_fmadd_ps(x1[q], w, s1);
        }
        _mm256_store_ps(t0, s0);
        if (R > 1) _mm256_store_ps(t1, s1);
    }
    if (tail) { /* no column of W read beyond the last */
        float *t0 = t + 8 * nv, *t1 = t0 + ldt;
        __m256 s0 = first ? z : _mm256_load_ps(t0), s1 = R > 1 && !first ? _mm256_load_ps(t1) : z;
        for (int q = 0; q < D; q++) {
            const __m256 w = _mm256_maskload_ps(b + q * ldb + 8 * nv, tm);
            s0 = _mm256_fmadd_ps(x0[q], w, s0);
            if (R > 1) s1 = _mm256_fmadd_ps(x1[q], w, s1);
        }
        _mm256_store_ps(t0, s0);
        if (R > 1) _mm256_store_ps(t1, s1);
    }
}

/* Lanes below n (0..8) set. */
__attribute__((target("avx2"))) static inline __m256i avx2_mask(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One or two rows of C (rows), columns [0, cols), A and B read in place: the sums of avx2_tile (per
 * element a chain of FMAs in depth order from zero, added to C with accumulate). W is read 8 rows at a
 * time across all the columns, the running sums kept in t (rows x cols rounded up to 8, 32-byte
 * aligned): every vector of columns is a chain of its own, as many in flight as there are columns. */
__attribute__((target("avx2,fma"))) static void few_rows_avx2(int rows, int kc, const float *a, long lda,
                                                              const float *b, long ldb, int cols, float *c, int ldc,
                                                              int accumulate, float *t)
{
    const int nv = cols / 8, tail = cols % 8, ldt = (cols + 7) / 8 * 8;
    const __m256i tm = avx2_mask(tail);
    int k = 0;
    for (; k + 8 <= kc; k += 8, a += 8, b += 8 * ldb)
        if (rows == 1)
            avx2_rows_block(1, 8, a, lda, b, ldb, nv, tm, tail, t, ldt, k == 0);
        else
            avx2_rows_block(2, 8, a, lda, b, ldb, nv, tm, tail, t, ldt, k == 0);
    for (; k < kc; k++, a++, b += ldb)
        if (rows == 1)
            avx2_rows_block(1, 1, a, lda, b, ldb, nv, tm, tail, t, ldt, k == 0);
        else
            avx2_rows_block(2, 1, a, lda, b, ldb, nv, tm, tail, t, ldt, k == 0);
    for (int i = 0; i < rows; i++) {
        float *ci = c + (size_t)i * ldc;
        const float *ti = t + (size_t)i * ldt;
        for (int v = 0; v * 8 < cols; v++) {
            __m256 r = _mm256_load_ps(ti + 8 * v);
            if (v < nv) {
                if (accumulate) r = _mm256_add_ps(r, _mm256_loadu_ps(ci + 8 * v));
                _mm256_storeu_ps(ci + 8 * v, r);
            } else {
                if (accumulate) r = _mm256_add_ps(r, _mm256_maskload_ps(ci + 8 * v, tm));
                _mm256_maskstore_ps(ci + 8 * v, tm, r);
            }
        }
    }
}

/* Edge tiles at most 4 columns wide (W2's 100 units = 6 x 16 + 4), as on
 * the AVX-512 path below: a vector holds 4 columns x 2 depths (A's rows
 * contiguous in depth) or 4 columns x 2 rows (A transposed) rather than one
 * column per lane with half the lanes idle. B has 16 readable columns here. */

/* Row i's 4 columns of C from lanes 2c + q (summed over q), into C (cm: the valid columns). */
__attribute__((always_inline, target("avx2,fma"))) static inline void avx2_edge4_store(__m256 t, float *ci, __m128i cm,
                                                                                       int accumulate)
{
    t = _mm256_add_ps(t, _mm256_permute_ps(t, 0xB1)); /* lane 2c: q0 + q1 */
    __m128 r = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(t, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
    if (accumulate) r = _mm_add_ps(r, _mm_maskload_ps(ci, cm));
    _mm_maskstore_ps(ci, cm, r);
}

/* A's rows contiguous in depth (sk == 1), R rows: lane 2c + q of row i sums A[i][k+q] B[k+q][c], k = 0, 2, 4, ... */
__attribute__((always_inline, target("avx2,fma"))) static inline void
avx2_edge4_depth_tile(int R, int kc, const float *a, long si, const float *b, long ldb, __m256 *acc)
{
    const __m256 z = _mm256_setzero_ps();
    __m256 s0 = z, s1 = z, s2 = z, s3 = z, s4 = z, s5 = z;
    int k = 0;
    for (; k + 2 <= kc; k += 2, b += 2 * ldb) {
        const __m128 x0 = _mm_loadu_ps(b), x1 = _mm_loadu_ps(b + ldb);
        const __m256 bv =
            _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_unpacklo_ps(x0, x1)), _mm_unpackhi_ps(x0, x1), 1);
        // clang-format off
#define ROW(i, s)                                                                                                      \
    if (R > i) s = _mm256_fmadd_ps(_mm256_castpd_ps(_mm256_broadcast_sd((const double *)(a + i * si + k))), bv, s);
        ROW(0, s0) ROW(1, s1) ROW(2, s2) ROW(3, s3) ROW(4, s4) ROW(5, s5)
#undef ROW
        // clang-format on
    }
    if (k < kc) { /* an odd last depth: its partner lanes are zero in A and B */
        const __m128 x0 = _mm_loadu_ps(b), x1 = _mm_setzero_ps();
        const __m256 bv =
            _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_unpacklo_ps(x0, x1)), _mm_unpackhi_ps(x0, x1), 1);
        // clang-format off
#define ROW(i, s)                                                                                                      \
    if (R > i) s = _mm256_fmadd_ps(_mm256_blend_ps(_mm256_broadcast_ss(a + i * si + k), z, 0xAA), bv, s);
        ROW(0, s0) ROW(1, s1) ROW(2, s2) ROW(3, s3) ROW(4, s4) ROW(5, s5)
#undef ROW
        // clang-format on
    }
    acc[0] = s0;
    acc[1] = s1;
    acc[2] = s2;
    acc[3] = s3;
    acc[4] = s4;
    acc[5] = s5;
}

__attribute__((target("avx2,fma"))) static void avx2_edge4_depth(int kc, const float *a, long si, const float *b,
                                                                 long ldb, float *c, int ldc, int accumulate, int rows,
                                                                 int cols)
{
    __m256 acc[6];
    switch (rows) {
        // clang-format off
#define TILE_CASE(R) case R: avx2_edge4_depth_tile(R, kc, a, si, b, ldb, acc); break;
    TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6)
#undef TILE_CASE
            // clang-format on
            default : return;
    }
    const __m128i cm = _mm_cmpgt_epi32(_mm_set1_epi32(cols), _mm_setr_epi32(0, 1, 2, 3));
    for (int i = 0; i < rows; i++) avx2_edge4_store(acc[i], c + (size_t)i * ldc, cm, accumulate);
}

/* A's rows adjacent (si == 1: A transposed): lane 2c + r of pair h sums A[2h+r][k] B[k][c] with k in order. */
__attribute__((target("avx2,fma"))) static void avx2_edge4_rows(int kc, const float *a, long sk, const float *b,
                                                                long ldb, float *c, int ldc, int accumulate, int rows,
                                                                int cols)
{
    const __m256i spread = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256 z = _mm256_setzero_ps();
    __m256 h0 = z, h1 = z, h2 = z;
    const int pairs = rows / 2, odd = rows % 2;
    for (int k = 0; k < kc; k++, a += sk, b += ldb) {
        const __m256 bv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(b)), spread);
        if (pairs > 0) h0 = _mm256_fmadd_ps(_mm256_castpd_ps(_mm256_broadcast_sd((const double *)a)), bv, h0);
        if (pairs > 1) h1 = _mm256_fmadd_ps(_mm256_castpd_ps(_mm256_broadcast_sd((const double *)(a + 2))), bv, h1);
        if (pairs > 2) h2 = _mm256_fmadd_ps(_mm256_castpd_ps(_mm256_broadcast_sd((const double *)(a + 4))), bv, h2);
        if (odd) { /* the last row alone: no row of A read beyond `rows` */
            const __m256 x = _mm256_blend_ps(_mm256_broadcast_ss(a + 2 * pairs), z, 0xAA);
            if (pairs == 0)
                h0 = _mm256_fmadd_ps(x, bv, h0);
            else if (pairs == 1)
                h1 = _mm256_fmadd_ps(x, bv, h1);
            else
                h2 = _mm256_fmadd_ps(x, bv, h2);
        }
    }
    const __m128i cm = _mm_cmpgt_epi32(_mm_set1_epi32(cols), _mm_setr_epi32(0, 1, 2, 3));
    const __m256 hs[3] = {h0, h1, h2};
    for (int i = 0; i < rows; i++) {
        /* row 2h + r: lanes r, 2 + r, 4 + r, 6 + r */
        const int r = i % 2;
        __m128 o = _mm256_castps256_ps128(
            _mm256_permutevar8x32_ps(hs[i / 2], _mm256_setr_epi32(r, 2 + r, 4 + r, 6 + r, 0, 0, 0, 0)));
        float *ci = c + (size_t)i * ldc;
        if (accumulate) o = _mm_add_ps(o, _mm_maskload_ps(ci, cm));
        _mm_maskstore_ps(ci, cm, o);
    }
}

/* Edge tiles (rows <= 6, cols <= 16) straight into C: A read in place, only C's valid part touched. */
__attribute__((target("avx2,fma"))) static void kernel_avx2_edge(int kc, const float *a, long si, long sk,
                                                                 const float *b, long ldb, float *c, int ldc,
                                                                 int accumulate, int rows, int cols)
{
    if (cols <= 4 && sk == 1) {
        avx2_edge4_depth(kc, a, si, b, ldb, c, ldc, accumulate, rows, cols);
        return;
    }
    if (cols <= 4 && si == 1) {
        avx2_edge4_rows(kc, a, sk, b, ldb, c, ldc, accumulate, rows, cols);
        return;
    }
    __m256 acc[12];
    avx2_tile_any(rows, cols, kc, a, si, sk, b, ldb, acc);
    for (int v = 0; v * 8 < cols; v++) {
        int n = cols - 8 * v < 8 ? cols - 8 * v : 8;
        __m256i m = avx2_mask(n);
        for (int i = 0; i < rows; i++) {
            float *ci = c + (size_t)i * ldc + 8 * v;
            __m256 r = acc[2 * i + v];
            if (n == 8) {
                if (accumulate) r = _mm256_add_ps(r, _mm256_loadu_ps(ci));
                _mm256_storeu_ps(ci, r);
            } else {
                if (accumulate) r = _mm256_add_ps(r, _mm256_maskload_ps(ci, m));
                _mm256_maskstore_ps(ci, m, r);
            }
        }
    }
}

/* AVX-512: tiles of up to A5_MR rows and 32 columns (two 16-float
 * vectors), R x V of them for each constant (R, V), unrolled by the
 * compiler; the accumulators are named (GCC keeps an array of vectors in
 * memory). With 32 registers, 8 rows x 2 vectors leave room for the B
 * vectors and the broadcasts, which the compiler folds into the FMAs. */
#define A5_MR 8
__attribute__((always_inline, target("avx512f"))) static inline void avx512_tile(int R, int V, int kc, const float *a,
                                                                                 long si, long sk, const float *b,
                                                                                 long ldb, __mmask16 m0, __mmask16 m1,
                                                                                 __m512 *acc)
{
    const __m512 z = _mm512_setzero_ps();
    __m512 r00 = z, r01 = z, r10 = z, r11 = z, r20 = z, r21 = z, r30 = z, r31 = z, r40 = z, r41 = z, r50 = z, r51 = z,
           r60 = z, r61 = z, r70 = z, r71 = z;
    for (int k = 0; k < kc; k++, b += ldb) {
        const float *ak = a + k * sk;
        /* masked lanes are not read: B's edge panels need no padded copy */
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = V > 1 ? _mm512_maskz_loadu_ps(m1, b + 16) : z, x;
        // clang-format off
#define ROW(i, c0, c1)                                                                                                 \
    if (R > i) {                                                                                                       \
        x = _mm512_set1_ps(ak[i * si]);                                                                                \
        c0 = _mm512_fmadd_ps(x, b0, c0);                                                                               \
        if (V > 1) c1 = _mm512_fmadd_ps(x, b1, c1);                                                                    \
    }
        ROW(0, r00, r01)
        ROW(1, r10, r11) ROW(2, r20, r21) ROW(3, r30, r31) ROW(4, r40, r41) ROW(5, r50, r51) ROW(6, r60, r61)
            ROW(7, r70, r71)
#undef ROW
        // clang-format on
    }
    acc[0] = r00;
    acc[1] = r01;
    acc[2] = r10;
    acc[3] = r11;
    acc[4] = r20;
    acc[5] = r21;
    acc[6] = r30;
    acc[7] = r31;
    acc[8] = r40;
    acc[9] = r41;
    acc[10] = r50;
    acc[11] = r51;
    acc[12] = r60;
    acc[13] = r61;
    acc[14] = r70;
    acc[15] = r71;
}

__attribute__((target("avx512f"))) static void kernel_avx512(int kc, const float *a, long si, long sk, const float *b,
                                                             long ldb, float *c, int ldc, int accumulate)
{
    __m512 acc[2 * A5_MR];
    avx512_tile(A5_MR, 2, kc, a, si, sk, b, ldb, 0xFFFF, 0xFFFF, acc);
    for (int i = 0; i < A5_MR; i++) {
        float *ci = c + (size_t)i * ldc;
        if (accumulate) {
            acc[2 * i] = _mm512_add_ps(acc[2 * i], _mm512_loadu_ps(ci));
            acc[2 * i + 1] = _mm512_add_ps(acc[2 * i + 1], _mm512_loadu_ps(ci + 16));
        }
        _mm512_storeu_ps(ci, acc[2 * i]);
        _mm512_storeu_ps(ci + 16, acc[2 * i + 1]);
    }
}

/* Edge tiles at most 4 columns wide (the last columns of W2's 100 units =
 * 3 x 32 + 4): one column per vector would leave 12 of its 16 lanes idle,
 * with a broadcast and an FMA per row and depth. Instead a vector holds 4
 * columns x 4 depths (A's rows contiguous in depth: the forward product) or
 * 4 columns x 4 rows (A transposed, its rows adjacent: dW = X^T dZ). */
#define EDGE4_IDX_T _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)

/* Lanes 4c + q of B's rows k + q (q < depth), columns c < cols; 0 elsewhere. */
__attribute__((always_inline, target("avx512f,avx512vl"))) static inline __m512 edge4_b_block(const float *b, long ldb,
                                                                                              __mmask8 cm, int depth)
{
    __m512 v = _mm512_castps128_ps512(_mm_maskz_loadu_ps(cm, b));
    v = _mm512_insertf32x4(v, depth > 1 ? _mm_maskz_loadu_ps(cm, b + ldb) : _mm_setzero_ps(), 1);
    v = _mm512_insertf32x4(v, depth > 2 ? _mm_maskz_loadu_ps(cm, b + 2 * ldb) : _mm_setzero_ps(), 2);
    v = _mm512_insertf32x4(v, depth > 3 ? _mm_maskz_loadu_ps(cm, b + 3 * ldb) : _mm_setzero_ps(), 3);
    return _mm512_permutexvar_ps(EDGE4_IDX_T, v); /* lane 4q + c -> 4c + q */
}

/* A's rows contiguous in depth (sk == 1), R rows: lane 4c + q of row i's
 * accumulator sums A[i][k+q] B[k+q][c] over k = 0, 4, 8, ...; the four
 * depths of a column are added at the end. */
__attribute__((always_inline, target("avx512f,avx512vl"))) static inline void
edge4_depth_tile(int R, int kc, const float *a, long si, const float *b, long ldb, __mmask8 cm, __m512 *acc)
{
    const __m512 z = _mm512_setzero_ps();
    __m512 s0 = z, s1 = z, s2 = z, s3 = z, s4 = z, s5 = z, s6 = z, s7 = z;
    int k = 0;
    for (; k + 4 <= kc; k += 4, b += 4 * ldb) {
        const __m512 bv = edge4_b_block(b, ldb, cm, 4);
        // clang-format off
#define ROW(i, s)                                                                                                      \
    if (R > i) s = _mm512_fmadd_ps(_mm512_broadcast_f32x4(_mm_loadu_ps(a + i * si + k)), bv, s);
        ROW(0, s0) ROW(1, s1) ROW(2, s2) ROW(3, s3) ROW(4, s4) ROW(5, s5) ROW(6, s6) ROW(7, s7)
#undef ROW
        // clang-format on
    }
    if (k < kc) { /* the last 1-3 depths: neither A nor B read past them */
        const __mmask8 km = (__mmask8)((1u << (kc - k)) - 1u);
        const __m512 bv = edge4_b_block(b, ldb, cm, kc - k);
        // clang-format off
#define ROW(i, s)                                                                                                      \
    if (R > i) s = _mm512_fmadd_ps(_mm512_broadcast_f32x4(_mm_maskz_loadu_ps(km, a + i * si + k)), bv, s);
        ROW(0, s0) ROW(1, s1) ROW(2, s2) ROW(3, s3) ROW(4, s4) ROW(5, s5) ROW(6, s6) ROW(7, s7)
#undef ROW
        // clang-format on
    }
    acc[0] = s0;
    acc[1] = s1;
    acc[2] = s2;
    acc[3] = s3;
    acc[4] = s4;
    acc[5] = s5;
    acc[6] = s6;
    acc[7] = s7;
}

__attribute__((target("avx512f,avx512vl"))) static void edge4_depth(int kc, const float *a, long si, const float *b,
                                                                    long ldb, float *c, int ldc, int accumulate,
                                                                    int rows, int cols)
{
    const __mmask8 cm = (__mmask8)((1u << cols) - 1u);
    __m512 acc[A5_MR];
    switch (rows) {
        // clang-format off
#define TILE_CASE(R) case R: edge4_depth_tile(R, kc, a, si, b, ldb, cm, acc); break;
    TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6) TILE_CASE(7) TILE_CASE(8)
#undef TILE_CASE
            // clang-format on
            default : return;
    }
    for (int i = 0; i < rows; i++) {
        __m512 t = _mm512_add_ps(acc[i], _mm512_permute_ps(acc[i], 0xB1)); /* q0+q1, q2+q3 */
        t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E));                  /* (q0+q1)+(q2+q3) */
        __m128 r = _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, t));
        float *ci = c + (size_t)i * ldc;
        if (accumulate) r = _mm_add_ps(r, _mm_maskz_loadu_ps(cm, ci));
        _mm_mask_storeu_ps(ci, cm, r);
    }
}

/* A's rows adjacent (si == 1: A transposed, as X^T in dW = X^T dZ): lane
 * 4c + r of half h sums A[4h+r][k] B[k][c] with k in order, the same sums
 * as the 32-column kernel's. */
__attribute__((target("avx512f,avx512vl"))) static void edge4_rows(int kc, const float *a, long sk, const float *b,
                                                                   long ldb, float *c, int ldc, int accumulate,
                                                                   int rows, int cols)
{
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __mmask8 cm = (__mmask8)((1u << cols) - 1u);
    const int r0 = rows < 4 ? rows : 4, r1 = rows - r0;
    const __mmask8 rm0 = (__mmask8)((1u << r0) - 1u), rm1 = (__mmask8)((1u << r1) - 1u);
    __m512 h0 = _mm512_setzero_ps(), h1 = _mm512_setzero_ps();
    if (rows == 8)
        for (int k = 0; k < kc; k++, a += sk, b += ldb) {
            const __m512 bv = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_maskz_loadu_ps(cm, b)));
            h0 = _mm512_fmadd_ps(_mm512_broadcast_f32x4(_mm_loadu_ps(a)), bv, h0);
            h1 = _mm512_fmadd_ps(_mm512_broadcast_f32x4(_mm_loadu_ps(a + 4)), bv, h1);
        }
    else /* no row of A read beyond `rows` */
        for (int k = 0; k < kc; k++, a += sk, b += ldb) {
            const __m512 bv = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_maskz_loadu_ps(cm, b)));
            h0 = _mm512_fmadd_ps(_mm512_broadcast_f32x4(_mm_maskz_loadu_ps(rm0, a)), bv, h0);
            if (r1) h1 = _mm512_fmadd_ps(_mm512_broadcast_f32x4(_mm_maskz_loadu_ps(rm1, a + 4)), bv, h1);
        }
    for (int h = 0; h < 2; h++) {
        const __m512 v = h ? h1 : h0;
        /* x_c = column c of rows 4h..4h+3; transposed: x_r = row 4h + r */
        __m128 x0 = _mm512_extractf32x4_ps(v, 0), x1 = _mm512_extractf32x4_ps(v, 1), x2 = _mm512_extractf32x4_ps(v, 2),
               x3 = _mm512_extractf32x4_ps(v, 3);
        _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
        const __m128 x[4] = {x0, x1, x2, x3};
        for (int r = 0; r < (h ? r1 : r0); r++) {
            float *ci = c + (size_t)(4 * h + r) * ldc;
            __m128 o = x[r];
            if (accumulate) o = _mm_add_ps(o, _mm_maskz_loadu_ps(cm, ci));
            _mm_mask_storeu_ps(ci, cm, o);
        }
    }
}

/* Edge tiles (rows <= A5_MR, cols <= 32) straight into C: A read in place,
 * only B's and C's valid columns touched (masked). */
__attribute__((target("avx512f,avx512vl"))) static void kernel_avx512_edge(int kc, const float *a, long si, long sk,
                                                                           const float *b, long ldb, float *c, int ldc,
                                                                           int accumulate, int rows, int cols)
{
    if (cols <= 4 && sk == 1) {
        edge4_depth(kc, a, si, b, ldb, c, ldc, accumulate, rows, cols);
        return;
    }
    if (cols <= 4 && si == 1) {
        edge4_rows(kc, a, sk, b, ldb, c, ldc, accumulate, rows, cols);
        return;
    }
    __m512 acc[2 * A5_MR];
    const __mmask16 m0 = (__mmask16)(cols >= 16 ? 0xFFFFu : (1u << cols) - 1u),
                    m1 = (__mmask16)(cols >= 32  ? 0xFFFFu
                                     : cols > 16 ? (1u << (cols - 16)) - 1u
                                                 : 0u);
    switch (rows * 2 + (cols > 16)) {
        // clang-format off
#define TILE_CASE(R) \
    case 2 * R: avx512_tile(R, 1, kc, a, si, sk, b, ldb, m0, m1, acc); break; \
    case 2 * R + 1: avx512_tile(R, 2, kc, a, si, sk, b, ldb, m0, m1, acc); break;
    TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6) TILE_CASE(7) TILE_CASE(8)
#undef TILE_CASE
            // clang-format on
            default : return;
    }
    for (int v = 0; v * 16 < cols; v++) {
        int n = cols - 16 * v < 16 ? cols - 16 * v : 16;
        __mmask16 m = (__mmask16)((1u << n) - 1u);
        for (int i = 0; i < rows; i++) {
            float *ci = c + (size_t)i * ldc + 16 * v;
            __m512 r = acc[2 * i + v];
            if (accumulate) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, ci));
            _mm512_mask_storeu_ps(ci, m, r);
        }
    }
}

/* One or two rows of C, few_rows_avx512 below: D depths (of W's rows k..k+D-1) into the running
 * sums t (row r at t + r * ldt) of nv whole vectors of 16 columns and a last one of the lanes in tm
 * (or none), from zero when first. */
__attribute__((always_inline, target("avx512f"))) static inline void avx512_rows_block(int R, int D, const float *a,
                                                                                       long lda, const float *b,
                                                                                       long ldb, int nv, __mmask16 tm,
                                                                                       float *t, int ldt, int first)
{
    __m512 x0[8], x1[8];
    for (int q = 0; q < D; q++) {
        x0[q] = _mm512_set1_ps(a[q]);
        if (R > 1) x1[q] = _mm512_set1_ps(a[lda + q]);
    }
    const __m512 z = _mm512_setzero_ps();
    for (int v = 0; v < nv; v++) {
        float *t0 = t + 16 * v, *t1 = t0 + ldt;
        __m512 s0 = first ? z : _mm512_load_ps(t0), s1 = R > 1 && !first ? _mm512_load_ps(t1) : z;
        for (int q = 0; q < D; q++) {
            const __m512 w = _mm512_loadu_ps(b + q * ldb + 16 * v);
            s0 = _mm512_fmadd_ps(x0[q], w, s0);
            if (R > 1) s1 = _mm512_fmadd_ps(x1[q], w, s1);
        }
        _mm512_store_ps(t0, s0);
        if (R > 1) _mm512_store_ps(t1, s1);
    }
    if (tm) { /* masked lanes are not read */
        float *t0 = t + 16 * nv, *t1 = t0 + ldt;
        __m512 s0 = first ? z : _mm512_load_ps(t0), s1 = R > 1 && !first ? _mm512_load_ps(t1) : z;
        for (int q = 0; q < D; q++) {
            const __m512 w = _mm512_maskz_loadu_ps(tm, b + q * ldb + 16 * nv);
            s0 = _mm512_fmadd_ps(x0[q], w, s0);
            if (R > 1) s1 = _mm512_fmadd_ps(x1[q], w, s1);
        }
        _mm512_store_ps(t0, s0);
        if (R > 1) _mm512_store_ps(t1, s1);
    }
}

/* One or two rows of C (rows), columns [0, cols), A and B read in place: the sums of avx512_tile (per
 * element a chain of FMAs in depth order from zero, added to C with accumulate). W is read 8 rows at a
 * time across all the columns, the running sums kept in t (rows x cols rounded up to 16, 64-byte
 * aligned): every vector of columns is a chain of its own, as many in flight as there are columns. */
__attribute__((target("avx512f"))) static void few_rows_avx512(int rows, int kc, const float *a, long lda,
                                                               const float *b, long ldb, int cols, float *c, int ldc,
                                                               int accumulate, float *t)
{
    const int nv = cols / 16, ldt = (cols + 15) / 16 * 16;
    const __mmask16 tm = (__mmask16)((1u << (cols % 16)) - 1u);
    int k = 0;
    for (; k + 8 <= kc; k += 8, a += 8, b += 8 * ldb)
        if (rows == 1)
            avx512_rows_block(1, 8, a, lda, b, ldb, nv, tm, t, ldt, k == 0);
        else
            avx512_rows_block(2, 8, a, lda, b, ldb, nv, tm, t, ldt, k == 0);
    for (; k < kc; k++, a++, b += ldb)
        if (rows == 1)
            avx512_rows_block(1, 1, a, lda, b, ldb, nv, tm, t, ldt, k == 0);
        else
            avx512_rows_block(2, 1, a, lda, b, ldb, nv, tm, t, ldt, k == 0);
    for (int i = 0; i < rows; i++) {
        float *ci = c + (size_t)i * ldc;
        const float *ti = t + (size_t)i * ldt;
        for (int v = 0; v * 16 < cols; v++) {
            const __mmask16 m = v < nv ? (__mmask16)0xFFFF : tm;
            __m512 r = _mm512_load_ps(ti + 16 * v);
            if (accumulate) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, ci + 16 * v));
            _mm512_mask_storeu_ps(ci + 16 * v, m, r);
        }
    }
}
#endif

/* ---- runtime dispatch -------------------------------------------------- */

static const cdnn_simd simd_paths[] = {
#ifdef CDNN_X86
    {"avx512", A5_MR, 32, 128, kernel_avx512, kernel_avx512_edge, 1},
    {"avx2", 6, 16, 256, kernel_avx2, kernel_avx2_edge, 0},
#endif
    {"generic", G_MR, G_NR, 256, kernel_generic, NULL, 0},
};
#define N_PATHS ((int)(sizeof simd_paths / sizeof simd_paths[0]))

/* The selected path: written once at import (or by cdnn_simd_select in tests). */
static const cdnn_simd *selected = NULL;

int cdnn_simd_supported(const char *name)
{
#ifdef CDNN_X86
    __builtin_cpu_init();
    if (strcmp(name, "avx512") == 0) /* F and VL: every AVX-512 CPU but the Xeon Phi */
        return (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) ? 1 : 0;
    if (strcmp(name, "avx2") == 0) return (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
#endif
    return strcmp(name, "generic") == 0;
}

int cdnn_simd_select(const char *name)
{
    for (int i = 0; i < N_PATHS; i++) {
        /* "auto": the first supported path (the list is best first) */
        int wanted = strcmp(name, "auto") == 0 || strcmp(name, simd_paths[i].name) == 0;
        if (wanted && cdnn_simd_supported(simd_paths[i].name)) {
            selected = &simd_paths[i];
            return 0;
        }
    }
    return -1;
}

const cdnn_simd *cdnn_simd_current(void)
{
    if (!selected) cdnn_simd_select("auto");
    return selected;
}

const char *cdnn_simd_compiled(void)
{
#ifdef CDNN_X86
    return "avx512,avx2,generic";
#else
    return "generic";
#endif
}

/* ---- packing ----------------------------------------------------------- */

/* Pack rows [i0, i0+rows) x depth [p0, p0+kc) of op(A) into one zero-padded MR-row micro-panel. */
static void pack_a_panel(int transa, const float *A, int lda, int i0, int rows, int p0, int kc, int mr, float *dst)
{
    for (int k = 0; k < kc; k++, dst += mr) {
        for (int i = 0; i < rows; i++) {
            size_t r = (size_t)(i0 + i), d = (size_t)(p0 + k);
            dst[i] = transa ? A[d * lda + r] : A[r * lda + d];
        }
        for (int i = rows; i < mr; i++) dst[i] = 0.0f;
    }
}

/* Pack depth [p0, p0+kc) x columns [j0, j0+cols) of op(B) into one zero-padded NR-column micro-panel. */
static void pack_b_panel(int transb, const float *B, int ldb, int p0, int kc, int j0, int cols, int nr, float *dst)
{
    for (int k = 0; k < kc; k++, dst += nr) {
        size_t d = (size_t)(p0 + k);
        if (!transb) {
            /* fixed-size copies, inlined: a memcpy call per 64-byte row
             * (which GCC makes of a plain loop) cost as much as the copy */
            const float *src = B + d * ldb + j0;
            int j = 0;
            for (; j + 8 <= cols; j += 8) memcpy(dst + j, src + j, 8 * sizeof(float));
            for (; j < cols; j++) dst[j] = src[j];
        } else
            for (int j = 0; j < cols; j++) dst[j] = B[(size_t)(j0 + j) * ldb + d];
        for (int j = cols; j < nr; j++) dst[j] = 0.0f;
    }
}

/* ---- weights kept packed ------------------------------------------------ */

/* n rounded up to whole micro-panels of nr: the width of a packed operand. */
static size_t padded(int n, int nr)
{
    return (size_t)(n + nr - 1) / nr * nr;
}

size_t cdnn_packed_floats(int K, int N)
{
    return (size_t)K * padded(N, cdnn_simd_current()->nr);
}

/* Layout of a packed op(B) [K, N]: depth blocks of kc rows; in a block, the
 * NR-column panels one after the other, each kc rows of NR floats - what
 * pack_b_panel writes for one panel. Columns past N are zero. */

/* Where depth k of a packed op(B) [K, N] starts (its part of the first
 * panel); *kc: the depth of its block, so that column j is at
 * + (j / nr) * nr * *kc + j % nr. */
static float *packed_row(const float *p, int K, int N, int k, int *kc)
{
    const int nr = cdnn_simd_current()->nr, kcs = cdnn_simd_current()->kc, pc = k / kcs * kcs;
    *kc = K - pc < kcs ? K - pc : kcs;
    return (float *)p + (size_t)pc * padded(N, nr) + (size_t)(k - pc) * nr;
}

#ifdef CDNN_X86
/* d[t * ds + q] = s[q * ss + t] for q < n (1..8), t < 8: an n x 8 block transposed in registers (lanes
 * q >= n of d are left as they are). */
__attribute__((target("avx2"))) static void transpose8(const float *s, long ss, int n, float *d, long ds)
{
    const __m256 z = _mm256_setzero_ps();
    __m256 r0 = _mm256_loadu_ps(s), r1 = n > 1 ? _mm256_loadu_ps(s + ss) : z,
           r2 = n > 2 ? _mm256_loadu_ps(s + 2 * ss) : z, r3 = n > 3 ? _mm256_loadu_ps(s + 3 * ss) : z,
           r4 = n > 4 ? _mm256_loadu_ps(s + 4 * ss) : z, r5 = n > 5 ? _mm256_loadu_ps(s + 5 * ss) : z,
           r6 = n > 6 ? _mm256_loadu_ps(s + 6 * ss) : z, r7 = n > 7 ? _mm256_loadu_ps(s + 7 * ss) : z;
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    /* u_c: column c of rows 0-3 (or 4-7) | column c + 4 */
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    __m256 c[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                   _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                   _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                   _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
    /* the first n lanes: 4, 2 and 1 at a time (AVX2's masked stores are slow on AMD's cores: +40 us a step) */
#pragma GCC unroll 1
    for (int t = 0; t < 8; t++, d += ds) {
        if (n == 8) {
            _mm256_storeu_ps(d, c[t]);
            continue;
        }
        __m128 x = _mm256_castps256_ps128(c[t]);
        float *o = d;
        if (n & 4) {
            _mm_storeu_ps(o, x);
            x = _mm256_extractf128_ps(c[t], 1);
            o += 4;
        }
        if (n & 2) {
            _mm_storel_pi((__m64 *)o, x);
            x = _mm_movehl_ps(x, x);
            o += 2;
        }
        if (n & 1) _mm_store_ss(o, x);
    }
}
#endif

void cdnn_pack_rows(const float *W, int K, int N, int r0, int r1, int j0, int j1, float *pw, float *pwt)
{
    const int nr = cdnn_simd_current()->nr, kcs = cdnn_simd_current()->kc;
#ifdef CDNN_X86
    const int has_avx2 = cdnn_simd_current()->kernel != kernel_generic; /* the AVX2 and AVX-512 paths */
#endif
    if (pw) /* op(B) = W: row r of W is depth r; its columns go panel by panel */
        for (int r = r0; r < r1; r++) {
            int kc;
            float *base = packed_row(pw, K, N, r, &kc);
            const float *row = W + (size_t)r * N;
            for (int j = j0; j < j1;) {
                int off = j % nr, n = nr - off < j1 - j ? nr - off : j1 - j;
                float *dst = base + (size_t)(j / nr) * nr * kc + off;
                /* fixed-size copies, inlined (a scalar loop here was 11% of a BIG-b128 fit) */
                int q = 0;
                for (; q + 8 <= n; q += 8) memcpy(dst + q, row + j + q, 8 * sizeof(float));
                for (; q < n; q++) dst[q] = row[j + q];
                j += n;
            }
        }
    if (pwt) /* op(B) = W^T: column j of W is depth j; rows r of W go to lanes r % nr of panel r / nr */
        for (int jb = j0; jb < j1;) {
            /* depths jb .. jend-1 lie in one block, nr floats apart */
            int kc, jend = jb / kcs * kcs + kcs < j1 ? jb / kcs * kcs + kcs : j1;
            float *block = packed_row(pwt, N, K, jb, &kc);
            for (int r = r0; r < r1;) {
                int off = r % nr, n = nr - off < r1 - r ? nr - off : r1 - r;
                float *dst = block + (size_t)(r / nr) * nr * kc + off;
                const float *src = W + (size_t)r * N;
                int j = jb;
#ifdef CDNN_X86
                if (has_avx2) /* 8 x 8 blocks in registers (the scalar loop: 2% of a BIG-b128 epoch on AVX2) */
                    for (; j + 8 <= jend; j += 8)
                        for (int q = 0; q < n; q += 8)
                            transpose8(src + (size_t)q * N + j, N, n - q < 8 ? n - q : 8,
                                       dst + (size_t)(j - jb) * nr + q, nr);
#endif
                for (; j < jend; j++) {
                    float *d = dst + (size_t)(j - jb) * nr;
                    for (int q = 0; q < n; q++) d[q] = src[(size_t)q * N + j];
                }
                r += n;
            }
            jb = jend;
        }
}

void cdnn_unpack_rows(const float *pw, int K, int N, int r0, int r1, float *W)
{
    const int nr = cdnn_simd_current()->nr;
    for (int r = r0; r < r1; r++) {
        int kc;
        const float *base = packed_row(pw, K, N, r, &kc);
        float *row = W + (size_t)r * N;
        for (int j = 0; j < N; j += nr)
            memcpy(row + j, base + (size_t)(j / nr) * nr * kc, (size_t)(N - j < nr ? N - j : nr) * sizeof(float));
    }
}

/* Rows [r0, r1) x columns [j0, j1) of W^T's packed copy pwt from W's packed copy pw (both of K rows, N columns). */
static void pack_wt_from_pw(const float *pw, int K, int N, int r0, int r1, int j0, int j1, float *pwt)
{
    const int nr = cdnn_simd_current()->nr;
#ifdef CDNN_X86
    const int has_avx2 = cdnn_simd_current()->kernel != kernel_generic; /* the AVX2 and AVX-512 paths */
#endif
    for (int r = r0; r < r1;) {
        /* rows r .. r+n-1 share one micro-panel of pwt and, kcs being a multiple of nr, one depth block of pw */
        int off = r % nr, n = nr - off < r1 - r ? nr - off : r1 - r, rkc, kc;
        const float *src = packed_row(pw, K, N, r, &rkc); /* + column offset, + q * nr */
        int j = j0;
#ifdef CDNN_X86
        /* the rows (of an optimizer panel) x 8 columns at a time, in registers (the scalar loop was 3% of
         * BIG-b128 with 8-row panels, 25% of the dW L1 + Adam product with the AVX2 path's 6-row ones) */
        if (has_avx2)
            for (; j % 8 == 0 && j + 8 <= j1; j += 8) {
                float *d = packed_row(pwt, N, K, j, &kc) + (size_t)(r / nr) * nr * kc + off; /* W^T: depth j */
                for (int q = 0; q < n; q += 8)
                    transpose8(src + (size_t)(j / nr) * nr * rkc + (size_t)q * nr + j % nr, nr, n - q < 8 ? n - q : 8,
                               d + q, nr);
            }
#endif
        for (; j < j1; j++) {
            float *d = packed_row(pwt, N, K, j, &kc) + (size_t)(r / nr) * nr * kc + off;
            const float *sj = src + (size_t)(j / nr) * nr * rkc + j % nr;
            for (int q = 0; q < n; q++) d[q] = sj[(size_t)q * nr];
        }
        r += n;
    }
}

/* After the optimizer changed rows [i0, i1) x columns [j0, j1) of W: the same
 * elements of its packed copies, while they are still in this core's cache
 * (with W kept in packed_w during a run, only W^T's copy, from packed_w). */
static void refresh_packed(const cdnn_epilogue *e, int i0, int i1, int j0, int j1, int N)
{
    if (e->w_in_packed) {
        if (e->packed_wt)
            pack_wt_from_pw(e->packed_w, e->packed_k, N, i0 - e->packed_row0, i1 - e->packed_row0, j0, j1,
                            e->packed_wt);
    } else if (e->packed_w || e->packed_wt)
        cdnn_pack_rows(e->aux + (size_t)e->packed_row0 * N, e->packed_k, N, i0 - e->packed_row0, i1 - e->packed_row0,
                       j0, j1, e->packed_w, e->packed_wt);
}

/* ---- epilogue ---------------------------------------------------------- */

static void epilogue(const cdnn_epilogue *e, float *c, int ldc, int i0, int j0, int rows, int cols)
{
    switch (e->kind) {
    case CDNN_EPI_BIAS_ACT:
        if (e->bn_inv_std) { /* the same passes, in the same order, as the Dense, BatchNormalization, Activation */
            cdnn_bias_act_tile(CDNN_LINEAR, e->act_args, c, ldc, rows, cols, e->bias ? e->bias + j0 : NULL,
                               e->aux ? e->aux + (size_t)i0 * e->ldaux + j0 : NULL, e->ldaux);
            cdnn_batchnorm_tile(c, ldc, c, ldc, rows, cols, e->bn_mean + j0, e->bn_inv_std + j0,
                                e->bn_gamma ? e->bn_gamma + j0 : NULL, e->bn_beta ? e->bn_beta + j0 : NULL);
            if (e->act != CDNN_LINEAR) cdnn_bias_act_tile(e->act, e->act_args, c, ldc, rows, cols, NULL, NULL, 0);
        } else {
            cdnn_bias_act_tile(e->act, e->act_args, c, ldc, rows, cols, e->bias ? e->bias + j0 : NULL,
                               e->aux ? e->aux + (size_t)i0 * e->ldaux + j0 : NULL, e->ldaux);
        }
        break;
    case CDNN_EPI_DACT:
        cdnn_dact_tile(e->act, e->act_args, c, ldc, e->aux + (size_t)i0 * e->ldaux + j0, e->ldaux, rows, cols);
        if (e->drop_rate > 0.0f)
            for (int i = 0; i < rows; i++) {
                float *ci = c + (size_t)i * ldc;
                if (e->drop_din)
                    cdnn_dropout_row_kept(ci, e->drop_din + (size_t)(i0 + i) * e->ldaux + j0, cols, e->drop_rate);
                else
                    cdnn_dropout_row(ci, ci, cols, e->drop_seed, e->drop_rows[i0 + i], e->drop_col0 + j0, e->drop_rate);
            }
        break;
    default:
        break;
    }
}

/* The optimizer update of this thread's finished block of a gradient: one
 * pass over long contiguous runs (whole rows when the block spans all
 * columns), while the block is still in this core's cache. Per-tile calls
 * of 16 elements spent more on call overhead than on the update. */
static void optimize_region(const cdnn_epilogue *e, const float *g, int ldg, int i0, int i1, int j0, int j1, int N)
{
    if (e->w_in_packed) { /* W's values are in packed_w: runs of nr columns, a panel apart */
        const int nr = cdnn_simd_current()->nr;
        for (int i = i0; i < i1; i++) {
            int kc;
            float *w = packed_row(e->packed_w, e->packed_k, N, i - e->packed_row0, &kc) + (size_t)(j0 / nr) * nr * kc;
            size_t off = (size_t)i * e->ldaux + j0;
            cdnn_opt_update_panels(e->opt, e->step, w, j0 % nr, nr, (long)nr * kc, e->slot1 ? e->slot1 + off : NULL,
                                   e->slot2 ? e->slot2 + off : NULL, g + (size_t)i * ldg + j0, j1 - j0);
        }
        return;
    }
    if (j0 == 0 && j1 == N && ldg == N && e->ldaux == N) {
        size_t off = (size_t)i0 * N;
        cdnn_opt_update(e->opt, e->step, e->aux + off, e->slot1 ? e->slot1 + off : NULL,
                        e->slot2 ? e->slot2 + off : NULL, g + off, (long)(i1 - i0) * N);
        return;
    }
    for (int i = i0; i < i1; i++) {
        size_t off = (size_t)i * e->ldaux + j0;
        cdnn_opt_update(e->opt, e->step, e->aux + off, e->slot1 ? e->slot1 + off : NULL,
                        e->slot2 ? e->slot2 + off : NULL, g + (size_t)i * ldg + j0, j1 - j0);
    }
}

/* One tile of C (rows x cols, at most mr x nr): the full kernel, the edge
 * kernel, or the full kernel into tmp and a copy of the valid part. */
static void tile(const cdnn_simd *s, int kc, const float *a, long si, long sk, const float *b, long ldb, float *c,
                 int ldc, int acc, int rows, int cols, float *tmp)
{
    if (rows == s->mr && cols == s->nr) {
        s->kernel(kc, a, si, sk, b, ldb, c, ldc, acc);
    } else if (s->edge) {
        s->edge(kc, a, si, sk, b, ldb, c, ldc, acc, rows, cols);
    } else {
        s->kernel(kc, a, si, sk, b, ldb, tmp, s->nr, 0);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                c[(size_t)i * ldc + j] = acc ? c[(size_t)i * ldc + j] + tmp[i * s->nr + j] : tmp[i * s->nr + j];
    }
}

/* ---- the product ------------------------------------------------------- */

static long ceil_div(long a, long b)
{
    return (a + b - 1) / b;
}

/* Cycles-like cost of one split, to choose between splitting rows and columns. */
static double split_cost(long tiles_per_thread, long tile_flops, long packed)
{
    return (double)tiles_per_thread * (double)tile_flops / 32.0 + (double)packed;
}

static void gemm_block(const cdnn_simd *s, int transa, int transb, int N, int K, const float *A, int lda,
                       const float *B, int ldb, const float *bpacked, float *C, int ldc, int accumulate,
                       const cdnn_epilogue *epi, float *pack, int i_begin, int i_end, int j_begin, int j_end);

/* Where the pack buffer's parts start: A panel, B block, one edge tile. */
static float *pack_a_part(float *pack)
{
    return pack;
}
static float *pack_b_part(float *pack)
{
    return pack + (size_t)(MC + MR_MAX) * KC_MAX;
}
static float *pack_tmp_part(float *pack)
{
    return (float *)(((uintptr_t)(pack_b_part(pack) + (size_t)(NC + NR_MAX) * KC_MAX) + 63) & ~(uintptr_t)63);
}

/* Row panel p counted from row r0 (rows below M; columns [jc, jc + nc)) of
 * a gradient whose B is packed in pb, then the optimizer on its rows and
 * their packed copies. */
static void optimize_panel(const cdnn_simd *s, int transa, int M, int N, int K, const float *A, int lda, float *C,
                           int ldc, const cdnn_epilogue *epi, float *pa, const float *pb, float *tmp, long a_si,
                           long a_sk, int r0, long p, int jc, int nc)
{
    const int mr = s->mr, nr = s->nr;
    int r = r0 + (int)(p * mr), rows = M - r < mr ? M - r : mr;
    const float *a = transa ? A + r : A + (size_t)r * lda;
    long si = a_si, sk = a_sk;
    if (rows < mr && !s->edge) {
        pack_a_panel(transa, A, lda, r, rows, 0, K, mr, pa);
        a = pa;
        si = 1;
        sk = mr;
    }
    /* slice by slice, so that A's slice stays in L1 while it meets every B panel */
    for (int pc = 0; pc < K || (K == 0 && pc == 0); pc += s->kc) {
        int kc = K - pc < s->kc ? K - pc : s->kc;
        for (int jr = 0; jr < nc; jr += nr) {
            int cols = nc - jr < nr ? nc - jr : nr;
            tile(s, kc, a + pc * sk, si, sk, pb + (size_t)jr * K + (size_t)pc * nr, nr, C + (size_t)r * ldc + jc + jr,
                 ldc, pc > 0, rows, cols, tmp);
        }
        if (K == 0) break;
    }
    optimize_region(epi, C, ldc, r, r + rows, jc, jc + nc, N);
    refresh_packed(epi, r, r + rows, jc, jc + nc, N);
}

/* Columns [jc, jc + nc) of op(B), all K rows deep, packed panel by panel into pb (panel jr at pb + jr * K). */
static void pack_b_block(const cdnn_simd *s, int transb, const float *B, int ldb, int K, int jc, int nc, float *pb)
{
    for (int jr = 0; jr < nc; jr += s->nr) {
        int cols = nc - jr < s->nr ? nc - jr : s->nr;
        pack_b_panel(transb, B, ldb, 0, K, jc + jr, cols, s->nr, pb + (size_t)jr * K);
    }
}

/* Thread u's learned share of pm row panels, [*q0, *q1): it takes [*q0, *head)
 * itself and leaves [*head, *q1) to the common pool. */
static void share_range(const float *share, int u, long pm, long *q0, long *head, long *q1)
{
    *q0 = (long)(share[u] * pm + 0.5);
    *q1 = (long)(share[u + 1] * pm + 0.5);
    *head = *q0 + (*q1 - *q0) * (100 - TAIL_PERCENT) / 100;
}

/* Columns of C per block of gemm_optimize_team: as many whole micro-panels
 * of op(B) (all K rows deep) as the B part of the pack buffer holds, up to
 * NC; 0 when not even one fits (or one partial A panel, without an edge kernel). */
static int optimize_block_cols(const cdnn_simd *s, int K)
{
    long fit = (long)(NC + NR_MAX) * KC_MAX / (K > 0 ? K : 1) / s->nr * s->nr;
    if (!s->edge && (long)K * s->mr > (long)(MC + MR_MAX) * KC_MAX) return 0;
    return (int)(fit < NC ? fit : NC);
}

/* A gradient with the optimizer epilogue whose op(B) fits the pack buffer
 * in blocks of whole columns (dW = X^T dZ, K = the batch size). Row panels are split by the
 * epilogue's learned shares (or handed out dynamically without them), so
 * that a thread whose core is slowed down by other work takes fewer of
 * them; each panel's rows get the optimizer update right
 * after they are computed, while they are in L1. Every element is computed
 * and updated the same way whichever thread takes its panel. */
static void gemm_optimize_team(const cdnn_simd *s, int transa, int transb, int M, int N, int K, const float *A, int lda,
                               const float *B, int ldb, float *C, int ldc, const cdnn_epilogue *epi, float *pack)
{
    const int mr = s->mr;
    float *pa = pack_a_part(pack), *pb = pack_b_part(pack), *tmp = pack_tmp_part(pack);
    const long a_si = transa ? 1 : lda, a_sk = transa ? lda : 1;
    const long pm = ceil_div(M, mr);
    /* ~16 handouts per thread: enough to even out, few enough atomics */
    const int chunk = (int)(pm / (16L * cdnn_team_size()) > 1 ? pm / (16L * cdnn_team_size()) : 1);
    const int block = optimize_block_cols(s, K);
    for (int jc = 0; jc < N; jc += block) {
        int nc = N - jc < block ? N - jc : block;
        pack_b_block(s, transb, B, ldb, K, jc, nc, pb);
        if (cdnn_team_size() == 1) {
            /* alone: no work sharing (OpenMP's dynamic loop costs a call per panel) */
            for (long p = 0; p < pm; p++)
                optimize_panel(s, transa, M, N, K, A, lda, C, ldc, epi, pa, pb, tmp, a_si, a_sk, 0, p, jc, nc);
        } else if (epi->share) {
            /* Each thread first takes the head of its learned share of the
             * panels: the same rows of W and of its optimizer slots stay in
             * the same core's cache step after step. The last TAIL_PERCENT of
             * every share goes to a common pool handed out dynamically, which
             * absorbs how much the threads' speeds vary from step to step. */
            const int nt = cdnn_team_size(), t = cdnn_team_rank();
            long tail_total = 0;
            for (int u = 0; u < nt; u++) {
                long q0, head, q1;
                share_range(epi->share, u, pm, &q0, &head, &q1);
                if (u == t)
                    for (long p = q0; p < head; p++)
                        optimize_panel(s, transa, M, N, K, A, lda, C, ldc, epi, pa, pb, tmp, a_si, a_sk, 0, p, jc, nc);
                tail_total += q1 - head;
            }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
            for (long q = 0; q < tail_total; q++) {
                /* the q-th panel of the pool: the tails of the shares, in order */
                long left = q, p = -1;
                for (int u = 0; u < nt && p < 0; u++) {
                    long q0, head, q1;
                    share_range(epi->share, u, pm, &q0, &head, &q1);
                    if (left < q1 - head)
                        p = head + left;
                    else
                        left -= q1 - head;
                }
                optimize_panel(s, transa, M, N, K, A, lda, C, ldc, epi, pa, pb, tmp, a_si, a_sk, 0, p, jc, nc);
            }
        } else {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, chunk) nowait
#endif
            for (long p = 0; p < pm; p++)
                optimize_panel(s, transa, M, N, K, A, lda, C, ldc, epi, pa, pb, tmp, a_si, a_sk, 0, p, jc, nc);
        }
    }
}

void cdnn_gemm_team(int transa, int transb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc, int accumulate, const cdnn_epilogue *epi, float *pack)
{
    const cdnn_simd *s = cdnn_simd_current();
    const int mr = s->mr, nr = s->nr;
    long pm = ceil_div(M, mr), pn = ceil_div(N, nr);
    long lo, hi;

    /* Whole-team decision, identical on every thread. */
    int nt = cdnn_team_size();
    if (epi && epi->kind == CDNN_EPI_OPTIMIZE && !accumulate && optimize_block_cols(s, K) > 0) {
        gemm_optimize_team(s, transa, transb, M, N, K, A, lda, B, ldb, C, ldc, epi, pack);
        return;
    }
    long tile_flops = 2L * mr * nr * K;
    double cost_n = split_cost(pm * ceil_div(pn, nt), tile_flops, (long)M * K + (long)K * ceil_div(pn, nt) * nr);
    double cost_m = split_cost(ceil_div(pm, nt) * pn, tile_flops, (long)ceil_div(pm, nt) * mr * K + (long)K * N);
    int split_rows = nt > 1 && cost_m < cost_n;

    int i_begin = 0, i_end = M, j_begin = 0, j_end = N;
    if (split_rows) {
        cdnn_team_range(pm, &lo, &hi);
        i_begin = (int)(lo * mr);
        i_end = (int)(hi * mr < M ? hi * mr : M);
    } else {
        cdnn_team_range(pn, &lo, &hi);
        j_begin = (int)(lo * nr);
        j_end = (int)(hi * nr < N ? hi * nr : N);
    }
    gemm_block(s, transa, transb, N, K, A, lda, B, ldb, NULL, C, ldc, accumulate, epi, pack, i_begin, i_end, j_begin,
               j_end);
}

void cdnn_gemm_rows(int transa, int transb, int i0, int i1, int N, int K, const float *A, int lda, const float *B,
                    int ldb, const float *bpacked, float *C, int ldc, int accumulate, const cdnn_epilogue *epi,
                    float *pack)
{
    gemm_block(cdnn_simd_current(), transa, transb, N, K, A, lda, B, ldb, bpacked, C, ldc, accumulate, epi, pack, i0,
               i1, 0, N);
}

void cdnn_gemm_rows_cols(int transa, int transb, int i0, int i1, int j0, int j1, int N, int K, const float *A, int lda,
                         const float *B, int ldb, const float *bpacked, float *C, int ldc, int accumulate,
                         const cdnn_epilogue *epi, float *pack)
{
    gemm_block(cdnn_simd_current(), transa, transb, N, K, A, lda, B, ldb, bpacked, C, ldc, accumulate, epi, pack, i0,
               i1, j0, j1);
}

/* Rows [i_begin, i_end) x columns [j_begin, j_end) of C, on the calling thread. */
static void gemm_block(const cdnn_simd *s, int transa, int transb, int N, int K, const float *A, int lda,
                       const float *B, int ldb, const float *bpacked, float *C, int ldc, int accumulate,
                       const cdnn_epilogue *epi, float *pack, int i_begin, int i_end, int j_begin, int j_end)
{
    const int mr = s->mr, nr = s->nr;
    if (i_begin < i_end && j_begin < j_end) {
        float *pa = pack_a_part(pack), *pb = pack_b_part(pack), *tmp = pack_tmp_part(pack);
        /* Full micro-panels are read in place (A with its row and depth
         * strides, B row by row when not transposed); edge panels (unless an
         * edge kernel reads them in place), transposed B and B whose stride
         * aliases in L1 are packed. At these sizes (K <= a few thousand) the
         * operands stay in cache, and copying them would cost more than it saves. */
        const long a_si = transa ? 1 : lda, a_sk = transa ? lda : 1;
        /* B panels read by many row panels are worth packing when, in
         * place, their rows would evict each other from L1: rows a multiple
         * of 256 bytes apart fall into a quarter or less of L1's 64 sets.
         * Other strides spread over all sets, and a copy would only add
         * traffic (W2-b256: packing a 784x100 W took 10% of a step). */
        const int pack_all_b = transb || ((i_end - i_begin) >= PACK_B_MIN_ROWS && ldb % 64 == 0);
        for (int jc = j_begin; jc < j_end; jc += NC) {
            int nc = j_end - jc < NC ? j_end - jc : NC;
            for (int pc = 0; pc < K || (K == 0 && pc == 0); pc += s->kc) {
                int kc = K - pc < s->kc ? K - pc : s->kc;
                int last = pc + s->kc >= K;
                int acc = accumulate || pc > 0;
                if (bpacked) /* the whole of op(B), packed beforehand (cdnn_pack_rows) */
                    pb = (float *)bpacked + (size_t)pc * padded(N, nr) + (size_t)jc * kc;
                else
                    for (int jr = 0; jr < nc; jr += nr) {
                        int cols = nc - jr < nr ? nc - jr : nr;
                        if (pack_all_b || (cols < nr && !s->edge_reads_b_in_place))
                            pack_b_panel(transb, B, ldb, pc, kc, jc + jr, cols, nr, pb + (size_t)jr * kc);
                    }
                for (int ic = i_begin; ic < i_end; ic += MC) {
                    int mc = i_end - ic < MC ? i_end - ic : MC;
                    int edge = mc % mr; /* rows of the last, partial panel */
                    if (edge && !s->edge) pack_a_panel(transa, A, lda, ic + mc - edge, edge, pc, kc, mr, pa);
                    int jr0 = 0;
#ifdef CDNN_X86
                    /* one or two rows (a small predict): every column whose sums are chains of
                     * FMAs (all but a last panel of at most 4, summed by depths) at once */
                    if (mc <= 2 && kc > 0 && s->edge && !transa && !bpacked && !pack_all_b) {
                        const int rest = nc % nr, cols = rest > 4 ? nc : nc - rest;
                        float *c = C + (size_t)ic * ldc + jc;
                        if (cols > 0) {
                            const float *a = A + (size_t)ic * lda + pc, *b = B + (size_t)pc * ldb + jc;
                            if (s->kernel == kernel_avx512)
                                few_rows_avx512(mc, kc, a, lda, b, ldb, cols, c, ldc, acc, pa);
                            else
                                few_rows_avx2(mc, kc, a, lda, b, ldb, cols, c, ldc, acc, pa);
                            if (last && epi && epi->kind != CDNN_EPI_OPTIMIZE)
                                for (int p = 0; p < cols; p += nr)
                                    epilogue(epi, c + p, ldc, ic, jc + p, mc, cols - p < nr ? cols - p : nr);
                            jr0 = cols;
                        }
                    }
#endif
                    for (int jr = jr0; jr < nc; jr += nr) {
                        int cols = nc - jr < nr ? nc - jr : nr;
                        const float *b = pb + (size_t)jr * kc;
                        long ldbk = nr;
                        if (!bpacked && !pack_all_b && (cols == nr || s->edge_reads_b_in_place)) {
                            b = B + (size_t)pc * ldb + jc + jr;
                            ldbk = ldb;
                        }
                        for (int ir = 0; ir < mc; ir += mr) {
                            int rows = mc - ir < mr ? mc - ir : mr;
                            float *c = C + (size_t)(ic + ir) * ldc + jc + jr;
                            const float *a = pa;
                            long si = 1, sk = mr;
                            if (rows == mr || s->edge) {
                                /* in place; the edge kernel reads no row beyond `rows` */
                                size_t r = (size_t)(ic + ir);
                                a = transa ? A + (size_t)pc * lda + r : A + r * lda + pc;
                                si = a_si;
                                sk = a_sk;
                            }
                            tile(s, kc, a, si, sk, b, ldbk, c, ldc, acc, rows, cols, tmp);
                            if (last && epi && epi->kind != CDNN_EPI_OPTIMIZE)
                                epilogue(epi, c, ldc, ic + ir, jc + jr, rows, cols);
                        }
                    }
                }
                if (K == 0) break;
            }
        }
        if (epi && epi->kind == CDNN_EPI_OPTIMIZE) {
            optimize_region(epi, C, ldc, i_begin, i_end, j_begin, j_end, N);
            refresh_packed(epi, i_begin, i_end, j_begin, j_end, N);
        }
    }
}

/* The next unit of work from the shared counter *next (atomically), or from *mine (this thread's own). */
static long claim(int *next, long *mine)
{
    if (!next) return (*mine)++;
    int q;
#ifdef _OPENMP
#pragma omp atomic capture
#endif
    {
        q = *next;
        (*next)++;
    }
    return q;
}

void cdnn_gemm_optimize_rows(int transa, int transb, int i0, int i1, int N, int K, const float *A, int lda,
                             const float *B, int ldb, float *C, int ldc, const cdnn_epilogue *epi, float *pack,
                             int *next)
{
    const cdnn_simd *s = cdnn_simd_current();
    const int block = optimize_block_cols(s, K);
    if (i0 >= i1) return;
    long mine = 0;
    if (block == 0) { /* op(B) too deep for the pack buffer: the product, then the update (one unit) */
        if (claim(next, &mine) == 0)
            gemm_block(s, transa, transb, N, K, A, lda, B, ldb, NULL, C, ldc, 0, epi, pack, i0, i1, 0, N);
        return;
    }
    float *pa = pack_a_part(pack), *pb = pack_b_part(pack), *tmp = pack_tmp_part(pack);
    const long a_si = transa ? 1 : lda, a_sk = transa ? lda : 1;
    const long pm = ceil_div(i1 - i0, s->mr), units = pm * ceil_div(N, block);
    /* unit u: row panel u % pm of column block u / pm, whose op(B) is packed when a thread first takes one */
    long packed = -1;
    for (long u = claim(next, &mine); u < units; u = claim(next, &mine)) {
        const long blk = u / pm, p = u % pm;
        const int jc = (int)(blk * block), nc = N - jc < block ? N - jc : block;
        if (blk != packed) {
            pack_b_block(s, transb, B, ldb, K, jc, nc, pb);
            packed = blk;
        }
        optimize_panel(s, transa, i1, N, K, A, lda, C, ldc, epi, pa, pb, tmp, a_si, a_sk, i0, p, jc, nc);
    }
}

void cdnn_gemm(int transa, int transb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
               int ldc, int accumulate, float *pack, int max_threads)
{
    int nt = cdnn_get_num_threads();
    long flops = 2L * M * N * K;
    if (flops < GEMM_SERIAL_FLOPS) nt = 1;
    if (nt > max_threads) nt = max_threads;
    size_t per = cdnn_gemm_pack_floats();
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        unsigned fp_state = cdnn_flush_denormals_begin();
        cdnn_gemm_team(transa, transb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, NULL,
                       pack + per * cdnn_team_rank());
        cdnn_flush_denormals_end(fp_state);
    }
}
