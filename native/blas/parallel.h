/*
 * A parallel for over [0, n) for the addon's own kernels (attention, GELU, LayerNorm, softmax,
 * Adam, Add/Sub/Multiply) and its large products (gemm.h), as many ways as the addon has threads
 * (`setThreads`; OpenBLAS itself runs one thread per call, see gemm.h). Why: with two threads (an
 * Optimizer with a node of its own) the products take half their time, and the kernels around them, one-threaded, become ~45% of a
 * learner step. Each chunk writes only its own outputs, so the results are bitwise those of one
 * thread whatever the split.
 */
#ifndef RLAIF_PARALLEL_H
#define RLAIF_PARALLEL_H
#include <stdint.h>

/* Runs fn(ctx, begin, end) over contiguous chunks of [0, n). */
typedef void (*range_fn)(void *ctx, int64_t begin, int64_t end);

/* The addon's thread count (setThreads; at load, OpenBLAS's own, e.g. OPENBLAS_NUM_THREADS). */
int parallel_threads(void);

/* Sets the addon's thread count (n >= 1). */
void parallel_set_threads(int n);

/*
 * fn over [0, n) in up to parallel_threads() chunks of at least `grain` items each
 * (fewer chunks when n is small; one chunk, on the calling thread, at one OpenBLAS thread).
 * The calling thread and threads started for the call (detached) claim chunks from a shared
 * counter; the call returns once every chunk is done, so a thread that starts late (a busy
 * machine) or not at all leaves its chunks to the calling thread instead of delaying it.
 */
void parallel_for(int64_t n, int64_t grain, range_fn fn, void *ctx);

/*
 * fn over [0, n) in exactly `parts` chunks (clamped to [1, n]), claimed by the calling thread and
 * up to parallel_threads() - 1 threads started for the call: more chunks than threads balance a
 * machine where one thread runs late (gemm.c).
 */
void parallel_run(int64_t n, int64_t parts, range_fn fn, void *ctx);

/* How many chunks parallel_for(n, grain, ...) would run now (1: all on the calling thread). */
int64_t parallel_parts(int64_t n, int64_t grain);

#endif
