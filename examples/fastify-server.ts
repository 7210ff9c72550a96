// Mounts multimodal-lm's OpenAI-compatible handler in a Fastify app, next to the app's own
// routes, and shuts down cleanly (exit code 0) on Ctrl-C or SIGTERM.
//   npx tsx examples/fastify-server.ts [--port 8000] [--model model.gguf --mmproj mmproj.gguf]
// Without --model it serves the tiny generated Qwen2-VL test model (random weights: the text is
// gibberish, but every step runs for real). Then point any OpenAI client at
// http://127.0.0.1:8000/v1; requests may name files under assets/ (e.g. "sample.png").
import type { AddressInfo } from "node:net";

import Fastify from "fastify";
import { createOpenAIHandler } from "multimodal-lm";

import { assetsDir, loadModel, modelOptions, parseOptions } from "./shared/model.js";
import { onShutdown, portOption, portOptions } from "./shared/server.js";

const { values } = parseOptions({ options: { ...modelOptions, ...portOptions } });
const port = portOption(values.port);
const lm = await loadModel(values);
const openai = createOpenAIHandler(lm, { allowedLocalMediaPath: assetsDir });

const app = Fastify();
// Hand the OpenAI paths over before Fastify parses the body: the handler reads it itself, with
// its own size limit, and answers errors in OpenAI's shape.
app.addHook("onRequest", (request, reply, done) => {
  const url = request.raw.url ?? "/";
  if (url.startsWith("/v1/") || url === "/health") {
    reply.hijack();
    openai(request.raw, reply.raw);
    return;
  }
  done();
});
app.get("/", async () => ({ hello: "fastify" }));
// Before the server stops: refuse new requests (503) and abort running ones, so closing does
// not wait for a long generation. After it: free the model.
app.addHook("preClose", () => openai.close());
app.addHook("onClose", () => lm.dispose());

await app.listen({ port, host: "127.0.0.1" });
console.log(`listening at http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
onShutdown(() => app.close());
