// web/app.js - the page's side of clip.c: read the chosen files into the
// WebAssembly heap, call web/clip_web.c, show one probability per caption.
'use strict';

const $ = (id) => document.getElementById(id);
let clip = null;          // the emscripten module (createClip() in clip.js)
let loadedModel = null;   // the File now loaded into clip, if any

// The model that ships with the repository (make wasm copies data/clip-shapes.bin and
// data/shapes-demo.png next to this page): used when no model file is picked.
const SHIPPED_MODEL = 'clip-shapes.bin', SHIPPED_PICTURE = 'shapes-demo.png';
const SHAPE_CAPTIONS = ['a photo of a red circle', 'a photo of an orange star', 'a photo of a purple star',
                        'a photo of a blue square', 'a photo of a green triangle'];
let shippedModel = null;  // File, once fetched
let demoPicture = null;   // File, once "try it" fetched it (used while no image is picked)

async function fetchFile(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${r.statusText} (make wasm puts it next to index.html)`);
  return new File([await r.blob()], url);
}

function setStatus(text, isError) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

// The last error sentence of clip_web.c, as a JavaScript exception.
function fail(what) {
  throw new Error(what + ': ' + clip.UTF8ToString(clip._web_error()));
}

// Model file -> 64-byte aligned heap memory, copied in slices so the page
// never holds a second whole copy -> clip_load_memory.
async function loadModel(file) {
  if (loadedModel === file) return;
  clip._web_unload();
  loadedModel = null;
  const ptr = clip._web_alloc(file.size);
  if (!ptr) fail(file.name);
  const slice = 16 << 20;
  try {
    for (let off = 0; off < file.size; off += slice) {
      const part = new Uint8Array(await file.slice(off, off + slice).arrayBuffer());
      clip.HEAPU8.set(part, ptr + off);
    }
  } catch (e) {
    clip._free(ptr);
    throw e;
  }
  if (clip._web_load_memory(ptr, file.size) < 0) fail(file.name);
  loadedModel = file;
}

// Image file bytes -> image_embeds (decoding is clip.c's, not the browser's).
async function embedImage(file, mode, out) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const ptr = clip._malloc(Math.max(bytes.length, 1));
  if (!ptr) throw new Error('out of memory for the image');
  clip.HEAPU8.set(bytes, ptr);
  const rc = clip._web_embed_image(ptr, bytes.length, mode, out);
  clip._free(ptr);
  if (rc < 0) fail(file.name);
}

// Caption -> text_embeds.
function embedText(text, out) {
  const size = clip.lengthBytesUTF8(text) + 1;
  const ptr = clip._malloc(size);
  clip.stringToUTF8(text, ptr, size);
  const rc = clip._web_embed_text(ptr, out);
  clip._free(ptr);
  if (rc < 0) fail('caption "' + text + '"');
}

function showResults(captions, logits, probs) {
  const body = $('results').tBodies[0];
  body.textContent = '';
  let best = 0;
  for (let t = 1; t < probs.length; t++) if (probs[t] > probs[best]) best = t;
  captions.forEach((text, t) => {
    const row = body.insertRow();
    if (t === best) row.className = 'best';
    row.insertCell().textContent = text;
    const p = row.insertCell();
    p.className = 'num prob';
    p.textContent = probs[t].toFixed(4);
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('div');
    fill.className = 'fill';
    fill.style.width = (100 * probs[t]).toFixed(2) + '%';
    bar.appendChild(fill);
    row.insertCell().appendChild(bar);
    const l = row.insertCell();
    l.className = 'num';
    l.textContent = logits[t].toFixed(4);
  });
  $('results').hidden = false;
}

// Experiment 1: one image, n captions -> softmax(exp(logit_scale) * cosine similarities).
async function run() {
  let modelFile = $('model').files[0];
  const imageFile = $('image').files[0] || demoPicture;
  const captions = $('captions').value.split('\n').map((s) => s.trim()).filter((s) => s.length > 0);
  if (!imageFile) return setStatus('Pick an image first.', true);
  if (captions.length === 0) return setStatus('Type at least one caption.', true);
  $('run').disabled = true;
  $('results').hidden = true;
  let buf = 0;
  try {
    const t0 = performance.now();
    if (!modelFile) {
      if (!shippedModel) {
        setStatus('Fetching the shipped model…');
        shippedModel = await fetchFile(SHIPPED_MODEL);
      }
      modelFile = shippedModel;
    }
    if (loadedModel !== modelFile) {
      setStatus('Loading the model…');
      await new Promise((r) => setTimeout(r, 0));   // let the status paint
      await loadModel(modelFile);
    }
    setStatus('Computing…');
    await new Promise((r) => setTimeout(r, 0));
    const D = clip._web_dim(), n = captions.length;
    // one heap block: image embedding [D], text embeddings [n, D], logits [n], probs [n]
    buf = clip._malloc(4 * (D + n * D + 2 * n));
    if (!buf) throw new Error('out of memory');
    const img = buf, txt = buf + 4 * D, logits = txt + 4 * n * D, probs = logits + 4 * n;
    await embedImage(imageFile, Number($('resize').value), img);
    captions.forEach((text, t) => embedText(text, txt + 4 * t * D));
    if (clip._web_match(img, txt, n, logits, probs) < 0) fail('match');
    const f32 = clip.HEAPF32;
    showResults(captions, Array.from(f32.subarray(logits / 4, logits / 4 + n)),
                Array.from(f32.subarray(probs / 4, probs / 4 + n)));
    setStatus(`Done in ${((performance.now() - t0) / 1000).toFixed(2)} s (${D}-dimensional embeddings, ` +
              `logit scale ${clip._web_logit_scale().toFixed(4)}).`);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    if (buf) clip._free(buf);
    $('run').disabled = false;
  }
}

function showPreview(file) {
  const img = $('preview');
  if (img.src) URL.revokeObjectURL(img.src);
  img.hidden = !file;
  if (file) img.src = URL.createObjectURL(file);
}

$('image').addEventListener('change', () => showPreview($('image').files[0] || demoPicture));
$('run').addEventListener('click', run);

// "try it": the shipped model on its demo picture, with captions about shapes
$('try-shapes').addEventListener('click', async (e) => {
  e.preventDefault();
  try {
    demoPicture = demoPicture || await fetchFile(SHIPPED_PICTURE);
  } catch (err) {
    return setStatus(err.message, true);
  }
  $('model').value = '';
  $('image').value = '';
  showPreview(demoPicture);
  $('captions').value = SHAPE_CAPTIONS.join('\n');
  if (clip) run();
});

createClip().then((m) => {
  clip = m;
  $('run').disabled = false;
  setStatus('Ready. Without a model file the page uses the shipped clip-shapes.bin.');
}, (e) => setStatus('Cannot start the WebAssembly module: ' + e, true));
