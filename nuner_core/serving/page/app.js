// nuner serve's page: calls the public API only (v1/models, v1/tag, v1/predict); no build step, no external asset.
"use strict";

const EXAMPLES = [
  { name: "Science", labels: "person, city, award, date",
    text: "Marie Curie moved from Warsaw to Paris in 1891 and shared the Nobel Prize in Physics with Pierre Curie in 1903." },
  { name: "Food order", labels: "dish, restaurant, address, price",
    text: "Two margherita pizzas and a tiramisu from Luigi's Trattoria, delivered to 12 Baker Street, London, for $38.50." },
  { name: "Medicine", labels: "drug, dosage, symptom, organization",
    text: "Patients taking 40 mg of atorvastatin reported muscle pain, and Pfizer said the trial in Boston would continue." },
  { name: "Tech news", labels: "organization, product, location, date",
    text: "Apple unveiled the iPhone 15 at its headquarters in Cupertino on September 12, 2023." },
];
// Soft colours, readable under dark text; a label keeps its colour while the labels field does not change.
const PALETTE = ["#ffd8a8", "#b2f2bb", "#a5d8ff", "#fcc2d7", "#d0bfff", "#ffec99", "#99e9f2", "#c3fae8", "#ffc9c9", "#e9ecef"];

const $ = (id) => document.getElementById(id);
const state = { models: [], threshold: null, answers: 0 };

async function api(path, body) {
  const init = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error(`the server did not answer (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null; // not JSON: the status line says enough
  }
  if (!response.ok) {
    const message = data && data.error ? data.error : `${response.statusText || "error"}`;
    const field = data && data.field ? ` [${data.field}]` : "";
    throw new Error(`${response.status}: ${message}${field}`);
  }
  if (data === null) throw new Error(`${path}: the answer is not JSON`);
  return data;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

function labelsTyped() {
  return $("labels").value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

function setThreshold(value) {
  state.threshold = value;
  $("threshold").value = String(value);
  $("threshold-value").textContent = value.toFixed(2);
}

// A zero-shot model takes any labels and a threshold; a token classifier has its own labels and neither.
function onModelChange() {
  const model = currentModel();
  if (!model) return;
  const zeroShot = model.kind === "zero_shot";
  $("labels").disabled = !zeroShot;
  $("threshold").disabled = !zeroShot;
  if (zeroShot) {
    if (!labelsTyped().length) $("labels").value = EXAMPLES[0].labels;
    setThreshold(model.threshold);
  } else {
    $("labels").value = model.labels.join(", ");
    $("threshold-value").textContent = "—";
  }
  const kind = zeroShot ? `zero-shot, calibrated threshold ${model.threshold.toFixed(3)}` : "token classifier (its own labels)";
  $("model-info").textContent = `${kind}${model.base_encoder ? ` · ${model.base_encoder}` : ""}`;
}

function colours(labels) {
  const map = new Map();
  labels.forEach((label) => map.has(label) || map.set(label, PALETTE[map.size % PALETTE.length]));
  return map;
}

// Offsets are characters (code points, as Python counts them), not UTF-16 units: slice an array of code points.
function render(text, entities, labels) {
  const chars = Array.from(text);
  const colour = colours([...labels, ...entities.map((e) => e.label)]);
  const out = $("output");
  out.replaceChildren();
  let at = 0;
  const sorted = [...entities].sort((a, b) => a.start - b.start || b.end - a.end);
  for (const e of sorted) {
    if (e.start < at) continue; // an overlapping span ("spans" decoding): the first one is shown
    out.append(chars.slice(at, e.start).join(""));
    const mark = document.createElement("mark");
    mark.append(chars.slice(e.start, e.end).join(""));
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = e.label;
    mark.append(tag);
    Object.assign(mark.dataset, { label: e.label, start: e.start, end: e.end, score: e.score });
    mark.title = `${e.label} · score ${e.score.toFixed(3)}`;
    mark.style.setProperty("--c", colour.get(e.label));
    out.append(mark);
    at = e.end;
  }
  out.append(chars.slice(at).join(""));
  const counts = new Map();
  entities.forEach((e) => counts.set(e.label, (counts.get(e.label) || 0) + 1));
  $("legend").replaceChildren(...[...colour.keys()].map((label) => {
    const chip = document.createElement("span");
    chip.textContent = `${label} ${counts.get(label) || 0}`;
    chip.style.setProperty("--c", colour.get(label));
    return chip;
  }));
}

async function onSubmit(event) {
  event.preventDefault();
  const model = currentModel();
  const text = $("text").value;
  if (!model) return showError("no model to ask: GET v1/models answered none");
  const zeroShot = model.kind === "zero_shot";
  const labels = zeroShot ? labelsTyped() : model.labels;
  const body = zeroShot ? { model: model.name, texts: [text], labels, threshold: state.threshold } : { model: model.name, texts: [text] };
  $("submit").disabled = true;
  const started = performance.now();
  try {
    const answer = await api(zeroShot ? "v1/tag" : "v1/predict", body);
    const entities = answer.results[0].entities;
    showError("");
    render(text, entities, labels);
    const ms = Math.round(performance.now() - started);
    $("summary").textContent = `${entities.length} entit${entities.length === 1 ? "y" : "ies"} · ${model.name} · ${ms} ms · hover an entity for its label and score`;
    $("result").hidden = false;
  } catch (err) {
    showError(err.message);
  } finally {
    $("submit").disabled = false;
    document.body.dataset.answers = String(++state.answers); // for tests and scripts: an answer (or an error) is shown
  }
}

function addExamples() {
  for (const example of EXAMPLES) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = example.name;
    button.addEventListener("click", () => {
      $("text").value = example.text;
      if (!$("labels").disabled) $("labels").value = example.labels;
    });
    $("examples").append(button);
  }
}

async function start() {
  addExamples();
  $("form").addEventListener("submit", onSubmit);
  $("model").addEventListener("change", onModelChange);
  $("threshold").addEventListener("input", () => setThreshold(Number($("threshold").value)));
  try {
    state.models = (await api("v1/models")).models;
  } catch (err) {
    return showError(`cannot list the models: ${err.message}`);
  }
  $("model").replaceChildren(...state.models.map((m) => new Option(`${m.name} (${m.kind === "zero_shot" ? "zero-shot" : "classifier"})`, m.name)));
  onModelChange();
  document.body.dataset.ready = "true"; // for tests and scripts: the models are listed
}

start();
