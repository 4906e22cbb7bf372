/* parallel_for (parallel.h): one pthread per extra chunk, started and joined per call. */
#include "parallel.h"

#include <cblas.h>
#include <pthread.h>

#define MAX_PARTS 64

struct chunk {
  range_fn fn;
  void *ctx;
  int64_t begin, end;
};

static void *run_chunk(void *arg) {
  const struct chunk *c = arg;
  c->fn(c->ctx, c->begin, c->end);
  return NULL;
}

int64_t parallel_parts(int64_t n, int64_t grain) {
  int64_t parts = openblas_get_num_threads();
  if (grain < 1) grain = 1;
  if (parts > n / grain) parts = n / grain;
  if (parts > MAX_PARTS) parts = MAX_PARTS;
  return parts < 1 ? 1 : parts;
}

void parallel_for(int64_t n, int64_t grain, range_fn fn, void *ctx) {
  const int64_t parts = parallel_parts(n, grain);
  if (parts <= 1) {
    if (n > 0) fn(ctx, 0, n);
    return;
  }
  struct chunk chunks[MAX_PARTS];
  pthread_t threads[MAX_PARTS];
  int started[MAX_PARTS] = {0};
  for (int64_t i = 0; i < parts; i++)
    chunks[i] = (struct chunk){fn, ctx, n * i / parts, n * (i + 1) / parts};
  for (int64_t i = 1; i < parts; i++)
    started[i] = pthread_create(&threads[i], NULL, run_chunk, &chunks[i]) == 0;
  run_chunk(&chunks[0]);
  for (int64_t i = 1; i < parts; i++) {
    if (started[i])
      pthread_join(threads[i], NULL);
    else
      run_chunk(&chunks[i]);
  }
}
