/*
 * The gate functions of the addon's per-row loops (recurrent.c's GRU and LSTM cells,
 * decoder-attention.c's tanh), inline and branch-free so that GCC vectorises the loops calling them.
 */
#ifndef RLAIF_GATE_MATH_H
#define RLAIF_GATE_MATH_H
#include <stdint.h>
#include <string.h>

/*
 * e^x for x in [-88, 88] (clamped), Cephes' single-precision polynomial (~1 ulp): written
 * without calls or branches so that GCC vectorises the gate loops (glibc's expf and tanhf are
 * scalar calls and cost more than a step's sgemm). The rounding uses the 1.5 * 2^23 trick and
 * 2^n is built from its bits, all exact float operations, so a value never depends on its
 * neighbours or on the vector width.
 */
static inline float fast_exp(float x) {
  x = x > 88.0f ? 88.0f : x < -88.0f ? -88.0f : x;
  const float shifted = x * 1.44269504088896341f + 12582912.0f; /* round(x log2 e) + 1.5 * 2^23 */
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f; /* x - n ln 2, in two parts */
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = (p * r) * r + r + 1.0f;
  const int32_t bits = ((int32_t)n + 127) << 23; /* 2^n, n in [-127, 127] */
  float scale;
  memcpy(&scale, &bits, sizeof scale); /* (a union would keep GCC from vectorising) */
  return e * scale;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

/* tanh x = 2 sigmoid(2x) - 1, as the tfjs path computes it (recurrent-cells.ts's sigmoidTanh). */
static inline float tanh_s(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; }

#endif
