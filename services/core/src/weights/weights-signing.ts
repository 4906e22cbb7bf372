/**
 * Ed25519 signatures of weights manifests (Node's `crypto`, no dependency): the Optimizer signs
 * each manifest it publishes with its private key, replicas check it against the public key they
 * were given. Without this, anyone who can write to NATS could put a blob and a manifest with its
 * SHA-256 and have every replica serve it; the hashes only bind a blob to a manifest, the
 * signature binds the manifest to the Optimizer.
 *
 * What is signed (also documented on `WeightsManifest.signature` in types.proto): the bytes of
 * {@link SIGNING_DOMAIN} and one NUL, then the protobuf-es binary encoding of the manifest with
 * `signature` empty. The domain prefix keeps a signature over a manifest from being valid for any
 * other message signed with the same key.
 */
import { createPrivateKey, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { readFile } from "node:fs/promises";
import { clone, toBinary } from "@bufbuild/protobuf";
import { type WeightsManifest, WeightsManifestSchema } from "../../gen/rlaif/common/v1/types_pb.js";
import { ConfigError, WeightsError } from "../errors.js";
import { sha256Hex } from "../hash.js";

/** Prefix of the signed bytes: names what is signed and the layout's version. */
export const SIGNING_DOMAIN = "rlaif.weights-manifest.v1";

/** A public key a replica trusts, and its id (what manifests signed by it carry in `keyId`). */
export interface WeightsVerifier {
  readonly publicKey: KeyObject;
  readonly keyId: string;
}

/** The Optimizer's key pair: signs manifests, and recognises its own signature on the pointer. */
export interface WeightsSigner extends WeightsVerifier {
  readonly privateKey: KeyObject;
}

/** Lower-case hex SHA-256 of a public key's DER (SubjectPublicKeyInfo): short, stable, loggable. */
export function keyIdOf(publicKey: KeyObject): string {
  return sha256Hex(publicKey.export({ type: "spki", format: "der" }));
}

/** A signer of an Ed25519 private key (a ConfigError naming `field` for any other key). */
export function signerOf(privateKey: KeyObject, field = "weightsSigningKey"): WeightsSigner {
  if (privateKey.type !== "private" || privateKey.asymmetricKeyType !== "ed25519") {
    throw new ConfigError(`${field}: expected an Ed25519 private key, got a ${describe(privateKey)}`);
  }
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) };
}

/** A verifier of an Ed25519 public key (a ConfigError naming `field` for any other key). */
export function verifierOf(publicKey: KeyObject, field = "weightsVerifyKey"): WeightsVerifier {
  if (publicKey.type !== "public" || publicKey.asymmetricKeyType !== "ed25519") {
    throw new ConfigError(`${field}: expected an Ed25519 public key, got a ${describe(publicKey)}`);
  }
  return { publicKey, keyId: keyIdOf(publicKey) };
}

function describe(key: KeyObject): string {
  return `${key.type} ${key.asymmetricKeyType ?? ""} key`.replace(/ +/g, " ");
}

async function readPem(path: string, field: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** `pem` parsed by `parse`; a ConfigError naming the setting and the file when it is not such a key. */
function parseKey(
  parse: (pem: string) => KeyObject,
  pem: string,
  kind: "private" | "public",
  field: string,
  path: string,
): KeyObject {
  try {
    return parse(pem);
  } catch (err) {
    throw new ConfigError(`${field}: ${path} is not a PEM ${kind} key: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * The Optimizer's signer from a PEM private key file (`services.weightsSigningKey`); a
 * ConfigError naming the setting and the file when it is missing or not an Ed25519 private key.
 */
export async function loadSigningKey(path: string, field = "weightsSigningKey"): Promise<WeightsSigner> {
  const key = parseKey(createPrivateKey, await readPem(path, field), "private", field, path);
  return signerOf(key, `${field} (${path})`);
}

/**
 * A replica's verifier from a PEM public key file (`services.weightsVerifyKey`). A private key
 * file is refused too: a replica must never hold the key that signs.
 */
export async function loadVerifyKey(path: string, field = "weightsVerifyKey"): Promise<WeightsVerifier> {
  const pem = await readPem(path, field);
  if (pem.includes("PRIVATE KEY")) {
    throw new ConfigError(`${field}: ${path} holds a private key; give the replica the public key only`);
  }
  const key = parseKey(createPublicKey, pem, "public", field, path);
  return verifierOf(key, `${field} (${path})`);
}

/** The exact bytes a manifest's signature covers (see the module comment). */
export function signedBytes(manifest: WeightsManifest): Uint8Array {
  const unsigned = clone(WeightsManifestSchema, manifest);
  unsigned.signature = new Uint8Array(0);
  const body = toBinary(WeightsManifestSchema, unsigned);
  const domain = new TextEncoder().encode(`${SIGNING_DOMAIN}\0`);
  const out = new Uint8Array(domain.length + body.length);
  out.set(domain);
  out.set(body, domain.length);
  return out;
}

/** `manifest` with `keyId` set to the signer's and `signature` over the rest (a copy). */
export function signManifest(manifest: WeightsManifest, signer: WeightsSigner): WeightsManifest {
  const signed = clone(WeightsManifestSchema, manifest);
  signed.keyId = signer.keyId;
  signed.signature = new Uint8Array(sign(null, signedBytes(signed), signer.privateKey));
  return signed;
}

/**
 * Why `manifest` is not signed by `verifier`'s key, or null when it is: unsigned, signed by
 * another key (named by its id), or a signature that does not verify (the manifest was altered
 * after signing, or forged).
 */
export function signatureProblem(manifest: WeightsManifest, verifier: WeightsVerifier): string | null {
  if (manifest.signature.length === 0) return "it is unsigned";
  if (manifest.keyId !== verifier.keyId) {
    return `it is signed by key ${manifest.keyId || "(no key id)"}, not the trusted key ${verifier.keyId}`;
  }
  let ok = false;
  try {
    ok = verify(null, signedBytes(manifest), verifier.publicKey, manifest.signature);
  } catch {
    ok = false;
  }
  return ok ? null : `its signature does not verify with key ${verifier.keyId}`;
}

/** Throws WeightsError (naming the version and why) unless `manifest` is signed by `verifier`. */
export function checkManifestSignature(manifest: WeightsManifest, verifier: WeightsVerifier): void {
  const problem = signatureProblem(manifest, verifier);
  if (problem) throw new WeightsError(`refusing weights v${manifest.version}: ${problem}`);
}
