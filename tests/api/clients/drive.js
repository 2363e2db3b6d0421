// Drives a toxiproxy API through toxiproxy-node-client (npm), a client no
// one here wrote: every method it offers and every toxic type, then real
// traffic through a proxy to ECHO (an echo server) showing each toxic's
// effect. Usage: node drive.js http://HOST:PORT PREFIX ECHO (with
// NODE_PATH set to the client's node_modules). One line per step; exits
// non-zero on the first failure.
"use strict";
const assert = require("node:assert/strict");
const net = require("node:net");
const { Toxiproxy } = require("toxiproxy-node-client");

const TYPES = {
  latency: { latency: 100, jitter: 10 },
  bandwidth: { rate: 64 },
  slow_close: { delay: 50 },
  timeout: { timeout: 200 },
  reset_peer: { timeout: 10 },
  slicer: { average_size: 8, size_variation: 2, delay: 100 },
  limit_data: { bytes: 1000 },
};

async function main() {
  const [url, prefix, echo] = process.argv.slice(2);
  const toxiproxy = new Toxiproxy(url);
  const step = (what) => console.log("ok " + what);

  assert.ok((await toxiproxy.getVersion()).length > 0);
  step("version");

  const name = prefix + "_node";
  const proxy = await toxiproxy.createProxy({ name, listen: "127.0.0.1:0", upstream: "127.0.0.1:9" });
  assert.equal(proxy.name, name);
  assert.equal(proxy.enabled, true);
  assert.ok(!proxy.listen.endsWith(":0"), proxy.listen);
  step("createProxy");
  await assert.rejects(toxiproxy.createProxy({ name, listen: "127.0.0.1:0", upstream: "127.0.0.1:9" }));
  step("duplicate refused");

  assert.equal((await toxiproxy.get(name)).listen, proxy.listen);
  assert.ok(name in (await toxiproxy.getAll()));
  step("get and getAll");

  for (const [type, attributes] of Object.entries(TYPES)) {
    for (const stream of ["downstream", "upstream"]) {
      const toxic = await proxy.addToxic({ name: `${type}_${stream}`, type, stream, toxicity: 0.5, attributes });
      assert.deepEqual(toxic.attributes, attributes);
      const shown = await proxy.getToxic(toxic.name);
      assert.equal(shown.type, type);
      assert.equal(shown.stream, stream);
      assert.equal(shown.toxicity, 0.5);
      const changed = Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, v + 1]));
      const updated = await shown.update({ attributes: changed, toxicity: 1 });
      assert.deepEqual(updated.attributes, changed);
      assert.equal(updated.toxicity, 1);
      await updated.remove();
      await assert.rejects(proxy.getToxic(toxic.name));
    }
    step("toxic " + type);
  }
  await assert.rejects(proxy.addToxic({ name: "bad", type: "no_such_type", stream: "downstream", toxicity: 1, attributes: {} }));
  step("unknown type refused");

  await proxy.addToxic({ name: "slow", type: "latency", stream: "downstream", toxicity: 1, attributes: { latency: 5, jitter: 0 } });
  const disabled = await proxy.update({ enabled: false, listen: proxy.listen, upstream: proxy.upstream });
  assert.equal(disabled.enabled, false);
  step("disabled");
  const enabled = await disabled.update({ enabled: true, listen: proxy.listen, upstream: proxy.upstream });
  assert.equal(enabled.enabled, true);
  assert.equal(enabled.listen, proxy.listen);
  step("enabled again");

  await toxiproxy.reset();
  await assert.rejects(proxy.getToxic("slow"), "reset removed the toxic");
  step("reset");

  const other = prefix + "_node_pop";
  const made = await toxiproxy.populate([{ name: other, listen: "127.0.0.1:0", upstream: "127.0.0.1:10" }]);
  assert.deepEqual(Object.keys(made), [other]);
  step("populate");

  await proxy.remove();
  await (await toxiproxy.get(other)).remove();
  await assert.rejects(toxiproxy.get(name));
  step("removed");
  await traffic(toxiproxy, prefix, echo, step);
  console.log("done");
}

/// Connects to a proxy: resolves with the socket once connected.
function connect(proxy) {
  const [host, port] = [proxy.listen.slice(0, proxy.listen.lastIndexOf(":")), proxy.listen.slice(proxy.listen.lastIndexOf(":") + 1)];
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port: Number(port) }, () => resolve(socket));
    socket.once("error", reject);
  });
}

/// Sends data through a new connection and reads it back: milliseconds.
async function exchange(proxy, data) {
  const socket = await connect(proxy);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= data.length) {
        socket.destroy();
        if (!got.equals(data)) reject(new Error("bytes changed"));
        resolve(Date.now() - started);
      }
    });
    socket.on("error", reject);
    socket.on("end", () => reject(new Error(`closed after ${got.length} bytes`)));
    socket.write(data);
  });
}

/// Sends data, reads to the end: the bytes and how it ended.
async function drain(proxy, data) {
  let socket;
  try {
    socket = await connect(proxy);
  } catch (e) {
    // ackloop's reset_peer may reset before the connect is reported.
    if (e.code === "ECONNRESET") return [Buffer.alloc(0), "reset"];
    throw e;
  }
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    socket.on("data", (chunk) => { got = Buffer.concat([got, chunk]); });
    socket.on("end", () => { socket.destroy(); resolve([got, "eof"]); });
    // A reset may be reported to the write as EPIPE.
    socket.on("error", (e) => resolve([got, ["ECONNRESET", "EPIPE"].includes(e.code) ? "reset" : e.code]));
    socket.write(data);
  });
}

async function traffic(toxiproxy, prefix, echo, step) {
  const proxy = await toxiproxy.createProxy({ name: prefix + "_node_relay", listen: "127.0.0.1:0", upstream: echo });
  const ping = Buffer.from("ping");
  assert.ok((await exchange(proxy, ping)) < 300);
  step("traffic");
  const add = (type, attributes) => proxy.addToxic({ name: type, type, stream: "downstream", toxicity: 1, attributes });
  const remove = async (name) => (await proxy.getToxic(name)).remove();

  await add("latency", { latency: 300, jitter: 0 });
  assert.ok((await exchange(proxy, ping)) >= 300);
  await remove("latency");
  assert.ok((await exchange(proxy, ping)) < 300);
  step("latency slows, and its removal restores");

  await add("bandwidth", { rate: 10 });
  assert.ok((await exchange(proxy, Buffer.alloc(5000))) >= 300);
  await remove("bandwidth");
  step("bandwidth");

  await add("slicer", { average_size: 100, size_variation: 10, delay: 1000 });
  await exchange(proxy, Buffer.alloc(5000, 7));
  await remove("slicer");
  step("slicer");

  await add("limit_data", { bytes: 10 });
  const [limited] = await drain(proxy, Buffer.alloc(100, 120));
  assert.equal(limited.length, 10);
  await remove("limit_data");
  step("limit_data");

  await add("reset_peer", { timeout: 0 });
  const [nothing, how] = await drain(proxy, Buffer.from("hello"));
  assert.deepEqual([nothing.length, how], [0, "reset"]);
  await remove("reset_peer");
  step("reset_peer");

  await add("timeout", { timeout: 0 });
  const socket = await connect(proxy);
  let passed = 0;
  socket.on("data", (chunk) => { passed += chunk.length; });
  socket.write("hello");
  await new Promise((resolve) => setTimeout(resolve, 500)); // nothing may come: the wait is the point
  socket.destroy();
  assert.equal(passed, 0);
  await remove("timeout");
  step("timeout");

  await add("slow_close", { delay: 400 });
  const closing = await connect(proxy);
  const closedAfter = await new Promise((resolve, reject) => {
    let started = 0;
    closing.on("data", () => { started = Date.now(); closing.end(); });
    closing.on("end", () => { closing.destroy(); resolve(Date.now() - started); });
    closing.on("error", reject);
    closing.write("bye");
  });
  assert.ok(closedAfter >= 390, `closed after ${closedAfter} ms`);
  await remove("slow_close");
  step("slow_close");

  await proxy.update({ enabled: false, listen: proxy.listen, upstream: proxy.upstream });
  await assert.rejects(connect(proxy));
  step("disabled refuses");
  await proxy.update({ enabled: true, listen: proxy.listen, upstream: proxy.upstream });
  await exchange(proxy, ping);
  await proxy.remove();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
