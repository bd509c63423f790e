// A minimal CommonJS bundler for the browser tests (no bundler is pinned):
// `node cjs_bundle.mjs PACKAGE GLOBAL` prints one script that defines
// `window.GLOBAL = require(PACKAGE)`. It follows `require('…')` calls with
// string literals, resolves relative paths and packages in node_modules
// (a package's `browser` field when it is a string, else `main`), and
// wraps every file in a function, as Node does. Used by
// crates/onionrtc/tests/serve/sip.rs to load JsSIP (CommonJS only) into a
// page of the server's own origin.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [pkg, global] = process.argv.slice(2);
if (!pkg || !global) {
  console.error('usage: node cjs_bundle.mjs PACKAGE GLOBAL');
  process.exit(2);
}

function file(p) {
  for (const c of [p, `${p}.js`, `${p}.json`, path.join(p, 'index.js')]) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  }
  return null;
}

function resolve(request, from) {
  if (request.startsWith('.') || request.startsWith('/')) {
    const f = file(path.resolve(path.dirname(from), request));
    if (!f) throw new Error(`cannot resolve ${request} from ${from}`);
    return f;
  }
  const parts = request.split('/');
  const name = request.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
  const sub = parts.slice(name.split('/').length).join('/');
  for (let dir = path.dirname(from); ; dir = path.dirname(dir)) {
    const root = path.join(dir, 'node_modules', name);
    if (fs.existsSync(root)) {
      if (sub) return file(path.join(root, sub));
      const meta = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
      const entry = typeof meta.browser === 'string' ? meta.browser : meta.main || 'index.js';
      const f = file(path.join(root, entry));
      if (!f) throw new Error(`no entry for ${name}`);
      return f;
    }
    if (dir === path.dirname(dir)) throw new Error(`cannot find package ${name}`);
  }
}

const modules = new Map(); // file → { id, deps: {request: id} }
const order = [];
function add(f) {
  if (modules.has(f)) return modules.get(f).id;
  const m = { id: order.length, deps: {}, source: fs.readFileSync(f, 'utf8') };
  modules.set(f, m);
  order.push(f);
  if (!f.endsWith('.json')) {
    for (const [, q, req] of m.source.matchAll(/\brequire\(\s*(['"])([^'"]+)\1\s*\)/g)) {
      m.deps[req] = add(resolve(req, f));
    }
  }
  return m.id;
}
const entry = add(resolve(pkg, path.join(here, 'entry.js')));

let out = '(function () {\nconst defs = [];\n';
for (const f of order) {
  const m = modules.get(f);
  const body = f.endsWith('.json') ? `module.exports = ${m.source};` : m.source;
  out += `defs[${m.id}] = [${JSON.stringify(m.deps)}, function (module, exports, require) {\n${body}\n}];\n`;
}
out += `const cache = [];
function load(id) {
  if (cache[id]) return cache[id].exports;
  const module = { exports: {} };
  cache[id] = module;
  const [deps, fn] = defs[id];
  fn(module, module.exports, (r) => {
    if (!(r in deps)) throw new Error('not bundled: ' + r);
    return load(deps[r]);
  });
  return module.exports;
}
window[${JSON.stringify(global)}] = load(${entry});
})();\n`;
process.stdout.write(out);
