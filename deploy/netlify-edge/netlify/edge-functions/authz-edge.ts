/**
 * authz at the edge: a Netlify Edge Function in front of an origin where
 * Envoy asks authz.
 *
 * For every request under /api/ it verifies the user's OIDC access token
 * (`authorization: Bearer ...`) against the identity provider's JWKS, then
 * forwards the request to the origin WITHOUT that token, carrying instead a
 * short-lived ES256 assertion in `x-edge-assertion` that authz trusts as one
 * of its issuers. A request without a valid token is answered here with 401
 * and never reaches the origin. A client-sent `x-edge-assertion` is never
 * trusted and never forwarded.
 *
 * Configuration (Netlify environment variables, scope "Functions"; under Node
 * the process environment):
 *
 *   IDP_ISSUER            the user tokens' `iss`, exactly
 *   IDP_JWKS_URL          the IdP's key set (the `jwks_uri` of its discovery document)
 *   IDP_AUDIENCES         accepted `aud` values, comma-separated
 *   IDP_ALGORITHMS        allow-list, comma-separated (default RS256)
 *   IDP_CLOCK_TOLERANCE   seconds of clock skew allowed (default 30)
 *   IDP_ROLES_CLAIM       dotted path of the roles claim (default roles)
 *   IDP_SCOPES_CLAIM      dotted path of the scopes claim (default scope)
 *   IDP_TOKEN_TYPE        optional: required `typ` header of user tokens (e.g. at+jwt)
 *   EDGE_ISSUER           the assertion's `iss`: the `issuer` of authz's entry for this function
 *   EDGE_AUDIENCE         the assertion's `aud`: one of that entry's `audiences`
 *   EDGE_SIGNING_KEY      the ES256 private key: PKCS8 PEM or a private JWK (JSON). A secret.
 *   EDGE_KEY_ID           the `kid` (optional when the JWK has one)
 *   EDGE_ASSERTION_TTL    assertion lifetime in seconds (default 60, at most 300)
 *   EDGE_FORWARD_CLAIMS   optional: more user-token claims to copy, comma-separated (e.g. tenant,email)
 */
import type { Config, Context } from "@netlify/edge-functions";
import { SignJWT, createRemoteJWKSet, errors, importJWK, importPKCS8, jwtVerify } from "jose";
import type { CryptoKey, JWK, JWTPayload, JWTVerifyGetKey } from "jose";

const ASSERTION_HEADER = "x-edge-assertion";
// Explicit typing (RFC 8725 3.11): an assertion cannot pass for another kind
// of JWT, nor another JWT for an assertion (authz: `token_types`).
const ASSERTION_TYPE = "edge-assertion+jwt";
const ASSERTION_ALG = "ES256";
// Asymmetric algorithms only: an HMAC secret shared with the IdP, or "none",
// is never a way to verify a user here.
const USER_TOKEN_ALGORITHMS = new Set([
  "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519",
]);
// Claims the assertion sets itself; EDGE_FORWARD_CLAIMS cannot override them.
const ASSERTION_CLAIMS = new Set(["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "roles", "scope"]);
// jose errors that mean "this token is not valid", as opposed to "the key set
// could not be had".
const TOKEN_KEY_ERRORS = new Set(["ERR_JWKS_NO_MATCHING_KEY", "ERR_JWKS_MULTIPLE_MATCHING_KEYS", "ERR_JOSE_NOT_SUPPORTED"]);

interface Settings {
  idpIssuer: string;
  idpJwksUrl: URL;
  idpAudiences: string[];
  idpAlgorithms: string[];
  clockTolerance: number;
  rolesClaim: string;
  scopesClaim: string;
  tokenType: string | undefined;
  edgeIssuer: string;
  edgeAudience: string;
  signingKey: string;
  keyId: string | undefined;
  ttl: number;
  forwardClaims: string[];
}

interface Signer {
  key: CryptoKey;
  kid: string;
}

/** A deployment mistake: the function answers 500 and forwards nothing. The
 * message names the variable, never its value. */
class ConfigError extends Error {}

/** The IdP's key set could not be fetched or used: 503, forwards nothing. */
class KeySetUnavailable extends Error {}

/** A variable from Netlify's environment, or Node's when run outside Netlify. */
function env(name: string): string | undefined {
  const value = typeof Netlify !== "undefined"
    ? Netlify.env.get(name)
    : (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

function required(name: string): string {
  const value = env(name);
  if (value === undefined) throw new ConfigError(`${name} is not set`);
  return value;
}

function list(name: string, fallback: string[] = []): string[] {
  const value = env(name);
  return value === undefined ? fallback : value.split(",").map((item) => item.trim()).filter(Boolean);
}

function seconds(name: string, fallback: number, max: number): number {
  const value = env(name);
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0 || parsed > max) {
    throw new ConfigError(`${name} must be a whole number of seconds from 0 to ${max}`);
  }
  return parsed;
}

function loadSettings(): Settings {
  let idpJwksUrl: URL;
  try {
    idpJwksUrl = new URL(required("IDP_JWKS_URL"));
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError("IDP_JWKS_URL is not a URL");
  }
  const idpAudiences = list("IDP_AUDIENCES");
  if (idpAudiences.length === 0) throw new ConfigError("IDP_AUDIENCES is not set");
  const idpAlgorithms = list("IDP_ALGORITHMS", ["RS256"]);
  const refused = idpAlgorithms.filter((alg) => !USER_TOKEN_ALGORITHMS.has(alg));
  if (idpAlgorithms.length === 0 || refused.length > 0) {
    throw new ConfigError(`IDP_ALGORITHMS may list only asymmetric algorithms (${[...USER_TOKEN_ALGORITHMS].join(", ")})`);
  }
  const forwardClaims = list("EDGE_FORWARD_CLAIMS");
  if (forwardClaims.some((claim) => ASSERTION_CLAIMS.has(claim))) {
    throw new ConfigError(`EDGE_FORWARD_CLAIMS cannot name ${[...ASSERTION_CLAIMS].join(", ")}`);
  }
  const ttl = seconds("EDGE_ASSERTION_TTL", 60, 300);
  if (ttl < 5) throw new ConfigError("EDGE_ASSERTION_TTL must be at least 5 seconds");
  return {
    idpIssuer: required("IDP_ISSUER"),
    idpJwksUrl,
    idpAudiences,
    idpAlgorithms,
    clockTolerance: seconds("IDP_CLOCK_TOLERANCE", 30, 300),
    rolesClaim: env("IDP_ROLES_CLAIM") ?? "roles",
    scopesClaim: env("IDP_SCOPES_CLAIM") ?? "scope",
    tokenType: env("IDP_TOKEN_TYPE"),
    edgeIssuer: required("EDGE_ISSUER"),
    edgeAudience: required("EDGE_AUDIENCE"),
    signingKey: required("EDGE_SIGNING_KEY"),
    keyId: env("EDGE_KEY_ID"),
    ttl,
    forwardClaims,
  };
}

// One key set per URL and one imported signing key per value, shared by the
// requests an isolate serves: jose caches the IdP's keys (10 min, refetching
// an unknown kid at most every 30 s).
const keySets = new Map<string, JWTVerifyGetKey>();
let signer: { source: string; kid: string | undefined; value: Promise<Signer> } | undefined;

function keySet(url: URL): JWTVerifyGetKey {
  let found = keySets.get(url.href);
  if (found === undefined) {
    const remote = createRemoteJWKSet(url, { timeoutDuration: 2000, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
    found = async (header, token) => {
      try {
        return await remote(header, token);
      } catch (error) {
        // Rethrown as is: jose retries the candidates of a multiple match.
        if (error instanceof errors.JOSEError && TOKEN_KEY_ERRORS.has(error.code)) throw error;
        throw new KeySetUnavailable("the identity provider's key set could not be fetched or used", { cause: error });
      }
    };
    keySets.set(url.href, found);
  }
  return found;
}

async function importSigner(source: string, keyId: string | undefined): Promise<Signer> {
  let key: CryptoKey;
  let kid = keyId;
  try {
    if (source.startsWith("{")) {
      const jwk = JSON.parse(source) as JWK;
      kid ??= jwk.kid;
      key = await importJWK({ ...jwk, alg: ASSERTION_ALG }, ASSERTION_ALG) as CryptoKey;
    } else {
      // A PEM pasted into a single-line variable often has its newlines as "\n".
      key = await importPKCS8(source.includes("\n") ? source : source.replaceAll("\\n", "\n"), ASSERTION_ALG);
    }
  } catch {
    throw new ConfigError("EDGE_SIGNING_KEY is not an ES256 (P-256) private key as PKCS8 PEM or JWK");
  }
  if (key.type !== "private") throw new ConfigError("EDGE_SIGNING_KEY holds a public key, not the private key");
  if (!kid) throw new ConfigError("EDGE_KEY_ID is not set and the EDGE_SIGNING_KEY JWK has no kid");
  return { key, kid };
}

function signingKey(settings: Settings): Promise<Signer> {
  if (signer === undefined || signer.source !== settings.signingKey || signer.kid !== settings.keyId) {
    const value = importSigner(settings.signingKey, settings.keyId);
    const entry = { source: settings.signingKey, kid: settings.keyId, value };
    signer = entry;
    // A failed import is not kept: the next request tries again.
    value.catch(() => {
      if (signer === entry) signer = undefined;
    });
  }
  return signer.value;
}

/** What follows "Bearer" (possibly not a token at all), or null when the
 * request has no bearer credential. */
function bearerToken(request: Request): string | null {
  const header = request.headers.get("authorization");
  if (header === null) return null;
  const match = /^bearer(?:\s+(.*))?$/is.exec(header.trim());
  return match ? match[1] ?? "" : null;
}

/** The value at a dotted claim path; a key containing dots (Auth0's
 * namespaced claims) is tried whole first. */
function claimAt(payload: JWTPayload, path: string): unknown {
  if (path in payload) return payload[path];
  let node: unknown = payload;
  for (const part of path.split(".")) {
    if (node === null || typeof node !== "object" || !(part in node)) return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  return node;
}

function strings(value: unknown): string[] {
  if (typeof value === "string") return value.split(/\s+/).filter(Boolean);
  if (Array.isArray(value)) return value.filter((item): item is string => typeof item === "string");
  return [];
}

function deny(status: 401 | 500 | 503, reason: string, context: Context, tokenPresented = false): Response {
  const error = status === 401 ? "unauthenticated" : status === 503 ? "unavailable" : "internal";
  const headers = new Headers({ "content-type": "application/json", "cache-control": "no-store" });
  if (status === 401) {
    headers.set("www-authenticate", tokenPresented ? 'Bearer error="invalid_token"' : "Bearer");
  }
  const body = JSON.stringify({ error, reason, request_id: context.requestId || null });
  return new Response(body, { status, headers });
}

async function verifyUser(token: string, settings: Settings): Promise<JWTPayload> {
  const { payload } = await jwtVerify(token, keySet(settings.idpJwksUrl), {
    issuer: settings.idpIssuer,
    audience: settings.idpAudiences,
    algorithms: settings.idpAlgorithms,
    clockTolerance: settings.clockTolerance,
    requiredClaims: ["exp", "sub"],
    ...(settings.tokenType === undefined ? {} : { typ: settings.tokenType }),
  });
  if (typeof payload.sub !== "string" || payload.sub === "") {
    throw new errors.JWTClaimValidationFailed('"sub" claim must be a non-empty string', payload, "sub", "invalid");
  }
  return payload;
}

async function assertion(user: JWTPayload, settings: Settings, key: Signer): Promise<string> {
  const claims: JWTPayload = {};
  for (const name of settings.forwardClaims) {
    if (user[name] !== undefined) claims[name] = user[name];
  }
  claims.roles = strings(claimAt(user, settings.rolesClaim));
  claims.scope = strings(claimAt(user, settings.scopesClaim)).join(" ");
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: ASSERTION_ALG, kid: key.kid, typ: ASSERTION_TYPE })
    .setIssuer(settings.edgeIssuer)
    .setAudience(settings.edgeAudience)
    .setSubject(user.sub as string)
    .setIssuedAt(now)
    .setExpirationTime(now + settings.ttl)
    .setJti(crypto.randomUUID())
    .sign(key.key);
}

export default async (request: Request, context: Context): Promise<Response> => {
  let settings: Settings;
  let key: Signer;
  try {
    settings = loadSettings();
    key = await signingKey(settings);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`authz-edge: misconfigured: ${error.message}`);
    return deny(500, "internal_error", context);
  }

  const token = bearerToken(request);
  if (token === null) return deny(401, "missing_credential", context);
  let user: JWTPayload;
  try {
    user = await verifyUser(token, settings);
  } catch (error) {
    if (error instanceof KeySetUnavailable) {
      console.error(`authz-edge: ${error.message}: ${String(error.cause)}`);
      return deny(503, "jwks_unavailable", context);
    }
    if (error instanceof errors.JWTExpired) return deny(401, "expired_token", context, true);
    // Whatever else went wrong with a presented token, it is not forwarded.
    const code = error instanceof errors.JOSEError ? error.code : "ERR_MALFORMED";
    console.log(`authz-edge: rejected token: ${code}`);
    return deny(401, "invalid_token", context, true);
  }

  const headers = new Headers(request.headers);
  // The user's token stops here: the origin gets the assertion instead. A
  // client-sent assertion is dropped whatever it holds.
  headers.delete("authorization");
  headers.delete(ASSERTION_HEADER);
  headers.set(ASSERTION_HEADER, await assertion(user, settings, key));
  return context.next(new Request(request, { headers }));
};

export const config: Config = {
  path: "/api/*",
  // "fail", never "bypass": if this function throws, the request must not go
  // on to the origin unauthenticated.
  onError: "fail",
};
