// Serves the OpenAI API (and the web chat page at /) with startServer, and prints requests to
// try; shuts down cleanly (exit code 0) on Ctrl-C or SIGTERM.
//   npx tsx examples/serve.ts [--port 8000] [--model model.gguf --mmproj mmproj.gguf]
// Without --model it serves the tiny generated Qwen2-VL test model (random weights: the text is
// gibberish, but every step runs for real). The bundled assets/ are allowed as local media, so
// requests may name "sample.png", "sample-2.png" or "sample.mp4".

import { startServer } from "multimodal-lm";

import { assetsDir, loadModel, modelOptions, parseOptions } from "./shared/model.js";
import { onShutdown, portOption, portOptions } from "./shared/server.js";

const { values } = parseOptions({ options: { ...modelOptions, ...portOptions } });
const port = portOption(values.port);
const lm = await loadModel(values);
const server = await startServer(lm, {
  port,
  allowedLocalMediaPath: assetsDir,
  // An access log on stderr.
  onRequest: (log) => console.error(`${log.method} ${log.path} ${log.status} ${log.durationMs.toFixed(0)}ms${log.code ? ` ${log.code}` : ""}`),
});
console.log(`listening at ${server.url}`);
console.log(`OpenAI API: ${server.url}/v1 (model "${server.handler.modelName}", also reachable as "default"; local media from ${assetsDir})`);
console.log(`chat page: ${server.url}/`);
console.log(`try:
  curl ${server.url}/v1/chat/completions -H 'Content-Type: application/json' -d '{
    "model": "default", "max_tokens": 32,
    "messages": [{"role": "user", "content": [
      {"type": "image_url", "image_url": {"url": "sample.png"}},
      {"type": "text", "text": "Describe this image."}]}]}'
  curl ${server.url}/v1/chat/completions -H 'Content-Type: application/json' -d '{
    "model": "default", "max_tokens": 32,
    "messages": [{"role": "user", "content": [
      {"type": "text", "text": "Describe this video"},
      {"type": "video_url", "video_url": {"url": "sample.mp4"}}]}],
    "video_fps": 2.0, "video_max_frames": 8}'`);
onShutdown(async () => {
  await server.close();
  await lm.dispose();
});
