// Mounts multimodal-lm's OpenAI-compatible handler in an Express app, next to the app's own routes.
//   node examples/express-server.mjs [--model m.gguf --mmproj mmproj.gguf] [--port 8000]
// Without --model it serves the tiny generated Qwen2-VL test model (random weights: gibberish
// text, but every step runs for real). Then point any OpenAI client at http://127.0.0.1:8000/v1.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import express from "express";
import { MultimodalLM, createOpenAIHandler } from "multimodal-lm";
import { ensureTestModel } from "multimodal-lm/test-models";

const { values } = parseArgs({ options: { model: { type: "string" }, mmproj: { type: "string" }, port: { type: "string", default: "8000" } } });
const files = values.model ? { model: values.model, mmproj: values.mmproj } : await ensureTestModel("qwen2vl-tiny");
const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });

// Requests may name files under assets/ (e.g. {"type": "image_url", "image_url": {"url": "sample.png"}}).
const assets = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "assets");
const openai = createOpenAIHandler(lm, { allowedLocalMediaPath: assets });

const app = express();
app.get("/", (req, res) => res.json({ hello: "express", models: `${req.protocol}://${req.get("host")}/v1/models` }));
// Serves /v1/chat/completions, /v1/models and /health; passes every other path on to Express.
// It reads the body itself, so no express.json() is needed (one placed before it works too).
app.use(openai);

const server = app.listen(Number(values.port), "127.0.0.1", () => {
  console.log(`listening at http://127.0.0.1:${server.address().port}`);
});
const shutdown = async () => {
  server.close();
  await openai.close();
  await lm.dispose();
  process.exit(0);
};
process.once("SIGINT", shutdown);
process.once("SIGTERM", shutdown);
