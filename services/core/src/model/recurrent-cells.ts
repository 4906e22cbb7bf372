/**
 * The recurrent cells (GRU, LSTM), the masked state update and the primitives they are built from,
 * shared by the recurrent language model (rnn.ts) and the Seq2Seq encoder/decoder
 * (seq2seq-gru.ts), so both models run the same cell maths.
 *
 * Gate layout (PyTorch's, transposed): a GRU's pre-activations are [r | z | n] blocks of width H,
 * an LSTM's [i | f | g | o]. tanh is computed as 2σ(2x) − 1 in the fast flavours because sigmoid
 * is a much faster kernel than tanh on wasm (same function, to float rounding).
 *
 * All functions expect to be called inside `tf.tidy` (the models' passes are). The flavours of
 * primitives (`RECURRENT_OPS`) live in recurrent-ops.ts, the whole-sequence layers in
 * gru-layer.ts and lstm-layer.ts.
 */
import * as tf from "@tensorflow/tfjs";

/** The primitives a recurrent pass uses (custom-gradient, inference or stock-autodiff flavours). */
export interface RecurrentOps {
  linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D;
  embedding(table: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor2D;
  tanh<T extends tf.Tensor>(x: T): T;
  /** a @ b */
  matmul<T extends tf.Tensor>(a: T, b: tf.Tensor): T;
  /** a @ bᵀ */
  matmulNT<T extends tf.Tensor>(a: T, b: tf.Tensor): T;
  /**
   * h_t of every step of one GRU layer (gru-layer.ts): `a` [T·B, 3H] = x W_ih + b_ih for all steps,
   * time-major (row t·B + r), W_hh [H, 3H], b_hh [3H], h₀ [B, H], update masks m [T·B, 1] or null.
   * Returns [T·B, H], rows in the same order.
   */
  gruLayer(
    a: tf.Tensor2D,
    wHh: tf.Tensor2D,
    bHh: tf.Tensor1D,
    h0: tf.Tensor2D,
    mask: tf.Tensor2D | null,
  ): tf.Tensor2D;
  /**
   * h_t of every step of one LSTM layer, then the final c (lstm-layer.ts): `a` [T·B, 4H], W_hh
   * [H, 4H], b_hh [4H], h₀ and c₀ [B, H], masks [T·B, 1] or null. Returns [(T+1)·B, H].
   */
  lstmLayer(
    a: tf.Tensor2D,
    wHh: tf.Tensor2D,
    bHh: tf.Tensor1D,
    h0: tf.Tensor2D,
    c0: tf.Tensor2D,
    mask: tf.Tensor2D | null,
  ): tf.Tensor2D;
}

/** `x` split into `steps` equal row blocks (one kernel; none for one step). */
export function byStep<T extends tf.Tensor>(x: T, steps: number): T[] {
  return steps === 1 ? [x] : (tf.split(x, steps, 0) as T[]);
}

/** Rows of the given blocks stacked (one kernel; none for one block). */
export function rows(xs: tf.Tensor2D[]): tf.Tensor2D {
  return xs.length === 1 ? (xs[0] as tf.Tensor2D) : (tf.concat(xs, 0) as tf.Tensor2D);
}

/** tanh(x) = 2σ(2x) − 1 (sigmoid is a fast kernel on wasm, tanh a slow one). */
export function sigmoidTanh<T extends tf.Tensor>(x: T): T {
  return tf.sub(tf.mul(tf.sigmoid(tf.mul(x, 2)), 2), 1) as T;
}

/** One GRU step's new state and the gate values its backward pass needs (each [B, H]). */
export interface GruStep {
  h: tf.Tensor2D;
  r: tf.Tensor2D;
  z: tf.Tensor2D;
  n: tf.Tensor2D;
  /** h W_hn + b_hn, the recurrent part of the candidate's pre-activation. */
  uN: tf.Tensor2D;
}

/**
 * One GRU step from a = x W_ih + b_ih, split into its [r | z] block aRz [B, 2H] and n block aN
 * [B, H], u = h W_hh + b_hh [B, 3H] and the previous state h [B, H].
 */
export function gruStep(
  aRz: tf.Tensor2D,
  aN: tf.Tensor2D,
  u: tf.Tensor2D,
  hPrev: tf.Tensor2D,
  tanh: RecurrentOps["tanh"],
): GruStep {
  const h = hPrev.shape[1];
  const [uRz, uN] = tf.split(u, [2 * h, h], 1) as [tf.Tensor2D, tf.Tensor2D]; // [B, 2H], [B, H]
  // [r, z] = σ(x W_ir + b_ir + h W_hr + b_hr,  x W_iz + b_iz + h W_hz + b_hz)
  const [r, z] = tf.split(tf.sigmoid(tf.add(aRz, uRz)), 2, 1) as [tf.Tensor2D, tf.Tensor2D]; // [B, H] each
  // n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
  const n = tanh(tf.add(aN, tf.mul(r, uN))) as tf.Tensor2D; // [B, H]
  // h' = (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n)
  return { h: tf.add(n, tf.mul(z, tf.sub(hPrev, n))) as tf.Tensor2D, r, z, n, uN }; // [B, H]
}

/**
 * One GRU step from a = x W_ih + b_ih and u = h W_hh + b_hh (each [B, 3H]) and the previous state
 * h [B, H]: returns h' [B, H].
 */
export function gruCell(
  a: tf.Tensor2D,
  u: tf.Tensor2D,
  hPrev: tf.Tensor2D,
  tanh: RecurrentOps["tanh"],
): tf.Tensor2D {
  const h = hPrev.shape[1];
  const [aRz, aN] = tf.split(a, [2 * h, h], 1) as [tf.Tensor2D, tf.Tensor2D]; // [B, 2H], [B, H]
  return gruStep(aRz, aN, u, hPrev, tanh).h;
}

/**
 * One LSTM step from a = x W_ih + b_ih and u = h W_hh + b_hh (each [B, 4H]) and the previous cell
 * state c [B, H]: returns h' and c' (each [B, H]).
 */
export function lstmCell(
  a: tf.Tensor2D,
  u: tf.Tensor2D,
  cPrev: tf.Tensor2D,
  tanh: RecurrentOps["tanh"],
): { h: tf.Tensor2D; c: tf.Tensor2D } {
  const pre = tf.add(a, u) as tf.Tensor2D; // [B, 4H]
  const [pi, pf, pg, po] = tf.split(pre, 4, 1) as tf.Tensor2D[]; // [B, H] each
  // i = σ(x W_ii + b_ii + h W_hi + b_hi),  f = σ(x W_if + b_if + h W_hf + b_hf)
  const ig = tf.sigmoid(pi as tf.Tensor2D); // [B, H]
  const fg = tf.sigmoid(pf as tf.Tensor2D); // [B, H]
  // g = tanh(x W_ig + b_ig + h W_hg + b_hg),  o = σ(x W_io + b_io + h W_ho + b_ho)
  const gg = tanh(pg as tf.Tensor2D); // [B, H]
  const og = tf.sigmoid(po as tf.Tensor2D); // [B, H]
  // c' = f ⊙ c + i ⊙ g
  const c = tf.add(tf.mul(fg, cPrev), tf.mul(ig, gg)) as tf.Tensor2D; // [B, H]
  // h' = o ⊙ tanh(c')
  return { h: tf.mul(og, tanh(c)) as tf.Tensor2D, c };
}

/**
 * s_t = s_{t−1} + m_t (s' − s_{t−1}) with m_t [B, 1] ∈ {0, 1}: a padded step (m = 0) leaves the
 * state exactly as it was, which is what makes a left-padded row give the results it has alone.
 */
export function maskedUpdate(prev: tf.Tensor2D, next: tf.Tensor2D, m: tf.Tensor2D): tf.Tensor2D {
  return tf.add(prev, tf.mul(m, tf.sub(next, prev))) as tf.Tensor2D; // [B, H]
}
