// The page at /docs: the API described for a person, rendered from /openapi.json (which is
// docs/openapi.yaml), each route with a curl and a Python `requests` example.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const METHODS = ["get", "put", "post", "delete", "patch"];
  let spec = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // The description's Markdown, kept simple: paragraphs and `code`.
  function inline(into, text) {
    (text || "").split(/(`[^`]+`)/).forEach((part, i) => {
      into.append(i % 2 ? el("code", part.slice(1, -1)) : document.createTextNode(part));
    });
    return into;
  }

  function prose(text) {
    const out = document.createDocumentFragment();
    for (const para of (text || "").split(/\n\s*\n/)) {
      if (para.trim()) out.append(inline(el("p"), para));
    }
    return out;
  }

  // The spec's paths arrive sorted by name (JSON objects): show the seed's API first, then
  // KServe v2 and Triton's, health and metrics, and this documentation and the page last.
  function rank(path) {
    const order = [/^\/model_predict/, /^\/v2\/models/, /^\/v2\/repository/, /^\/v2/, /^\/(healthz|readyz|metrics)$/, /^\/openapi/];
    const i = order.findIndex((re) => re.test(path));
    return i < 0 ? order.length : i;
  }

  function deref(node) {
    let n = node;
    for (let i = 0; n && n.$ref && i < 8; i++) {
      n = n.$ref.replace(/^#\//, "").split("/").reduce((o, k) => (o ? o[k] : undefined), spec);
    }
    return n || {};
  }

  function examples(method, path, op, model) {
    const url = location.origin + path
      .replace("{model_name}", model.name)
      .replace("{model_version}", model.version);
    const body = op.requestBody ? deref(op.requestBody).content || {} : {};
    const ok = deref((op.responses || {})["200"]);
    const json = ok.content && ok.content["application/json"];
    const read = json ? "r.json()" : "r.text";
    let curl;
    let py;
    if (body["multipart/form-data"]) {
      curl = `curl -F image=@photo.jpg ${url}`;
      py = `with open("photo.jpg", "rb") as f:\n    r = requests.post("${url}", files={"image": f})`;
    } else if (body["application/json"] && op.operationId && /infer/i.test(op.operationId)) {
      const input = '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [...]}]}';
      curl = `curl -H 'Content-Type: application/json' -d @request.json ${url}\n# request.json: ${input}`;
      py = `tensor = [...]  # 1*3*224*224 numbers: the image, preprocessed as the model's metadata says\n` +
        `r = requests.post("${url}", json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": tensor}]})`;
    } else if (method === "post") {
      curl = `curl -X POST -H 'Content-Type: application/json' -d '{}' ${url}`;
      py = `r = requests.post("${url}", json={})`;
    } else {
      curl = `curl ${url}`;
      py = `r = requests.get("${url}")`;
    }
    return [curl, `import requests\n\n${py}\nprint(r.status_code, ${read})`];
  }

  function operation(method, path, op, model) {
    const box = el("section", undefined, "op");
    box.id = op.operationId || `${method}-${path}`;
    const h = el("h3");
    h.append(el("span", method.toUpperCase(), `method ${method}`), el("code", path));
    box.append(h, inline(el("p"), op.summary), prose(op.description));
    const params = (op.parameters || []).map(deref);
    if (params.length) {
      const t = el("table");
      t.append(el("tr"));
      t.firstChild.append(el("th", "Parameter"), el("th", "In"), el("th", "Meaning"));
      for (const p of params) {
        const row = el("tr");
        row.append(el("td", p.name + (p.required ? "" : " (optional)")), el("td", p.in), el("td", (p.description || "").trim()));
        t.append(row);
      }
      box.append(t);
    }
    const responses = el("ul");
    for (const [code, r] of Object.entries(op.responses || {})) {
      const li = el("li");
      li.append(el("code", code), document.createTextNode(" " + (deref(r).description || "").trim()));
      responses.append(li);
    }
    box.append(el("p", "Answers:"), responses);
    const [curl, py] = examples(method, path, op, model);
    box.append(el("p", "With curl:"), el("pre", curl), el("p", "With Python (requests):"), el("pre", py));
    return box;
  }

  async function main() {
    spec = await (await fetch("/openapi.json")).json();
    let model = { name: "resnet50", version: "1" };
    try {
      const r = await fetch("/v2/repository/index", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
      const list = r.ok ? await r.json() : [];
      if (list.length) model = list[0];
    } catch (e) {
      // The examples name the seed's model.
    }
    $("title").textContent = `${spec.info.title}: the API`;
    $("intro").append(prose(spec.info.description));
    const ops = $("ops");
    ops.replaceChildren();
    const toc = el("ul");
    const paths = Object.entries(spec.paths).sort(([a], [b]) => rank(a) - rank(b));
    for (const [path, item] of paths) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const section = operation(method, path, item[method], model);
        ops.append(section);
        const li = el("li");
        const a = el("a", `${method.toUpperCase()} ${path}`);
        a.href = "#" + section.id;
        li.append(a, document.createTextNode(" "));
        inline(li, item[method].summary);
        toc.append(li);
      }
    }
    $("toc").append(toc);
  }

  main().catch((e) => {
    $("ops").textContent = `The description could not be loaded: ${e}`;
  });
})();
