// A small load generator with no dependencies (Node's own http2/http).
//
//   node load.mjs grpc --target 127.0.0.1:9191 --bodies FILE --connections 8 --streams 16 --duration 10 [--once 1]
//     Closed loop of unary gRPC Check calls; each call sends the next body from
//     FILE (length-prefixed serialized CheckRequests), so every call can carry
//     a different token. Counts answers with grpc-status 0.
//   node load.mjs http --url http://127.0.0.1:8080/api/orders --rate 3000 --duration 10
//       --connections 64 [--header "authorization: Bearer ..."]
//     Open loop at a fixed rate; latency is measured from each request's
//     scheduled start (no coordinated omission).
// Prints one JSON object: {requests, ok, failed, rps, p50_ms, p90_ms, p99_ms, max_ms}.
import http from "node:http";
import http2 from "node:http2";
import fs from "node:fs";

const [mode, ...rest] = process.argv.slice(2);
const opts = { connections: 8, streams: 16, duration: 10, rate: 1000, header: [] };
for (let i = 0; i < rest.length; i += 2) {
  const key = rest[i].replace(/^--/, "");
  const value = rest[i + 1];
  if (key === "header") opts.header.push(value);
  else opts[key] = /^\d+(\.\d+)?$/.test(value) ? Number(value) : value;
}

const latencies = [];
let requests = 0, ok = 0, failed = 0;

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function report(elapsed) {
  latencies.sort((a, b) => a - b);
  const out = {
    requests, ok, failed, seconds: elapsed, rps: ok / elapsed,
    p50_ms: percentile(latencies, 50), p90_ms: percentile(latencies, 90),
    p99_ms: percentile(latencies, 99), max_ms: latencies.length ? latencies[latencies.length - 1] : null,
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}

function loadBodies(file) {
  const data = fs.readFileSync(file);
  const bodies = [];
  for (let offset = 0; offset < data.length;) {
    const length = data.readUInt32BE(offset);
    const frame = Buffer.alloc(5 + length);
    frame.writeUInt8(0, 0);
    frame.writeUInt32BE(length, 1);
    data.copy(frame, 5, offset + 4, offset + 4 + length);
    bodies.push(frame);
    offset += 4 + length;
  }
  return bodies;
}

async function grpcLoad() {
  const bodies = loadBodies(opts.bodies);
  let next = 0;
  const deadline = performance.now() + opts.duration * 1000;
  const start = performance.now();
  const sessions = [];
  for (let c = 0; c < opts.connections; c++) {
    sessions.push(http2.connect(`http://${opts.target}`));
  }
  function one(session) {
    return new Promise((resolve) => {
      const body = bodies[next++ % bodies.length];
      const began = performance.now();
      const stream = session.request({
        ":method": "POST", ":path": "/envoy.service.auth.v3.Authorization/Check",
        "content-type": "application/grpc", te: "trailers",
      });
      let status = null;
      stream.on("response", (headers) => { if (headers["grpc-status"] !== undefined) status = headers["grpc-status"]; });
      stream.on("trailers", (trailers) => { status = trailers["grpc-status"]; });
      stream.on("data", () => {});
      stream.on("error", () => { failed++; resolve(); });
      stream.on("close", () => {
        requests++;
        if (status === "0") { ok++; latencies.push(performance.now() - began); } else if (status !== null) failed++;
        resolve();
      });
      stream.end(body);
    });
  }
  // --once 1: every body is sent at most once (unique tokens stay unique);
  // the run then ends early when they run out, and rps counts its real length.
  async function lane(session) {
    while (performance.now() < deadline && !(opts.once && next >= bodies.length)) await one(session);
  }
  const lanes = [];
  for (const session of sessions) for (let s = 0; s < opts.streams; s++) lanes.push(lane(session));
  await Promise.all(lanes);
  const elapsed = (performance.now() - start) / 1000;
  for (const session of sessions) session.close();
  report(elapsed);
}

async function httpLoad() {
  const url = new URL(opts.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.connections });
  const headers = {};
  for (const h of opts.header) { const i = h.indexOf(":"); headers[h.slice(0, i).trim()] = h.slice(i + 1).trim(); }
  const interval = 1000 / opts.rate;
  const total = Math.floor(opts.rate * opts.duration);
  const start = performance.now();
  const pending = [];
  for (let i = 0; i < total; i++) {
    const scheduled = start + i * interval;
    const wait = scheduled - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    // Latency runs from the scheduled start (so a stalled generator still
    // counts the wait), never from before the request could be sent.
    const from = Math.max(scheduled, performance.now());
    pending.push(new Promise((resolve) => {
      const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, agent, headers }, (res) => {
        res.on("data", () => {});
        res.on("end", () => {
          requests++;
          if (res.statusCode === Number(opts.expect || 200)) { ok++; latencies.push(performance.now() - from); } else failed++;
          resolve();
        });
      });
      req.on("error", () => { requests++; failed++; resolve(); });
      req.end();
    }));
  }
  await Promise.all(pending);
  agent.destroy();
  report((performance.now() - start) / 1000);
}

(mode === "grpc" ? grpcLoad() : httpLoad()).catch((error) => { console.error(error); process.exit(1); });
