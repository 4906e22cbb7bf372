/*
 * A parallel for over [0, n) for the addon's own kernels (attention, GELU), as many ways as
 * OpenBLAS has threads. Why: with two OpenBLAS threads (an Optimizer with a node of its own) the
 * products take half their time, and the kernels around them, one-threaded, become ~45% of a
 * learner step. Each chunk writes only its own outputs, so the results are bitwise those of one
 * thread whatever the split.
 */
#ifndef RLAIF_PARALLEL_H
#define RLAIF_PARALLEL_H
#include <stdint.h>

/* Runs fn(ctx, begin, end) over contiguous chunks of [0, n). */
typedef void (*range_fn)(void *ctx, int64_t begin, int64_t end);

/*
 * fn over [0, n) in up to openblas_get_num_threads() chunks of at least `grain` items each
 * (fewer chunks when n is small; one chunk, on the calling thread, at one OpenBLAS thread).
 * Chunk 0 runs on the calling thread, the others on threads started for the call and joined
 * before it returns; a thread that cannot be started runs its chunk on the calling thread.
 */
void parallel_for(int64_t n, int64_t grain, range_fn fn, void *ctx);

/* How many chunks parallel_for(n, grain, ...) would run now (1: all on the calling thread). */
int64_t parallel_parts(int64_t n, int64_t grain);

#endif
