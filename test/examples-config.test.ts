/**
 * The config files under examples/ that the README's commands pass with --config still load and
 * mean what the README says: the byte-level policies' tuned lr and β, the rest at the defaults.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../services/core/src/config/load-config.js";
import { defaultConfig } from "../services/core/src/config/settings.js";

describe("examples config", () => {
  it("examples config - byte-policies.yaml sets lr 1e-3 and β 0.045 and leaves every other setting at its default", () => {
    const c = loadConfig(join(import.meta.dirname, "..", "examples", "byte-policies.yaml"), {});
    const d = defaultConfig();
    expect([c.run.learningRate, c.run.klCoef]).toEqual([0.001, 0.045]);
    expect([d.run.learningRate, d.run.klCoef]).toEqual([0.00025, 0.1]);
    expect({ ...c.run, learningRate: d.run.learningRate, klCoef: d.run.klCoef }).toEqual(d.run);
    expect(c.services).toEqual(d.services);
  });
});
