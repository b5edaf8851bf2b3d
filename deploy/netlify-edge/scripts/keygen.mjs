// Makes the edge function's ES256 key pair.
//
//   node scripts/keygen.mjs --kid netlify-edge-2026-01 --out-dir keys
//
// writes, in --out-dir (created if missing):
//   <kid>.pem        the private key, PKCS8 PEM (mode 0600): for EDGE_SIGNING_KEY
//   <kid>.jwk.json   the same private key as a JWK with its kid (mode 0600): the alternative
//   <kid>.jwks.json  the public key as a JWK set: for authz's jwks_file
// An existing file is never overwritten.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { exportJWK, exportPKCS8, generateKeyPair } from "jose";

const { values: args } = parseArgs({
  options: { kid: { type: "string" }, "out-dir": { type: "string", default: "." } },
});
if (!args.kid || !/^[A-Za-z0-9._-]{1,64}$/.test(args.kid)) {
  console.error("usage: keygen.mjs --kid NAME [--out-dir DIR]   (NAME: letters, digits, . _ -)");
  process.exit(2);
}
const kid = args.kid;
const dir = args["out-dir"];
mkdirSync(dir, { recursive: true });

const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: "ES256", use: "sig" };
const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };

function write(name, text, mode) {
  const path = join(dir, name);
  writeFileSync(path, text, { mode, flag: "wx" });
  return path;
}

const written = [
  write(`${kid}.pem`, await exportPKCS8(privateKey), 0o600),
  write(`${kid}.jwk.json`, JSON.stringify(privateJwk) + "\n", 0o600),
  write(`${kid}.jwks.json`, JSON.stringify({ keys: [publicJwk] }, null, 2) + "\n", 0o644),
];
for (const path of written) console.log(path);
