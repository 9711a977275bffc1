// OpenAI Responses API conformance of a live llmux server, through the
// official OpenAI Node SDK's responses resource. LLMUX_BASE_URL points at
// the server's /v1, LLMUX_MODEL names its model, LLMUX_API_KEY and
// LLMUX_OTHER_KEY are two keys it accepts.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = process.env.LLMUX_BASE_URL;
const model = process.env.LLMUX_MODEL;
const apiKey = process.env.LLMUX_API_KEY;
const otherKey = process.env.LLMUX_OTHER_KEY;
if (!baseURL || !model || !apiKey || !otherKey) {
  throw new Error("set LLMUX_BASE_URL, LLMUX_MODEL, LLMUX_API_KEY and LLMUX_OTHER_KEY");
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const other = new OpenAI({ baseURL, apiKey: otherKey, maxRetries: 0 });

const weather = {
  type: "function",
  name: "get_weather",
  description: "The weather forecast",
  parameters: {
    type: "object",
    properties: { unit: { enum: ["celsius", "fahrenheit"] }, days: { type: "integer", minimum: 1, maximum: 7 } },
    required: ["unit", "days"],
    additionalProperties: false,
  },
  strict: true,
};

test("responses.create, retrieve and delete", async () => {
  const r = await client.responses.create({ model, instructions: "Tell a story.", input: "Once upon a time", max_output_tokens: 6 });
  assert.equal(r.object, "response");
  assert.match(r.id, /^resp_/);
  assert.ok(["completed", "incomplete"].includes(r.status));
  assert.equal(typeof r.output_text, "string");
  assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
  const again = await client.responses.retrieve(r.id);
  assert.equal(again.id, r.id);
  assert.equal(again.output_text, r.output_text);
  await client.responses.delete(r.id);
  await assert.rejects(client.responses.retrieve(r.id), (e) => e instanceof OpenAI.NotFoundError);
});

test("a stored response is invisible to another key", async () => {
  const r = await client.responses.create({ model, input: "Once upon a time", max_output_tokens: 2 });
  await assert.rejects(other.responses.retrieve(r.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(
    other.responses.create({ model, input: "and then", previous_response_id: r.id, max_output_tokens: 2 }),
    (e) => e instanceof OpenAI.NotFoundError,
  );
});

test("previous_response_id continues the conversation", async () => {
  const first = await client.responses.create({ model, input: "Once upon a time", max_output_tokens: 4 });
  const second = await client.responses.create({ model, input: "and then", previous_response_id: first.id, max_output_tokens: 2 });
  assert.equal(second.previous_response_id, first.id);
  assert.ok(second.usage.input_tokens > first.usage.input_tokens, `${second.usage.input_tokens} <= ${first.usage.input_tokens}`);
});

test("responses stream: lifecycle and text events", async () => {
  const stream = await client.responses.create({ model, input: "Once upon a time", max_output_tokens: 5, stream: true });
  const types = [];
  let text = "";
  let final = null;
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === "response.output_text.delta") text += ev.delta;
    if (ev.type === "response.completed" || ev.type === "response.incomplete") final = ev.response;
  }
  assert.equal(types[0], "response.created");
  assert.equal(types[1], "response.in_progress");
  assert.ok(types.includes("response.output_item.added") && types.includes("response.output_item.done"), types.join(" "));
  assert.ok(final, types.join(" "));
  assert.equal(final.output_text ?? final.output[0].content[0].text, text);
});

test("a forced function call, and its output", async () => {
  const r = await client.responses.create({
    model,
    input: "What will the weather be?",
    tools: [weather],
    tool_choice: { type: "function", name: "get_weather" },
    temperature: 0,
    max_output_tokens: 300,
  });
  const call = r.output.find((o) => o.type === "function_call");
  assert.ok(call, JSON.stringify(r.output));
  assert.equal(call.name, "get_weather");
  const args = JSON.parse(call.arguments);
  assert.ok(["celsius", "fahrenheit"].includes(args.unit));
  assert.ok(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7);
  const next = await client.responses.create({
    model,
    previous_response_id: r.id,
    input: [{ type: "function_call_output", call_id: call.call_id, output: "Sunny, 21 C" }],
    tools: [weather],
    max_output_tokens: 3,
  });
  assert.equal(next.object, "response");
});

test("a streamed function call: argument events", async () => {
  const stream = await client.responses.create({
    model,
    input: "Weather?",
    tools: [weather],
    tool_choice: "required",
    temperature: 0,
    max_output_tokens: 300,
    stream: true,
  });
  let args = "";
  let done = null;
  for await (const ev of stream) {
    if (ev.type === "response.function_call_arguments.delta") args += ev.delta;
    if (ev.type === "response.function_call_arguments.done") done = ev.arguments;
  }
  assert.equal(args, done);
  assert.ok(["celsius", "fahrenheit"].includes(JSON.parse(done).unit));
});

test("unknown model is a NotFoundError", async () => {
  await assert.rejects(client.responses.create({ model: "no-such-model", input: "hi" }), (e) => e instanceof OpenAI.NotFoundError);
});
