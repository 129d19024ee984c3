// A hookrelay webhook receiver that verifies with npm's `standardwebhooks` package.
//
// Run it:
//   (cd examples/receivers/node && npm ci)
//   WEBHOOK_SECRET='whsec_...' PORT=8000 node examples/receivers/node/receiver.js
//
// WEBHOOK_SECRET is exactly the `secret` given to hookrelay for the webhook. PORT=0 picks a
// free port; the `listening <port>` line says which. Stdout carries one line per request
// (`verified <id> <type>`, `duplicate <id>`, `rejected <reason>`), nothing else.
"use strict";

const http = require("node:http");
const { Webhook, WebhookVerificationError } = require("standardwebhooks");

// hookrelay's events are at most 256 KiB; refusing far larger bodies keeps a stranger from
// filling our memory.
const MAX_BODY = 1024 * 1024;

// How many webhook-ids we remember. Production keeps them in a database table with a unique
// constraint, or in Redis (SET NX with a TTL). The TTL must exceed the 5-minute timestamp
// tolerance, or a captured request could be replayed once its id is forgotten; to also
// absorb hookrelay's retries of a delivery we did process (same id, fresh timestamp), keep
// ids longer than the retry schedule (about 28 hours by default).
const SEEN_LIMIT = 100_000;

function makeVerifier(secret) {
  // hookrelay keys the HMAC with the base64 decoding of what follows `whsec_`, and with a
  // plain secret's own UTF-8 bytes. The library base64-decodes a string unless told the key
  // is raw, and its raw mode maps a *string* by UTF-16 code units, so give it the bytes.
  if (secret.startsWith("whsec_")) return new Webhook(secret);
  return new Webhook(Buffer.from(secret, "utf8"), { format: "raw" });
}

// A Set iterates in insertion order, so its first value is the oldest id.
const seen = new Set();
function remember(id) {
  seen.add(id);
  if (seen.size > SEEN_LIMIT) seen.delete(seen.values().next().value);
}

function say(line) {
  // Writes to a pipe or a file are synchronous in Node on Linux: no flush needed.
  process.stdout.write(`${line}\n`);
}

function answer(res, status, text = "") {
  if (status === 204) return res.writeHead(204).end();
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8" }).end(text);
}

function reject(res, status, reason) {
  say(`rejected ${reason}`);
  answer(res, status, reason);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  // Keep draining past the limit: leaving the loop early would destroy the socket before
  // the 413 could be answered.
  for await (const chunk of req) {
    size += chunk.length;
    if (size <= MAX_BODY) chunks.push(chunk);
  }
  return size > MAX_BODY ? null : Buffer.concat(chunks);
}

function handler(verifier) {
  return async (req, res) => {
    if (req.method !== "POST") return answer(res, 405, "POST only");
    // Verify the exact bytes received: re-serialised JSON would not match the signature.
    const body = await readBody(req);
    if (body === null) return reject(res, 413, "body too large");
    try {
      // Checks webhook-timestamp against now (5 minutes either way), then every
      // space-separated `v1,` signature (two during a secret rotation).
      verifier.verify(body, req.headers, { jsonParse: false });
    } catch (e) {
      const reason =
        e instanceof WebhookVerificationError ? e.message.toLowerCase() : "no matching signature found";
      return reject(res, 400, reason);
    }
    let eventType;
    try {
      eventType = JSON.parse(body.toString("utf8")).type;
    } catch {
      // Not JSON: handled just below, like JSON without a type.
    }
    if (typeof eventType !== "string") return reject(res, 400, "body is not a hookrelay event");

    // Dedupe only after verifying, so that forged requests cannot plant ids. Nothing is
    // awaited between the check and the add, so two requests cannot interleave there.
    const id = req.headers["webhook-id"];
    if (seen.has(id)) {
      // 2xx, not an error: hookrelay retries anything else, and we already have it.
      say(`duplicate ${id}`);
      return answer(res, 204);
    }

    // Real work belongs on a queue: hookrelay waits at most 15 s (by default) for the
    // answer and counts a slow one as failed, then sends the event again.
    say(`verified ${id} ${eventType}`);
    remember(id);
    answer(res, 204);
  };
}

function main() {
  const secret = process.env.WEBHOOK_SECRET;
  if (!secret) {
    console.error("WEBHOOK_SECRET is not set");
    process.exit(1);
  }
  const port = Number(process.env.PORT ?? "8000");
  const server = http.createServer(handler(makeVerifier(secret)));
  server.listen(port, "127.0.0.1", () => say(`listening ${server.address().port}`));
}

main();
