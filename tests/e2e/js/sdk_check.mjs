// Drives RunPod's official JavaScript SDK (npm runpod-sdk, unmodified) against a Gantry server,
// one step per run: `node sdk_check.mjs STEP ENDPOINT [ARG]`, with GANTRY_URL and GANTRY_API_KEY
// in the environment. Prints what the SDK returned as one JSON line, last, after whatever the
// SDK itself printed (runSync logs "<id>: <status>" each time it falls back to /status-sync).
import runpodSdk from "runpod-sdk";

const [step, endpointId, arg] = process.argv.slice(2);
const sdk = runpodSdk(process.env.GANTRY_API_KEY, { baseUrl: process.env.GANTRY_URL + "/v2" });
const endpoint = sdk.endpoint(endpointId);
// The JSON input of the steps that take one; a job id for the others.
const input = arg && arg.startsWith("{") ? JSON.parse(arg) : {};

const steps = {
  // runSync with a timeout (ms): the SDK waits that long in /runsync, then in /status-sync.
  async runSync() {
    return endpoint.runSync({ input: input.input }, input.timeout);
  },
  async run() {
    return endpoint.run({ input });
  },
  async status() {
    return endpoint.status(arg);
  },
  async statusSync() {
    return endpoint.statusSync(arg, 30000);
  },
  // run, then every chunk the stream generator yields until the job ends.
  async stream() {
    const { id } = await endpoint.run({ input });
    const chunks = [];
    for await (const chunk of endpoint.stream(id)) chunks.push(chunk);
    return { id, chunks, final: await endpoint.status(id) };
  },
  async cancel() {
    return endpoint.cancel(arg);
  },
  async health() {
    return endpoint.health();
  },
  async purgeQueue() {
    return endpoint.purgeQueue();
  },
};

if (!steps[step]) {
  console.error(`unknown step ${step}; known: ${Object.keys(steps).join(", ")}`);
  process.exit(2);
}
try {
  const result = await steps[step]();
  console.log(JSON.stringify({ result }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
}
