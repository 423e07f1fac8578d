// charrnn serve: the playground page. Text only ever enters the page through textContent,
// never innerHTML, so generated or pasted text cannot become markup.
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const form = $("form");
const modelSelect = $("model");
let models = {};
let running = null; // the AbortController of the generation in progress

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadModels() {
  const res = await fetch("/api/models");
  const data = await res.json();
  models = {};
  modelSelect.replaceChildren();
  for (const m of data.models) {
    models[m.name] = m;
    const opt = document.createElement("option");
    opt.value = m.name;
    opt.textContent = m.error ? `${m.name} (unusable)` : `${m.name} (${m.cell} ${m.size}, ${m.corpus}${m.bpc != null ? `, ${m.bpc} bpc` : ""})`;
    opt.disabled = Boolean(m.error);
    modelSelect.append(opt);
  }
  if (!data.models.length) setStatus(`no models under ${data.root}: train one first (charrnn train CORPUS)`, true);
  showModelInfo();
}

function showModelInfo() {
  const m = models[modelSelect.value];
  $("model-info").textContent = !m ? "" : m.error ? m.error :
    `${m.cell} ${m.size}, ${m.parameters.toLocaleString()} parameters, ${m.tokenizer} tokens, corpus ${m.corpus}, ` +
    `step ${m.step}, ${m.bpc != null ? m.bpc + " bits/char on validation" : "no validation figure"}` +
    (m.abc ? " — ABC tunes are drawn and playable" : "");
  if (m && m.abc && !$("prime").value) $("prime").value = "X:1\n";
}

// "\n", "\t" and "\\" typed in the stop field mean what they do on the command line.
function unescapeStop(text) {
  return text.replace(/\\(n|t|\\)/g, (_, c) => (c === "n" ? "\n" : c === "t" ? "\t" : "\\"));
}

function requestBody() {
  const num = (id) => Number($(id).value);
  const body = {
    model: modelSelect.value, prime: $("prime").value, temperature: num("temperature"),
    top_k: num("top_k"), top_p: num("top_p"), length: num("length"),
  };
  if ($("seed").value !== "") body.seed = num("seed");
  if ($("stop").value !== "") body.stop = unescapeStop($("stop").value);
  return body;
}

// Server-sent events read from a POST response: blocks separated by a blank line, each with an
// optional "event:" line and one "data:" line of JSON.
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) yield { name, data: JSON.parse(data) };
    }
  }
}

function newSample(body) {
  const node = $("sample-template").content.firstElementChild.cloneNode(true);
  node.querySelector(".meta").textContent = `${body.model} · temperature ${body.temperature}`;
  $("samples").prepend(node);
  const sample = { node, text: "", model: body.model, tunesDrawn: 0, abc: models[body.model]?.abc };
  node.querySelector(".copy").addEventListener("click", () => navigator.clipboard.writeText(sample.text));
  node.querySelector(".download").addEventListener("click", () =>
    download(new Blob([sample.text], { type: "text/plain" }), sample.abc ? "sample.abc" : "sample.txt"));
  node.querySelector(".colour").addEventListener("click", () =>
    colourBySurprise(sample.model, sample.text.slice(0, CONFIG.maxText), node.querySelector("pre.text"), node.querySelector(".note")));
  return sample;
}

async function generate(event) {
  event.preventDefault();
  if (running) return;
  const body = requestBody();
  const sample = newSample(body);
  const pre = sample.node.querySelector("pre.text");
  running = new AbortController();
  $("generate").disabled = true;
  $("stop-button").disabled = false;
  setStatus("generating…");
  try {
    const res = await fetch("/api/generate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: running.signal,
    });
    if (!res.ok) throw new Error((await res.json()).error || res.statusText);
    for await (const ev of readEvents(res)) {
      if (ev.name === "message") {
        sample.text += ev.data.text;
        pre.textContent = sample.text;
        drawTunes(sample, false);
      } else if (ev.name === "done") {
        const d = ev.data;
        sample.cut = d.cut; // the text stopped at the length limit: its last tune has no end
        sample.node.querySelector(".meta").textContent += ` · seed ${d.seed}`; // the one drawn when none was given
        sample.node.querySelector(".figures").textContent =
          `${d.characters} characters in ${d.seconds.toFixed(2)} s (${d.chars_per_second ?? "-"} chars/s)`;
        if (d.copies) showCopies(sample, body.prime.length, d.copies);
        setStatus("done");
      } else if (ev.name === "error") {
        throw new Error(ev.data.error);
      }
    }
    drawTunes(sample, true);
  } catch (err) {
    if (err.name === "AbortError") {
      setStatus("stopped");
      drawTunes(sample, false);
    } else {
      setStatus(err.message, true);
      sample.node.querySelector(".figures").textContent = err.message;
      sample.node.querySelector(".figures").classList.add("error");
    }
  } finally {
    running = null;
    $("generate").disabled = false;
    $("stop-button").disabled = true;
  }
}

// The longest span of the new text found verbatim in the model's training text: said in one
// line, and marked in the sample (through text nodes only, like everything else here).
function showCopies(sample, primeLength, c) {
  const line = sample.node.querySelector(".copies");
  if (c.error) {
    line.textContent = c.error;
    return;
  }
  if (!c.longest) {
    line.textContent = "copies nothing from the training text";
    return;
  }
  const at = c.longest_at;
  const where = at.file != null ? `${at.file} line ${at.file_line}` : `offset ${at.offset.toLocaleString()}, line ${at.line.toLocaleString()}`;
  line.textContent = `longest copy from the training text: ${c.longest} characters (${where}); ` +
    `${(100 * c.copied_share).toFixed(1)}% of the text in copied spans of ${c.min_span}+ characters`;
  const start = sample.text.indexOf(c.longest_text, primeLength);
  if (start < 0) return;
  const mark = document.createElement("mark");
  mark.className = "copied";
  mark.title = `copied verbatim from the training text (${where})`;
  mark.textContent = c.longest_text;
  const pre = sample.node.querySelector("pre.text");
  pre.replaceChildren(sample.text.slice(0, start), mark, sample.text.slice(start + c.longest_text.length));
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---------------------------------------------------------------- tunes

// A tune is a blank-line-separated block with an X: line and a K: line. It is finished when a
// blank line follows it, or when the generation has ended; the last block of a text cut at the
// length limit is drawn but labelled unfinished, whatever the checker would say.
function drawTunes(sample, final) {
  const blocks = sample.text.split(/\n[ \t]*\n/);
  const finished = final ? blocks : blocks.slice(0, -1);
  const cutAt = final && sample.cut ? finished.length - 1 : -1;
  const tunes = finished
    .map((b, i) => ({ text: b.replace(/^\n+|\n+$/g, ""), cut: i === cutAt }))
    .filter((t) => /^X:/m.test(t.text) && /^K:/m.test(t.text));
  while (sample.tunesDrawn < tunes.length) {
    const t = tunes[sample.tunesDrawn++];
    drawTune(sample, t.text, t.cut);
  }
}

function drawTune(sample, tune, cut) {
  const box = document.createElement("div");
  box.className = "tune";
  const score = document.createElement("div");
  score.className = "score";
  const tools = document.createElement("div");
  tools.className = "buttons";
  const verdict = document.createElement("span");
  verdict.className = "verdict muted";
  verdict.textContent = "checking…";
  box.append(score, tools);
  sample.node.querySelector(".tunes").append(box);
  if (!window.ABCJS) {
    score.textContent = "abcjs did not load: cannot draw the tune";
    return;
  }
  const [visual] = ABCJS.renderAbc(score, tune, { responsive: "resize", add_classes: true });
  const play = button("Play", () => playTune(visual, play));
  const midi = button("MIDI", () => downloadMidi(tune, verdict));
  const save = button("ABC", () => download(new Blob([tune + "\n"], { type: "text/vnd.abc" }), "tune.abc"));
  tools.append(play, midi, save, verdict);
  if (cut) {
    verdict.textContent = "unfinished (cut at the length limit)";
    verdict.className = "verdict bad";
  } else {
    checkTune(tune, verdict);
  }
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

async function postJson(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!res.ok) {
    let message = res.statusText;
    try { message = (await res.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return res;
}

async function checkTune(tune, verdict) {
  try {
    const r = await (await postJson("/api/abc/check", { tune })).json();
    // An unfinished tune (cut off before its end) is never valid, whatever its bars say.
    const ok = r.valid && !r.unfinished;
    verdict.textContent = ok ? `valid tune: ${r.bars} bars`
      : `${r.unfinished ? "unfinished · " : ""}checker: ${r.problems.join("; ")}`;
    verdict.className = `verdict ${ok ? "ok" : "bad"}`;
  } catch (err) {
    verdict.textContent = `checker unavailable: ${err.message}`;
  }
}

async function downloadMidi(tune, verdict) {
  try {
    download(await (await postJson("/api/abc/midi", { tune })).blob(), "tune.mid");
  } catch (err) {
    verdict.textContent = err.message;
    verdict.className = "verdict bad";
  }
}

let playing = null;

async function playTune(visual, playButton) {
  if (playing) {
    playing.synth.stop();
    playing.button.textContent = "Play";
    const same = playing.button === playButton;
    playing = null;
    if (same) return;
  }
  if (!ABCJS.synth.supportsAudio()) {
    playButton.textContent = "no audio here";
    return;
  }
  const synth = new ABCJS.synth.CreateSynth();
  playing = { synth, button: playButton };
  playButton.textContent = "Stop";
  try {
    // The sounds come from this server (/soundfont/), not from the web: playing works offline.
    await synth.init({ visualObj: visual, audioContext: new AudioContext(), options: { soundFontUrl: "/soundfont/" } });
    await synth.prime();
    synth.start();
  } catch (err) {
    playButton.textContent = "cannot play";
    playing = null;
  }
}

// ---------------------------------------------------------------- surprise colouring

async function colourBySurprise(model, text, pre, note) {
  if (!text) return;
  note.textContent = "scoring…";
  note.classList.remove("error");
  try {
    const r = await (await postJson("/api/surprise", { model, text })).json();
    const spans = [...r.text].map((ch, i) => {
      const s = document.createElement("span");
      s.textContent = ch;
      const a = Math.min(r.bits[i] / 6, 1); // as `charrnn visualize`: white to red over 0..6+ bits
      s.style.background = `rgba(222,45,38,${(0.9 * a).toFixed(3)})`;
      s.title = `${r.bits[i].toFixed(2)} bits`;
      return s;
    });
    pre.replaceChildren(...spans);
    note.textContent = `${r.bpc.toFixed(3)} bits/char; white = expected, red = 6+ bits of surprise` +
      (r.dropped.length ? `; left out characters the model never saw: ${r.dropped.join(" ")}` : "");
  } catch (err) {
    note.textContent = err.message;
    note.classList.add("error");
  }
}

form.addEventListener("submit", generate);
$("stop-button").addEventListener("click", () => running && running.abort());
modelSelect.addEventListener("change", showModelInfo);
$("paste-colour").addEventListener("click", () =>
  colourBySurprise(modelSelect.value, $("paste-text").value, $("paste-out"), $("paste-note")));
loadModels().catch((err) => setStatus(`cannot list models: ${err.message}`, true));
