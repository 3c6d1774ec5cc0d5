// Offline API reference: renders openapi.json (no swagger-ui, no CDN).
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function schemaText(schema) {
  return JSON.stringify(schema, null, 2);
}

async function main() {
  const state = document.getElementById("state");
  let spec;
  try {
    spec = await (await fetch("openapi.json")).json();
  } catch (err) {
    state.textContent = `Cannot load openapi.json (${err.message}).`;
    return;
  }
  state.textContent = `${spec.info.title} ${spec.info.version}: ${spec.info.description || ""}`;
  const root = document.getElementById("endpoints");
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const sec = el("section", undefined, "panel endpoint");
      sec.append(el("h2", `${method.toUpperCase()} ${path}`), el("p", op.summary || ""));
      const body = op.requestBody?.content;
      if (body) {
        for (const [type, media] of Object.entries(body)) {
          sec.append(el("h3", `request body: ${type}`));
          const dl = el("dl");
          for (const [name, prop] of Object.entries(media.schema?.properties || {})) {
            dl.append(el("dt", name), el("dd", [prop.type, prop.format, prop.enum && `one of ${prop.enum.join(", ")}`,
              prop.description].filter(Boolean).join(" · ")));
          }
          sec.append(dl);
        }
      }
      const rows = Object.entries(op.responses || {}).map(([code, r]) => `${code}: ${r.description || ""}`);
      sec.append(el("h3", "responses"), el("pre", rows.join("\n")));
      root.append(sec);
    }
  }
  if (spec.components?.schemas) {
    const sec = el("section", undefined, "panel");
    sec.append(el("h2", "schemas"), el("pre", schemaText(spec.components.schemas)));
    root.append(sec);
  }
  document.body.dataset.state = "done";
}

main();
