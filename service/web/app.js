// The cnn-serve page: draw or drop a digit, see the prediction and every layer's feature maps.
// Plain JavaScript, no build step, no network beyond this server.
"use strict";

const DEBOUNCE_MS = 250;

const elements = {
  modelSelect: document.getElementById("model-select"),
  clearButton: document.getElementById("clear-button"),
  penWidth: document.getElementById("pen-width"),
  penWidthValue: document.getElementById("pen-width-value"),
  apiKeyBox: document.getElementById("api-key-box"),
  apiKeyForm: document.getElementById("api-key-form"),
  apiKeyInput: document.getElementById("api-key-input"),
  canvas: document.getElementById("draw-canvas"),
  dropZone: document.getElementById("drop-zone"),
  fileInput: document.getElementById("file-input"),
  errorBox: document.getElementById("error-box"),
  label: document.getElementById("predicted-label"),
  confidence: document.getElementById("confidence"),
  seenCanvas: document.getElementById("seen-canvas"),
  bars: document.getElementById("probability-bars"),
  saliency: document.getElementById("saliency-image"),
  saliencyCaption: document.getElementById("saliency-caption"),
  featureMaps: document.getElementById("feature-maps"),
};

const state = {
  models: new Map(),      // name -> model summary from /models
  source: null,           // "drawing" | File
  hasInk: false,
  debounceTimer: null,
  inFlight: null,         // AbortController of the newest update
  objectUrls: [],
  lastBlob: null,         // the image behind the results shown
  explaining: null,       // AbortController of the newest explanation
  saliencyUrl: null,
};

const context = elements.canvas.getContext("2d");

// The pen's width in canvas pixels: thin pens (1-2 px) are what paint programs and phones give.
function penWidth() {
  return Number(elements.penWidth.value);
}

elements.penWidth.addEventListener("input", () => {
  elements.penWidthValue.textContent = `${penWidth()} px`;
  context.lineWidth = penWidth();
});

function resetCanvas() {
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, elements.canvas.width, elements.canvas.height);
  context.lineCap = "round";
  context.lineJoin = "round";
  context.strokeStyle = "#000000";
  context.lineWidth = penWidth();
  state.hasInk = false;
}

function showError(message) {
  elements.errorBox.textContent = message;
  elements.errorBox.hidden = false;
}

function clearError() {
  elements.errorBox.hidden = true;
  elements.errorBox.textContent = "";
}

// Turn any failed response into one readable sentence, whatever went wrong.
async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      return `${body.error.message} (HTTP ${response.status})`;
    }
  } catch (ignored) { /* not JSON */ }
  return `The server answered HTTP ${response.status}.`;
}

// ---- API keys: asked for only when the server answers 401 ----------------------------------

const API_KEY_STORAGE = "cnn-serve-api-key";

async function apiFetch(url, options = {}) {
  const key = sessionStorage.getItem(API_KEY_STORAGE);
  const headers = key ? { ...(options.headers || {}), Authorization: `Bearer ${key}` } : options.headers;
  const response = await fetch(url, { ...options, headers });
  if (response.status === 401) elements.apiKeyBox.hidden = false;
  return response;
}

elements.apiKeyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(API_KEY_STORAGE, elements.apiKeyInput.value.trim());
  elements.apiKeyInput.value = "";
  elements.apiKeyBox.hidden = true;
  clearError();
  loadModels().then(update);
});

async function loadModels() {
  try {
    const response = await apiFetch("/models");
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    elements.modelSelect.replaceChildren();
    for (const model of body.models) {
      state.models.set(model.name, model);
      const option = new Option(model.name, model.name, model.default, model.default);
      elements.modelSelect.append(option);
    }
  } catch (error) {
    showError(`Cannot list the models: ${error.message}`);
  }
}

function currentModel() {
  return state.models.get(elements.modelSelect.value);
}

// ---- drawing -------------------------------------------------------------------------------

function canvasPoint(event) {
  const box = elements.canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) / box.width) * elements.canvas.width,
    y: ((event.clientY - box.top) / box.height) * elements.canvas.height,
  };
}

let drawing = false;
let lastPoint = null;

elements.canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  elements.canvas.setPointerCapture(event.pointerId);
  drawing = true;
  lastPoint = canvasPoint(event);
  context.beginPath();
  context.arc(lastPoint.x, lastPoint.y, penWidth() / 2, 0, 2 * Math.PI);
  context.fillStyle = "#000000";
  context.fill();
  state.source = "drawing";
  state.hasInk = true;
});

elements.canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  event.preventDefault();
  const point = canvasPoint(event);
  context.beginPath();
  context.moveTo(lastPoint.x, lastPoint.y);
  context.lineTo(point.x, point.y);
  context.stroke();
  lastPoint = point;
  scheduleUpdate();
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  scheduleUpdate();
}
elements.canvas.addEventListener("pointerup", endStroke);
elements.canvas.addEventListener("pointercancel", endStroke);

elements.clearButton.addEventListener("click", () => {
  resetCanvas();
  state.source = null;
  elements.fileInput.value = "";
  clearResults();
  clearError();
});

// ---- files -----------------------------------------------------------------------------------

function useFile(file) {
  if (!file) return;
  state.source = file;
  resetCanvas();
  drawFilePreview(file);
  update();
}

function drawFilePreview(file) {
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    const scale = Math.min(elements.canvas.width / image.width, elements.canvas.height / image.height);
    const width = image.width * scale;
    const height = image.height * scale;
    context.drawImage(image, (elements.canvas.width - width) / 2, (elements.canvas.height - height) / 2, width, height);
    URL.revokeObjectURL(url);
  };
  image.onerror = () => URL.revokeObjectURL(url);
  image.src = url;
}

elements.fileInput.addEventListener("change", () => useFile(elements.fileInput.files[0]));
for (const name of ["dragenter", "dragover"]) {
  elements.dropZone.addEventListener(name, (event) => {
    event.preventDefault();
    elements.dropZone.classList.add("dragging");
  });
}
for (const name of ["dragleave", "drop"]) {
  elements.dropZone.addEventListener(name, () => elements.dropZone.classList.remove("dragging"));
}
elements.dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  useFile(event.dataTransfer.files[0]);
});
elements.modelSelect.addEventListener("change", () => update());

// ---- talking to the API ----------------------------------------------------------------------

function scheduleUpdate() {
  clearTimeout(state.debounceTimer);
  state.debounceTimer = setTimeout(update, DEBOUNCE_MS);
}

function currentImage() {
  if (state.source instanceof File) return Promise.resolve(state.source);
  if (state.source === "drawing" && state.hasInk) {
    return new Promise((resolve) => elements.canvas.toBlob(resolve, "image/png"));
  }
  return Promise.resolve(null);
}

function imageForm(blob) {
  const form = new FormData();
  form.append("files", blob, blob.name || "drawing.png");
  return form;
}

async function update() {
  const model = currentModel();
  const blob = await currentImage();
  if (!model || !blob) return;
  if (state.inFlight) state.inFlight.abort();  // Only the newest drawing matters.
  const controller = new AbortController();
  state.inFlight = controller;
  const base = `/models/${encodeURIComponent(model.name)}/feature-maps`;
  const lastLayer = model.feature_maps[model.feature_maps.length - 1].layer;
  try {
    const response = await apiFetch(`${base}?layers=${encodeURIComponent(lastLayer)}`, {
      method: "POST", body: imageForm(blob), signal: controller.signal,
    });
    if (!response.ok) {
      showError(await errorMessage(response));
      clearResults();
      return;
    }
    const body = await response.json();
    clearError();
    state.lastBlob = blob;
    showPrediction(body.prediction, model);
    showSeenInput(body.input);
    await Promise.all([
      showExplanation(model, blob, body.prediction.class_index, body.prediction.class_index),
      showFeatureMaps(base, blob, model, controller.signal),
    ]);
  } catch (error) {
    if (error.name !== "AbortError") showError(`Cannot reach the server: ${error.message}`);
  }
}

// ---- showing results -------------------------------------------------------------------------

function clearResults() {
  elements.label.textContent = "–";
  elements.confidence.textContent = "";
  elements.bars.replaceChildren();
  elements.featureMaps.replaceChildren();
  elements.saliency.hidden = true;
  delete elements.saliency.dataset.target;
  elements.seenCanvas.getContext("2d").clearRect(0, 0, elements.seenCanvas.width, elements.seenCanvas.height);
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
}

// What the service's "reason" means, said plainly (service/reliability.py).
const DOUBTS = {
  blank: "not sure: there is nothing to read",
  "several digits": "not sure: this looks like several digits",
  "not one digit": "not sure: this doesn't look like one digit",
  "does not look like a digit": "not sure: this doesn't look like one digit",
  "low confidence": "not sure: it could be another digit",
};

function doubtText(reason) {
  return DOUBTS[reason] || `not sure: ${reason}`;
}

function showPrediction(prediction, model) {
  const labels = model.labels;
  elements.label.textContent = prediction.label;
  const sure = `${(prediction.confidence * 100).toFixed(1)} % sure`;
  elements.confidence.textContent =
    prediction.reliable === false ? `${doubtText(prediction.reason)} (the model says ${sure})` : sure;
  elements.confidence.classList.toggle("doubtful", prediction.reliable === false);
  const order = prediction.probabilities
    .map((probability, index) => ({ probability, index }))
    .sort((a, b) => b.probability - a.probability);
  const rows = order.map(({ probability, index }) => {
    const row = document.createElement("div");
    row.className = index === prediction.class_index ? "bar-row best" : "bar-row";
    row.dataset.classIndex = String(index);
    row.tabIndex = 0;
    row.setAttribute("role", "button");
    row.title = index === prediction.class_index ? `why ${labels[index]}?` : `why not ${labels[index]}?`;
    const explain = () => showExplanation(model, state.lastBlob, index, prediction.class_index);
    row.addEventListener("click", explain);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); explain(); }
    });
    const name = document.createElement("span");
    name.textContent = labels[index];
    const track = document.createElement("div");
    track.className = "bar-track";
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = `${(probability * 100).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(probability * 100).toFixed(1)}%`;
    row.append(name, track, value);
    return row;
  });
  elements.bars.replaceChildren(...rows);
}

function showSeenInput(pixels) {
  const size = pixels.length;
  const small = new ImageData(size, size);
  for (let row = 0; row < size; row += 1) {
    for (let column = 0; column < size; column += 1) {
      const offset = (row * size + column) * 4;
      const value = Math.round(pixels[row][column] * 255);
      small.data[offset] = value;
      small.data[offset + 1] = value;
      small.data[offset + 2] = value;
      small.data[offset + 3] = 255;
    }
  }
  const scratch = document.createElement("canvas");
  scratch.width = size;
  scratch.height = size;
  scratch.getContext("2d").putImageData(small, 0, 0);
  const seen = elements.seenCanvas.getContext("2d");
  seen.imageSmoothingEnabled = false;
  seen.drawImage(scratch, 0, 0, elements.seenCanvas.width, elements.seenCanvas.height);
}

// Which pixels made the model answer: /explain's saliency over what the model saw, for the
// predicted class or for one a person clicks ("why not 9?").
async function showExplanation(model, blob, target, predicted) {
  if (!blob) return;
  if (state.explaining) state.explaining.abort();
  const controller = new AbortController();
  state.explaining = controller;
  const url = `/models/${encodeURIComponent(model.name)}/explain?format=png&target=${target}`;
  try {
    const response = await apiFetch(url, { method: "POST", body: imageForm(blob), signal: controller.signal });
    if (!response.ok) throw new Error(await errorMessage(response));
    if (state.saliencyUrl) URL.revokeObjectURL(state.saliencyUrl);
    state.saliencyUrl = URL.createObjectURL(await response.blob());
    elements.saliency.src = state.saliencyUrl;
    elements.saliency.dataset.target = String(target);
    elements.saliency.alt = `saliency for ${model.labels[target]}`;
    elements.saliency.hidden = false;
    const label = model.labels[target];
    elements.saliencyCaption.textContent = target === predicted
      ? `Why ${label}: red pixels speak for it, blue against (click another class: why not?)`
      : `Why not ${label}: blue pixels speak against it, red for it`;
    for (const row of elements.bars.querySelectorAll(".bar-row")) {
      row.classList.toggle("explained", row.dataset.classIndex === String(target));
    }
  } catch (error) {
    if (error.name !== "AbortError") showError(`Cannot explain: ${error.message}`);
  }
}

async function showFeatureMaps(base, blob, model, signal) {
  const figures = await Promise.all(model.feature_maps.map(async (layer) => {
    const response = await apiFetch(`${base}?format=png&layers=${encodeURIComponent(layer.layer)}`, {
      method: "POST", body: imageForm(blob), signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const url = URL.createObjectURL(await response.blob());
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.alt = `${layer.layer} feature maps`;
    image.dataset.layer = layer.layer;
    image.src = url;
    const caption = document.createElement("figcaption");
    caption.textContent = `${layer.layer} (${layer.kind}) ${layer.shape.join("×")}`;
    figure.append(image, caption);
    return { figure, url };
  }));
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = figures.map((item) => item.url);
  elements.featureMaps.replaceChildren(...figures.map((item) => item.figure));
}

resetCanvas();
loadModels();
