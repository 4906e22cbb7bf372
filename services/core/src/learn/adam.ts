/**
 * Adam / AdamW with checkpointable state, and global-norm gradient clipping: the optimiser both
 * pre-training (model/pretrain.ts) and the policy-gradient learner use. Kept apart from the RL
 * step (optimizer.ts) so pre-training does not load the RL loss.
 *
 * Why our own Adam instead of tf.train.adam: checkpoints must carry the moments keyed by the
 * model's variable names (so a run resumes bit-for-bit on another process or backend), the
 * learning rate must be changeable per step for schedules, and tfjs has no AdamW; the update is
 * the same as tf.train.adam's (checked in the tests). Where the addon's fused kernels are
 * registered (the OpenBLAS path) each tensor's update is one kernel instead of ~13.
 */
import * as tf from "@tensorflow/tfjs";
import { ValidationError } from "../errors.js";
import { ADAM_M_PREFIX, ADAM_V_PREFIX } from "../model/checkpoint-names.js";
import { type AdamAttrs, FUSED, hasFusedKernel, runFused } from "../model/fused-kernels.js";

/** Adam hyperparameters; defaults are Kingma & Ba's, which tf.train.adam and PyTorch also use. */
export interface AdamConfig {
  /** Step size α. */
  learningRate: number;
  /** β1, decay of the first moment (default 0.9). */
  beta1?: number;
  /** β2, decay of the second moment (default 0.999). */
  beta2?: number;
  /** ε added to √v̂ (default 1e-8). */
  epsilon?: number;
  /** λ of decoupled weight decay θ ← θ − α·λ·θ (AdamW; default 0 = plain Adam). */
  weightDecay?: number;
  /**
   * Decay only matrices (rank ≥ 2), not biases and LayerNorm gains, as GPT-style pre-training
   * does (default false: decay every variable).
   */
  decayMatricesOnly?: boolean;
}

/** Moments of one variable. */
export interface AdamSlotState {
  shape: number[];
  m: Float32Array;
  v: Float32Array;
}

/** Everything needed to resume Adam exactly: the step count and the moments per variable name. */
export interface AdamState {
  step: number;
  slots: Record<string, AdamSlotState>;
}

/** Plain tensors by name (the shape of a checkpoint's WeightMap). */
export type NamedTensors = Map<string, { shape: number[]; data: Float32Array }>;

/**
 * Adam's moments as checkpoint tensors `optimizer.m.<param>` / `optimizer.v.<param>`. Why renamed:
 * slots are keyed by tf variable names, which carry a per-process model counter
 * (`transformer3/wte`); `paramName` maps them to the stable parameter names of the weights.
 */
export function adamStateToTensors(state: AdamState, paramName: (variable: string) => string): NamedTensors {
  const out: NamedTensors = new Map();
  for (const [name, slot] of Object.entries(state.slots)) {
    const param = paramName(name);
    out.set(`${ADAM_M_PREFIX}${param}`, { shape: [...slot.shape], data: slot.m });
    out.set(`${ADAM_V_PREFIX}${param}`, { shape: [...slot.shape], data: slot.v });
  }
  return out;
}

/**
 * The inverse of {@link adamStateToTensors}: an AdamState for `setState` at update count `step`,
 * slots keyed by `variableName(param)`. Throws ValidationError when an m has no v or vice versa.
 */
export function adamStateFromTensors(
  step: number,
  tensors: ReadonlyMap<string, { shape: number[]; data: Float32Array }>,
  variableName: (param: string) => string,
): AdamState {
  const slots: Record<string, AdamSlotState> = {};
  const m = ADAM_M_PREFIX;
  const v = ADAM_V_PREFIX;
  for (const [name, t] of tensors) {
    if (!name.startsWith(m)) continue;
    const param = name.slice(m.length);
    const second = tensors.get(`${v}${param}`);
    if (!second) throw new ValidationError(`${v}${param}`, `is missing (${name} is present)`);
    slots[variableName(param)] = { shape: [...t.shape], m: t.data, v: second.data };
  }
  const orphan = [...tensors.keys()].find((n) => n.startsWith(v) && !tensors.has(`${m}${n.slice(v.length)}`));
  if (orphan) throw new ValidationError(`${m}${orphan.slice(v.length)}`, `is missing (${orphan} is present)`);
  return { step, slots };
}

/**
 * A non-trainable variable holding the values `init` makes. Built inside tidy because tf.variable keeps the
 * initial tensor alive next to the variable; tidy frees it (the variable keeps the data).
 */
function newSlot(init: () => tf.Tensor): tf.Variable {
  return tf.tidy(() => tf.variable(init(), false));
}

/**
 * Adam (optionally AdamW): m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g²,
 * θ ← θ − α/(1−β1^t) · m / (√v/√(1−β2^t) + ε) − α·λ·θ.
 * Moments are keyed by `variable.name`, so variables must have stable names across processes.
 */
export class Adam {
  /** α; public so a schedule can set it before each step. */
  learningRate: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly weightDecay: number;
  readonly decayMatricesOnly: boolean;
  private t = 0;
  private slots = new Map<string, { m: tf.Variable; v: tf.Variable }>();

  constructor(cfg: AdamConfig) {
    this.learningRate = cfg.learningRate;
    this.beta1 = cfg.beta1 ?? 0.9;
    this.beta2 = cfg.beta2 ?? 0.999;
    this.epsilon = cfg.epsilon ?? 1e-8;
    this.weightDecay = cfg.weightDecay ?? 0;
    this.decayMatricesOnly = cfg.decayMatricesOnly ?? false;
    const inUnit = (x: number) => Number.isFinite(x) && x >= 0 && x < 1;
    if (!Number.isFinite(this.learningRate) || this.learningRate < 0)
      throw new ValidationError("learningRate", "must be ≥ 0");
    if (!inUnit(this.beta1) || !inUnit(this.beta2))
      throw new ValidationError("beta1/beta2", "must be in [0, 1)");
    if (!(this.epsilon > 0) || !(this.weightDecay >= 0))
      throw new ValidationError("epsilon/weightDecay", "must be > 0 / ≥ 0");
  }

  /** Number of updates applied so far (t in the bias corrections). */
  get step(): number {
    return this.t;
  }

  /**
   * One Adam update of `variables[i]` with `gradScale`·`grads[i]`; a null gradient leaves that
   * variable as is. `gradScale` is the global-norm clip's factor ({@link clipScale}): applied
   * inside the fused update it saves a multiply (and a tensor) per parameter, with the same floats.
   */
  applyGradients(
    variables: readonly tf.Variable[],
    grads: readonly (tf.Tensor | null)[],
    gradScale = 1,
  ): void {
    if (variables.length !== grads.length)
      throw new ValidationError("grads", "must have one entry per variable");
    this.t++;
    const bc1 = 1 - this.beta1 ** this.t;
    const bc2 = 1 - this.beta2 ** this.t;
    for (const [i, variable] of variables.entries()) {
      const raw = grads[i];
      if (raw == null) continue;
      const slot = this.slotFor(variable);
      const decays = this.weightDecay > 0 && (!this.decayMatricesOnly || variable.rank >= 2);
      tf.tidy(() => {
        if (hasFusedKernel(FUSED.adam)) {
          // the update below in one pass, the same float32 operations in the same order (fused-kernels.ts)
          const [p, m, v] = runFused<tf.Tensor[]>(
            FUSED.adam,
            { param: variable, grad: raw, m: slot.m, v: slot.v },
            {
              beta1: this.beta1,
              oneMinusBeta1: 1 - this.beta1,
              beta2: this.beta2,
              oneMinusBeta2: 1 - this.beta2,
              epsilon: this.epsilon,
              step: this.learningRate / bc1,
              sqrtBc2: Math.sqrt(bc2),
              decay: decays ? 1 - this.learningRate * this.weightDecay : 1,
              gradScale,
            } satisfies AdamAttrs,
          );
          slot.m.assign(m as tf.Tensor);
          slot.v.assign(v as tf.Tensor);
          variable.assign(p as tf.Tensor);
          return;
        }
        // g ← s·g, the clip's factor (exactly g at s = 1)
        const g = gradScale === 1 ? raw : tf.mul(raw, gradScale);
        // m ← β1·m + (1−β1)·g
        const m = tf.add(tf.mul(slot.m, this.beta1), tf.mul(g, 1 - this.beta1));
        // v ← β2·v + (1−β2)·g²
        const v = tf.add(tf.mul(slot.v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
        slot.m.assign(m);
        slot.v.assign(v);
        // Δ = α/(1−β1^t) · m / (√v/√(1−β2^t) + ε)
        const delta = tf.mul(
          tf.div(m, tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), this.epsilon)),
          this.learningRate / bc1,
        );
        // θ ← θ − Δ − α·λ·θ
        const decayed = decays ? tf.mul(variable, 1 - this.learningRate * this.weightDecay) : variable;
        variable.assign(tf.sub(decayed, delta));
      });
    }
  }

  /** Copies the state out of the backend (for a checkpoint). */
  async getState(): Promise<AdamState> {
    const slots: Record<string, AdamSlotState> = {};
    for (const [name, s] of this.slots) {
      const [m, v] = await Promise.all([s.m.data<"float32">(), s.v.data<"float32">()]);
      slots[name] = { shape: [...s.m.shape], m: Float32Array.from(m), v: Float32Array.from(v) };
    }
    return { step: this.t, slots };
  }

  /** Replaces the state with a saved one; shapes are checked against the variables at the next update. */
  setState(state: AdamState): void {
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new ValidationError("adam.step", "must be an integer ≥ 0");
    const next = new Map<string, { m: tf.Variable; v: tf.Variable }>();
    for (const [name, s] of Object.entries(state.slots)) {
      const size = s.shape.reduce((a, b) => a * b, 1);
      if (s.m.length !== size || s.v.length !== size) {
        tf.dispose([...next.values()].flatMap((x) => [x.m, x.v]));
        throw new ValidationError(`adam.slots.${name}`, `moments do not match shape [${s.shape.join(", ")}]`);
      }
      next.set(name, {
        m: newSlot(() => tf.tensor(s.m, s.shape, "float32")),
        v: newSlot(() => tf.tensor(s.v, s.shape, "float32")),
      });
    }
    this.dispose();
    this.slots = next;
    this.t = state.step;
  }

  /** Frees the moment tensors. */
  dispose(): void {
    for (const s of this.slots.values()) tf.dispose([s.m, s.v]);
    this.slots.clear();
  }

  private slotFor(variable: tf.Variable): { m: tf.Variable; v: tf.Variable } {
    let slot = this.slots.get(variable.name);
    if (slot === undefined) {
      slot = { m: newSlot(() => tf.zerosLike(variable)), v: newSlot(() => tf.zerosLike(variable)) };
      this.slots.set(variable.name, slot);
    } else if (!tf.util.arraysEqual(slot.m.shape, variable.shape)) {
      throw new ValidationError(
        `adam.slots.${variable.name}`,
        `saved shape [${slot.m.shape.join(", ")}] ≠ variable shape [${variable.shape.join(", ")}]`,
      );
    }
    return slot;
  }
}

/**
 * g ← g·min(1, c/‖g‖) with ‖g‖ = √(Σ_i Σ g_i²) over all tensors together (TF's clip_by_global_norm,
 * which tfjs lacks). Why global, not per tensor: it keeps the update's direction. Returns new
 * tensors and the pre-clip norm; the caller disposes them. c ≤ 0 or c = ∞ means no clipping.
 */
export function clipByGlobalNorm(
  tensors: readonly tf.Tensor[],
  clipNorm: number,
): { clipped: tf.Tensor[]; globalNorm: tf.Scalar } {
  return tf.tidy(() => {
    const globalNorm = globalGradNorm(tensors);
    if (!(clipNorm > 0) || clipNorm === Number.POSITIVE_INFINITY) {
      return { clipped: tensors.map((g) => tf.clone(g)), globalNorm: globalNorm as tf.Scalar };
    }
    // scale = min(1, c/‖g‖), ‖g‖ floored so a zero gradient gives scale 1, not NaN
    const scale = tf.minimum(1, tf.div(clipNorm, tf.maximum(globalNorm, 1e-12))); // []
    return { clipped: tensors.map((g) => tf.mul(g, scale)), globalNorm: globalNorm as tf.Scalar };
  });
}

/** ‖g‖ = √(Σ_i Σ g_i²) over all tensors together, as a float32 scalar tensor. */
export function globalGradNorm(tensors: readonly tf.Tensor[]): tf.Scalar {
  return tf.tidy(
    () =>
      // ‖g‖ = √(Σ_i Σ g_i²)
      tf.sqrt(
        tensors.reduce<tf.Tensor>((acc, g) => tf.add(acc, tf.sum(tf.square(g))), tf.scalar(0)),
      ) as tf.Scalar,
  );
}

/**
 * The factor min(1, c/‖g‖) of {@link clipByGlobalNorm} from the norm read back, in the same float32
 * arithmetic the tensor ops use (so passing it to {@link Adam.applyGradients} updates exactly as
 * clipping the gradients first would). c ≤ 0 or c = ∞ means no clipping (1).
 */
export function clipScale(globalNorm: number, clipNorm: number): number {
  if (!(clipNorm > 0) || clipNorm === Number.POSITIVE_INFINITY) return 1;
  const f = Math.fround;
  // scale = min(1, c/‖g‖), ‖g‖ floored at 1e-12 (float32 division of float32 operands)
  return Math.min(1, f(f(clipNorm) / Math.max(f(globalNorm), f(1e-12))));
}
