/*
 * parallel_for (parallel.h): chunks claimed from a shared counter by the calling thread and by
 * detached threads started for the call. Why claimed rather than assigned: on a busy machine a
 * new thread can wait a scheduler slice (~1 ms) before it runs, longer than a whole LayerNorm or
 * Add; the calling thread then runs the chunks nobody has claimed, and returns as soon as every
 * chunk is done, without waiting for a late thread to start or exit (the state it shares is on
 * the heap and freed by whoever leaves last). Each chunk runs the same code on the same range
 * whichever thread claims it, so results do not depend on the split or the scheduling.
 */
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdlib.h>

#define MAX_PARTS 64

/* One call's state, shared by the calling thread and the threads it started. */
struct shared {
  range_fn fn;
  void *ctx;
  int64_t n, parts;
  atomic_int_fast64_t next; /* the next unclaimed chunk */
  atomic_int_fast64_t done; /* chunks finished */
  atomic_int refs;          /* threads still holding this state */
};

/* Runs unclaimed chunks until none is left. */
static void claim_chunks(struct shared *s) {
  for (;;) {
    const int64_t i = atomic_fetch_add(&s->next, 1);
    if (i >= s->parts) return;
    s->fn(s->ctx, s->n * i / s->parts, s->n * (i + 1) / s->parts);
    atomic_fetch_add(&s->done, 1);
  }
}

static void release(struct shared *s) {
  if (atomic_fetch_sub(&s->refs, 1) == 1) free(s);
}

static void *helper(void *arg) {
  claim_chunks(arg);
  release(arg);
  return NULL;
}

static atomic_int threads = 1;

int parallel_threads(void) { return atomic_load(&threads); }

void parallel_set_threads(int n) { atomic_store(&threads, n < 1 ? 1 : n); }

int64_t parallel_parts(int64_t n, int64_t grain) {
  int64_t parts = parallel_threads();
  if (grain < 1) grain = 1;
  if (parts > n / grain) parts = n / grain;
  if (parts > MAX_PARTS) parts = MAX_PARTS;
  return parts < 1 ? 1 : parts;
}

void parallel_for(int64_t n, int64_t grain, range_fn fn, void *ctx) {
  parallel_run(n, parallel_parts(n, grain), fn, ctx);
}

void parallel_run(int64_t n, int64_t parts, range_fn fn, void *ctx) {
  if (parts > n) parts = n;
  if (parts > MAX_PARTS) parts = MAX_PARTS;
  int64_t helpers = parallel_threads() - 1;
  if (helpers > parts - 1) helpers = parts - 1;
  if (parts <= 1) {
    if (n > 0) fn(ctx, 0, n);
    return;
  }
  struct shared *s = helpers < 1 ? NULL : malloc(sizeof *s);
  if (s == NULL) {
    for (int64_t i = 0; i < parts; i++) fn(ctx, n * i / parts, n * (i + 1) / parts);
    return;
  }
  s->fn = fn;
  s->ctx = ctx;
  s->n = n;
  s->parts = parts;
  atomic_init(&s->next, 0);
  atomic_init(&s->done, 0);
  atomic_init(&s->refs, 1);
  pthread_attr_t attr;
  const bool have_attr = pthread_attr_init(&attr) == 0;
  const bool detached = have_attr && pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0;
  for (int64_t i = 0; detached && i < helpers; i++) {
    pthread_t t;
    atomic_fetch_add(&s->refs, 1);
    if (pthread_create(&t, &attr, helper, s) != 0) atomic_fetch_sub(&s->refs, 1);
  }
  if (have_attr) pthread_attr_destroy(&attr);
  claim_chunks(s);
  /* chunks a started thread claimed and still runs: ctx must outlive them */
  while (atomic_load(&s->done) < parts) sched_yield();
  release(s);
}
