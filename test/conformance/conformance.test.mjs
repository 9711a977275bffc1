// OpenAI API conformance of a live llmux server, through the official
// OpenAI Node SDK. LLMUX_BASE_URL points at the server's /v1 and
// LLMUX_MODEL names its model.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = process.env.LLMUX_BASE_URL;
const model = process.env.LLMUX_MODEL;
if (!baseURL || !model) {
  throw new Error("set LLMUX_BASE_URL and LLMUX_MODEL");
}
const client = new OpenAI({ baseURL, apiKey: process.env.LLMUX_API_KEY ?? "none", maxRetries: 0 });

test("models.list names the served model", async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert.ok(ids.includes(model), `models: ${ids}`);
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
  assert.equal(one.object, "model");
});

test("chat completion, non-streaming", async () => {
  const r = await client.chat.completions.create({
    model,
    messages: [{ role: "system", content: "Tell a story." }, { role: "user", content: "Once upon a time" }],
    max_tokens: 12,
  });
  assert.equal(r.object, "chat.completion");
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test("chat completion, streaming with usage", async () => {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Once upon a time" }],
    max_tokens: 10,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta?.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks > 1, "streamed several chunks");
  assert.ok(finish === "stop" || finish === "length");
  assert.ok(usage && usage.completion_tokens > 0, "usage chunk");
  assert.equal(typeof text, "string");
});

test("completions, non-streaming and streaming", async () => {
  const r = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 8, seed: 3 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, "string");
  const again = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 8, seed: 3 });
  assert.equal(again.choices[0].text, r.choices[0].text, "same seed, same text");
  const stream = await client.completions.create({ model, prompt: ["a", "b"], max_tokens: 4, stream: true });
  const seen = new Set();
  for await (const chunk of stream) {
    for (const c of chunk.choices) seen.add(c.index);
  }
  assert.deepEqual([...seen].sort(), [0, 1], "one choice per prompt");
});

test("400: invalid request", async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: [], max_tokens: 4 }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}`);
      assert.equal(err.status, 400);
      assert.equal(err.error?.type ?? err.type, "invalid_request_error");
      assert.equal(err.param, "messages");
      return true;
    },
  );
  await assert.rejects(
    client.completions.create({ model, prompt: "x", max_tokens: -3 }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === "max_tokens",
  );
});

test("404: unknown model", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, "model_not_found");
      return true;
    },
  );
});

test("tool calls through the SDK's stream helper", async () => {
  const tools = [{
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather forecast",
      parameters: {
        type: "object",
        properties: { unit: { enum: ["celsius", "fahrenheit"] } },
        required: ["unit"],
        additionalProperties: false,
      },
    },
  }];
  const stream = client.chat.completions.stream({
    model,
    messages: [{ role: "user", content: "Weather?" }],
    tools,
    tool_choice: { type: "function", function: { name: "get_weather" } },
    parallel_tool_calls: false,
    max_tokens: 400,
    seed: 1,
  });
  const done = await stream.finalChatCompletion();
  const choice = done.choices[0];
  assert.equal(choice.finish_reason, "tool_calls");
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.match(call.id, /^call_/);
  assert.equal(call.function.name, "get_weather");
  const args = JSON.parse(call.function.arguments);
  assert.ok(["celsius", "fahrenheit"].includes(args.unit), `arguments ${call.function.arguments}`);
});
