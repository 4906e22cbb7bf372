/*
 * A branch-free float32 e^x the compiler vectorises (libm's expf is one call per element, and
 * without -ffast-math a float comparison in a loop keeps it scalar: selects here are integer
 * ops), and float reductions over eight lanes. Shared by attention.c's and softmax.c's softmax
 * and gelu.c's sigmoid.
 */
#ifndef RLAIF_VEXP_H
#define RLAIF_VEXP_H
#include <stddef.h>
#include <stdint.h>

/*
 * Compiles a loop function for AVX-512, AVX2 and baseline x86-64, chosen when the addon loads
 * (GCC's target_clones): the wider vectors make the exp loops 2-3x faster where the CPU has
 * them, and a build still runs on any x86-64. ISO C mode (-std=c11) contracts no a*b+c into an
 * FMA, so every clone computes the same floats.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/*
 * e^x for x <= 0 (arguments minus their row maximum, or -|u|): Cephes' expf polynomial on the
 * reduced argument, relative error about 2e-7. Below -87.3 (and for -inf) it returns e^-87.3
 * (~1e-38, not 0): the clamp compares bit patterns, which order negative floats by magnitude.
 */
static inline float vexp_nonpositive(float x) {
  union {
    float f;
    uint32_t u;
  } in = {.f = x}, lo = {.f = -87.3f};
  in.u = in.u > lo.u ? lo.u : in.u; /* as unsigned, x < -87.3 exactly when its bits exceed lo's */
  x = in.f;
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f; /* t rounded to an integer */
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } two_n = {.i = ((int32_t)n + 127) << 23};
  return p * two_n.f;
}

/* σ(u) = 1 / (1 + e^-u) as e^-|u| over 1 + e^-|u| (u < 0) or 1 over it (u >= 0): no overflow. */
static inline float vsigmoid(float u) {
  union {
    float f;
    int32_t i;
  } bits = {.f = u}, num = {.f = 1.0f};
  const int32_t neg = bits.i >> 31; /* all ones when u < 0 */
  bits.i &= INT32_MAX;              /* |u| */
  const float e = vexp_nonpositive(-bits.f);
  union {
    float f;
    int32_t i;
  } ev = {.f = e};
  num.i = (ev.i & neg) | (num.i & ~neg);
  return num.f / (1.0f + e);
}

/*
 * Reductions over eight lanes (the compiler keeps a float sum's order, so one accumulator would
 * be one long dependency chain; eight become two vector registers).
 */
#define LANES 8

static inline float lane_max(const float *a, int64_t n) {
  float m[LANES];
  for (int k = 0; k < LANES; k++) m[k] = a[0];
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES)
    for (int k = 0; k < LANES; k++) m[k] = a[j + k] > m[k] ? a[j + k] : m[k];
  for (; j < n; j++) m[0] = a[j] > m[0] ? a[j] : m[0];
  for (int k = 1; k < LANES; k++) m[0] = m[k] > m[0] ? m[k] : m[0];
  return m[0];
}

/* Σ_j a[j] b[j] (b NULL: Σ_j a[j]). */
static inline float lane_dot(const float *a, const float *b, int64_t n) {
  float acc[LANES] = {0};
  int64_t j = 0;
  if (b == NULL) {
    for (; j + LANES <= n; j += LANES)
      for (int k = 0; k < LANES; k++) acc[k] += a[j + k];
    for (; j < n; j++) acc[0] += a[j];
  } else {
    for (; j + LANES <= n; j += LANES)
      for (int k = 0; k < LANES; k++) acc[k] += a[j + k] * b[j + k];
    for (; j < n; j++) acc[0] += a[j] * b[j];
  }
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

#endif
