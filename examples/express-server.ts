// Mounts multimodal-lm's OpenAI-compatible handler in an Express app, next to the app's own
// routes, and shuts down cleanly (exit code 0) on Ctrl-C or SIGTERM.
//   npx tsx examples/express-server.ts [--port 8000] [--model model.gguf --mmproj mmproj.gguf]
// Without --model it serves the tiny generated Qwen2-VL test model (random weights: the text is
// gibberish, but every step runs for real). Then point any OpenAI client at
// http://127.0.0.1:8000/v1; requests may name files under assets/ (e.g. "sample.png").
import type { AddressInfo } from "node:net";

import express from "express";
import { createOpenAIHandler } from "multimodal-lm";

import { assetsDir, loadModel, modelOptions, parseOptions } from "./shared/model.js";
import { onShutdown, portOption, portOptions } from "./shared/server.js";

const { values } = parseOptions({ options: { ...modelOptions, ...portOptions } });
const port = portOption(values.port);
const lm = await loadModel(values);
// Requests may name files under assets/ (e.g. {"type": "image_url", "image_url": {"url": "sample.png"}}).
const openai = createOpenAIHandler(lm, { allowedLocalMediaPath: assetsDir });

const app = express();
// The app's own route; it is registered first, so it wins over anything the handler serves at "/".
app.get("/", (req, res) => {
  res.json({ hello: "express", models: `${req.protocol}://${req.get("host")}/v1/models` });
});
// Serves /v1/chat/completions, /v1/models and /health; passes every other path on to Express.
// It reads the body itself, so no express.json() is needed (one placed before it works too).
app.use(openai);

const server = app.listen(port, "127.0.0.1", (error?: Error) => {
  if (error) throw error;
  console.log(`listening at http://127.0.0.1:${(server.address() as AddressInfo).port}`);
});
onShutdown(async () => {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  await openai.close(); // answers new requests with 503 and aborts the running ones
  server.closeAllConnections();
  await closed;
  await lm.dispose();
});
