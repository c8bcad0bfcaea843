/* perf_probe.c - where a BIG-b128 training step's time goes, part by part, and the machine's limits.
 *
 * Not part of the package: a measurement tool for docs/performance.md. Build and run from the
 * repository's root (tools/perf_probe.sh does both):
 *
 *   gcc -O3 -std=gnu11 -fno-math-errno -fno-trapping-math -fno-strict-aliasing -fopenmp -Isrc_c \
 *       -o /tmp/perf_probe tools/perf_probe.c $(ls src_c/*.c | grep -v gemm.c) -lm
 *   /tmp/perf_probe [avx2|avx512|generic]
 *
 * It includes src_c/gemm.c to reach its static kernels. Single-thread parts are timed by the thread's
 * CPU time, the minimum over repetitions (other work on a shared machine only adds to it); the barrier
 * and bandwidth probes need wall time and an idle machine.
 */
#include "../src_c/gemm.c"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double wall_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float *filled(size_t n)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64 + 64);
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    return p;
}

static double total_s;

/* Prints and returns the best per-call time of `stmt` (CPU time of this thread). */
#define PART(label, flops, stmt)                                                                                       \
    do {                                                                                                               \
        double best = 1e9;                                                                                             \
        for (int rep = 0; rep < 25; rep++) {                                                                           \
            double t = cpu_now();                                                                                      \
            for (int it = 0; it < 10; it++) {                                                                          \
                stmt;                                                                                                  \
            }                                                                                                          \
            t = (cpu_now() - t) / 10;                                                                                  \
            if (t < best) best = t;                                                                                    \
        }                                                                                                              \
        total_s += best;                                                                                               \
        if ((flops) > 0)                                                                                               \
            printf("  %-44s %8.1f us %7.1f GFLOP/s\n", label, best * 1e6, (flops) / best / 1e9);                       \
        else                                                                                                           \
            printf("  %-44s %8.1f us\n", label, best * 1e6);                                                           \
    } while (0)

#ifdef CDNN_X86
/* 12 independent FMA chains (the FMA units' throughput: 2 x 8 lanes x 2 flops per cycle on AVX2 cores). */
__attribute__((target("avx2,fma"), noinline)) static float fma_loop(long n, float s)
{
    /* distinct starting values: equal chains are one chain to the compiler (one FMA per iteration, at its latency) */
    __m256 a0 = _mm256_set1_ps(s), a1 = _mm256_set1_ps(s + 1), a2 = _mm256_set1_ps(s + 2), a3 = _mm256_set1_ps(s + 3),
           a4 = _mm256_set1_ps(s + 4), a5 = _mm256_set1_ps(s + 5), a6 = _mm256_set1_ps(s + 6), a7 = _mm256_set1_ps(s + 7),
           a8 = _mm256_set1_ps(s + 8), a9 = _mm256_set1_ps(s + 9), a10 = _mm256_set1_ps(s + 10),
           a11 = _mm256_set1_ps(s + 11);
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < n; i++) {
        a0 = _mm256_fmadd_ps(a0, x, y);
        a1 = _mm256_fmadd_ps(a1, x, y);
        a2 = _mm256_fmadd_ps(a2, x, y);
        a3 = _mm256_fmadd_ps(a3, x, y);
        a4 = _mm256_fmadd_ps(a4, x, y);
        a5 = _mm256_fmadd_ps(a5, x, y);
        a6 = _mm256_fmadd_ps(a6, x, y);
        a7 = _mm256_fmadd_ps(a7, x, y);
        a8 = _mm256_fmadd_ps(a8, x, y);
        a9 = _mm256_fmadd_ps(a9, x, y);
        a10 = _mm256_fmadd_ps(a10, x, y);
        a11 = _mm256_fmadd_ps(a11, x, y);
    }
    __m256 t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    t = _mm256_add_ps(t, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    return _mm256_cvtss_f32(t);
}
#endif

int main(int argc, char **argv)
{
    if (cdnn_simd_select(argc > 1 ? argv[1] : "auto") != 0) {
        fprintf(stderr, "path %s not supported here\n", argv[1]);
        return 2;
    }
    const cdnn_simd *s = cdnn_simd_current();
    printf("path %s: micro-kernel %dx%d, kc %d\n", s->name, s->mr, s->nr, s->kc);

#ifdef CDNN_X86
    if (cdnn_simd_supported("avx2")) {
        double best = 1e9;
        float sink = 0;
        for (int rep = 0; rep < 7; rep++) {
            double t = cpu_now();
            sink += fma_loop(5000000, (float)rep);
            t = cpu_now() - t;
            if (t < best) best = t;
        }
        const double f = 5000000.0 * 12 * 16 / best;
        printf("FMA peak, one core (12 chains of 8-float FMAs): %.1f GFLOP/s = 32 flop/cycle x %.2f GHz [%g]\n",
               f / 1e9, f / 32e9, (double)sink);
    }
#endif
    /* the micro-kernel alone, its operands in L1 */
    {
        const int mr = s->mr, nr = s->nr, kc = s->kc;
        float *a = filled((size_t)mr * kc), *b = filled((size_t)kc * nr), *c = filled((size_t)mr * nr);
        double best = 1e9;
        for (int rep = 0; rep < 200; rep++) {
            double t = cpu_now();
            for (int i = 0; i < 200; i++) s->kernel(kc, a, 1, mr, b, nr, c, nr, 1);
            t = cpu_now() - t;
            if (t < best) best = t;
        }
        printf("micro-kernel alone (operands in L1, kc %d): %.1f GFLOP/s\n", kc, 2.0 * mr * nr * kc * 200 / best / 1e9);
        free(a), free(b), free(c);
    }

    /* One thread's share of a 2-thread BIG-b128 step (784-512-256-10, batch 128): both big layers are
     * split in depth (784 = 392 + 392 and 512 = 256 + 256 rows of W), each thread computes one part
     * of their products for every row; the 10-unit layer is split by rows (64 each). */
    const int B = 128;
    float *pack = aligned_alloc(64, cdnn_gemm_pack_floats() * sizeof(float) + 64);
    float *X = filled((size_t)B * 784), *W0 = filled(784 * 512), *W1 = filled(512 * 256), *W2 = filled(256 * 10);
    float *A0 = filled((size_t)B * 512), *A1 = filled((size_t)B * 256), *A2 = filled((size_t)B * 10);
    float *dZ0 = filled((size_t)B * 512), *dZ1 = filled((size_t)B * 256), *dZ2 = filled((size_t)B * 10);
    float *dW0 = filled(392 * 512), *dW1 = filled(256 * 256), *dW2 = filled(256 * 10);
    float *m0 = filled(392 * 512), *v0 = filled(392 * 512), *m1 = filled(256 * 256), *v1 = filled(256 * 256);
    for (int i = 0; i < 392 * 512; i++) v0[i] = fabsf(v0[i]);
    for (int i = 0; i < 256 * 256; i++) v1[i] = fabsf(v1[i]);
    float *pw0 = filled(cdnn_packed_floats(392, 512)), *pw1 = filled(cdnn_packed_floats(256, 256)),
          *pwt1 = filled(cdnn_packed_floats(256, 256));
    cdnn_pack_rows(W0, 392, 512, 0, 392, 0, 512, pw0, NULL);
    cdnn_pack_rows(W1, 256, 256, 0, 256, 0, 256, pw1, pwt1);
    cdnn_opt_params adam = {0};
    adam.kind = CDNN_ADAM;
    adam.lr = 1e-3f;
    adam.beta_1 = 0.9f;
    adam.beta_2 = 0.999f;
    adam.epsilon = 1e-7f;
    const cdnn_opt_step st = cdnn_opt_prepare(&adam, 1);
    cdnn_opt_params none = {0};
    none.kind = CDNN_OPT_NONE;

    printf("one thread's share of a 2-thread BIG-b128 step (CPU time, best of 25):\n");
    total_s = 0;
    PART("forward L0: 128x512, K=392 (packed W)", 2.0 * 128 * 512 * 392,
         cdnn_gemm_rows(0, 0, 0, 128, 512, 392, X, 784, W0, 512, pw0, A0, 512, 0, NULL, pack));
    PART("forward L1: 128x256, K=256 (packed W)", 2.0 * 128 * 256 * 256,
         cdnn_gemm_rows(0, 0, 0, 128, 256, 256, A0, 512, W1, 256, pw1, A1, 256, 0, NULL, pack));
    PART("forward L2: 64x10, K=256", 2.0 * 64 * 10 * 256,
         cdnn_gemm_rows(0, 0, 0, 64, 10, 256, A1, 256, W2, 10, NULL, A2, 10, 0, NULL, pack));
    PART("dX L2: 64x256, K=10 (W^T)", 2.0 * 64 * 10 * 256,
         cdnn_gemm_rows(0, 1, 0, 64, 256, 10, dZ2, 10, W2, 10, NULL, dZ1, 256, 0, NULL, pack));
    PART("dX L1: 128x256, K=256 (packed W^T)", 2.0 * 128 * 256 * 256,
         cdnn_gemm_rows(0, 1, 0, 128, 256, 256, dZ1, 256, W1, 256, pwt1, dZ0, 512, 0, NULL, pack));
    cdnn_epilogue e0 = {0};
    e0.kind = CDNN_EPI_OPTIMIZE;
    e0.opt = &none;
    e0.aux = W0;
    e0.ldaux = 512;
    cdnn_epilogue e1 = e0;
    e1.aux = W1;
    e1.ldaux = 256;
    PART("dW L0: 392x512, K=128 (X^T dZ), no update", 2.0 * 392 * 512 * 128,
         cdnn_gemm_optimize_rows(1, 0, 0, 392, 512, 128, X, 784, dZ0, 512, dW0, 512, &e0, pack, NULL));
    PART("dW L1: 256x256, K=128, no update", 2.0 * 256 * 256 * 128,
         cdnn_gemm_optimize_rows(1, 0, 0, 256, 256, 128, A0, 512, dZ1, 256, dW1, 256, &e1, pack, NULL));
    PART("dW L2: 128x10, K=128", 2.0 * 128 * 10 * 128,
         cdnn_gemm_rows(1, 0, 0, 128, 10, 128, A1, 256, dZ2, 10, NULL, dW2, 10, 0, NULL, pack));
    const double gemm_s = total_s;
    printf("  products: %.1f us for %.1f MFLOP = %.1f GFLOP/s\n", gemm_s * 1e6, 154.6, 154.6e6 / gemm_s / 1e9);
    total_s = 0;
    PART("Adam alone, 392x512 + 256x256, contiguous", 0,
         (cdnn_opt_update(&adam, st, W0, m0, v0, dW0, 392 * 512),
          cdnn_opt_update(&adam, st, W1, m1, v1, dW1, 256 * 256)));
    cdnn_epilogue a0 = e0, a1 = e1;
    a0.opt = a1.opt = &adam;
    a0.step = a1.step = st;
    a0.slot1 = m0, a0.slot2 = v0, a1.slot1 = m1, a1.slot2 = v1;
    a0.packed_w = pw0, a0.packed_k = 392, a0.w_in_packed = 1;
    a1.packed_w = pw1, a1.packed_wt = pwt1, a1.packed_k = 256, a1.w_in_packed = 1;
    PART("dW L0 + fused Adam on packed W (as trained)", 2.0 * 392 * 512 * 128,
         cdnn_gemm_optimize_rows(1, 0, 0, 392, 512, 128, X, 784, dZ0, 512, dW0, 512, &a0, pack, NULL));
    PART("dW L1 + fused Adam, W and W^T refreshed", 2.0 * 256 * 256 * 128,
         cdnn_gemm_optimize_rows(1, 0, 0, 256, 256, 128, A0, 512, dZ1, 256, dW1, 256, &a1, pack, NULL));

    /* Barriers and bandwidth: wall time, two threads; meaningful only on an idle machine. */
    for (int round = 0; round < 3; round++) {
        const int n = 20000;
        double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(2)
        {
#pragma omp barrier
#pragma omp master
            t0 = wall_now();
            for (int i = 0; i < n; i++) {
#pragma omp barrier
            }
#pragma omp master
            t1 = wall_now();
        }
        printf("OpenMP barrier, 2 threads: %.2f us\n", (t1 - t0) / n * 1e6);
    }
    const size_t sizes[] = {(size_t)64 << 20, (size_t)512 << 10};
    for (int si = 0; si < 2; si++)
        for (int nt = 1; nt <= 2; nt++) {
            const size_t bytes = sizes[si], n = bytes / sizeof(float);
            float *src[2], *dst[2];
            for (int t = 0; t < nt; t++) src[t] = filled(n), dst[t] = filled(n);
            double best = 1e9;
            for (int rep = 0; rep < (bytes > ((size_t)1 << 24) ? 5 : 200); rep++) {
                double t = wall_now();
#pragma omp parallel num_threads(nt)
                {
                    const int me = omp_get_thread_num();
                    for (size_t i = 0; i < n; i++) dst[me][i] = src[me][i] * 1.0001f;
                }
                t = wall_now() - t;
                if (t < best) best = t;
            }
            printf("scaled copy, %zu KB per thread, %d thread(s): %.1f GB/s read + written\n", bytes >> 10, nt,
                   2.0 * bytes * nt / best / 1e9);
            for (int t = 0; t < nt; t++) free(src[t]), free(dst[t]);
        }
    return 0;
}
