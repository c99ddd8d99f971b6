// The official OpenAI Node client (the `openai` package from npm, pinned in
// package.json), used exactly as an application would, against a live
// idlefleet coordinator. Issue 4, acceptance A: the client must work
// unchanged for every endpoint the coordinator serves.
//
// Run by tests/integration/openai_node_test.cc, which starts nats-server, the
// coordinator and an agent with simulated vehicles, then runs
//   node --test tests/node/openai_compat.mjs
// with these set:
//   OPENAI_BASE_URL   the coordinator's API root, e.g. http://127.0.0.1:PORT/v1
//   OPENAI_API_KEY    any non-empty key (API keys are checked once they exist)
//   IDLEFLEET_MODEL   the model id the coordinator serves (default stories260K)
//
// Only node:test and node:assert: no test framework beyond Node's own. Each
// request is small (max_tokens at most 48) so that the whole file runs in
// seconds on the tiny test model.
//
// Every endpoint the coordinator serves is here: models, completions and
// chat (streamed and not), embeddings, files and batches. Nothing is skipped:
// every check runs and can fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import OpenAI, { BadRequestError, NotFoundError, toFile } from 'openai';

const baseURL = process.env.OPENAI_BASE_URL;
const apiKey = process.env.OPENAI_API_KEY;
const model = process.env.IDLEFLEET_MODEL || 'stories260K';
assert.ok(baseURL, 'OPENAI_BASE_URL must name the coordinator, e.g. http://127.0.0.1:8080/v1');
assert.ok(apiKey, 'OPENAI_API_KEY must be set');

// No retries: a response the client would retry (429, 5xx, a dropped
// connection) must fail the test rather than be hidden by a second attempt.
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

// Reads a streamed completion to its end and returns what an application
// would keep from it, checking on the way the shape every chunk must have.
async function read_completion_stream(stream) {
  const out = { text: '', chunks: 0, finish_reason: null, usage: null, ids: new Set() };
  for await (const chunk of stream) {
    out.chunks++;
    out.ids.add(chunk.id);
    assert.equal(chunk.object, 'text_completion');
    assert.equal(chunk.model, model);
    if (chunk.usage) {
      assert.equal(out.usage, null, 'one usage chunk at most');
      out.usage = chunk.usage;
    }
    for (const choice of chunk.choices) {
      assert.equal(choice.index, 0);
      assert.equal(typeof choice.text, 'string');
      assert.equal(out.finish_reason, null, 'nothing follows the chunk with finish_reason');
      out.text += choice.text;
      if (choice.finish_reason) out.finish_reason = choice.finish_reason;
    }
  }
  return out;
}

async function read_chat_stream(stream) {
  const out = { text: '', chunks: 0, role: null, finish_reason: null, usage: null, ids: new Set() };
  for await (const chunk of stream) {
    out.chunks++;
    out.ids.add(chunk.id);
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.model, model);
    if (chunk.usage) {
      assert.equal(out.usage, null, 'one usage chunk at most');
      assert.deepEqual(chunk.choices, [], 'the usage chunk has no choices');
      out.usage = chunk.usage;
    }
    for (const choice of chunk.choices) {
      assert.equal(choice.index, 0);
      assert.ok(choice.delta && typeof choice.delta === 'object', 'every chat chunk has a delta');
      assert.equal(out.finish_reason, null, 'nothing follows the chunk with finish_reason');
      if (choice.delta.role) {
        assert.equal(out.role, null, 'the role comes once');
        assert.equal(choice.delta.role, 'assistant');
        out.role = choice.delta.role;
      }
      if (choice.delta.content != null) {
        assert.equal(typeof choice.delta.content, 'string');
        out.text += choice.delta.content;
      }
      if (choice.finish_reason) out.finish_reason = choice.finish_reason;
    }
  }
  return out;
}

function check_usage(usage, max_tokens, finish_reason) {
  assert.ok(usage, 'usage is present');
  assert.ok(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0, JSON.stringify(usage));
  assert.ok(Number.isInteger(usage.completion_tokens) && usage.completion_tokens > 0, JSON.stringify(usage));
  assert.ok(usage.completion_tokens <= max_tokens, JSON.stringify(usage));
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  if (finish_reason === 'length') assert.equal(usage.completion_tokens, max_tokens, JSON.stringify(usage));
}

function check_finish_reason(reason) {
  assert.ok(reason === 'stop' || reason === 'length', `finish_reason ${JSON.stringify(reason)}`);
}

// ---- models ------------------------------------------------------------------------

test('models.list() names the served model and models.retrieve() returns it', async () => {
  const page = await client.models.list();
  assert.ok(Array.isArray(page.data));
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    assert.equal(typeof m.created, 'number');
    assert.equal(typeof m.owned_by, 'string');
    ids.push(m.id);
  }
  assert.ok(ids.includes(model), `models.list() gave ${JSON.stringify(ids)}`);

  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
  assert.equal(one.object, 'model');
  assert.equal(typeof one.created, 'number');
});

test('models.retrieve() of an unknown model throws NotFoundError', async () => {
  await assert.rejects(client.models.retrieve('no-such-model'), (err) => {
    assert.ok(err instanceof NotFoundError, `got ${err?.constructor?.name}: ${err?.message}`);
    assert.equal(err.status, 404);
    assert.match(err.error?.message ?? '', /no-such-model/);
    return true;
  });
});

// ---- completions -------------------------------------------------------------------

test('completions.create: text, usage and finish_reason, and the same text streamed', async () => {
  const params = { model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, seed: 7 };
  const whole = await client.completions.create(params);
  assert.equal(whole.object, 'text_completion');
  assert.equal(whole.model, model);
  assert.equal(typeof whole.id, 'string');
  assert.equal(typeof whole.created, 'number');
  assert.equal(whole.choices.length, 1);
  const choice = whole.choices[0];
  assert.equal(choice.index, 0);
  assert.equal(typeof choice.text, 'string');
  assert.ok(choice.text.length > 0, 'some text');
  check_finish_reason(choice.finish_reason);
  check_usage(whole.usage, params.max_tokens, choice.finish_reason);

  const streamed = await read_completion_stream(await client.completions.create({ ...params, stream: true }));
  assert.equal(streamed.text, choice.text);
  assert.equal(streamed.finish_reason, choice.finish_reason);
  assert.equal(streamed.usage, null, 'no usage chunk unless asked for');
  assert.equal(streamed.ids.size, 1, 'every chunk has the same id');
  assert.ok(streamed.chunks >= 1);

  const with_usage = await read_completion_stream(
    await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }));
  assert.equal(with_usage.text, choice.text);
  assert.deepEqual(with_usage.usage, whole.usage);
});

test('completions.create with temperature 0.8 and a seed repeats its text, streamed or not', async () => {
  const params = { model, prompt: 'The little dog', max_tokens: 32, temperature: 0.8, seed: 1234 };
  const first = await client.completions.create(params);
  const second = await client.completions.create(params);
  assert.ok(first.choices[0].text.length > 0);
  assert.equal(second.choices[0].text, first.choices[0].text);
  const streamed = await read_completion_stream(await client.completions.create({ ...params, stream: true }));
  assert.equal(streamed.text, first.choices[0].text);
});

// ---- chat completions --------------------------------------------------------------

const messages = [
  { role: 'system', content: 'You tell short stories.' },
  { role: 'user', content: 'Lily and Ben went to the park.' },
];

test('chat.completions.create: message, usage and finish_reason, and the same text streamed', async () => {
  const params = { model, messages, max_tokens: 24, temperature: 0, seed: 11 };
  const whole = await client.chat.completions.create(params);
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.model, model);
  assert.equal(typeof whole.id, 'string');
  assert.equal(whole.choices.length, 1);
  const choice = whole.choices[0];
  assert.equal(choice.index, 0);
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(choice.message.content.length > 0, 'some text');
  check_finish_reason(choice.finish_reason);
  check_usage(whole.usage, params.max_tokens, choice.finish_reason);

  const streamed = await read_chat_stream(await client.chat.completions.create({ ...params, stream: true }));
  assert.equal(streamed.role, 'assistant');
  assert.equal(streamed.text, choice.message.content);
  assert.equal(streamed.finish_reason, choice.finish_reason);
  assert.equal(streamed.usage, null, 'no usage chunk unless asked for');
  assert.equal(streamed.ids.size, 1, 'every chunk has the same id');
});

test('chat.completions.create streamed with stream_options.include_usage ends with a usage chunk', async () => {
  const params = { model, messages, max_completion_tokens: 20, temperature: 0.8, seed: 99 };
  const whole = await client.chat.completions.create(params);
  const streamed = await read_chat_stream(
    await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }));
  assert.equal(streamed.text, whole.choices[0].message.content);
  assert.equal(streamed.finish_reason, whole.choices[0].finish_reason);
  check_usage(streamed.usage, 20, streamed.finish_reason);
  assert.deepEqual(streamed.usage, whole.usage);
});

test('chat.completions.stream() helper assembles the same completion', async () => {
  // The client's own accumulator: it rebuilds a ChatCompletion from the
  // chunks and is strict about their shape.
  const params = { model, messages, max_tokens: 16, temperature: 0, seed: 5 };
  const whole = await client.chat.completions.create(params);
  const runner = client.chat.completions.stream({ ...params, stream_options: { include_usage: true } });
  let deltas = '';
  runner.on('content', (delta) => { deltas += delta; });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.role, 'assistant');
  assert.equal(final.choices[0].message.content, whole.choices[0].message.content);
  assert.equal(final.choices[0].finish_reason, whole.choices[0].finish_reason);
  assert.equal(deltas, whole.choices[0].message.content);
  assert.deepEqual(final.usage, whole.usage);
});

// ---- errors ------------------------------------------------------------------------

test('an unknown model gives NotFoundError (404) with OpenAI\'s error object', async () => {
  for (const call of [
    () => client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 4 }),
    () => client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 4 }),
    () => client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 4, stream: true }),
  ]) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof NotFoundError, `got ${err?.constructor?.name}: ${err?.message}`);
      assert.equal(err.status, 404);
      assert.equal(typeof err.error?.message, 'string');
      assert.match(err.error.message, /no-such-model/);
      assert.equal(err.code, 'model_not_found');
      assert.equal(err.type, 'invalid_request_error');
      return true;
    });
  }
});

test('a bad parameter gives BadRequestError (400) naming it', async () => {
  for (const [call, param] of [
    [() => client.completions.create({ model, prompt: 'x', max_tokens: 4, temperature: 5 }), 'temperature'],
    [() => client.chat.completions.create({ model, messages, max_tokens: 0 }), 'max_tokens'],
    [() => client.chat.completions.create({ model, messages: [], max_tokens: 4, stream: true }), 'messages'],
  ]) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof BadRequestError, `got ${err?.constructor?.name}: ${err?.message}`);
      assert.equal(err.status, 400);
      assert.equal(typeof err.error?.message, 'string');
      assert.ok(err.error.message.length > 0);
      assert.ok(err.message.includes(err.error.message), err.message);
      assert.equal(err.param, param);
      assert.equal(err.type, 'invalid_request_error');
      return true;
    });
  }
});

// ---- Embeddings ----------------------------------------------------------------------

test('embeddings: one input and several, float and base64 (the client default), deterministic', async () => {
  const one = await client.embeddings.create({ model, input: 'Once upon a time', encoding_format: 'float' });
  assert.equal(one.object, 'list');
  assert.equal(one.model, model);
  assert.equal(one.data.length, 1);
  assert.equal(one.data[0].object, 'embedding');
  assert.equal(one.data[0].index, 0);
  const v = one.data[0].embedding;
  assert.ok(Array.isArray(v) && v.length > 0);
  const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  assert.ok(Math.abs(norm - 1) < 1e-5, `unit length, got ${norm}`);
  assert.ok(one.usage.prompt_tokens > 0);
  assert.equal(one.usage.total_tokens, one.usage.prompt_tokens);
  // No encoding_format: the client asks for base64 and decodes it to the same floats.
  const decoded = await client.embeddings.create({ model, input: 'Once upon a time' });
  assert.equal(decoded.data[0].embedding.length, v.length);
  for (let i = 0; i < v.length; i++) assert.equal(Math.fround(decoded.data[0].embedding[i]), Math.fround(v[i]));
  const many = await client.embeddings.create({ model, input: ['The little dog', 'Once upon a time'], encoding_format: 'float' });
  assert.deepEqual(many.data.map((d) => d.index), [0, 1]);
  assert.deepEqual(many.data[1].embedding, v);
  assert.notDeepEqual(many.data[0].embedding, v);
  await assert.rejects(client.embeddings.create({ model: 'no-such-model', input: 'x' }), NotFoundError);
  await assert.rejects(client.embeddings.create({ model, input: [] }), BadRequestError);
});

// ---- Files and batches ---------------------------------------------------------------

test('files: upload, retrieve, list, content, delete', async () => {
  const jsonl = '{"custom_id":"x","method":"POST","url":"/v1/completions","body":{}}\n';
  const f = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'x.jsonl'), purpose: 'batch' });
  assert.equal(f.object, 'file');
  assert.equal(f.purpose, 'batch');
  assert.equal(f.filename, 'x.jsonl');
  assert.equal(f.bytes, Buffer.byteLength(jsonl));
  assert.equal((await client.files.retrieve(f.id)).id, f.id);
  const ids = [];
  for await (const item of client.files.list()) ids.push(item.id);
  assert.ok(ids.includes(f.id));
  assert.equal(await (await client.files.content(f.id)).text(), jsonl);
  const gone = await client.files.delete(f.id);
  assert.equal(gone.deleted, true);
  await assert.rejects(client.files.retrieve(f.id), NotFoundError);
  await assert.rejects(
    client.files.create({ file: await toFile(Buffer.from('x'), 'x.txt'), purpose: 'fine-tune' }),
    BadRequestError,
  );
});

test('batches: a chat batch completes with one line per request, equal to the same request sent directly', async () => {
  const requests = [];
  for (let i = 0; i < 12; i++) {
    requests.push({
      custom_id: `r${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model, messages: [{ role: 'user', content: `Tell me about the number ${i}` }], max_tokens: 16, seed: 40 + i, temperature: 0.8 },
    });
  }
  const jsonl = requests.map((r) => JSON.stringify(r)).join('\n') + '\n';
  const input = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'in.jsonl'), purpose: 'batch' });
  let batch = await client.batches.create({
    input_file_id: input.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    metadata: { test: 'node' },
  });
  assert.equal(batch.object, 'batch');
  assert.equal(batch.metadata.test, 'node');
  const deadline = Date.now() + 60_000;
  while (batch.status !== 'completed') {
    assert.ok(!['failed', 'expired', 'cancelled'].includes(batch.status), `batch ${batch.status}`);
    assert.ok(Date.now() < deadline, `batch still ${batch.status}`);
    await new Promise((r) => setTimeout(r, 100));
    batch = await client.batches.retrieve(batch.id);
  }
  assert.equal(batch.request_counts.total, 12);
  assert.equal(batch.request_counts.completed, 12);
  assert.equal(batch.request_counts.failed, 0);
  const lines = (await (await client.files.content(batch.output_file_id)).text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 12);
  assert.deepEqual(lines.map((l) => l.custom_id).sort(), requests.map((r) => r.custom_id).sort());
  for (const line of lines.slice(0, 3)) {
    assert.equal(line.response.status_code, 200);
    const request = requests.find((r) => r.custom_id === line.custom_id);
    const direct = await client.chat.completions.create(request.body);
    assert.equal(line.response.body.choices[0].message.content, direct.choices[0].message.content);
  }
  const listed = [];
  for await (const b of client.batches.list({ limit: 100 })) listed.push(b.id);
  assert.ok(listed.includes(batch.id));
  await assert.rejects(client.batches.retrieve('batch_nope'), NotFoundError);
});

test('batches: an embeddings batch gives what embeddings.create gives', async () => {
  const requests = ['Once upon a time', 'The little dog', ['Lily and Ben', 'One day']].map((input, i) => ({
    custom_id: `e${i}`,
    method: 'POST',
    url: '/v1/embeddings',
    body: { model, input, encoding_format: 'float' },
  }));
  const jsonl = requests.map((r) => JSON.stringify(r)).join('\n') + '\n';
  const input = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'emb.jsonl'), purpose: 'batch' });
  let batch = await client.batches.create({ input_file_id: input.id, endpoint: '/v1/embeddings', completion_window: '24h' });
  const deadline = Date.now() + 60_000;
  while (batch.status !== 'completed') {
    assert.ok(!['failed', 'expired', 'cancelled'].includes(batch.status), `batch ${batch.status}`);
    assert.ok(Date.now() < deadline, `batch still ${batch.status}`);
    await new Promise((r) => setTimeout(r, 100));
    batch = await client.batches.retrieve(batch.id);
  }
  assert.equal(batch.request_counts.completed, 3);
  const lines = (await (await client.files.content(batch.output_file_id)).text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  for (const line of lines) {
    const request = requests.find((r) => r.custom_id === line.custom_id);
    const direct = await client.embeddings.create(request.body);
    assert.deepEqual(line.response.body.data, direct.data);
  }
});

test('batches: cancel stops a batch and keeps what finished', async () => {
  const requests = [];
  for (let i = 0; i < 1500; i++) {
    requests.push({ custom_id: `c${i}`, method: 'POST', url: '/v1/completions', body: { model, prompt: 'Once', max_tokens: 256, seed: i } });
  }
  const jsonl = requests.map((r) => JSON.stringify(r)).join('\n');
  const input = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'big.jsonl'), purpose: 'batch' });
  const batch = await client.batches.create({ input_file_id: input.id, endpoint: '/v1/completions', completion_window: '24h' });
  const cancelled = await client.batches.cancel(batch.id);
  assert.ok(['cancelling', 'cancelled'].includes(cancelled.status), cancelled.status);
  let b = cancelled;
  const deadline = Date.now() + 60_000;
  while (b.status !== 'cancelled') {
    assert.ok(Date.now() < deadline, `batch still ${b.status}`);
    await new Promise((r) => setTimeout(r, 100));
    b = await client.batches.retrieve(batch.id);
  }
  assert.ok(b.request_counts.completed < 1500);
});
