/**
 * One GRU layer over all T steps as a single differentiable op, with backpropagation through time
 * written out; and the step-by-step stock-autodiff version the tests compare it with.
 *
 * Why: autodiff of the per-step cell records some 60 kernels per step (the learner's GRU step ran
 * 4,300 kernel calls for T = 44), among them a weight-gradient product h_{t−1}ᵀ du_t and an
 * accumulation into ∂L/∂W_hh for every step. Here the forward is the same cell
 * (recurrent-cells.ts's `gruStep`) and the backward runs per step only what the recurrence needs,
 *
 *   dh_{t−1} = dh_t ⊙ z̃_t + (dh_t ⊙ Pᵘ_t) W_hhᵀ,
 *
 * where the gate factors P (below) are computed for all steps at once before the loop (one fused
 * kernel on the OpenBLAS path, fused-kernels.ts), and the
 * gradients of the inputs and weights are one product and one column sum over all steps after it.
 * Rows are time-major (row t·B + r), so each step's rows are one contiguous block.
 *
 * Where the addon is built, the forward recurrence and this backward pass are one native kernel
 * each (recurrent-kernels.ts); the tfjs ops below are the same maths for machines without it.
 *
 * Call inside `tf.tidy` (the models' passes are).
 */
import * as tf from "@tensorflow/tfjs";
import { FUSED, hasFusedKernel, runFused } from "./fused-kernels.js";
import { product } from "./layers.js";
import { byStep, gruCell, gruStep, maskedUpdate, type RecurrentOps, rows } from "./recurrent-cells.js";
import { hasRecurrentKernel, RECURRENT, runRecurrent } from "./recurrent-kernels.js";

/** x [N, 3H] ⊙ (d [N, H] repeated over the three gate blocks). */
function perGate(d: tf.Tensor2D, x: tf.Tensor2D): tf.Tensor2D {
  const [n, h] = d.shape;
  return tf.reshape(tf.mul(tf.reshape(d, [n, 1, h]), tf.reshape(x, [n, 3, h])), [n, 3 * h]);
}

/**
 * The per-element factors of ∂h_t for every step at once, from h_{t−1}, r, z, n and u_n
 * ([T·B, H] each) and the masks m [T·B, 1] (null: all 1): Pᵃ = ∂h_t/∂a_t and Pᵘ = ∂h_t/∂u_t
 * ([T·B, 3H], per gate block) and z̃ = ∂h_t/∂h_{t−1} outside W_hh. One fused kernel where the
 * addon's are registered, else tfjs ops (the same float32 operations).
 */
function gateFactors(
  hp: tf.Tensor2D,
  r: tf.Tensor2D,
  z: tf.Tensor2D,
  n: tf.Tensor2D,
  uN: tf.Tensor2D,
  m: tf.Tensor2D | null,
): { pa: tf.Tensor2D; pu: tf.Tensor2D; zc: tf.Tensor2D } {
  if (hasFusedKernel(FUSED.gruFactors)) {
    const inputs = { hp, r, z, n, uN, ...(m === null ? {} : { mask: m }) };
    const [pa, pu, zc] = runFused<tf.Tensor2D[]>(FUSED.gruFactors, inputs);
    return { pa: pa as tf.Tensor2D, pu: pu as tf.Tensor2D, zc: zc as tf.Tensor2D };
  }
  const omz = tf.sub(1, z); // 1 − z
  // Pⁿ = ∂h'/∂n · ∂n/∂(a_n + r u_n) = (1 − z)(1 − n²)
  let pn = tf.mul(omz, tf.sub(1, tf.square(n))); // [T·B, H]
  // Pᶻ = ∂h'/∂z · σ'(·) = (h_{t−1} − n) z (1 − z)
  let pz = tf.mul(tf.mul(tf.sub(hp, n), z), omz); // [T·B, H]
  // Pʳ = Pⁿ · ∂(r u_n)/∂r · σ'(·) = Pⁿ u_n r (1 − r)
  let pr = tf.mul(tf.mul(pn, uN), tf.mul(r, tf.sub(1, r))); // [T·B, H]
  // z̃ = ∂h_t/∂h_{t−1} outside W_hh: z, or 1 − m (1 − z) with masks
  let zc: tf.Tensor = z; // [T·B, H]
  if (m !== null) {
    // a masked step passes dh_t on to h_{t−1} unchanged and nothing to its gates
    [pn, pz, pr] = [tf.mul(pn, m), tf.mul(pz, m), tf.mul(pr, m)];
    zc = tf.sub(1, tf.mul(m, omz));
  }
  return {
    // Pᵃ = [Pʳ | Pᶻ | Pⁿ],  Pᵘ = [Pʳ | Pᶻ | Pⁿ r]
    pa: tf.concat([pr, pz, pn], 1) as tf.Tensor2D, // [T·B, 3H]
    pu: tf.concat([pr, pz, tf.mul(pn, r)], 1) as tf.Tensor2D, // [T·B, 3H]
    zc: zc as tf.Tensor2D, // [T·B, H]
  };
}

/**
 * h_t of every step of one GRU layer: `a` [T·B, 3H] = x W_ih + b_ih of all steps (time-major),
 * W_hh [H, 3H], b_hh [3H], h₀ [B, H], update masks m [T·B, 1] ∈ {0, 1} (null: all 1):
 * h_t = h_{t−1} + m_t (GRU(h_{t−1}) − h_{t−1}). Returns [T·B, H]; differentiable in a, W_hh,
 * b_hh and h₀ (the masks are constants).
 */
export function gruLayer(
  a: tf.Tensor2D,
  wHh: tf.Tensor2D,
  bHh: tf.Tensor1D,
  h0: tf.Tensor2D,
  mask: tf.Tensor2D | null,
  tanh: RecurrentOps["tanh"],
): tf.Tensor2D {
  if (hasRecurrentKernel(RECURRENT.gruForward)) return gruLayerKernels(a, wHh, bHh, h0, mask);
  const [b, hidden] = h0.shape;
  const steps = a.shape[0] / b;
  const ms = mask === null ? null : byStep(mask, steps); // T × [B, 1]
  const op = tf.customGrad((...args) => {
    const [ta, tw, tb, th0, save] = args as [
      tf.Tensor2D,
      tf.Tensor2D,
      tf.Tensor1D,
      tf.Tensor2D,
      tf.GradSaveFunc,
    ];
    const [aRz, aN] = tf.split(ta, [2 * hidden, hidden], 1) as [tf.Tensor2D, tf.Tensor2D]; // [T·B, 2H], [T·B, H]
    const [aRzs, aNs] = [byStep(aRz, steps), byStep(aN, steps)]; // T × [B, 2H], T × [B, H]
    const gates: {
      h: tf.Tensor2D[];
      r: tf.Tensor2D[];
      z: tf.Tensor2D[];
      n: tf.Tensor2D[];
      uN: tf.Tensor2D[];
    } = {
      h: [],
      r: [],
      z: [],
      n: [],
      uN: [],
    };
    let h = th0; // [B, H]
    for (let t = 0; t < steps; t++) {
      // u_t = h_{t−1} W_hh + b_hh
      const u = tf.fused.matMul({ a: h, b: tw, bias: tb }) as tf.Tensor2D; // [B, 3H]
      const g = gruStep(aRzs[t] as tf.Tensor2D, aNs[t] as tf.Tensor2D, u, h, tanh);
      // h_t = h_{t−1} + m_t (h' − h_{t−1})
      h = ms === null ? g.h : maskedUpdate(h, g.h, ms[t] as tf.Tensor2D); // [B, H]
      gates.h.push(h);
      gates.r.push(g.r);
      gates.z.push(g.z);
      gates.n.push(g.n);
      gates.uN.push(g.uN);
    }
    // Kept per step (the backward pass stacks them); nothing is kept outside a gradient tape.
    save([
      th0,
      tw,
      ...gates.h,
      ...gates.r,
      ...gates.z,
      ...gates.n,
      ...gates.uN,
      ...(mask === null ? [] : [mask]),
    ]);
    return {
      value: rows(gates.h),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => backward(dy as tf.Tensor2D, saved),
    };
  });

  /** [∂L/∂a, ∂L/∂W_hh, ∂L/∂b_hh, ∂L/∂h₀] from ∂L/∂h_t of every step, dy [T·B, H]. */
  const backward = (dy: tf.Tensor2D, saved: tf.Tensor[]): tf.Tensor[] => {
    const [sh0, sw] = saved as [tf.Tensor2D, tf.Tensor2D];
    const part = (k: number) => saved.slice(2 + k * steps, 2 + (k + 1) * steps) as tf.Tensor2D[];
    const hs = part(0);
    const m = mask === null ? null : (saved[2 + 5 * steps] as tf.Tensor2D); // [T·B, 1]
    // every step's h_{t−1}, r, z, n and u_n, stacked: [T·B, H] each
    const hp = rows([sh0, ...hs.slice(0, steps - 1)]);
    const [r, z, n, uN] = [rows(part(1)), rows(part(2)), rows(part(3)), rows(part(4))];
    const { pa, pu, zc } = gateFactors(hp, r, z, n, uN, m);
    const [dys, pus, zcs] = [byStep(dy, steps), byStep(pu, steps), byStep(zc, steps)];
    const wT = tf.transpose(sw); // [3H, H]
    const dhs: tf.Tensor2D[] = new Array(steps);
    let carry: tf.Tensor2D | null = null; // ∂L/∂h_t through step t + 1
    for (let t = steps - 1; t >= 0; t--) {
      // dh_t = ∂L/∂h_t from the output + from step t + 1
      const dh: tf.Tensor2D = carry === null ? (dys[t] as tf.Tensor2D) : tf.add(dys[t] as tf.Tensor2D, carry);
      dhs[t] = dh;
      // du_t = dh_t ⊙ Pᵘ_t
      const du = perGate(dh, pus[t] as tf.Tensor2D); // [B, 3H]
      // dh_{t−1} = dh_t ⊙ z̃_t + du_t W_hhᵀ
      carry = tf.add(tf.mul(dh, zcs[t] as tf.Tensor2D), tf.matMul(du, wT)) as tf.Tensor2D; // [B, H]
    }
    const dh = rows(dhs); // [T·B, H]
    // ∂L/∂u = dh ⊙ Pᵘ for every step
    const du = perGate(dh, pu); // [T·B, 3H]
    return [
      // ∂L/∂a = dh ⊙ Pᵃ
      perGate(dh, pa), // [T·B, 3H]
      // ∂L/∂W_hh = Σ_t h_{t−1}ᵀ du_t
      product(hp, du, true, false), // [H, 3H]
      // ∂L/∂b_hh = Σ_t Σ_r du_t
      tf.sum(du, 0), // [3H]
      carry as tf.Tensor2D, // ∂L/∂h₀ [B, H]
    ];
  };
  return op(a, wHh, bHh, h0) as tf.Tensor2D;
}

/**
 * `gruLayer` on the addon's recurrent kernels (recurrent-kernels.ts): the forward recurrence and
 * the backward pass are one kernel each, with the same equations (tanh itself, not 2σ(2x) − 1).
 */
function gruLayerKernels(
  a: tf.Tensor2D,
  wHh: tf.Tensor2D,
  bHh: tf.Tensor1D,
  h0: tf.Tensor2D,
  mask: tf.Tensor2D | null,
): tf.Tensor2D {
  const op = tf.customGrad((...args) => {
    const [ta, tw, tb, th0, save] = args as [
      tf.Tensor2D,
      tf.Tensor2D,
      tf.Tensor1D,
      tf.Tensor2D,
      tf.GradSaveFunc,
    ];
    // hs [T·B, H]; gates [T·B, 4H] = [r | z | n | u_n] of every step
    const [hs, gates] = runRecurrent(RECURRENT.gruForward, { a: ta, w: tw, bias: tb, h0: th0, mask }) as [
      tf.Tensor2D,
      tf.Tensor2D,
    ];
    save([th0, tw, hs, gates as tf.Tensor, ...(mask === null ? [] : [mask])]);
    return {
      value: hs,
      // [∂L/∂a, ∂L/∂W_hh, ∂L/∂b_hh, ∂L/∂h₀]
      gradFunc: (dy: tf.Tensor, [sh0, sw, shs, sg, sm]: tf.Tensor[]) =>
        runRecurrent(RECURRENT.gruBackward, {
          dy,
          w: sw as tf.Tensor,
          h0: sh0 as tf.Tensor,
          hs: shs as tf.Tensor,
          gates: sg as tf.Tensor,
          mask: sm ?? null,
        }),
    };
  });
  return op(a, wHh, bHh, h0) as tf.Tensor2D;
}

/**
 * `gruLayer` step by step with the given primitives, differentiated by whatever they are (stock
 * autodiff for the reference flavour): the tests' reference for the op above.
 */
export function gruLayerStepwise(
  a: tf.Tensor2D,
  wHh: tf.Tensor2D,
  bHh: tf.Tensor1D,
  h0: tf.Tensor2D,
  mask: tf.Tensor2D | null,
  tanh: RecurrentOps["tanh"],
  linear: RecurrentOps["linear"],
): tf.Tensor2D {
  const steps = a.shape[0] / h0.shape[0];
  const [as, ms] = [byStep(a, steps), mask === null ? null : byStep(mask, steps)];
  const hs: tf.Tensor2D[] = [];
  let h = h0; // [B, H]
  for (let t = 0; t < steps; t++) {
    // h' = GRU(x_t, h_{t−1}),  u_t = h_{t−1} W_hh + b_hh
    const next = gruCell(as[t] as tf.Tensor2D, linear(h, wHh, bHh), h, tanh); // [B, H]
    // h_t = h_{t−1} + m_t (h' − h_{t−1})
    h = ms === null ? next : maskedUpdate(h, next, ms[t] as tf.Tensor2D); // [B, H]
    hs.push(h);
  }
  return rows(hs); // [T·B, H]
}
