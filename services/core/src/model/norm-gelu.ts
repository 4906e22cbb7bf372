/**
 * LayerNorm and tanh-GELU with hand-written gradients (the Transformer's elementwise layers), in
 * three flavours: training (custom gradient), inference (forward only) and the stock-autodiff
 * references the tests compare them with.
 *
 * Why: on wasm each tfjs elementwise op is a pass over memory plus a dispatch; LayerNorm through
 * autodiff of `moments` and tanh-GELU through slow `tanh`/`pow` kernels were a third of a learner
 * step. Here LayerNorm's backward is the closed form, GELU goes through a sigmoid
 * (½(1 + tanh(u/2)) = σ(u), and sigmoid is a fast kernel), and where the addon's fused kernels
 * are registered (fused-kernels.ts, the OpenBLAS path) each of LayerNorm forward, LayerNorm
 * backward, GELU's forward and GELU's backward is one kernel; elsewhere the same equations run
 * as tfjs ops.
 *
 * All functions expect to be called inside `tf.tidy` (the models' passes are).
 */
import * as tf from "@tensorflow/tfjs";
import { FUSED, hasFusedKernel, runFused } from "./fused-kernels.js";

/** LayerNorm epsilon (GPT-2's value). */
export const LN_EPS = 1e-5;

/** √(2/π), the constant of the tanh approximation of GELU. */
const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/** LayerNorm's forward: y = γ x̂ + β, x̂ = (x − μ) σ⁻¹, and σ⁻¹ [N, 1] per row. */
function layerNormForward(
  x: tf.Tensor2D,
  g: tf.Tensor1D,
  b: tf.Tensor1D,
): [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D] {
  if (hasFusedKernel(FUSED.layerNorm)) {
    return runFused(FUSED.layerNorm, { x, gamma: g, beta: b }, { epsilon: LN_EPS });
  }
  // μ = mean_c x
  const xc = tf.sub(x, tf.mean(x, -1, true)); // [N, C]
  // σ⁻¹ = 1 / √(mean_c (x − μ)² + ε)
  const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), LN_EPS)) as tf.Tensor2D; // [N, 1]
  // x̂ = (x − μ) σ⁻¹
  const xhat = tf.mul(xc, rstd) as tf.Tensor2D; // [N, C]
  // y = γ x̂ + β
  return [tf.add(tf.mul(xhat, g), b) as tf.Tensor2D, xhat, rstd]; // [N, C], [N, C], [N, 1]
}

const layerNormOp = tf.customGrad((...args) => {
  const [x, g, b, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D, tf.GradSaveFunc];
  const [y, xhat, rstd] = layerNormForward(x, g, b);
  save([xhat, rstd, g]);
  return {
    value: y, // [N, C]
    gradFunc: (dy: tf.Tensor, [sxhat, srstd, sg]: tf.Tensor[]) => {
      const [xh, rs, gain] = [sxhat as tf.Tensor2D, srstd as tf.Tensor2D, sg as tf.Tensor1D];
      if (hasFusedKernel(FUSED.layerNormGrad)) {
        return runFused<tf.Tensor[]>(FUSED.layerNormGrad, { dy, xhat: xh, rstd: rs, gamma: gain });
      }
      // gx = dy γ
      const gx = tf.mul(dy, gain); // [N, C]
      // ∂L/∂x = σ⁻¹ (gx − mean_c gx − x̂ mean_c(gx x̂))
      const dx = tf.mul(
        rs,
        tf.sub(tf.sub(gx, tf.mean(gx, -1, true)), tf.mul(xh, tf.mean(tf.mul(gx, xh), -1, true))),
      ); // [N, C]
      // ∂L/∂γ = Σ_n dy x̂,  ∂L/∂β = Σ_n dy
      return [dx, tf.sum(tf.mul(dy, xh), 0), tf.sum(dy, 0)]; // [N, C], [C], [C]
    },
  };
});

/** LayerNorm over the last axis of rows [N, C] with gain γ and bias β. */
export function layerNorm(x: tf.Tensor2D, g: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D {
  return layerNormOp(x, g, b) as tf.Tensor2D;
}

/** `layerNorm` without gradient bookkeeping (sampling, scoring). */
export function layerNormInference(x: tf.Tensor2D, g: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D {
  return layerNormForward(x, g, b)[0];
}

/** Stock-autodiff LayerNorm (via `tf.moments`), the reference for gradient tests. */
export function layerNormReference(x: tf.Tensor2D, g: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, LN_EPS))), g), b);
}

/** u = 2c (x + a x³), so that gelu(x) = ½ x (1 + tanh(u/2)) = x σ(u). */
function geluArg<T extends tf.Tensor>(x: T): T {
  // u = x (2c + 2ca x²)
  return tf.mul(x, tf.add(tf.mul(tf.square(x), 2 * GELU_C * GELU_A), 2 * GELU_C)); // [N, F]
}

const geluOp = tf.customGrad((...args) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  if (hasFusedKernel(FUSED.gelu)) {
    // one pass each way; the backward recomputes σ(u) from x (fewer memory streams)
    save([x]);
    return {
      value: runFused<tf.Tensor>(FUSED.gelu, { x }), // [N, F]
      gradFunc: (dy: tf.Tensor, [sx]: tf.Tensor[]) => [
        runFused<tf.Tensor>(FUSED.geluGrad, { dy, x: sx as tf.Tensor }),
      ],
    };
  }
  const u = geluArg(x); // [N, F]
  // s = σ(u)
  const s = tf.sigmoid(u); // [N, F]
  save([x, u, s]);
  return {
    // gelu(x) = x s
    value: tf.mul(x, s), // [N, F]
    gradFunc: (dy: tf.Tensor, [sx, su, ss]: tf.Tensor[]) => {
      const [xv, uv, sv] = [sx as tf.Tensor, su as tf.Tensor, ss as tf.Tensor];
      // x du/dx = x (2c + 6ca x²) = 3u − 4c x
      const w = tf.sub(tf.mul(uv, 3), tf.mul(xv, 4 * GELU_C)); // [N, F]
      // d gelu/dx = s + x s (1 − s) du/dx = s (1 + (1 − s) x du/dx)
      const d = tf.mul(sv, tf.add(tf.mul(tf.sub(1, sv), w), 1)); // [N, F]
      return [tf.mul(dy, d)]; // [N, F]
    },
  };
});

/** GELU, tanh approximation (GPT-2's), computed through a sigmoid. */
export function gelu<T extends tf.Tensor>(x: T): T {
  return geluOp(x) as T;
}

/** `gelu` without gradient bookkeeping (sampling, scoring). */
export function geluInference<T extends tf.Tensor>(x: T): T {
  if (hasFusedKernel(FUSED.gelu)) return runFused<T>(FUSED.gelu, { x });
  return tf.mul(x, tf.sigmoid(geluArg(x))) as T;
}

/** Stock-autodiff tanh-GELU, the reference for gradient tests. */
export function geluReference<T extends tf.Tensor>(x: T): T {
  // gelu(x) = ½ x (1 + tanh(c (x + a x³)))
  return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), GELU_A)), GELU_C))));
}
