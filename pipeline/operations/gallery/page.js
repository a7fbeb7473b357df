"use strict";
// The imgspec gallery: contact sheets and X/Y grids over the data inlined in the page.
// Picture tuple: [href, thumb, sha256, width, height, verdict]. Review mode (served by
// `imgspec review`) adds keys that record decisions through the server's small API.
(function () {
  const D = JSON.parse(document.getElementById("gallery-data").textContent);
  const REVIEW = D.review;
  const $ = (id) => document.getElementById(id);
  const ui = { job: 0, view: "grid", x: 0, y: 1, sel: {} };
  let order = [];   // [entryIndex, imageIndex] of the visible slots, in page order
  let current = -1; // position in `order` of the slot in the lightbox
  let undoable = 0;

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const money = (n) => (D.currency === "CNY" ? "¥" + n.toFixed(2) : n.toFixed(2) + " " + D.currency);
  const job = () => D.jobs[ui.job];
  const axisValue = (entry, axis, ai, image) =>
    axis.kind === "image" ? image : entry.v[ai];
  const STATE_TEXT = {
    done: "done", failed: "failed", blocked: "blocked", waiting: "waiting",
    missing: "missing", stale: "changed since generated", reroll: "re-roll planned",
    running: "running", pending: "not generated yet",
  };

  function slotHtml(ei, ii) {
    const e = job().entries[ei];
    const p = e.im[ii];
    const verdict = p[5];
    let inner;
    if (p[1]) {
      inner = '<img loading="lazy" decoding="async" alt="" src="' + esc(p[1]) + '">';
    } else {
      const msg = e.e ? '<span class="msg">' + esc(e.e) + "</span>" : "";
      const what = e.st === "done" || e.st === "reroll" ? "no image" : STATE_TEXT[e.st];
      inner = '<div class="ph"><b>' + esc(what) + "</b>" + msg + "</div>";
    }
    const badge = e.st !== "done" && p[1] ? '<span class="badge">' + esc(STATE_TEXT[e.st]) + "</span>" : "";
    const v = verdict ? '<span class="verdict v-' + verdict + '">' + verdict + "</span>" : "";
    const title = e.k + (job().axes.some((a) => a.kind === "image") ? " #" + ii : "");
    return '<div class="slot st-' + e.st + (verdict === "reject" ? " v-reject-slot" : "") +
      '" tabindex="0" data-e="' + ei + '" data-i="' + ii + '" data-state="' + e.st +
      '" title="' + esc(title) + '">' + inner + badge + v + "</div>";
  }

  function entryLabel(e) {
    const j = job();
    const parts = [];
    j.axes.forEach((a, ai) => { if (a.kind !== "image") parts.push(a.values[e.v[ai]] || "–"); });
    return parts.length ? parts.join(" · ") : e.k;
  }

  function renderSheet() {
    const out = [];
    order = [];
    job().entries.forEach((e, ei) => {
      const slots = [];
      e.im.forEach((_, ii) => { slots.push(slotHtml(ei, ii)); order.push([ei, ii]); });
      out.push('<div class="card" data-key="' + esc(e.k) + '"><div class="label" title="' +
        esc(e.k) + '">' + esc(entryLabel(e)) + '</div><div class="slots">' + slots.join("") +
        "</div></div>");
    });
    $("view").innerHTML = '<div class="sheet">' + out.join("") + "</div>";
  }

  function renderGrid() {
    const j = job();
    const axes = j.axes;
    if (axes.length === 0) { renderSheet(); return; }
    const xa = axes[ui.x], ya = axes[ui.y] || null;
    const cells = new Map();
    const rowTot = ya ? ya.values.map(() => [0, 0, 0]) : [[0, 0, 0]];
    const colTot = xa.values.map(() => [0, 0, 0]);
    j.entries.forEach((e, ei) => {
      for (let ai = 0; ai < axes.length; ai++) {
        const s = ui.sel[ai];
        if (ai !== ui.x && ai !== ui.y && s !== undefined && s >= 0 &&
            axes[ai].kind !== "image" && e.v[ai] !== s) return;
      }
      e.im.forEach((p, ii) => {
        for (let ai = 0; ai < axes.length; ai++) {
          const s = ui.sel[ai];
          if (ai !== ui.x && ai !== ui.y && axes[ai].kind === "image" && s !== undefined &&
              s >= 0 && ii !== s) return;
        }
        const xv = axisValue(e, xa, ui.x, ii);
        const yv = ya ? axisValue(e, ya, ui.y, ii) : 0;
        if (xv === undefined || yv === undefined || xv >= xa.values.length) return;
        const key = yv + "," + xv;
        if (!cells.has(key)) cells.set(key, []);
        cells.get(key).push([ei, ii]);
        const share = e.c / e.im.length;
        for (const t of [rowTot[yv], colTot[xv]]) {
          if (!t) continue;
          t[0] += p[1] ? 1 : 0; t[1] += 1; t[2] += share;
        }
      });
    });
    const tot = (t) => '<span class="tot">' + t[0] + "/" + t[1] + " images · " + money(t[2]) + "</span>";
    const html = ['<table class="grid"><thead><tr><th class="axis-name">' +
      esc(ya ? ya.name + " ↓ / " + xa.name + " →" : xa.name + " →") + "</th>"];
    xa.values.forEach((v, xi) => html.push('<th class="colh" data-x="' + xi + '"><span class="val">' +
      esc(v === "" ? "(none)" : v) + "</span>" + tot(colTot[xi]) + "</th>"));
    html.push("</tr></thead><tbody>");
    order = [];
    const rows = ya ? ya.values : [""];
    rows.forEach((rv, yi) => {
      html.push('<tr><th class="rowh" data-y="' + yi + '"><span class="val">' +
        esc(ya ? (rv === "" ? "(none)" : rv) : "") + "</span>" + tot(rowTot[yi]) + "</th>");
      xa.values.forEach((_, xi) => {
        const here = cells.get(yi + "," + xi) || [];
        here.forEach((s) => order.push(s));
        html.push('<td class="cell" data-x="' + xi + '" data-y="' + yi + '">' +
          (here.length ? '<div class="slots">' + here.map((s) => slotHtml(s[0], s[1])).join("") + "</div>"
            : '<div class="empty" title="no instance here">—</div>') + "</td>");
      });
      html.push("</tr>");
    });
    html.push("</tbody></table>");
    $("view").innerHTML = html.join("");
  }

  function renderControls() {
    const j = job();
    $("job").innerHTML = D.jobs.map((jb, i) => '<option value="' + i + '"' +
      (i === ui.job ? " selected" : "") + ">" + esc(jb.id) + " (" + jb.entries.length + ")</option>").join("");
    const opts = (sel) => j.axes.map((a, i) => '<option value="' + i + '"' + (i === sel ? " selected" : "") +
      ">" + esc(a.name) + "</option>").join("");
    $("x-axis").innerHTML = opts(ui.x);
    $("y-axis").innerHTML = '<option value="-1"' + (ui.y < 0 ? " selected" : "") + ">(none)</option>" + opts(ui.y);
    const grid = ui.view === "grid" && j.axes.length > 0;
    $("axes").hidden = !grid;
    $("view-grid").classList.toggle("on", grid);
    $("view-sheet").classList.toggle("on", !grid);
    const sels = [];
    if (grid) {
      j.axes.forEach((a, ai) => {
        if (ai === ui.x || ai === ui.y) return;
        if (ui.sel[ai] === undefined) ui.sel[ai] = common(ai);
        const s = ui.sel[ai];
        sels.push('<label>' + esc(a.name) + ' <select class="selector" data-axis="' + ai + '">' +
          '<option value="-1"' + (s < 0 ? " selected" : "") + ">(all)</option>" +
          a.values.map((v, vi) => '<option value="' + vi + '"' + (vi === s ? " selected" : "") + ">" +
            esc(v === "" ? "(none)" : v) + "</option>").join("") + "</select></label>");
      });
    }
    $("selectors").innerHTML = sels.join("");
  }

  // An axis that is not on the grid starts at its most common value (all images, for
  // the image index): one slice of the job, the biggest.
  function common(ai) {
    const j = job();
    if (j.axes[ai].kind === "image") return -1;
    const seen = j.axes[ai].values.map(() => 0);
    j.entries.forEach((e) => { seen[e.v[ai]] += 1; });
    return seen.indexOf(Math.max(...seen));
  }

  function defaults() {
    const j = job();
    ui.x = 0;
    ui.y = j.axes.length > 1 ? 1 : -1;
    ui.sel = {};
  }

  function render() {
    const started = performance.now();
    renderControls();
    if (ui.view === "grid" && job().axes.length > 0) renderGrid(); else renderSheet();
    window.imgspecRenderMs = performance.now() - started; // read by the browser test
  }

  function renderCounts() {
    const counts = {};
    D.jobs.forEach((j) => j.entries.forEach((e) => { counts[e.st] = (counts[e.st] || 0) + 1; }));
    $("counts").innerHTML = Object.keys(STATE_TEXT).filter((s) => counts[s]).map((s) =>
      '<span data-state="' + s + '"><i></i>' + counts[s] + " " +
      esc(STATE_TEXT[s]) + "</span>").join("");
  }

  // -- lightbox ---------------------------------------------------------------------------

  function openAt(pos) {
    if (pos < 0 || pos >= order.length) return;
    current = pos;
    const [ei, ii] = order[pos];
    const e = job().entries[ei];
    const p = e.im[ii];
    $("lb-stage").innerHTML = p[0] ? '<img id="lb-img" alt="" src="' + esc(p[0]) + '">'
      : '<div class="ph st-' + e.st + '"><b>' + esc(STATE_TEXT[e.st]) + "</b>" +
        (e.e ? '<span class="msg">' + esc(e.e) + "</span>" : "") + "</div>";
    const row = (k, v, cls) => v === null || v === undefined || v === "" ? "" :
      "<dt>" + esc(k) + '</dt><dd class="' + (cls || "") + '">' + esc(v) + "</dd>";
    $("lb-info").innerHTML = "<h2>" + esc(e.k) + (e.im.length > 1 ? " · image " + ii : "") + "</h2><dl>" +
      row("state", STATE_TEXT[e.st], "state st-" + e.st) + row("error", e.e, "error") +
      row("note", e.note) + row("verdict", p[5], "verdict") + row("prompt", e.p, "prompt") +
      row("request", JSON.stringify(e.r, null, 1), "request") + row("seed", e.sd) +
      row("task id", e.t) + row("cost", money(e.c) + (e.pc > 0 ? " (next run: " + money(e.pc) + ")" : "")) +
      row("time", e.tm) + row("size", p[3] ? p[3] + " × " + p[4] : null) + row("sha256", p[2], "sha") +
      "</dl><div id=\"lb-nav\">" + (pos + 1) + " / " + order.length +
      " · <kbd>←</kbd> <kbd>→</kbd> move · <kbd>Esc</kbd> close" +
      (REVIEW ? "<br><kbd>p</kbd> pick · <kbd>x</kbd> reject · <kbd>r</kbd> re-roll · <kbd>u</kbd> undo" +
        '<div id="lb-review" role="status"></div>' : "") + "</div>";
    $("lightbox").hidden = false;
  }

  function closeBox() { $("lightbox").hidden = true; current = -1; }

  // -- review -----------------------------------------------------------------------------

  function target() {
    if (current >= 0) return order[current];
    const el = document.activeElement;
    if (el && el.classList.contains("slot")) return [+el.dataset.e, +el.dataset.i];
    return null;
  }

  function status(text) {
    $("review-status").textContent = text;
    const inBox = $("lb-review"); // the header is under the lightbox: say it there too
    if (inBox) inBox.textContent = text;
  }

  // This page load's id, sent with every decision and undo: undo withdraws this page's
  // own latest decision, never one made in another browser or tab.
  const CLIENT = Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0")).join("");

  async function post(path, body) {
    const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ client: CLIENT }, body)) });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    return data;
  }

  function applyDecisions(list) {
    const by = new Map(list.map((d) => [d[0] + "\u0000" + d[1], d[2]]));
    D.jobs.forEach((j) => j.entries.forEach((e) => e.im.forEach((p, ii) => {
      p[5] = by.get(e.k + "\u0000" + ii) || null;
    })));
    const keep = current;
    render();
    if (keep >= 0) openAt(keep);
  }

  async function decide(verdict) {
    const t = target();
    if (!t) { status("open or focus an image first"); return; }
    const e = job().entries[t[0]];
    const p = e.im[t[1]];
    if (!p[2]) { status("no image to decide about (" + STATE_TEXT[e.st] + ")"); return; }
    try {
      const data = await post("api/decide", { key: e.k, image: t[1], sha256: p[2], verdict: verdict });
      undoable += 1;
      applyDecisions(data.decisions);
      status(verdict + ": " + e.k + " #" + t[1] + " → " + data.file);
    } catch (err) { status("not saved: " + err.message); }
  }

  async function undo() {
    try {
      const data = await post("api/undo", {});
      applyDecisions(data.decisions);
      status(data.undone ? "undone: " + data.undone : "nothing to undo");
    } catch (err) { status("not undone: " + err.message); }
  }

  // -- events -----------------------------------------------------------------------------

  $("job").addEventListener("change", (ev) => { ui.job = +ev.target.value; defaults(); render(); });
  $("x-axis").addEventListener("change", (ev) => {
    const v = +ev.target.value;
    if (v === ui.y) ui.y = ui.x;
    ui.x = v; render();
  });
  $("y-axis").addEventListener("change", (ev) => {
    const v = +ev.target.value;
    if (v === ui.x) ui.x = ui.y >= 0 ? ui.y : ui.x;
    ui.y = v === ui.x ? -1 : v; render();
  });
  $("selectors").addEventListener("change", (ev) => {
    if (!ev.target.classList.contains("selector")) return;
    ui.sel[+ev.target.dataset.axis] = +ev.target.value; render();
  });
  $("view-grid").addEventListener("click", () => { ui.view = "grid"; render(); });
  $("view-sheet").addEventListener("click", () => { ui.view = "sheet"; render(); });
  $("view").addEventListener("click", (ev) => {
    const slot = ev.target.closest(".slot");
    if (!slot) return;
    const ei = +slot.dataset.e, ii = +slot.dataset.i;
    openAt(order.findIndex((s) => s[0] === ei && s[1] === ii));
  });
  $("lb-close").addEventListener("click", closeBox);
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "SELECT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const open = !$("lightbox").hidden;
    if (open && ev.key === "Escape") { closeBox(); ev.preventDefault(); return; }
    if (open && ev.key === "ArrowRight") { openAt(Math.min(current + 1, order.length - 1)); ev.preventDefault(); return; }
    if (open && ev.key === "ArrowLeft") { openAt(Math.max(current - 1, 0)); ev.preventDefault(); return; }
    if (!open && ev.key === "Enter" && document.activeElement.classList.contains("slot")) {
      document.activeElement.click(); return;
    }
    if (!REVIEW) return;
    const verdict = { p: "pick", x: "reject", r: "reroll" }[ev.key];
    if (verdict) { decide(verdict); ev.preventDefault(); }
    else if (ev.key === "u") { undo(); ev.preventDefault(); }
  });

  $("review-help").hidden = !REVIEW;
  defaults();
  renderCounts();
  render();
  window.imgspecReadyMs = performance.now(); // when the page became usable (browser test)
  document.body.dataset.ready = "1";
})();
