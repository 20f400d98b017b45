// Offline API reference: renders /openapi.json without any third-party script.
"use strict";

function resolve(spec, schema) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return { name, schema: spec.components.schemas[name] };
  }
  return { name: null, schema };
}

function describeSchema(spec, schema, depth = 0) {
  const { name, schema: s } = resolve(spec, schema);
  if (!s) return "";
  if (depth > 1 && name) return name;
  if (s.type === "object" || s.properties) {
    const props = Object.entries(s.properties || {}).map(([k, v]) => {
      const d = resolve(spec, v).schema || {};
      const t = d.type || (d.anyOf ? d.anyOf.map((a) => resolve(spec, a).name || a.type).join(" | ") : name || "");
      return `  ${k}: ${t}${d.description ? "  // " + d.description : ""}`;
    });
    return `${name || "object"} {\n${props.join("\n")}\n}`;
  }
  return s.type || name || "";
}

// a block of a schema: it scrolls sideways when wide, so it takes the keyboard's focus
// (the arrow keys scroll it) and is named for what it describes
function codeBlock(name) {
  const pre = document.createElement("pre");
  pre.tabIndex = 0;
  pre.setAttribute("role", "group");
  pre.setAttribute("aria-label", name);
  return pre;
}

async function main() {
  // the example names this server, whatever host and port it runs on
  document.getElementById("origin").textContent = location.origin;
  const box = document.getElementById("ops");
  let spec;
  try {
    const res = await fetch("/openapi.json", { credentials: "same-origin" });
    spec = await res.json();
  } catch (e) {
    box.textContent = "The API description could not be loaded.";
    return;
  }
  box.textContent = "";
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [verb, op] of Object.entries(ops)) {
      const div = document.createElement("div");
      div.className = "op";
      const h = document.createElement("h2");  // the page's h1 above it
      const v = document.createElement("span");
      v.className = `verb ${verb}`;
      v.textContent = verb.toUpperCase();
      h.append(v, document.createTextNode(" " + path));
      div.appendChild(h);
      const p = document.createElement("p");
      p.textContent = [op.summary, op.description].filter(Boolean).join(". ");
      div.appendChild(p);
      const params = (op.parameters || []).map((q) => `${q.name} (${q.in}${q.required ? ", required" : ""})`);
      if (params.length) {
        const pp = document.createElement("p");
        pp.textContent = "Parameters: " + params.join(", ");
        div.appendChild(pp);
      }
      const body = op.requestBody && op.requestBody.content;
      if (body) {
        for (const [type, c] of Object.entries(body)) {
          const pre = codeBlock(`${verb.toUpperCase()} ${path}, request body`);
          pre.textContent = `Body (${type}):\n` + describeSchema(spec, c.schema);
          div.appendChild(pre);
        }
      }
      const ok = Object.entries(op.responses || {}).find(([code]) => code.startsWith("2"));
      if (ok) {
        const [code, r] = ok;
        const c = r.content && (r.content["application/json"] || Object.values(r.content)[0]);
        const pre = codeBlock(`${verb.toUpperCase()} ${path}, answer`);
        pre.textContent = `Answer ${code}: ` + (c && c.schema ? describeSchema(spec, c.schema) : r.description || "");
        div.appendChild(pre);
      }
      box.appendChild(div);
    }
  }
}

document.addEventListener("DOMContentLoaded", main);
