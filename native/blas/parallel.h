/*
 * A parallel for over [0, n) for the addon's own kernels (attention, GELU, LayerNorm, softmax,
 * Adam, Add/Sub/Multiply), as many ways as
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
 * The calling thread and threads started for the call (detached) claim chunks from a shared
 * counter; the call returns once every chunk is done, so a thread that starts late (a busy
 * machine) or not at all leaves its chunks to the calling thread instead of delaying it.
 */
void parallel_for(int64_t n, int64_t grain, range_fn fn, void *ctx);

/* How many chunks parallel_for(n, grain, ...) would run now (1: all on the calling thread). */
int64_t parallel_parts(int64_t n, int64_t grain);

#endif
