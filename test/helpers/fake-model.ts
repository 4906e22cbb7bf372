/**
 * A Policy model that is only its name (the blob's text) and whether it was disposed, and a
 * loader of such models: for the weights tests, which check which version a replica serves, not
 * what it computes, so no tensors are involved.
 */
import { byteTokenizer } from "../../services/core/src/model/tokenizer.js";
import type { LoadedModel, ModelLoader } from "../../services/policy/loaded-model.js";

/** A model that is only its name and whether it was disposed. */
export class FakeModel implements LoadedModel {
  readonly kind = "fake";
  readonly backend = "none";
  readonly vocabSize = 258;
  readonly contextLength = 48;
  readonly parameterCount = 1;
  readonly configJson = "{}";
  readonly tokenizer = byteTokenizer;
  disposed = false;
  constructor(readonly name: string) {}
  async generate(): Promise<never> {
    throw new Error("not used");
  }
  logprobs(): never {
    throw new Error("not used");
  }
  dispose(): void {
    this.disposed = true;
  }
}

/** A loader whose models are named by their blob's text; `loaded` lists them in load order. */
export function fakeLoader(): ModelLoader & { loaded: FakeModel[] } {
  const loaded: FakeModel[] = [];
  return {
    loaded,
    fromFile: (path) => new FakeModel(`file:${path}`),
    fromBlob: (blob) => {
      const m = new FakeModel(new TextDecoder().decode(blob));
      loaded.push(m);
      return m;
    },
  };
}

/** The name of a fake model. */
export const nameOf = (m: LoadedModel) => (m as FakeModel).name;

/** Resolves once `ok()` holds; throws naming `what` after `timeoutMs`. */
export async function poll(what: string, ok: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
