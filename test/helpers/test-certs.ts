/**
 * Throwaway certificates for the TLS tests, made with the `openssl` CLI in a temp dir: a CA, a
 * server certificate for localhost and 127.0.0.1 (usable as a client certificate too, as one
 * service's certificate is), a client certificate from the same CA, and a second CA with a client
 * certificate of its own (one the first CA's servers must refuse). EC P-256 keys: quick to make.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** PEM file paths of the test certificates. */
export interface TestCerts {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA the servers do not trust, and a client certificate it signed. */
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
}

const CONFIG = `[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
`;

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Write the certificates into a new temp dir; throws when openssl fails. */
export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "rlaif-certs-"));
  const cnf = join(dir, "openssl.cnf");
  writeFileSync(cnf, CONFIG);
  const f = (name: string) => join(dir, name);
  const run = (args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  const ca = (name: string) =>
    run([
      "req",
      "-x509",
      "-config",
      cnf,
      "-extensions",
      "ca",
      ...EC,
      "-keyout",
      f(`${name}.key`),
      "-out",
      f(`${name}.crt`),
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
    ]);
  let serial = 1;
  const leaf = (name: string, caName: string, section: "server" | "client", cn: string) => {
    run([
      "req",
      "-new",
      "-config",
      cnf,
      ...EC,
      "-keyout",
      f(`${name}.key`),
      "-out",
      f(`${name}.csr`),
      "-subj",
      `/CN=${cn}`,
    ]);
    run([
      "x509",
      "-req",
      "-in",
      f(`${name}.csr`),
      "-CA",
      f(`${caName}.crt`),
      "-CAkey",
      f(`${caName}.key`),
      "-set_serial",
      String(serial++),
      "-days",
      "2",
      "-extfile",
      cnf,
      "-extensions",
      section,
      "-out",
      f(`${name}.crt`),
    ]);
  };
  ca("ca");
  ca("other-ca");
  leaf("server", "ca", "server", "localhost");
  leaf("client", "ca", "client", "rlaif-client");
  leaf("other-client", "other-ca", "client", "rlaif-intruder");
  return {
    dir,
    ca: f("ca.crt"),
    serverCert: f("server.crt"),
    serverKey: f("server.key"),
    clientCert: f("client.crt"),
    clientKey: f("client.key"),
    otherCa: f("other-ca.crt"),
    otherClientCert: f("other-client.crt"),
    otherClientKey: f("other-client.key"),
  };
}
