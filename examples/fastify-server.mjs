// Mounts multimodal-lm's OpenAI-compatible handler in a Fastify app, next to the app's own routes.
//   node examples/fastify-server.mjs [--model m.gguf --mmproj mmproj.gguf] [--port 8000]
// Without --model it serves the tiny generated Qwen2-VL test model (random weights: gibberish
// text, but every step runs for real). Then point any OpenAI client at http://127.0.0.1:8000/v1.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import Fastify from "fastify";
import { MultimodalLM, createOpenAIHandler } from "multimodal-lm";
import { ensureTestModel } from "multimodal-lm/test-models";

const { values } = parseArgs({ options: { model: { type: "string" }, mmproj: { type: "string" }, port: { type: "string", default: "8000" } } });
const files = values.model ? { model: values.model, mmproj: values.mmproj } : await ensureTestModel("qwen2vl-tiny");
const lm = await MultimodalLM.load({ model: files.model, mmproj: files.mmproj });

const assets = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "assets");
const openai = createOpenAIHandler(lm, { allowedLocalMediaPath: assets });

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
app.addHook("onClose", async () => {
  await openai.close();
  await lm.dispose();
});

await app.listen({ port: Number(values.port), host: "127.0.0.1" });
console.log(`listening at http://127.0.0.1:${app.server.address().port}`);
const shutdown = async () => {
  await app.close();
  process.exit(0);
};
process.once("SIGINT", shutdown);
process.once("SIGTERM", shutdown);
