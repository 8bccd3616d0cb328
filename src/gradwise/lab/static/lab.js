// gradwise optimizer lab: the page's script (served as /lab.js); it talks to /api/options
// and /api/run.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const DEFAULT_ON = ["sgd", "momentum", "nesterov", "adam"];
let OPTIONS = null, timer = null, ticket = 0, frame = null;

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
                                   : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function schedule() { clearTimeout(timer); timer = setTimeout(run, 350); }

function buildSurface() {
  const s = OPTIONS.surfaces[$("surface").value];
  $("formula").textContent = "f = " + s.formula;
  const box = $("params");
  box.replaceChildren();
  for (const [name, p] of Object.entries(s.params)) {
    box.append(el("span", {title: p.help}, name));
    const input = el("input", {type: "text", id: "param-" + name, "data-param": name,
                               value: String(p.default)});
    input.addEventListener("input", schedule);
    box.append(input);
  }
  $("steps").value = String(s.steps);
  for (const [name, lr] of Object.entries(s.lrs)) {
    const input = $("hyper-" + name + "-lr");
    if (input) input.placeholder = short(lr);
  }
}

function short(v) { return String(Number(Number(v).toPrecision(4))); }

function buildOptimizers() {
  const box = $("optimizers");
  for (const [name, o] of Object.entries(OPTIONS.optimizers)) {
    const div = el("div", {class: "opt", style: "border-color:" + o.color});
    const check = el("input", {type: "checkbox", id: "use-" + name, "data-optimizer": name});
    check.checked = DEFAULT_ON.includes(name);
    div.classList.toggle("off", !check.checked);
    check.addEventListener("change", () => {
      div.classList.toggle("off", !check.checked);
      schedule();
    });
    const label = el("label");
    label.append(check, " " + name + " ");
    label.append(el("small", {}, o.title));
    const grid = el("div", {class: "hyper"});
    for (const h of o.hypers) {
      grid.append(el("span", {title: h.help}, h.name));
      let input;
      if (h.kind === "bool") {
        input = el("input", {type: "checkbox"});
        input.checked = !!h.default;
      } else if (h.kind === "choice") {
        input = el("select");
        for (const c of h.choices) input.append(el("option", {value: c}, c));
        input.value = h.default;
      } else {
        input = el("input", {type: "text", placeholder: h.default === null ? "" :
                                                          String(h.default)});
      }
      input.id = "hyper-" + name + "-" + h.name;
      input.dataset.kind = h.kind;
      input.addEventListener(h.kind === "bool" || h.kind === "choice" ? "change" : "input",
                             schedule);
      grid.append(input);
    }
    div.append(label, grid);
    box.append(div);
  }
}

function request() {
  const surface = $("surface").value;
  const params = {};
  for (const input of $("params").querySelectorAll("input")) {
    if (input.value.trim() !== "") params[input.dataset.param] = numberOrText(input.value);
  }
  const optimizers = [], hypers = {};
  for (const [name, o] of Object.entries(OPTIONS.optimizers)) {
    if (!$("use-" + name).checked) continue;
    optimizers.push(name);
    const given = {};
    for (const h of o.hypers) {
      const input = $("hyper-" + name + "-" + h.name);
      if (h.kind === "bool") { if (input.checked !== !!h.default) given[h.name] = input.checked; }
      else if (h.kind === "choice") { if (input.value !== h.default) given[h.name] = input.value; }
      else if (input.value.trim() !== "") given[h.name] = numberOrText(input.value);
    }
    if (Object.keys(given).length) hypers[name] = given;
  }
  return {surface, params, optimizers, hypers, steps: numberOrText($("steps").value),
          noise: numberOrText($("noise").value), seed: numberOrText($("seed").value)};
}

function numberOrText(text) {
  const t = text.trim();
  return t !== "" && Number.isFinite(Number(t)) ? Number(t) : t;
}

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function run() {
  const mine = ++ticket;
  cancelAnimationFrame(frame);  // the previous run's animation must not report "done" now
  const body = request();
  if (!body.optimizers.length) { setStatus("pick at least one optimizer", true); return; }
  setStatus("running...");
  let reply, data;
  try {
    reply = await fetch("/api/run", {method: "POST", body: JSON.stringify(body),
                                     headers: {"Content-Type": "application/json"}});
    data = await reply.json();
  } catch (err) {
    if (mine === ticket) setStatus("no answer from the server: " + err, true);
    return;
  }
  if (mine !== ticket) return;
  if (!reply.ok) { setStatus(data.error || ("error " + reply.status), true); return; }
  for (const r of data.runs) {
    const lr = $("hyper-" + r.optimizer + "-lr");
    if (lr && lr.value.trim() === "") lr.placeholder = short(r.hypers.lr);
  }
  draw(data);
}

function draw(data) {
  const svg = $("plot");
  const bg = data.background, [x0, x1, y0, y1] = data.surface.window;
  const W = bg.width, H = bg.height;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const X = (x) => (x - x0) / (x1 - x0) * W, Y = (y) => (y1 - y) / (y1 - y0) * H;
  svg.replaceChildren(el("svg:image", {href: bg.png, x: 0, y: 0, width: W, height: H,
                                       preserveAspectRatio: "none"}));
  const lines = data.runs.map((r) => {
    const pts = r.path.filter((p) => p[0] !== null && p[1] !== null)
                      .map((p) => X(p[0]).toFixed(2) + "," + Y(p[1]).toFixed(2));
    const line = el("svg:polyline", {class: "path", "data-optimizer": r.optimizer,
                                     fill: "none", stroke: r.color, "stroke-width": 1.8,
                                     points: pts[0]});
    svg.append(line);
    return {line, pts};
  });
  const [sx, sy] = data.surface.start;
  svg.append(el("svg:circle", {cx: X(sx), cy: Y(sy), r: 5, fill: "black"}));
  data.runs.forEach((r, i) => {
    svg.append(el("svg:rect", {x: 8, y: 8 + 16 * i, width: 12, height: 10, fill: r.color}));
    svg.append(el("svg:text", {x: 24, y: 17 + 16 * i, "font-size": 12}, r.optimizer));
  });
  table(data.runs);
  const longest = Math.max(...lines.map((l) => l.pts.length));
  const started = performance.now(), duration = Math.min(2000, 20 * longest);
  cancelAnimationFrame(frame);
  const step = (now) => {
    const k = duration ? Math.min(1, (now - started) / duration) : 1;
    const upto = Math.max(1, Math.round(k * longest));
    for (const l of lines) l.line.setAttribute("points", l.pts.slice(0, upto).join(" "));
    if (k < 1) { frame = requestAnimationFrame(step); return; }
    const steps = Math.max(...data.runs.map((r) => r.summary.steps));
    setStatus(`done: ${data.runs.length} paths, ${steps} steps`);
  };
  setStatus("drawing...");
  frame = requestAnimationFrame(step);
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(3);
  return String(v);
}

function table(runs) {
  const cols = ["optimizer", "first_step", "final_loss", "final_distance", "steps_to_tol",
                "escape_step", "evals", "status"];
  const t = $("table");
  t.replaceChildren();
  const head = el("tr");
  for (const c of cols) head.append(el("th", {}, c.replace(/_/g, " ")));
  t.append(head);
  for (const r of runs) {
    const row = el("tr");
    for (const c of cols) row.append(el("td", {}, fmt(c === "optimizer" ? r.optimizer
                                                                        : r.summary[c])));
    t.append(row);
  }
}

async function init() {
  OPTIONS = await (await fetch("/api/options")).json();
  for (const name of Object.keys(OPTIONS.surfaces)) {
    $("surface").append(el("option", {value: name}, name));
  }
  $("surface").addEventListener("change", () => { buildSurface(); schedule(); });
  for (const id of ["steps", "noise", "seed"]) $(id).addEventListener("input", schedule);
  $("run").addEventListener("click", () => { clearTimeout(timer); run(); });
  buildOptimizers();
  buildSurface();
  run();
}
init();
