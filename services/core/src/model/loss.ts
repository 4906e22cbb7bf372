/**
 * Differentiable token log-probabilities and the language-modelling loss.
 *
 * Shared by pre-training (cross-entropy) and the policy-gradient learner (log π_θ of the sampled
 * tokens), so both read log-probs the same way. One-hots are built as `oneHot(i, d).cast(...)`:
 * on wasm `tf.oneHot(i, d, 1, 0, 'float32')` is wrong unless the kernel workaround is installed.
 */
import * as tf from "@tensorflow/tfjs";

/** log π(target_t | prefix) for every position: logits [B, T, V], int32 targets [B, T] → [B, T]. */
export function selectLogprobs(logits: tf.Tensor3D, targets: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const v = logits.shape[2];
    // log p = log_softmax(z)
    const logp = tf.logSoftmax(logits); // [B, T, V]
    // log p(y) = Σ_v log p_v · 1[v = y]
    return tf.sum(tf.mul(logp, tf.oneHot(targets.cast("int32"), v).cast("float32")), -1) as tf.Tensor2D; // [B, T]
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
