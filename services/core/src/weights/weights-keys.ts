/**
 * Key files for signed weights: a fresh Ed25519 pair written with owner-only modes, and the
 * pair a cluster started by this process uses (`rlaif train`, `rlaif up`): the configured keys,
 * or an ephemeral pair in a temp directory, so every run is signed and verified by default.
 */
import { generateKeyPairSync } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../errors.js";
import { loadSigningKey, loadVerifyKey } from "./weights-signing.js";

/** File names {@link writeWeightsKeyPair} uses. */
export const SIGNING_KEY_FILE = "weights-signing.pem";
export const VERIFY_KEY_FILE = "weights-verify.pem";

/** A fresh Ed25519 key pair as PEM text (PKCS#8 private, SPKI public). */
export function generateWeightsKeyPair(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    publicPem: publicKey.export({ type: "spki", format: "pem" }) as string,
  };
}

/** Paths of the two key files (the Optimizer's private key, the replicas' public key). */
export interface WeightsKeyFiles {
  signingKey: string;
  verifyKey: string;
}

/**
 * Creates `path` with `text`, readable by its owner only. Never replaces a file: overwriting a
 * key would silently cut off every replica that trusts the old one (a ConfigError says so).
 */
async function writePrivate(path: string, text: string): Promise<void> {
  try {
    await writeFile(path, text, { mode: 0o600, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") {
      throw new ConfigError(
        `${path} exists: a key file is never overwritten (remove it, or choose another directory)`,
      );
    }
    throw err;
  }
  // The umask may have taken bits off; the mode must be exactly 0600.
  await chmod(path, 0o600);
}

/**
 * Writes a fresh key pair into `dir` (created if needed, mode 0700) as weights-signing.pem and
 * weights-verify.pem, both mode 0600: the private key must not be readable by other users.
 * Refuses (ConfigError) when either file exists, before writing anything.
 */
export async function writeWeightsKeyPair(dir: string): Promise<WeightsKeyFiles> {
  const files = { signingKey: join(dir, SIGNING_KEY_FILE), verifyKey: join(dir, VERIFY_KEY_FILE) };
  for (const f of [files.signingKey, files.verifyKey]) {
    if (existsSync(f)) {
      throw new ConfigError(
        `${f} exists: a key file is never overwritten (remove it, or choose another directory)`,
      );
    }
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const { privatePem, publicPem } = generateWeightsKeyPair();
  await writePrivate(files.signingKey, privatePem);
  await writePrivate(files.verifyKey, publicPem);
  return files;
}

/** Key files for one cluster, and how to remove the ones made for it. */
export interface ClusterWeightsKeys extends WeightsKeyFiles {
  /** True when the pair was generated for this cluster (no keys configured). */
  ephemeral: boolean;
  /** Removes the temp directory of generated files (no-op for configured ones). */
  dispose(): Promise<void>;
}

/**
 * The keys a cluster started by this process signs and verifies with (`services.weightsSigningKey`
 * and `services.weightsVerifyKey`): both configured, they must be one pair; only the signing key,
 * the replicas get its public half; neither, a pair is generated in a temp directory (mode 0700,
 * files 0600) that `dispose` removes. Only a verify key is a ConfigError: this cluster's
 * Optimizer could not sign for it.
 */
export async function clusterWeightsKeys(keys: {
  weightsSigningKey: string;
  weightsVerifyKey: string;
}): Promise<ClusterWeightsKeys> {
  const { weightsSigningKey: signing, weightsVerifyKey: verify } = keys;
  if (!signing && verify) {
    throw new ConfigError(
      "weightsVerifyKey is set without weightsSigningKey: this cluster's Optimizer could not sign for it (set both, or neither for a key pair per run)",
    );
  }
  if (signing && verify) {
    const [signer, verifier] = await Promise.all([loadSigningKey(signing), loadVerifyKey(verify)]);
    if (signer.keyId !== verifier.keyId) {
      throw new ConfigError(
        `weightsVerifyKey (${verify}, key ${verifier.keyId}) is not the public half of weightsSigningKey (${signing}, key ${signer.keyId})`,
      );
    }
    return { signingKey: signing, verifyKey: verify, ephemeral: false, dispose: async () => {} };
  }
  const dir = await mkdtemp(join(tmpdir(), "rlaif-weights-keys-"));
  await chmod(dir, 0o700);
  const dispose = () => rm(dir, { recursive: true, force: true });
  try {
    if (!signing) return { ...(await writeWeightsKeyPair(dir)), ephemeral: true, dispose };
    const signer = await loadSigningKey(signing);
    const verifyKey = join(dir, VERIFY_KEY_FILE);
    await writePrivate(verifyKey, signer.publicKey.export({ type: "spki", format: "pem" }) as string);
    return { signingKey: signing, verifyKey, ephemeral: false, dispose };
  } catch (err) {
    await dispose();
    throw err;
  }
}
