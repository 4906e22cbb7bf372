/**
 * `rlaif keygen --out <dir>`: a fresh Ed25519 key pair for signed weights, so a deployment can
 * give the Optimizer its private key (`--weights-signing-key`) and every Policy replica the
 * public one (`--weights-verify-key`) without an OpenSSL recipe. Never overwrites a key file.
 */
import { ConfigError } from "../../core/src/errors.js";
import { writeWeightsKeyPair } from "../../core/src/weights/weights-keys.js";
import { loadVerifyKey } from "../../core/src/weights/weights-signing.js";
import type { CommandRun } from "../args.js";

/** What `rlaif keygen` does (its command line is declared in specs.ts). */
export const keygenCommand: CommandRun = {
  async run({ flags }) {
    const out = flags.out;
    if (typeof out !== "string" || !out) {
      throw new ConfigError("--out <dir> is required (the directory to write the key files into)");
    }
    const files = await writeWeightsKeyPair(out);
    const { keyId } = await loadVerifyKey(files.verifyKey);
    process.stdout.write(
      `rlaif keygen: key ${keyId}\n  ${files.signingKey}  (private: --weights-signing-key of the Optimizer only)\n  ${files.verifyKey}  (public: --weights-verify-key of every Policy replica)\n`,
    );
  },
};
