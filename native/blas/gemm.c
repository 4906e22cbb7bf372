/*
 * gemm (gemm.h): a product split into chunks of whole 16-row (or 16-column) tiles, each one
 * cblas_sgemm on OpenBLAS's single-threaded path, claimed by the addon's threads.
 */
#include "gemm.h"

#include <cblas.h>
#include <pthread.h>
#include <stdint.h>

#include "parallel.h"

/*
 * Chunk sizes, in multiply-adds. A chunk stays above 8M: OpenBLAS 0.3.21's SkylakeX small-matrix
 * kernels (m·n·k ≤ 1M) and its direct sgemm (NN, m·n·k < 28·512², only on one thread) compute an
 * element with other code than the blocked kernel a larger call uses, so a smaller chunk could
 * change its bits. A product is split only when two chunks fit.
 */
#define CHUNK_MIN (8 << 20)
#define GEMM_SPLIT_MIN (2 * CHUNK_MIN)
/* Rows (columns) per tile: SkylakeX's sgemm kernel tile, so no chunk but the last has a ragged edge. */
#define TILE 16
/* Chunks per thread: more than one lets the calling thread take over a late thread's share. */
#define CHUNKS_PER_THREAD 2

struct job {
  bool ta, tb, rows; /* rows: split C's rows, else its columns */
  int m, n, k, lda, ldb, ldc;
  float alpha, beta;
  const float *a, *b;
  float *c;
};

/* The product restricted to tiles [begin, end) of C's rows or columns. */
static void chunk(void *ctx, int64_t begin, int64_t end) {
  const struct job *j = ctx;
  const int total = j->rows ? j->m : j->n;
  const int lo = (int)begin * TILE;
  const int hi = end * TILE < total ? (int)end * TILE : total;
  const enum CBLAS_TRANSPOSE ta = j->ta ? CblasTrans : CblasNoTrans;
  const enum CBLAS_TRANSPOSE tb = j->tb ? CblasTrans : CblasNoTrans;
  if (j->rows) {
    /* rows lo..hi of op(A): A's rows, or A's columns when transposed */
    const float *a = j->ta ? j->a + lo : j->a + (int64_t)lo * j->lda;
    cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, j->n, j->k, j->alpha, a, j->lda, j->b, j->ldb, j->beta,
                j->c + (int64_t)lo * j->ldc, j->ldc);
  } else {
    /* columns lo..hi of op(B): B's columns, or B's rows when transposed */
    const float *b = j->tb ? j->b + (int64_t)lo * j->ldb : j->b + lo;
    cblas_sgemm(CblasRowMajor, ta, tb, j->m, hi - lo, j->k, j->alpha, j->a, j->lda, b, j->ldb, j->beta,
                j->c + lo, j->ldc);
  }
}

void gemm(bool transA, bool transB, int m, int n, int k, float alpha, const float *a, int lda,
          const float *b, int ldb, float beta, float *c, int ldc) {
  const int64_t work = (int64_t)m * n * k;
  const int threads = parallel_threads();
  if (threads > 1 && work >= GEMM_SPLIT_MIN) {
    const bool rows = m >= n;
    const int64_t tiles = ((rows ? m : n) + TILE - 1) / TILE;
    const int64_t per_tile = (int64_t)TILE * (rows ? n : m) * k;
    int64_t parts = (int64_t)threads * CHUNKS_PER_THREAD;
    if (parts > tiles) parts = tiles;
    /* the smallest chunk (one tile fewer than the average, the last one ragged) keeps CHUNK_MIN */
    while (parts >= 2 && (tiles / parts - 1) * per_tile < CHUNK_MIN) parts--;
    if (parts >= 2) {
      struct job job = {transA, transB, rows, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
      parallel_run(tiles, parts, chunk, &job);
      return;
    }
  }
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_once(void) {
  parallel_set_threads(openblas_get_num_threads());
  openblas_set_num_threads(1);
}

void gemm_init(void) { pthread_once(&once, init_once); }
