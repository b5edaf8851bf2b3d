// Runs the compiled edge function under Node the way Netlify runs it: one
// Request in, one Response out, with `context.next(request)` sending the
// request on to the origin (on Netlify: the /api/* proxy redirect; here: an
// origin URL, such as Envoy in front of authz).
//
//   node test/harness.mjs --function build/netlify/edge-functions/authz-edge.js \
//        --origin http://127.0.0.1:8080 [--port 0]
//
// Prints "harness listening on http://127.0.0.1:PORT" once it accepts
// connections, and "forward METHOD PATH" each time the function forwards.
// The function reads its configuration from this process's environment.
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";

const { values: args } = parseArgs({
  options: {
    function: { type: "string" },
    origin: { type: "string" },
    port: { type: "string", default: "0" },
  },
});
if (!args.function || !args.origin) {
  console.error("usage: harness.mjs --function FILE.js --origin URL [--port N]");
  process.exit(2);
}
const edge = await import(pathToFileURL(resolve(args.function)).href);
const handler = edge.default;
const origin = new URL(args.origin);

// Connection-level headers: neither fetch nor a proxy passes them on.
const HOP_BY_HOP = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host",
  "content-length",
]);

function bodyless(method) {
  return method === "GET" || method === "HEAD";
}

async function readBody(incoming) {
  const chunks = [];
  for await (const chunk of incoming) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function toRequest(incoming) {
  const headers = new Headers();
  for (let i = 0; i < incoming.rawHeaders.length; i += 2) {
    const name = incoming.rawHeaders[i].toLowerCase();
    if (!HOP_BY_HOP.has(name) || name === "host") headers.append(name, incoming.rawHeaders[i + 1]);
  }
  const url = new URL(incoming.url, `http://${incoming.headers.host ?? "localhost"}`);
  const init = { method: incoming.method, headers };
  if (!bodyless(incoming.method)) init.body = await readBody(incoming);
  return new Request(url, init);
}

function contextFor(request) {
  return {
    requestId: randomUUID(),
    ip: "127.0.0.1",
    // Netlify passes the (possibly new) request down the chain; the proxy
    // redirect sends it to the origin under the same path.
    async next(forwarded = request) {
      if (!(forwarded instanceof Request)) forwarded = request;
      const source = new URL(forwarded.url);
      const target = new URL(source.pathname + source.search, origin);
      const headers = new Headers();
      for (const [name, value] of forwarded.headers) {
        if (!HOP_BY_HOP.has(name)) headers.append(name, value);
      }
      console.log(`forward ${forwarded.method} ${source.pathname}${source.search}`);
      const init = { method: forwarded.method, headers, redirect: "manual" };
      if (!bodyless(forwarded.method)) init.body = await forwarded.arrayBuffer();
      return fetch(target, init);
    },
  };
}

async function writeResponse(outgoing, response, method) {
  const headers = [];
  for (const [name, value] of response.headers) {
    // fetch has already decoded the body and may have re-chunked it.
    if (!HOP_BY_HOP.has(name) && name !== "content-encoding" && name !== "set-cookie") headers.push([name, value]);
  }
  for (const cookie of response.headers.getSetCookie()) headers.push(["set-cookie", cookie]);
  const body = method === "HEAD" ? Buffer.alloc(0) : Buffer.from(await response.arrayBuffer());
  outgoing.writeHead(response.status, headers.flat());
  outgoing.end(body);
}

const server = createServer(async (incoming, outgoing) => {
  try {
    const request = await toRequest(incoming);
    const response = await handler(request, contextFor(request));
    if (!(response instanceof Response)) throw new Error("the edge function did not return a Response");
    await writeResponse(outgoing, response, incoming.method);
  } catch (error) {
    // Netlify's onError "fail": an error page, nothing forwarded afterwards.
    console.error(`edge function error: ${error?.stack ?? error}`);
    if (!outgoing.headersSent) outgoing.writeHead(502, { "content-type": "text/plain" });
    outgoing.end("edge function error\n");
  }
});
server.keepAliveTimeout = 1000;
server.listen(Number(args.port), "127.0.0.1", () => {
  console.log(`harness listening on http://127.0.0.1:${server.address().port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
