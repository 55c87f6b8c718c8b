// The ONNX Runtime side of tests/bench/bench_ort.sh: one InferenceSession (CPU provider,
// FP32) kept loaded in this process and driven over stdin, one command per line, one answer
// line each (the same protocol as tests/bench/resattn_worker.c):
//   logits PATH   run once on the input, write the logits to PATH (raw float32), answer "ok"
//   run           one untimed pass, then one timed pass; answer its milliseconds
//   quit          exit
//
//   node tests/bench/ort_worker.mjs MODEL.onnx THREADS INPUT.f32 BATCH CHANNELS
//
// Session options as the comparison states them: intraOpNumThreads = THREADS,
// interOpNumThreads 1, sequential execution, graphOptimizationLevel 'all'. The timed span is
// session.run alone (the input tensor is made once).
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');

const [model, threadsArg, inputPath, batchArg, channelsArg] = process.argv.slice(2);
const threads = Number(threadsArg), batch = Number(batchArg), channels = Number(channelsArg);
if (!model || !(threads >= 1) || !inputPath || !(batch >= 1) || !(channels >= 1)) {
  process.stderr.write('usage: node ort_worker.mjs MODEL.onnx THREADS INPUT.f32 BATCH CHANNELS\n');
  process.exit(2);
}

const raw = readFileSync(inputPath);
const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
const side = Math.round(Math.sqrt(data.length / (batch * channels)));
if (side * side * batch * channels !== data.length) {
  process.stderr.write(`ort_worker: ${inputPath} is not ${batch} square ${channels}-channel images\n`);
  process.exit(2);
}
const session = await ort.InferenceSession.create(model, {
  executionProviders: ['cpu'],
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
});
const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, [batch, channels, side, side]) };
const outName = session.outputNames[0];

async function pass() {
  const out = await session.run(feeds);
  return out[outName];
}

process.stdout.write('ready\n');
const lines = createInterface({ input: process.stdin, terminal: false });
for await (const line of lines) {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'logits') {
    const y = await pass();
    writeFileSync(arg, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
    process.stdout.write('ok\n');
  } else if (cmd === 'run') {
    await pass();
    const t0 = process.hrtime.bigint();
    await pass();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    process.stdout.write(`${ms.toFixed(4)}\n`);
  } else if (cmd === 'quit') {
    break;
  } else {
    process.stdout.write(`error unknown command ${cmd}\n`);
  }
}
await session.release();
process.exit(0);
