/**
 * Differentiable token log-probabilities, entropies and the language-modelling loss.
 *
 * Shared by pre-training (cross-entropy), the policy-gradient learner (log π_θ of the sampled
 * tokens, the entropy bonus) and the reference log-probs, so all read log-probs the same way.
 *
 * Why hand-written gradients: autodiff through `logSoftmax` and a one-hot product costs three
 * `Exp` passes and a dozen more kernels over the [B, T, V] logits, and `Exp` is a slow kernel on
 * wasm (~5x `Softmax`, which is vectorised). Here the forward takes one `Softmax` (with the
 * addon, one fused softmax that also gives the log-normaliser; else the log-normaliser comes from
 * its largest entry), the chosen logit is a gather of B·T values, and
 * each gradient is a closed form over the saved probabilities: ∂ log p(y)/∂z = onehot(y) − p and
 * ∂H/∂z = p (E_p[z] − z). The `*Reference` variants are the plain autodiff formulas the tests
 * compare with. One-hots are built as `oneHot(i, d).cast(...)`: on stock wasm
 * `tf.oneHot(i, d, 1, 0, 'float32')` is wrong.
 */
import * as tf from "@tensorflow/tfjs";
import { FUSED, hasFusedKernel, runFused } from "./fused-kernels.js";

/**
 * p = softmax(z) and lse = log Σ_v exp z_v per row of z [N, V]: one fused kernel where the addon
 * registered it (its sum gives lse), else tfjs's Softmax and lse from p: the largest p_v is
 * exp(max z − lse) ≥ 1/V, so lse = max_v z_v − log max_v p_v needs no `Exp` pass and its log is
 * safe.
 */
function softmaxLse(z: tf.Tensor2D): [tf.Tensor2D, tf.Tensor1D] {
  if (hasFusedKernel(FUSED.softmaxLse)) return runFused<[tf.Tensor2D, tf.Tensor1D]>(FUSED.softmaxLse, { z });
  const p = tf.softmax(z); // [N, V]
  // lse = max_v z_v − log max_v p_v
  return [p, tf.sub(tf.max(z, -1), tf.log(tf.max(p, -1)))]; // [N, V], [N]
}

const logprobOp = tf.customGrad((...args) => {
  const [z, y, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  const [n, v] = z.shape;
  // p = softmax(z), lse = log Σ_v exp z_v
  const [p, lse] = softmaxLse(z); // [N, V], [N]
  // z_y: element n·V + y_n of the flattened logits
  const flat = tf.add(tf.range(0, n * v, v, "int32"), y) as tf.Tensor1D; // [N]
  save([p, y]);
  return {
    // log p(y) = z_y − lse
    value: tf.sub(tf.gather(tf.reshape(z, [n * v]), flat), lse), // [N]
    gradFunc: (dy: tf.Tensor, [sp, sy]: tf.Tensor[]) => {
      const onehot = tf.oneHot(sy as tf.Tensor1D, v).cast("float32"); // [N, V]
      // ∂L/∂z = dy (onehot(y) − p)
      return [tf.mul(tf.sub(onehot, sp as tf.Tensor), tf.reshape(dy, [n, 1])), tf.zerosLike(sy as tf.Tensor)];
    },
  };
});

const entropyOp = tf.customGrad((...args) => {
  const [z, save] = args as [tf.Tensor2D, tf.GradSaveFunc];
  const n = z.shape[0];
  // p = softmax(z), lse = log Σ_v exp z_v
  const [p, lse] = softmaxLse(z); // [N, V], [N]
  // −log p_v = lse − z_v  (≥ 0, so the sum below has no cancellation)
  const nlp = tf.sub(tf.reshape(lse, [n, 1]), z); // [N, V]
  // H = −Σ_v p_v log p_v
  const h = tf.sum(tf.mul(p, nlp), -1); // [N]
  save([p, nlp, h]);
  return {
    value: h,
    gradFunc: (dy: tf.Tensor, [sp, snlp, sh]: tf.Tensor[]) => {
      // ∂H/∂z_v = −p_v (log p_v + H) = p_v (−log p_v − H)
      const d = tf.mul(sp as tf.Tensor, tf.sub(snlp as tf.Tensor, tf.reshape(sh as tf.Tensor, [n, 1]))); // [N, V]
      // ∂L/∂z = dy ∂H/∂z
      return [tf.mul(d, tf.reshape(dy, [n, 1]))]; // [N, V]
    },
  };
});

/** log π(target_t | prefix) for every position: logits [B, T, V], int32 targets [B, T] → [B, T]. */
export function selectLogprobs(logits: tf.Tensor3D, targets: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const [b, t, v] = logits.shape;
    const z = tf.reshape(logits.dtype === "float32" ? logits : logits.cast("float32"), [b * t, v]); // [B*T, V]
    const y = tf.reshape(targets.cast("int32"), [b * t]) as tf.Tensor1D; // [B*T]
    return tf.reshape(logprobOp(z, y), [b, t]) as tf.Tensor2D;
  });
}

/** H_t = −Σ_v π(v | prefix) log π(v | prefix) for every position: logits [B, T, V] → [B, T] (nats). */
export function tokenEntropy(logits: tf.Tensor3D): tf.Tensor2D {
  return tf.tidy(() => {
    const [b, t, v] = logits.shape;
    const z = tf.reshape(logits.dtype === "float32" ? logits : logits.cast("float32"), [b * t, v]); // [B*T, V]
    return tf.reshape(entropyOp(z), [b, t]) as tf.Tensor2D;
  });
}

/** Stock-autodiff `selectLogprobs` (logSoftmax and a one-hot product), the reference for tests. */
export function selectLogprobsReference(logits: tf.Tensor3D, targets: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    // log p = log_softmax(z)
    const logp = tf.logSoftmax(logits); // [B, T, V]
    // log p(y) = Σ_v log p_v · 1[v = y]
    const onehot = tf.oneHot(targets.cast("int32"), logits.shape[2]).cast("float32"); // [B, T, V]
    return tf.sum(tf.mul(logp, onehot), -1) as tf.Tensor2D; // [B, T]
  });
}

/** Stock-autodiff `tokenEntropy`, the reference for tests. */
export function tokenEntropyReference(logits: tf.Tensor3D): tf.Tensor2D {
  return tf.tidy(() => {
    const logp = tf.logSoftmax(logits); // [B, T, V]
    // H = −Σ_v exp(log p_v) log p_v
    return tf.neg(tf.sum(tf.mul(tf.exp(logp), logp), -1)) as tf.Tensor2D; // [B, T]
  });
}

/**
 * Mean negative log-likelihood over the positions where `mask` [B, T] is 1 (padding and
 * uninteresting targets get 0). Returns a scalar in nats per token.
 */
export function maskedCrossEntropy(logits: tf.Tensor3D, targets: tf.Tensor2D, mask: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const m = mask.cast("float32");
    // L = −Σ m log p(y) / Σ m
    return tf.div(
      tf.neg(tf.sum(tf.mul(selectLogprobs(logits, targets), m))),
      tf.maximum(tf.sum(m), 1),
    ) as tf.Scalar;
  });
}
