// Drives a toxiproxy API through toxiproxy-node-client (npm), a client no
// one here wrote: every method it offers and every toxic type.
// Usage: node drive.js http://HOST:PORT PREFIX (with NODE_PATH set to the
// client's node_modules). One line per step; exits non-zero on the first
// failure.
"use strict";
const assert = require("node:assert/strict");
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
  const [url, prefix] = process.argv.slice(2);
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
  console.log("done");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
