// Serves the OpenAI API on http://127.0.0.1:8000/v1 and prints a request to try.
//   node examples/serve.mjs [--model m.gguf --mmproj mmproj.gguf] [--port 8000]
// Without --model it serves the tiny generated Qwen2-VL test model (random weights: gibberish
// text, but every step runs for real), with the bundled assets/ allowed as local media.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { MultimodalLM, startServer } from "multimodal-lm";
import { ensureTestModel } from "multimodal-lm/test-models";

const { values } = parseArgs({ options: { model: { type: "string" }, mmproj: { type: "string" }, port: { type: "string", default: "8000" } } });
const files = values.model ? { model: values.model, mmproj: values.mmproj } : await ensureTestModel("qwen2vl-tiny");
const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });
const assets = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "assets");
const server = await startServer(lm, {
  port: Number(values.port),
  allowedLocalMediaPath: assets,
  onRequest: (log) => console.error(`${log.method} ${log.path} ${log.status} ${log.durationMs.toFixed(0)}ms${log.code ? ` ${log.code}` : ""}`),
});
console.log(`listening at ${server.url}/v1 (model "${server.handler.modelName}", local media from ${assets})`);
console.log(`try:
  curl ${server.url}/v1/chat/completions -H 'Content-Type: application/json' -d '{
    "model": "default", "max_tokens": 32,
    "messages": [{"role": "user", "content": [
      {"type": "text", "text": "Describe this video"},
      {"type": "video_url", "video_url": {"url": "sample.mp4"}}]}],
    "video_fps": 2.0, "video_max_frames": 8}'`);
const shutdown = async () => {
  await server.close();
  await lm.dispose();
  process.exit(0);
};
process.once("SIGINT", shutdown);
process.once("SIGTERM", shutdown);
