// The page at /: sends a photo to the model and shows its answer. It uses only the API's routes.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  // What each error status means to a person; the server's own words follow in small print.
  const MESSAGES = {
    400: "The server could not read this file as an image. Try a photo (JPEG, PNG, WebP...).",
    404: "This model is not served here any more. Reload the page.",
    408: "The upload took too long. Try again, or with a smaller photo.",
    413: "This photo is too big for the server. Try a smaller one.",
    415: "This file is not an image the server can read. Try a JPEG, PNG, GIF, BMP, WebP or TIFF photo.",
    422: "The server could not use this image.",
    503: "The server is busy. Try again in a moment.",
  };
  let shown = null; // the object URL of the photo on screen
  let last = null; // the last file sent, for "Try again"

  function status(text, kind) {
    const s = $("status");
    s.textContent = text;
    s.className = kind;
    $("out").dataset.state = kind;
  }

  function item(label, score) {
    const li = document.createElement("li");
    const name = document.createElement("div");
    name.className = "name";
    const l = document.createElement("span");
    l.className = "label";
    l.textContent = label;
    name.append(l);
    li.append(name);
    if (typeof score === "number") {
      const pct = document.createElement("span");
      pct.className = "score";
      pct.textContent = (score * 100).toFixed(score >= 0.1 ? 0 : 1) + "%";
      name.append(pct);
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = Math.max(0, Math.min(100, score * 100)) + "%";
      bar.append(fill);
      li.append(bar);
    }
    return li;
  }

  function answer(body) {
    const list = $("labels");
    if (body.status !== 1 || !Array.isArray(body.result)) {
      status("The model does not recognize anything it knows in this photo.", "done");
      return;
    }
    status(body.result.length === 1 ? "The model sees:" : "The model sees, most likely first:", "done");
    if (Array.isArray(body.classes)) {
      for (const c of body.classes) list.append(item(c.label, c.score));
    } else {
      for (const label of body.result) list.append(item(label));
    }
  }

  function meta(r, ms) {
    const parts = [];
    const name = r.headers.get("X-Model-Name");
    if (name) parts.push(`Answered by ${name}, version ${r.headers.get("X-Model-Version")}`);
    const timing = /total;dur=([\d.]+)/.exec(r.headers.get("Server-Timing") || "");
    if (timing) parts.push(`server ${Math.round(Number(timing[1]))} ms`);
    parts.push(`round trip ${Math.round(ms)} ms`);
    $("meta").textContent = parts.join(" · ");
  }

  async function send(file) {
    if (!file) return;
    last = file;
    if (shown) URL.revokeObjectURL(shown);
    shown = URL.createObjectURL(file);
    $("preview").src = shown;
    $("out").hidden = false;
    $("labels").replaceChildren();
    $("meta").textContent = "";
    $("again").hidden = true;
    status("Asking the model…", "busy");
    const choice = $("model").value;
    const url = choice ? "/model_predict/" + choice : "/model_predict";
    const form = new FormData();
    form.append("image", file, file.name || "photo.jpg");
    const t0 = performance.now();
    let r;
    let body = null;
    try {
      r = await fetch(url, { method: "POST", body: form });
      body = await r.json().catch(() => null);
    } catch (e) {
      status("The server could not be reached. Check the connection, then try again.", "error");
      $("again").hidden = false;
      return;
    }
    const ms = performance.now() - t0;
    meta(r, ms);
    if (r.ok && body) {
      answer(body);
      return;
    }
    let text = MESSAGES[r.status] || `The server answered with an error (${r.status}).`;
    const retry = r.headers.get("Retry-After");
    if (r.status === 503 && retry) text = `The server is busy. Try again in ${retry} s.`;
    status(text, "error");
    if (body && body.error) {
      const li = document.createElement("li");
      li.className = "detail";
      li.textContent = `The server said: ${body.error}`;
      $("labels").append(li);
    }
    $("again").hidden = ![408, 503].includes(r.status);
  }

  async function models() {
    try {
      const r = await fetch("/v2/repository/index", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
      const list = r.ok ? await r.json() : [];
      if (list.length < 2) return;
      const select = $("model");
      select.append(new Option("The default model", ""));
      for (const m of list) {
        const path = `${encodeURIComponent(m.name)}/versions/${encodeURIComponent(m.version)}`;
        select.append(new Option(`${m.name} (version ${m.version})`, path));
      }
      $("model-row").hidden = false;
    } catch (e) {
      // Without the list, the default model answers.
    }
  }

  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (e) => {
      send(e.target.files[0]);
      e.target.value = "";
    });
  }
  $("again").addEventListener("click", () => send(last));
  const drop = $("drop");
  document.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", () => drop.classList.remove("over"));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    send(e.dataTransfer.files[0]);
  });
  models();
})();
