/**
 * The OpenBLAS matmul kernels of the wasm backend (blas-kernels.ts) against tfjs's own: values of
 * every product shape the models use, and a training step's loss and gradients with and without
 * BLAS. The kernels are switched in one process (`setWasmMatMul`), so both sides see the same
 * inputs. Needs the addon: a failure in CI (which builds it), a skip with a reason elsewhere.
 */
import { spawnSync } from "node:child_process";
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { activeBackend, initBackend } from "../services/core/src/model/backend.js";
import { planGemm } from "../services/core/src/model/blas-kernels.js";
import { createModel } from "../services/core/src/model/checkpoint.js";
import { maskedCrossEntropy } from "../services/core/src/model/loss.js";
import { type BlasAddon, loadBlas } from "../services/core/src/model/native-blas.js";
import { setWasmMatMul, type WasmMatMul } from "../services/core/src/model/wasm-kernels.js";
import { scaledError, syntheticLmBatch } from "./helpers/model-checks.js";
import { requireTool, TOOLS } from "./helpers/require-tool.js";

const hasBlas = requireTool(TOOLS.blasAddon);

describe.skipIf(!hasBlas)("blas", () => {
  let blas: BlasAddon;
  /** Runs `f` with the given matmul kernels; leaves the BLAS ones in place. */
  const using = <T>(kind: WasmMatMul, f: () => T): T => {
    setWasmMatMul(kind, blas);
    try {
      return f();
    } finally {
      setWasmMatMul("blas", blas);
    }
  };

  beforeAll(async () => {
    await initBackend("wasm");
    // Loaded whatever RLAIF_BLAS says, so this file also runs when the other suites run without BLAS.
    blas = loadBlas({}).addon as BlasAddon;
    setWasmMatMul("blas", blas);
  });
  afterAll(() => setWasmMatMul(loadBlas().addon !== null ? "blas" : "wasm", blas));

  /** What a fresh process reports after starting the wasm backend with `env`. */
  const startedWith = (env: NodeJS.ProcessEnv): string => {
    const script =
      'import { describeBackend, initBackend } from "./services/core/src/model/backend.ts";' +
      'await initBackend("wasm"); console.log(describeBackend());';
    const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      env,
      encoding: "utf8",
    });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.trim().split("\n").at(-1) ?? "";
  };

  it("blas - the wasm backend starts with BLAS and reports it; RLAIF_BLAS=0 falls back and says why", () => {
    const { RLAIF_BLAS: _, ...env } = process.env;
    expect(startedWith(env)).toMatch(/^wasm\+blas \(OpenBLAS \S+ \S+, \d+ threads?\)$/);
    expect(startedWith({ ...env, RLAIF_BLAS: "0" })).toBe("wasm (no BLAS: RLAIF_BLAS=0)");
    expect(loadBlas({ RLAIF_BLAS: "off" })).toEqual({ addon: null, reason: "RLAIF_BLAS=off" });
    expect(activeBackend()).toBe("wasm+blas");
  });

  it("blas - BatchMatMul equals tfjs's stock wasm kernel for plain, transposed, batched and broadcast shapes", () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[16, 8], [8, 12], false, false], // plain
      [[8, 16], [8, 12], true, false], // transposeA
      [[16, 8], [12, 8], false, true], // transposeB
      [[8, 16], [12, 8], true, true], // both
      [[6, 16, 8], [6, 8, 12], false, false], // batched
      [[2, 3, 16, 8], [2, 3, 12, 8], false, true], // attention scores q kᵀ
      [[6, 8, 16], [6, 12, 8], true, true],
      [[6, 16, 8], [8, 12], false, false], // shared right operand (folded into one product)
      [[6, 8, 16], [8, 12], true, false], // shared right operand, transposed left
      [[16, 8], [5, 8, 12], false, false], // shared left operand
      [[1, 16, 8], [5, 8, 12], false, false],
      [[2, 3, 16, 8], [1, 8, 12], false, false], // rank-4 by rank-3, broadcast
      [[4, 1, 8], [4, 8, 3], false, false], // one query row per slice (decoding)
      [[3, 16, 0], [3, 0, 12], false, false], // empty inner dimension: zeros
    ];
    for (const [sa, sb, ta, tb] of cases) {
      const label = `${JSON.stringify(sa)}·${JSON.stringify(sb)} ${ta} ${tb}`;
      const [a, b] = [tf.randomNormal(sa, 0, 1, "float32", 1), tf.randomNormal(sb, 0, 1, "float32", 2)];
      const ours = tf.matMul(a, b, ta, tb);
      const stock = using("stock", () => tf.matMul(a, b, ta, tb));
      expect(ours.shape, label).toEqual(stock.shape);
      expect(scaledError(ours.dataSync(), stock.dataSync()), label).toBeLessThan(1e-5);
      tf.dispose([a, b, ours, stock]);
    }
  });

  it("blas - batch axes that broadcast on both sides follow numpy's rules", () => {
    // tfjs's own kernels cannot do [2,1]·[1,3] batches; the BLAS kernel computes each pair.
    const a = tf.randomNormal([2, 1, 5, 4], 0, 1, "float32", 3);
    const b = tf.randomNormal([1, 3, 4, 6], 0, 1, "float32", 4);
    const ours = tf.matMul(a, b);
    expect(ours.shape).toEqual([2, 3, 5, 6]);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 3; j++) {
        const slice = tf.tidy(() => {
          const x = tf.slice(a, [i, 0, 0, 0], [1, 1, 5, 4]).reshape([5, 4]);
          const y = tf.slice(b, [0, j, 0, 0], [1, 1, 4, 6]).reshape([4, 6]);
          return [
            tf.slice(ours, [i, j, 0, 0], [1, 1, 5, 6]).dataSync(),
            using("stock", () => tf.matMul(x, y)).dataSync(),
          ];
        });
        expect(scaledError(slice[0] as Float32Array, slice[1] as Float32Array)).toBeLessThan(1e-5);
      }
    }
    tf.dispose([a, b, ours]);
  });

  it("blas - planGemm merges batch axes and folds a shared right operand into one product", () => {
    expect(planGemm([2, 3], [2, 3], 4, 5, 6, false)).toMatchObject({ m: 4, count: 6, starts: [[0, 0, 0]] });
    expect(planGemm([2, 3], [], 4, 5, 6, false)).toMatchObject({ m: 24, count: 1, strides: [0, 0, 0] });
    expect(planGemm([2, 3], [], 4, 5, 6, true)).toMatchObject({ m: 4, count: 6, strides: [24, 0, 20] });
    const mixed = planGemm([2, 1], [1, 3], 4, 5, 6, false);
    expect(mixed).toMatchObject({ outShape: [2, 3, 4, 5], count: 3, strides: [0, 30, 20] });
    expect(mixed.starts).toEqual([
      [0, 0, 0],
      [24, 0, 60],
    ]);
    expect(() => planGemm([2], [3], 4, 5, 6, false)).toThrow();
  });

  it("blas - the addon rejects matrices outside their arrays instead of touching other memory", () => {
    const small = new Float32Array(4);
    expect(() => blas.sgemm(false, false, 2, 2, 2, 1, small, 1, 0, small, 0, 0, 0, small, 0, 0, 1)).toThrow(
      RangeError,
    );
    expect(() => blas.sgemm(false, false, 2, 2, 2, 1, small, 0, 4, small, 0, 0, 0, small, 0, 0, 2)).toThrow(
      /a is out of range/,
    );
    expect(() => blas.sgemm(false, false, 2, 2, 2, 1, small, 0, 0, small, 0, 0, 0, small, 0, 0, -1)).toThrow(
      RangeError,
    );
  });

  it("blas - _FusedMatMul with a bias equals the stock kernel; other activations are left to it", () => {
    const a = tf.randomNormal([7, 16], 0, 1, "float32", 5);
    const w = tf.randomNormal([16, 12], 0, 1, "float32", 6);
    const bias = tf.randomNormal([12], 0, 1, "float32", 7);
    for (const activation of ["linear", "relu"] as const) {
      for (const withBias of [true, false]) {
        const run = () => tf.fused.matMul({ a, b: w, activation, ...(withBias ? { bias } : {}) });
        const [ours, stock] = [run(), using("stock", run)];
        expect(scaledError(ours.dataSync(), stock.dataSync()), `${activation} ${withBias}`).toBeLessThan(
          1e-5,
        );
        tf.dispose([ours, stock]);
      }
    }
    tf.dispose([a, w, bias]);
  });

  it("blas - Sum over leading axes (column sums) equals the stock kernel; other reductions are left to it", () => {
    const x = tf.randomNormal([37, 5, 6], 0, 1, "float32", 8);
    const cases: [number | number[], boolean][] = [
      [0, false],
      [[0, 1], false],
      [[1, 0], true],
      [-3, true],
      [1, false], // not leading: stock
      [[0, 1, 2], false], // everything: stock
      [-1, true], // inner: stock
    ];
    for (const [axis, keepDims] of cases) {
      const run = () => tf.sum(x, axis, keepDims);
      const [ours, stock] = [run(), using("stock", run)];
      expect(ours.shape, `${axis} ${keepDims}`).toEqual(stock.shape);
      expect(scaledError(ours.dataSync(), stock.dataSync()), `${axis} ${keepDims}`).toBeLessThan(1e-6);
      tf.dispose([ours, stock]);
    }
    const ints = tf.tensor2d([1, 2, 3, 4], [2, 2], "int32");
    expect(Array.from(tf.sum(ints, 0).dataSync())).toEqual([4, 6]);
    expect(Array.from(tf.sum(tf.zeros([0, 3]), 0).dataSync())).toEqual([0, 0, 0]);
    tf.dispose([x, ints]);
  });

  it("blas - training steps of a Transformer and a GRU give the same loss and gradients with and without BLAS", () => {
    const configs = [
      { vocabSize: 258, contextLength: 16, dModel: 32, nLayers: 2, nHeads: 2 },
      { kind: "gru" as const, vocabSize: 258, contextLength: 16, dModel: 16, hidden: 24, nLayers: 1 },
    ];
    const [b, t] = [4, 12];
    const { x, y, mask } = syntheticLmBatch(b, t, 3);
    for (const config of configs) {
      const model = createModel(config, 11);
      const kind = model.kind;
      const step = () =>
        tf.variableGrads(() => maskedCrossEntropy(model.forward(x), y, mask), model.variables());
      const ours = step();
      const wasm = using("wasm", step);
      expect(ours.value.dataSync()[0], kind).toBeCloseTo(wasm.value.dataSync()[0] as number, 5);
      for (const name of Object.keys(wasm.grads)) {
        const [g, ref] = [ours.grads[name] as tf.Tensor, wasm.grads[name] as tf.Tensor];
        expect(scaledError(g.dataSync(), ref.dataSync()), `${kind} ${name}`).toBeLessThan(1e-5);
      }
      const infer = () => model.forward(x, undefined, { ops: "inference" });
      const [logits, logitsWasm] = [infer(), using("wasm", infer)];
      expect(scaledError(logits.dataSync(), logitsWasm.dataSync()), `${kind} logits`).toBeLessThan(1e-5);
      tf.dispose([ours.value, wasm.value, ...Object.values(ours.grads), ...Object.values(wasm.grads)]);
      tf.dispose([logits, logitsWasm]);
      model.dispose();
    }
    tf.dispose([x, y, mask]);
  });
});
