/* threading.c - thread settings and the team helpers every kernel uses.
 *
 * The only mutable globals of the core live here: the thread count chosen
 * by cdnn.set_num_threads (0 = follow OpenMP's default, which honours
 * OMP_NUM_THREADS and threadpoolctl's limits).
 */
#include "cdnn.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__SSE2__)
#include <xmmintrin.h>
#define CDNN_HAVE_MXCSR 1
#endif

static int requested_threads = 0;
/* Whether a region may have run on more than one thread (every region asks
 * cdnn_get_num_threads first), so that OpenMP's thread pool may exist. */
static int pool_may_exist = 0;
/* Set in a child forked after that: GNU OpenMP's thread pool does not
 * survive fork, and the child's first region with more than one thread
 * waits for the parent's threads forever. A region of one thread never
 * touches the pool. */
static int forked_child = 0;

int cdnn_threads_setting(void)
{
#ifdef _OPENMP
    if (forked_child) return 1;
    int n = requested_threads > 0 ? requested_threads : omp_get_max_threads();
    /* every region sizes per-thread buffers by this count: OMP_NUM_THREADS=100000 must not allocate them */
    return n > CDNN_MAX_THREADS ? CDNN_MAX_THREADS : n;
#else
    return 1;
#endif
}

int cdnn_get_num_threads(void)
{
    int n = cdnn_threads_setting();
    if (n > 1) pool_may_exist = 1;
    return n;
}

int cdnn_serial_after_fork(void)
{
    if (pool_may_exist) forked_child = 1;
    return forked_child;
}

void cdnn_set_num_threads(int n)
{
    requested_threads = n > 0 ? n : 0;
}

int cdnn_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int cdnn_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

int cdnn_team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

int cdnn_team_rank(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

void cdnn_team_range(long n, long *lo, long *hi)
{
    long t = cdnn_team_rank(), nt = cdnn_team_size();
    long base = n / nt, extra = n % nt;
    *lo = t * base + (t < extra ? t : extra);
    *hi = *lo + base + (t < extra ? 1 : 0);
}

void cdnn_team_columns(int units, int nr, int *j0, int *j1)
{
    long lo, hi;
    cdnn_team_range(units / nr, &lo, &hi);
    *j0 = (int)(lo * nr);
    *j1 = cdnn_team_rank() == cdnn_team_size() - 1 ? units : (int)(hi * nr);
}

double cdnn_wtime(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return 0.0;
#endif
}

void cdnn_team_barrier(void)
{
#ifdef _OPENMP
    if (omp_get_num_threads() > 1) { /* a team of one has nobody to wait for */
#pragma omp barrier
    }
#endif
}

unsigned cdnn_flush_denormals_begin(void)
{
#ifdef CDNN_HAVE_MXCSR
    /* Flush-to-zero and denormals-are-zero, as TensorFlow runs Keras: Adam's
     * second moments and far-off logits reach denormal floats, which cost
     * ~100 cycles each on x86. The setting is per thread, restored after. */
    unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8040);
    return old;
#else
    return 0;
#endif
}

void cdnn_flush_denormals_end(unsigned saved)
{
#ifdef CDNN_HAVE_MXCSR
    _mm_setcsr(saved);
#else
    (void)saved;
#endif
}

/* 0: small predicts choose 1 or 2 threads by timing; 1: always 1; 2: always 2 (tests). */
static int row_split_mode = 0;

void cdnn_set_row_split(int mode)
{
    row_split_mode = mode;
}

int cdnn_row_split_mode(void)
{
    return row_split_mode;
}

#define CHOOSE_WINDOW    5
#define CHOOSE_FIRST_GAP 64
#define CHOOSE_MAX_GAP   4096

/* The lower median of option o's recorded calls, or 0 if none (one call slowed by the load, or sped up by a
 * moment of quiet on a busy machine, moves no choice). */
static double choose_time(const cdnn_chooser *c, int o)
{
    const int n = c->n[o] < CHOOSE_WINDOW ? c->n[o] : CHOOSE_WINDOW;
    double v[CHOOSE_WINDOW];
    for (int i = 0; i < n; i++) { /* insertion sort of at most CHOOSE_WINDOW values */
        int j = i;
        for (; j > 0 && v[j - 1] > c->sec[o][i]; j--) v[j] = v[j - 1];
        v[j] = c->sec[o][i];
    }
    return n ? v[(n - 1) / 2] : 0.0;
}

/* The option in use: 2 threads unless 1 has been measured faster. */
static int choose_in_use(const cdnn_chooser *c)
{
    const double one = choose_time(c, 0), two = choose_time(c, 1);
    return one > 0.0 && two > 0.0 && one < two ? 0 : 1;
}

int cdnn_choose(const cdnn_chooser *c)
{
    if (row_split_mode) return row_split_mode == 2;
    if (c->n[1] < 2) return 1;
    if (c->n[0] < 2) return 0;
    const int use = choose_in_use(c);
    return c->since >= c->gap ? !use : use;
}

void cdnn_chooser_record(cdnn_chooser *c, int o, double sec)
{
    if (row_split_mode) return;
    const int before = choose_in_use(c), measured = c->n[0] >= 2 && c->n[1] >= 2;
    c->sec[o][c->n[o] % CHOOSE_WINDOW] = sec;
    c->n[o] = c->n[o] < 1000000 ? c->n[o] + 1 : CHOOSE_WINDOW + c->n[o] % CHOOSE_WINDOW;
    if (c->gap == 0) c->gap = CHOOSE_FIRST_GAP;
    if (measured && o != before) { /* a probe: the interval doubles while the choice holds */
        const int after = choose_in_use(c);
        c->since = 0;
        if (after != before)
            c->gap = CHOOSE_FIRST_GAP;
        else if (sec < choose_time(c, before)) /* faster than the option in use: probe again at once */
            c->since = c->gap;
        else
            c->gap = c->gap < CHOOSE_MAX_GAP / 2 ? 2 * c->gap : CHOOSE_MAX_GAP;
    } else
        c->since++;
}
