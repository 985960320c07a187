// A one-origin server for the prebuilt OHIF viewer with imhost: the viewer's files (unknown paths
// answer index.html, for OHIF's routes), imhost's extension and mode under /ext/, our app-config,
// and Orthanc's DICOMweb and imhost routes proxied (adding Orthanc's credentials, as a site's
// authenticating reverse proxy would). No dependencies: Node's http only.
//
//   node serve.mjs --dist DIST --port 3000 --orthanc http://127.0.0.1:8042 [--user U:P]
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const dist = path.resolve(args.dist);
const port = Number(args.port || 3000);
const orthanc = new URL(args.orthanc || 'http://127.0.0.1:8042');
const auth = args.user ? 'Basic ' + Buffer.from(args.user).toString('base64') : null;
const ext = path.resolve(here, '..');
const PROXIED = ['/dicom-web/', '/wado', '/imhost/', '/jobs/', '/tools/lookup'];
const TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.html': 'text/html', '.css': 'text/css', '.json': 'application/json',
  '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2', '.map': 'application/json' };

function send(res, file) {
  fs.stat(file, (err, st) => {
    if (err || !st.isFile()) return send(res, path.join(dist, 'index.html'));
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Content-Length': st.size, 'Cache-Control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  });
}

// Resolve a URL path inside a root folder; null when it would leave it.
function inside(root, urlPath) {
  const p = path.resolve(root, '.' + decodeURIComponent(urlPath));
  return p === root || p.startsWith(root + path.sep) ? p : null;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (PROXIED.some(p => url.pathname.startsWith(p))) {
    const headers = { ...req.headers, host: orthanc.host };
    if (auth) headers.authorization = auth;
    const up = http.request({ hostname: orthanc.hostname, port: orthanc.port, path: req.url, method: req.method, headers }, r => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', e => {
      res.writeHead(502, { 'Content-Type': 'text/plain' });
      res.end(`Orthanc: ${e.message}`);
    });
    req.pipe(up);
    return;
  }
  if (url.pathname === '/app-config.js') return send(res, path.join(here, 'app-config.js'));
  if (url.pathname.startsWith('/ext/')) {
    const file = inside(ext, url.pathname.slice(4));
    if (!file || !/\/(extension|mode)\/[\w.-]+\.js$/.test(file)) {
      res.writeHead(404);
      return res.end();
    }
    return send(res, file);
  }
  const file = inside(dist, url.pathname);
  send(res, file && url.pathname !== '/' ? file : path.join(dist, 'index.html'));
});
server.listen(port, '127.0.0.1', () => console.log(`viewer on http://127.0.0.1:${port} (Orthanc ${orthanc.origin})`));
