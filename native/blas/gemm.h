/*
 * The addon's large products: one row-major sgemm split into independent OpenBLAS calls on the
 * addon's threads (parallel.h), while OpenBLAS itself runs one thread per call.
 *
 * Why: OpenBLAS's own threading shares packed panels between its threads and waits for each at
 * every block, so on a machine whose second core is busy (other processes, or the Policy's thread
 * next to the learner's) a product waits for the thread that runs late: in one learner step at
 * load ~9 the products took ~2.4x their time on a free machine. Independent calls on chunks of
 * rows (or, for a short wide C, of columns), claimed from a counter, let the calling thread take
 * over the chunks of a late thread; on a free machine they run as fast as OpenBLAS's own threads
 * (docs/platform-notes.md has the figures). Each element of C is computed by the same kernel over
 * the same K whatever the split (chunks stay above OpenBLAS's small-matrix and direct-kernel
 * sizes), so the result is bitwise that of one whole call on one thread
 * (test/model-blas-gemm.test.ts).
 */
#ifndef RLAIF_GEMM_H
#define RLAIF_GEMM_H
#include <stdbool.h>

/*
 * C = alpha op(A) op(B) + beta C, row-major, op(A) m x k, op(B) k x n, with leading dimensions
 * (cblas_sgemm's arguments). Products of at least GEMM_SPLIT_MIN multiply-adds are split over
 * parallel_threads(); smaller ones are one call.
 */
void gemm(bool transA, bool transB, int m, int n, int k, float alpha, const float *a, int lda,
          const float *b, int ldb, float beta, float *c, int ldc);

/*
 * Sets OpenBLAS to one thread per call and the addon's thread count to OpenBLAS's count at load
 * (OPENBLAS_NUM_THREADS or the cores), once per process (every worker thread loads the addon).
 */
void gemm_init(void);

#endif
