// The handler mounted in Express and in Fastify: the examples themselves run as subprocesses
// and answer the OpenAI client, next to their app's own routes.
import OpenAI from "openai";
import { afterEach, beforeAll, describe, expect, it } from "vitest";

import { ensureTestModel } from "../src/test-models/index.js";
import { killExamples, startExample } from "./helpers/examples.js";

beforeAll(async () => {
  await ensureTestModel("qwen2vl-tiny");
}, 600_000);

afterEach(killExamples);

describe.each(["express-server.ts", "fastify-server.ts"])("examples/%s", (name) => {
  it("serves the OpenAI API beside the app's own routes, and shuts down cleanly", async () => {
    const { url, stop } = await startExample(name);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "not-needed", maxRetries: 0 });
    expect((await client.models.list()).data[0]!.id).toBe("qwen2vl-tiny");
    const completion = await client.chat.completions.create({
      model: "default",
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "sample.png" } }, { type: "text", text: "Describe this image." }] }],
      max_tokens: 8,
      temperature: 0,
    });
    expect(completion.choices[0]!.message.role).toBe("assistant");
    expect(completion.usage!.prompt_tokens).toBeGreaterThan(20);

    const stream = await client.chat.completions.create({ model: "default", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text.length).toBeGreaterThan(0);

    const refused = await client.chat.completions.create({ model: "default", messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "/etc/passwd" } }] }] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
    expect((refused as InstanceType<typeof OpenAI.BadRequestError>).code).toBe("E_MEDIA_NOT_ALLOWED");

    const own = await fetch(`${url}/`);
    expect(((await own.json()) as { hello: string }).hello).toBe(name.split("-")[0]);
    expect((await fetch(`${url}/health`)).status).toBe(200);

    expect(await stop()).toBe(0);
  });
});
