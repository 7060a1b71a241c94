// client.test.mjs — the official `openai` npm client, unchanged, against a running
// strata-server (STRATA_URL): completions and chat, streamed and not. Run by
// `make test` through node's built-in test runner.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: `${process.env.STRATA_URL}/v1`, apiKey: 'unused' });
const model = 'strata-demo';

test('models.list names the served model', async () => {
  const list = await client.models.list();
  assert.equal(list.data[0].id, model);
});

test('completions: greedy text, usage, finish_reason', async () => {
  const r = await client.completions.create({ model, prompt: 'In the beginning', max_tokens: 32, temperature: 0 });
  assert.match(r.choices[0].text, /^ of the house of the LORD/);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 32);
});

test('completions streamed reassemble to the same text', async () => {
  const whole = await client.completions.create({ model, prompt: 'And God said', max_tokens: 20, temperature: 0 });
  const stream = await client.completions.create({ model, prompt: 'And God said', max_tokens: 20, temperature: 0,
                                                   stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) text += chunk.choices[0].text;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, whole.choices[0].text);
  assert.equal(usage.completion_tokens, 20);
});

test('completions echo + logprobs score the prompt, as evaluation harnesses read it', async () => {
  const ask = { model, prompt: 'In the beginning God', max_tokens: 1, temperature: 0, echo: true, logprobs: 1 };
  const r = await client.completions.create(ask);
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, r.usage.prompt_tokens + 1);
  assert.equal(lp.token_logprobs[0], null);
  for (let i = 1; i < lp.tokens.length; i++) {
    const best = Math.max(...Object.values(lp.top_logprobs[i]));
    assert.ok(lp.token_logprobs[i] <= best + 1e-6, `token ${i} is not likelier than the best`);
    assert.equal(lp.top_logprobs[i][lp.tokens[i]], lp.token_logprobs[i], `token ${i} is among its alternatives`);
  }
  assert.ok(r.choices[0].text.startsWith('In the beginning God'));
  const stream = await client.completions.create({ ...ask, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, r.choices[0].text);
});

test('chat: JSON and streamed agree', async () => {
  const messages = [{ role: 'user', content: 'Who made the heaven and the earth?' }];
  const r = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
  assert.equal(r.choices[0].message.role, 'assistant');
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0, stream: true });
  let text = '', role = null;
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta ?? {};
    if (d.role) role = d.role;
    if (d.content) text += d.content;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, r.choices[0].message.content);
});

test('chat: reasoning_format deepseek reads as reasoning_content, streamed or not', async () => {
  const ask = { model, messages: [{ role: 'user', content: 'Who made the heaven?' }], max_tokens: 16, temperature: 0,
                reasoning_format: 'deepseek' };
  const whole = await client.chat.completions.create({ ...ask, reasoning_format: 'none' });
  const r = await client.chat.completions.create(ask);
  const m = r.choices[0].message;
  const text = whole.choices[0].message.content;
  assert.ok(m.reasoning_content.length > 0 && text.startsWith(m.reasoning_content) && text.endsWith(m.content),
            'the same answer, split');
  const stream = await client.chat.completions.create({ ...ask, stream: true });
  let reasoning = '', content = '';
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta ?? {};
    reasoning += d.reasoning_content ?? '';
    content += d.content ?? '';
  }
  assert.equal(reasoning, m.reasoning_content);
  assert.equal(content, m.content);
});

test('errors arrive as the client\'s own error type', async () => {
  await assert.rejects(client.completions.create({ model, prompt: 'x', max_tokens: -1 }),
                       (e) => e.status === 400 && e.error?.param === 'max_tokens');
  await assert.rejects(client.completions.create({ model: 'gpt-4', prompt: 'x' }), (e) => e.status === 404);
});

test('chat: response_format json_schema gives a value of the schema, streamed or not', async () => {
  const schema = { type: 'object', additionalProperties: false, required: ['name', 'age'],
                   properties: { name: { type: 'string', maxLength: 20 }, age: { type: 'integer' } } };
  const ask = { model, messages: [{ role: 'user', content: 'A person as JSON.' }], max_tokens: 300, temperature: 0,
                response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema } } };
  const r = await client.chat.completions.create(ask);
  assert.equal(r.choices[0].finish_reason, 'stop');
  const person = JSON.parse(r.choices[0].message.content);
  assert.deepEqual(Object.keys(person).sort(), ['age', 'name']);
  assert.equal(typeof person.name, 'string');
  assert.ok(Number.isInteger(person.age));
  const stream = await client.chat.completions.create({ ...ask, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, r.choices[0].message.content);
  await assert.rejects(client.chat.completions.create({ ...ask, response_format: { type: 'json_schema',
    json_schema: { name: 'p', schema: { type: 'string', pattern: '^a' } } } }), (e) => e.status === 400);
});

test('chat: tools, a forced call and the conversation that follows it', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city',
    parameters: { type: 'object', additionalProperties: false, required: ['city'],
                  properties: { city: { type: 'string', maxLength: 20 }, days: { type: 'integer' } } } } }];
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const r = await client.chat.completions.create({ model, messages, tools, max_tokens: 300, temperature: 0,
    tool_choice: { type: 'function', function: { name: 'get_weather' } } });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.equal(typeof JSON.parse(call.function.arguments).city, 'string');
  const stream = await client.chat.completions.create({ model, messages, tools, max_tokens: 300, temperature: 0,
    tool_choice: 'required', stream: true });
  let streamed = null, finish = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (c?.delta?.tool_calls) streamed = c.delta.tool_calls[0];
    if (c?.finish_reason) finish = c.finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(streamed.index, 0);
  assert.equal(streamed.function.arguments, call.function.arguments);
  const next = await client.chat.completions.create({ model, tools, max_tokens: 8, messages: [...messages,
    r.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'sunny, 21 C' }] });
  assert.equal(typeof next.choices[0].message.content, 'string');
});
