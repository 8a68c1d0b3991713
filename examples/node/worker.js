// Producer and worker loop for Querator with ioredis: what querator.client's Worker does, by hand.
//
//   node worker.js [url] [queue] [items]
//
// Produces `items` items, then leases them in batches, runs a handler on each, completes the ones that
// succeeded in one QCOMPLETE per batch, retries failures with exponential backoff and jitter (QRETRY DELAY
// ... REASON ...), and extends the leases of a batch at half the lease time while its handlers run. It
// stops by itself once every item is processed, so CI can run it.
"use strict";

const Redis = require("ioredis");

const url = process.argv[2] || "redis://127.0.0.1:2319";
const queue = process.argv[3] || "node-example";
const total = Number(process.argv[4] || 100);
const LEASE_TIMEOUT = 30000;
const BATCH = 10;

function backoffMs(attempts, baseMs = 1000, capMs = 300000) {
  const ceiling = Math.min(capMs, baseMs * 2 ** (attempts - 1));
  return Math.floor(ceiling * (0.5 + 0.5 * Math.random()));
}

async function handler(item) {
  // Your work here; throwing retries the item later.
  JSON.parse(item.payload);
}

async function main() {
  // Two connections: a blocking QLEASE would hold up every other command sent on its connection.
  const leaser = new Redis(url);
  const commands = new Redis(url);
  try {
    await commands.call("QCREATE", queue, "LEASE-TIMEOUT", LEASE_TIMEOUT);
  } catch (err) {
    if (!String(err.message).startsWith("EXISTS")) throw err;
  }

  const payloads = Array.from({ length: total }, (_, i) => JSON.stringify({ n: i }));
  for (let i = 0; i < payloads.length; i += 1000) {
    await commands.call("QPRODUCE", queue, "KIND", "example", "ITEMS", ...payloads.slice(i, i + 1000));
  }

  let processed = 0;
  while (processed < total) {
    // Each item: [id, payload, attempts, lease-deadline, kind, reference, encoding].
    const reply = await leaser.call("QLEASE", queue, "COUNT", BATCH, "BLOCK", 1000);
    if (!reply || reply.length === 0) continue;
    const items = reply.map(([id, payload, attempts]) => ({ id, payload, attempts: Number(attempts) }));
    const ids = items.map((item) => item.id);
    const keepAlive = setInterval(() => {
      commands.call("QEXTEND", queue, ...ids).catch((err) => console.error("extend failed:", err.message));
    }, LEASE_TIMEOUT / 2);
    const results = await Promise.allSettled(items.map((item) => handler(item)));
    clearInterval(keepAlive);
    const done = [];
    for (const [i, result] of results.entries()) {
      const item = items[i];
      if (result.status === "fulfilled") {
        done.push(item.id);
      } else {
        const delay = backoffMs(item.attempts);
        await commands.call("QRETRY", queue, "DELAY", delay, "REASON", String(result.reason), item.id);
      }
    }
    if (done.length > 0) processed += await commands.call("QCOMPLETE", queue, ...done);
  }
  console.log(`processed ${processed} items`);
  leaser.disconnect();
  commands.disconnect();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
