/**
 * One LSTM layer over all T steps as a single differentiable op, with backpropagation through
 * time written out; and the step-by-step stock-autodiff version the tests compare it with.
 *
 * Why: autodiff of the per-step cell (recurrent-cells.ts's `lstmCell`) records ~25 kernels per
 * step forward and more backward: the LSTM learner step ran ~4,700 kernel calls for T = 45,
 * among them a weight-gradient product and an accumulation into ∂L/∂W_hh for every step. Here
 * the backward runs per step only what the recurrence needs. With gates i, f, g, o (activations),
 * c'_t = f c_{t−1} + i g, h'_t = o tanh c'_t and the masked update s_t = s_{t−1} + m_t (s' − s_{t−1}):
 *
 *   dh' = m dh_t,  dc' = m dc_t + dh' o (1 − tanh² c'),
 *   dp = [dc' g · i(1 − i) | dc' c_{t−1} · f(1 − f) | dc' i · (1 − g²) | dh' tanh c' · o(1 − o)],
 *   dc_{t−1} = (1 − m) dc_t + dc' f,   dh_{t−1} = ∂L/∂h_{t−1} + (1 − m) dh_t + dp W_hhᵀ,
 *
 * where dp is the gradient of the pre-activation a_t + h_{t−1} W_hh + b_hh; the gradients of
 * the inputs and weights are one product and one column sum over all steps after the loop.
 * Where the addon is built the forward recurrence and this backward pass are one native kernel
 * each (recurrent-kernels.ts); the tfjs ops below are the same maths for machines without it.
 *
 * The op's value is [(T+1)·B, H]: every step's h_t (rows t·B + r, time-major), then the final
 * c_T (so the decoding state comes out of the same op, and is differentiable too).
 * Call inside `tf.tidy` (the models' passes are).
 */
import * as tf from "@tensorflow/tfjs";
import { product } from "./layers.js";
import { byStep, lstmCell, maskedUpdate, type RecurrentOps, rows } from "./recurrent-cells.js";
import { hasRecurrentKernel, RECURRENT, runRecurrent } from "./recurrent-kernels.js";

/** The layer's value split into every step's h [T·B, H] and the final h and c [B, H]. */
export function lstmOutputs(
  out: tf.Tensor2D,
  batch: number,
): { hs: tf.Tensor2D; h: tf.Tensor2D; c: tf.Tensor2D } {
  const [n, hidden] = out.shape;
  const steps = n / batch - 1;
  const hs = tf.slice(out, [0, 0], [steps * batch, hidden]) as tf.Tensor2D;
  const h = steps === 1 ? hs : (tf.slice(out, [(steps - 1) * batch, 0], [batch, hidden]) as tf.Tensor2D);
  return { hs, h, c: tf.slice(out, [steps * batch, 0], [batch, hidden]) as tf.Tensor2D };
}

/** One step's activations and states, kept for the backward pass (each [B, H]). */
interface LstmStep {
  i: tf.Tensor2D;
  f: tf.Tensor2D;
  g: tf.Tensor2D;
  o: tf.Tensor2D;
  /** tanh c'_t */
  tc: tf.Tensor2D;
  /** c_t after the masked update */
  c: tf.Tensor2D;
}

/** The forward recurrence in tfjs ops: every step's h_t and the kept activations. */
function forwardOps(
  a: tf.Tensor2D,
  w: tf.Tensor2D,
  bias: tf.Tensor1D,
  h0: tf.Tensor2D,
  c0: tf.Tensor2D,
  ms: tf.Tensor2D[] | null,
  tanh: RecurrentOps["tanh"],
): { hs: tf.Tensor2D[]; steps: LstmStep[] } {
  const as = byStep(a, a.shape[0] / h0.shape[0]); // T × [B, 4H]
  const [hs, steps]: [tf.Tensor2D[], LstmStep[]] = [[], []];
  let [h, c] = [h0, c0];
  as.forEach((at, t) => {
    // pre = a_t + h_{t−1} W_hh + b_hh
    const pre = tf.add(at, tf.fused.matMul({ a: h, b: w, bias })) as tf.Tensor2D; // [B, 4H]
    const [pi, pf, pg, po] = tf.split(pre, 4, 1) as tf.Tensor2D[];
    const [i, f, o] = [
      tf.sigmoid(pi as tf.Tensor2D),
      tf.sigmoid(pf as tf.Tensor2D),
      tf.sigmoid(po as tf.Tensor2D),
    ];
    const g = tanh(pg as tf.Tensor2D);
    // c' = f c_{t−1} + i g,  h' = o tanh c'
    const cn = tf.add(tf.mul(f, c), tf.mul(i, g)) as tf.Tensor2D;
    const tc = tanh(cn);
    const hn = tf.mul(o, tc) as tf.Tensor2D;
    const m = ms?.[t];
    [h, c] = m === undefined ? [hn, cn] : [maskedUpdate(h, hn, m), maskedUpdate(c, cn, m)];
    hs.push(h);
    steps.push({ i, f, g, o, tc, c });
  });
  return { hs, steps };
}

/** [∂L/∂a, ∂L/∂W_hh, ∂L/∂b_hh, ∂L/∂h₀, ∂L/∂c₀] in tfjs ops, from dy [(T+1)·B, H] (module doc). */
function backwardOps(
  dy: tf.Tensor2D,
  w: tf.Tensor2D,
  h0: tf.Tensor2D,
  c0: tf.Tensor2D,
  hs: tf.Tensor2D[],
  steps: LstmStep[],
  ms: tf.Tensor2D[] | null,
): tf.Tensor[] {
  const n = steps.length;
  const dys = byStep(dy, n + 1); // (T + 1) × [B, H]: every h_t, then c_T
  const wT = tf.transpose(w); // [4H, H]
  const dps: tf.Tensor2D[] = new Array(n);
  let dhNext: tf.Tensor2D | null = null; // ∂L/∂h_t through step t + 1
  let dc = dys[n] as tf.Tensor2D; // ∂L/∂c_t
  for (let t = n - 1; t >= 0; t--) {
    const s = steps[t] as LstmStep;
    const m = ms?.[t];
    const dh: tf.Tensor2D = dhNext === null ? (dys[t] as tf.Tensor2D) : tf.add(dys[t] as tf.Tensor2D, dhNext);
    const keep = (x: tf.Tensor2D) => (m === undefined ? x : (tf.mul(m, x) as tf.Tensor2D));
    const dhn = keep(dh);
    // dc' = m dc + dh' o (1 − tanh² c')
    const dcn = tf.add(keep(dc), tf.mul(tf.mul(dhn, s.o), tf.sub(1, tf.square(s.tc)))) as tf.Tensor2D;
    const cPrev = t === 0 ? c0 : (steps[t - 1] as LstmStep).c;
    const sig = (x: tf.Tensor2D) => tf.mul(x, tf.sub(1, x)); // σ' from σ
    const dp = tf.concat(
      [
        tf.mul(tf.mul(dcn, s.g), sig(s.i)),
        tf.mul(tf.mul(dcn, cPrev), sig(s.f)),
        tf.mul(tf.mul(dcn, s.i), tf.sub(1, tf.square(s.g))),
        tf.mul(tf.mul(dhn, s.tc), sig(s.o)),
      ],
      1,
    ) as tf.Tensor2D; // [B, 4H]
    dps[t] = dp;
    const pass = (x: tf.Tensor2D) => (m === undefined ? null : tf.mul(tf.sub(1, m), x)); // (1 − m) x
    const dcf = tf.mul(dcn, s.f) as tf.Tensor2D;
    const dcPass = pass(dc);
    dc = dcPass === null ? dcf : (tf.add(dcPass, dcf) as tf.Tensor2D);
    const dhw = tf.matMul(dp, wT) as tf.Tensor2D;
    const dhPass = pass(dh);
    dhNext = dhPass === null ? dhw : (tf.add(dhPass, dhw) as tf.Tensor2D);
  }
  const dp = rows(dps); // [T·B, 4H]
  const hp = rows([h0, ...hs.slice(0, n - 1)]); // every h_{t−1} [T·B, H]
  return [dp, product(hp, dp, true, false), tf.sum(dp, 0), dhNext as tf.Tensor2D, dc];
}

/**
 * Every step's h_t, then the final c_T ([(T+1)·B, H]) of one LSTM layer: `a` [T·B, 4H] =
 * x W_ih + b_ih of all steps (time-major), W_hh [H, 4H], b_hh [4H], h₀ and c₀ [B, H], update
 * masks m [T·B, 1] ∈ {0, 1} (null: all 1). Differentiable in a, W_hh, b_hh, h₀ and c₀.
 */
export function lstmLayer(
  a: tf.Tensor2D,
  wHh: tf.Tensor2D,
  bHh: tf.Tensor1D,
  h0: tf.Tensor2D,
  c0: tf.Tensor2D,
  mask: tf.Tensor2D | null,
  tanh: RecurrentOps["tanh"],
): tf.Tensor2D {
  const kernels = hasRecurrentKernel(RECURRENT.lstmForward);
  const ms = mask === null || kernels ? null : byStep(mask, a.shape[0] / h0.shape[0]);
  const op = tf.customGrad((...args) => {
    const [ta, tw, tb, th0, tc0, save] = args as [
      tf.Tensor2D,
      tf.Tensor2D,
      tf.Tensor1D,
      tf.Tensor2D,
      tf.Tensor2D,
      tf.GradSaveFunc,
    ];
    if (kernels) {
      // out = [every h_t; c_T], cs every c_t, gates [i | f | g | o], tc = tanh c'
      const [out, cs, gates, tc] = runRecurrent(RECURRENT.lstmForward, {
        a: ta,
        w: tw,
        bias: tb,
        h0: th0,
        c0: tc0,
        mask,
      }) as tf.Tensor2D[];
      save([th0, tc0, tw, out, cs, gates, tc, ...(mask === null ? [] : [mask])] as tf.Tensor[]);
      return {
        value: out as tf.Tensor2D,
        gradFunc: (dy: tf.Tensor, [h, c, w, o, s, g, t, m]: tf.Tensor[]) =>
          runRecurrent(RECURRENT.lstmBackward, {
            dy,
            w: w as tf.Tensor,
            h0: h as tf.Tensor,
            c0: c as tf.Tensor,
            out: o as tf.Tensor,
            cs: s as tf.Tensor,
            gates: g as tf.Tensor,
            tc: t as tf.Tensor,
            mask: m ?? null,
          }),
      };
    }
    const { hs, steps } = forwardOps(ta, tw, tb, th0, tc0, ms, tanh);
    const n = steps.length;
    const kept = ["i", "f", "g", "o", "tc", "c"] as const;
    // Kept per step (the backward pass reads them back); nothing is kept outside a gradient tape.
    save([th0, tc0, tw, ...hs, ...kept.flatMap((k) => steps.map((s) => s[k])), ...(ms ?? [])]);
    return {
      value: rows([...hs, (steps[n - 1] as LstmStep).c]),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const part = (k: number) => saved.slice(3 + k * n, 3 + (k + 1) * n) as tf.Tensor2D[];
        const back = kept.map((_, k) => part(k + 1));
        const st = steps.map((_, t) => {
          const [i, f, g, o, tc, c] = back.map((p) => p[t] as tf.Tensor2D) as tf.Tensor2D[];
          return { i, f, g, o, tc, c } as LstmStep;
        });
        const sms = ms === null ? null : (saved.slice(3 + 7 * n) as tf.Tensor2D[]);
        const [sh0, sc0, sw] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
        return backwardOps(dy as tf.Tensor2D, sw, sh0, sc0, part(0), st, sms);
      },
    };
  });
  return op(a, wHh, bHh, h0, c0) as tf.Tensor2D;
}

/**
 * `lstmLayer` step by step with the given primitives (recurrent-cells.ts's cell), differentiated
 * by whatever they are (stock autodiff for the reference flavour): the tests' reference.
 */
export function lstmLayerStepwise(
  a: tf.Tensor2D,
  wHh: tf.Tensor2D,
  bHh: tf.Tensor1D,
  h0: tf.Tensor2D,
  c0: tf.Tensor2D,
  mask: tf.Tensor2D | null,
  tanh: RecurrentOps["tanh"],
  linear: RecurrentOps["linear"],
): tf.Tensor2D {
  const steps = a.shape[0] / h0.shape[0];
  const [as, ms] = [byStep(a, steps), mask === null ? null : byStep(mask, steps)];
  const hs: tf.Tensor2D[] = [];
  let [h, c] = [h0, c0];
  for (let t = 0; t < steps; t++) {
    // u_t = h_{t−1} W_hh + b_hh
    const next = lstmCell(as[t] as tf.Tensor2D, linear(h, wHh, bHh), c, tanh); // [B, H] each
    const m = ms?.[t];
    // s_t = s_{t−1} + m_t (s' − s_{t−1})
    [h, c] = m === undefined ? [next.h, next.c] : [maskedUpdate(h, next.h, m), maskedUpdate(c, next.c, m)];
    hs.push(h);
  }
  return rows([...hs, c]); // [(T+1)·B, H]
}
