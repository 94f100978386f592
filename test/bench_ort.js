// ONNX Runtime's side of make bench (test/bench.py runs it; it is no test of its own):
//
//   node test/bench_ort.js IMAGE.onnx TEXT.onnx THREADS PIXELS.npy IDS
//
// IMAGE.onnx and TEXT.onnx are the model file's towers as bench.py exports them with
// torch.onnx.export (float32 weights; pixel_values [b, 3, S, S] -> embeds, input_ids [b, n] ->
// embeds). onnxruntime-node (npm install --ignore-scripts onnxruntime-node, in test/) runs them on
// the CPU with THREADS intra-op threads and one inter-op thread, every graph optimization on
// (threads spin between jobs unless OMP_WAIT_POLICY=PASSIVE, as OpenMP's do).
// The runs are clip bench's: one image, a batch of 16, a text of 7 tokens (IDS, comma separated),
// one of 77; each timed in rounds over all runs, best kept. PIXELS.npy (float32 [1, 3, S, S]) and
// IDS are the inputs PyTorch's side saved its features for: their features are printed too, so
// that bench.py can check that both compute the same thing. One line of JSON on stdout.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

// a little-endian float32 .npy file (version 1 or 2 header) -> {shape, data}
function readNpy(path) {
    const buf = fs.readFileSync(path);
    const v1 = buf[6] === 1, hlen = v1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8), start = (v1 ? 10 : 12) + hlen;
    const header = buf.toString('latin1', v1 ? 10 : 12, start);
    if (!header.includes("'<f4'")) throw new Error(path + ': not little-endian float32');
    const shape = header.match(/\(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
    const data = new Float32Array(buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + buf.length));
    return { shape, data };
}

function ids64(ids) {
    return new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]);
}

async function main() {
    const [imagePath, textPath, threadsArg, pxPath, idsArg] = process.argv.slice(2);
    const threads = Number(threadsArg);
    const options = { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
                      graphOptimizationLevel: 'all' };
    // OMP_WAIT_POLICY=PASSIVE (bench.py --wait-policy passive): ONNX Runtime's threads sleep
    // between jobs too, instead of spinning (its default, like OpenMP's active policy)
    if ((process.env.OMP_WAIT_POLICY || '').toUpperCase() === 'PASSIVE')
        options.extra = { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } };
    const ids7 = idsArg.split(',').map(Number);
    const ids77 = Array.from({ length: 77 }, (_, i) => (i * 7) % 49000 + 320);
    ids77[76] = 49407;

    // start-up as clip bench measures it: the text tower loaded, one text embedded
    let t0 = process.hrtime.bigint();
    const text = await ort.InferenceSession.create(textPath, options);
    const textFeatures = (await text.run({ input_ids: ids64(ids7) })).embeds.data;
    const firstTextMs = Number(process.hrtime.bigint() - t0) / 1e6;
    t0 = process.hrtime.bigint();
    const image = await ort.InferenceSession.create(imagePath, options);
    const imageLoadMs = Number(process.hrtime.bigint() - t0) / 1e6;

    const px = readNpy(pxPath), S = px.shape[3];
    const px1 = new ort.Tensor('float32', px.data, [1, 3, S, S]);
    const many = new Float32Array(16 * 3 * S * S);
    let seed = 1;
    for (let i = 0; i < many.length; i++) {
        seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
        many[i] = (seed >>> 8) / 16777216 * 4 - 2;
    }
    const px16 = new ort.Tensor('float32', many, [16, 3, S, S]);
    const imageFeatures = (await image.run({ pixel_values: px1 })).embeds.data;

    const runs = [['image', () => image.run({ pixel_values: px1 })],
                  ['image, batch of 16', () => image.run({ pixel_values: px16 })],
                  ['text, 7 tokens', () => text.run({ input_ids: ids64(ids7) })],
                  ['text, 77 tokens', () => text.run({ input_ids: ids64(ids77) })]];
    const best = runs.map(() => Infinity);
    for (const [, fn] of runs) await fn();   // warm up
    const start = process.hrtime.bigint();
    for (let round = 0; round < 50; round++) {
        for (let r = 0; r < runs.length; r++) {
            const t = process.hrtime.bigint();
            await runs[r][1]();
            best[r] = Math.min(best[r], Number(process.hrtime.bigint() - t) / 1e6);
        }
        if (round >= 2 && Number(process.hrtime.bigint() - start) / 1e9 > 10) break;
    }
    const version = require('onnxruntime-node/package.json').version;
    console.log(JSON.stringify({ ort: version, threads, first_text_ms: firstTextMs, image_load_ms: imageLoadMs,
                                 runs: runs.map(([name], r) => ({ name, ms: best[r] })),
                                 image_features: Array.from(imageFeatures), text_features: Array.from(textFeatures) }));
}

main().catch((e) => { console.error('bench_ort: ' + (e && e.message ? e.message : e)); process.exit(1); });
