// The medvlm web page: one conversation per browser tab, kept in sessionStorage (never on the server).
// Images are sent as data: URLs; DICOM files are rendered by the server (/v1/medvlm/preview) with the
// chosen window, so the page shows what the model sees. Text is always inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "medvlm.conversation";
const state = { model: null, messages: [], image: null, isDicom: false };

function setState(value, text) {
  document.body.dataset.state = value;
  $("status").textContent = text || "";
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function save() {
  try {
    sessionStorage.setItem(KEY, JSON.stringify({ messages: state.messages, image: state.image,
      isDicom: state.isDicom, window: $("window").value, key: $("api-key").value }));
  } catch (e) { /* a very large image may not fit in sessionStorage: the conversation still works */ }
}

function addBubble(role, text) {
  const div = document.createElement("div");
  div.className = "message " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

function redraw() {
  $("log").replaceChildren();
  for (const m of state.messages) {
    const text = typeof m.content === "string" ? m.content
      : m.content.filter((p) => p.type === "text").map((p) => p.text).join("");
    addBubble(m.role, text);
  }
}

async function errorText(response) {
  try { return (await response.json()).error.message; } catch (e) { return "HTTP " + response.status; }
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) { $("model").textContent = "not connected: " + await errorText(response); return; }
  state.model = (await response.json()).data[0].id;
  $("model").textContent = state.model;
}

function dicomSettings() {
  return state.isDicom ? { window: $("window").value } : null;
}

async function renderPreview() {
  if (!state.image) { $("preview").removeAttribute("src"); return; }
  setState("busy", "rendering the image…");
  const response = await fetch("/v1/medvlm/preview", { method: "POST", headers: headers(),
    body: JSON.stringify({ image: state.image, dicom: dicomSettings() }) });
  if (!response.ok) { setState("error", await errorText(response)); return; }
  const result = await response.json();
  $("preview").src = result.png;
  setState("idle", `${result.dicom ? "DICOM" : "image"} ${result.width}×${result.height}`);
}

function isDicomFile(file, dataUrl) {
  return /\.(dcm|dicom)$/i.test(file.name) || file.type === "application/dicom"
    || atob(dataUrl.split(",")[1].slice(0, 176)).slice(128, 132) === "DICM";
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function onFile() {
  const file = $("file").files[0];
  if (!file) return;
  let url = await readFile(file);
  state.isDicom = isDicomFile(file, url);
  if (state.isDicom) url = "data:application/dicom;base64," + url.split(",")[1];
  state.image = url;
  state.messages = [];
  $("dicom-options").hidden = !state.isDicom;
  redraw();
  save();
  await renderPreview();
}

async function ask() {
  const question = $("question").value.trim();
  if (!question || document.body.dataset.state === "busy") return;
  if (!state.model) await loadModel();
  let content = question;
  if (state.messages.length === 0 && state.image) {
    const image = { url: state.image };
    if (state.isDicom) image.dicom = dicomSettings();
    content = [{ type: "image_url", image_url: image }, { type: "text", text: question }];
  }
  state.messages.push({ role: "user", content });
  addBubble("user", question);
  $("question").value = "";
  const bubble = addBubble("assistant", "");
  setState("busy", "answering…");
  $("ask").disabled = true;
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify({
      model: state.model, messages: state.messages, stream: true,
      max_tokens: Number($("max-tokens").value) || 256, temperature: Number($("temperature").value) || 0 }) });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finished = false;
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data:")) continue;
        const data = event.slice(5).trim();
        if (data === "[DONE]") { finished = true; break; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices.length ? chunk.choices[0].delta.content : null;
        if (delta) { bubble.textContent += delta; $("log").scrollTop = $("log").scrollHeight; }
      }
    }
    state.messages.push({ role: "assistant", content: bubble.textContent });
    save();
    setState("done", "");
  } catch (e) {
    state.messages.pop();  // the question was not answered: it is not part of the conversation
    bubble.classList.add("error");
    bubble.textContent = "error: " + e.message;
    setState("error", e.message);
  } finally {
    $("ask").disabled = false;
  }
}

function reset() {
  state.messages = [];
  redraw();
  save();
  setState("idle", "");
}

function restore() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
    if (!saved) return;
    Object.assign(state, { messages: saved.messages || [], image: saved.image, isDicom: !!saved.isDicom });
    $("window").value = saved.window || "auto";
    $("api-key").value = saved.key || "";
    $("dicom-options").hidden = !state.isDicom;
    redraw();
  } catch (e) { sessionStorage.removeItem(KEY); }
}

$("file").addEventListener("change", () => onFile().catch((e) => setState("error", e.message)));
$("window").addEventListener("change", () => { save(); renderPreview(); });
$("ask").addEventListener("click", ask);
$("reset").addEventListener("click", reset);
$("api-key").addEventListener("change", () => { save(); loadModel(); });
$("question").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); ask(); } });
restore();
loadModel().then(renderPreview).catch((e) => setState("error", e.message));
