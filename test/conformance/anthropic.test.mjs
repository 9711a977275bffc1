// Anthropic Messages API conformance of a live llmux server, through the
// official Anthropic TypeScript SDK. LLMUX_BASE_URL points at the server's
// /v1 (the SDK adds /v1 itself, so its base is the server's root),
// LLMUX_MODEL names its model and LLMUX_API_KEY is a key it accepts.
import { test } from "node:test";
import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";

const root = process.env.LLMUX_BASE_URL?.replace(/\/v1$/, "");
const model = process.env.LLMUX_MODEL;
const apiKey = process.env.LLMUX_API_KEY;
if (!root || !model || !apiKey) {
  throw new Error("set LLMUX_BASE_URL, LLMUX_MODEL and LLMUX_API_KEY");
}
const client = new Anthropic({ baseURL: root, apiKey, maxRetries: 0 });

const weather = {
  name: "get_weather",
  description: "The weather forecast",
  input_schema: {
    type: "object",
    properties: { unit: { enum: ["celsius", "fahrenheit"] }, days: { type: "integer", minimum: 1, maximum: 7 } },
    required: ["unit", "days"],
    additionalProperties: false,
  },
};

test("messages.create, non-streaming", async () => {
  const m = await client.messages.create({
    model,
    max_tokens: 8,
    system: "Tell a story.",
    messages: [{ role: "user", content: "Once upon a time" }],
  });
  assert.equal(m.type, "message");
  assert.equal(m.role, "assistant");
  assert.match(m.id, /^msg_/);
  assert.ok(["end_turn", "max_tokens"].includes(m.stop_reason), m.stop_reason);
  assert.ok(m.content.every((b) => b.type === "text"));
  assert.ok(m.usage.input_tokens > 0);
  assert.ok(m.usage.output_tokens > 0 && m.usage.output_tokens <= 8);
});

test("messages.stream: events in order, and the final message", async () => {
  const stream = client.messages.stream({
    model,
    max_tokens: 8,
    messages: [{ role: "user", content: "Once upon a time" }],
  });
  const types = [];
  let text = "";
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === "content_block_delta" && ev.delta.type === "text_delta") text += ev.delta.text;
  }
  const final = await stream.finalMessage();
  assert.equal(types[0], "message_start");
  assert.equal(types.at(-1), "message_stop");
  assert.equal(types.at(-2), "message_delta");
  assert.ok(types.includes("content_block_start") && types.includes("content_block_stop"), types.join(" "));
  assert.equal(final.content.map((b) => b.text).join(""), text);
  assert.ok(final.usage.output_tokens > 0);
  assert.ok(["end_turn", "max_tokens"].includes(final.stop_reason));
});

test("tool_use forced by tool_choice, then tool_result", async () => {
  const m = await client.messages.create({
    model,
    max_tokens: 300,
    temperature: 0, // greedy: the same call every run
    tools: [weather],
    tool_choice: { type: "tool", name: "get_weather" },
    messages: [{ role: "user", content: "What will the weather be?" }],
  });
  assert.equal(m.stop_reason, "tool_use");
  const use = m.content.find((b) => b.type === "tool_use");
  assert.ok(use, JSON.stringify(m.content));
  assert.equal(use.name, "get_weather");
  assert.ok(["celsius", "fahrenheit"].includes(use.input.unit), JSON.stringify(use.input));
  assert.ok(Number.isInteger(use.input.days) && use.input.days >= 1 && use.input.days <= 7);
  assert.deepEqual(Object.keys(use.input).sort(), ["days", "unit"]);

  const next = await client.messages.create({
    model,
    max_tokens: 5,
    tools: [weather],
    messages: [
      { role: "user", content: "What will the weather be?" },
      { role: "assistant", content: m.content },
      { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "Sunny, 21 C" }] },
    ],
  });
  assert.equal(next.type, "message");
});

test("tool_use streamed: input_json_delta builds the input", async () => {
  const stream = client.messages.stream({
    model,
    max_tokens: 300,
    temperature: 0, // greedy: the same call every run
    tools: [weather],
    tool_choice: { type: "any" },
    messages: [{ role: "user", content: "Weather?" }],
  });
  const final = await stream.finalMessage();
  const use = final.content.find((b) => b.type === "tool_use");
  assert.ok(use, JSON.stringify(final.content));
  assert.ok(["celsius", "fahrenheit"].includes(use.input.unit));
  assert.equal(final.stop_reason, "tool_use");
});

test("messages.countTokens", async () => {
  const r = await client.messages.countTokens({ model, messages: [{ role: "user", content: "Once upon a time" }] });
  assert.ok(r.input_tokens > 0);
});

test("unknown model is a NotFoundError", async () => {
  await assert.rejects(
    client.messages.create({ model: "no-such-model", max_tokens: 4, messages: [{ role: "user", content: "hi" }] }),
    (e) => e instanceof Anthropic.NotFoundError && e.status === 404 && e.error?.error?.type === "not_found_error",
  );
});

test("missing max_tokens is a BadRequestError", async () => {
  await assert.rejects(
    client.messages.create({ model, messages: [{ role: "user", content: "hi" }] }),
    (e) => e instanceof Anthropic.BadRequestError && e.error?.error?.type === "invalid_request_error",
  );
});

test("a wrong key is an AuthenticationError", async () => {
  const bad = new Anthropic({ baseURL: root, apiKey: "wrong", maxRetries: 0 });
  await assert.rejects(
    bad.messages.create({ model, max_tokens: 4, messages: [{ role: "user", content: "hi" }] }),
    (e) => e instanceof Anthropic.AuthenticationError && e.status === 401,
  );
});
