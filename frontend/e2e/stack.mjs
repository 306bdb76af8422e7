// The stack the end-to-end tests and the web client's benchmarks run on:
// a private nginx with the chat module (its own prefix in a temporary
// folder, a free loopback port, a master and 2 workers, a fresh database),
// serving the built client from frontend/dist, and a TCP relay in front of
// it through which the browser talks.  The relay's connections can be cut
// for real (every socket destroyed, new ones refused for a while): Chromium's
// offline emulation leaves open WebSockets alone, so a lost network is
// simulated here instead.
//
// Environment: TEST_NGINX_BINARY (default: nginx in PATH, else
// /usr/sbin/nginx), TEST_NGINX_LOAD_MODULES (the module's .so; default
// build/ngx_foko_chat_module.so), TEST_NGINX_MONGO_URI (required; its
// database name is replaced by a fresh one per stack),
// TEST_NGINX_MAIL_SMTP_PORT and TEST_NGINX_MAIL_HTTP_PORT (the mail peer,
// t/lib/mailpeer.py; without them no mail is sent).

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const frontendDir = path.resolve(here, '..');
export const repoRoot = path.resolve(frontendDir, '..');
// E2E_DIST: another build of the client to serve (default frontend/dist)
export const distDir = process.env.E2E_DIST
  ? path.resolve(process.env.E2E_DIST)
  : path.join(frontendDir, 'dist');
const clientConf = path.join(repoRoot, 'conf/client.conf');

export const jwtSecret = 'e2e-secret-' + randomBytes(16).toString('hex');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function nginxBinary() {
  if (process.env.TEST_NGINX_BINARY) return process.env.TEST_NGINX_BINARY;
  for (const dir of (process.env.PATH || '').split(':')) {
    const p = path.join(dir, 'nginx');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return '/usr/sbin/nginx';
}

function modulePaths() {
  const env = process.env.TEST_NGINX_LOAD_MODULES;
  const list = env
    ? env.split(/\s+/).filter(Boolean)
    : [path.join(repoRoot, 'build/ngx_foko_chat_module.so')];
  for (const p of list) {
    if (!fs.existsSync(p)) throw new Error(`module not found: ${p}`);
  }
  return list;
}

// The configured MongoDB URI with its database replaced by `db`.
export function withDatabase(uri, db) {
  const m = /^(mongodb(?:\+srv)?:\/\/[^/?]+)(?:\/[^?]*)?(\?.*)?$/.exec(uri);
  if (!m) throw new Error(`cannot parse TEST_NGINX_MONGO_URI: ${uri}`);
  return `${m[1]}/${db}${m[2] || ''}`;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// A TCP relay 127.0.0.1:<port> -> 127.0.0.1:<target>.
export class Relay {
  constructor(target) {
    this.target = target;
    this.pairs = new Set();
    this.refusing = false;
    this.accepted = 0;
    this.refused = 0;
    this.server = net.createServer((client) => this.#accept(client));
  }

  listen(port = 0) {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this.port);
      });
    });
  }

  #accept(client) {
    if (this.refusing) {
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect(this.target, '127.0.0.1');
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      if (!client.destroyed) client.destroy();
      if (!upstream.destroyed) upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  get open() {
    return this.pairs.size;
  }

  // Destroys every open connection (the browser sees a reset), and with
  // refuseMs > 0 resets new ones for that long.  Returns how many were cut.
  cut({ refuseMs = 0 } = {}) {
    const n = this.pairs.size;
    for (const { client, upstream } of [...this.pairs]) {
      if (!client.destroyed) client.resetAndDestroy();
      upstream.destroy();
    }
    this.pairs.clear();
    if (refuseMs > 0) {
      this.refusing = true;
      clearTimeout(this.refuseTimer);
      this.refuseTimer = setTimeout(() => {
        this.refusing = false;
      }, refuseMs);
    }
    return n;
  }

  // Stops forwarding what the server sends on the open connections (it is
  // read and dropped), while the client's bytes still go through: a
  // request arrives and its answer is lost, as when the network fails
  // between the two.  Returns how many connections it applies to.
  swallowReplies() {
    for (const { client, upstream } of this.pairs) {
      upstream.unpipe(client);
      upstream.on('data', () => {});
    }
    return this.pairs.size;
  }

  // Refuses new connections until restore() (open ones are cut too).
  down() {
    clearTimeout(this.refuseTimer);
    this.refusing = true;
    return this.cut();
  }

  restore() {
    clearTimeout(this.refuseTimer);
    this.refusing = false;
  }

  close() {
    this.restore();
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function renderConf(o) {
  const mail = o.smtpPort
    ? `foko_chat_mail smtp://127.0.0.1:${o.smtpPort} from=chat@foko.test timeout=5s;`
    : '';
  return `# rendered by frontend/e2e/stack.mjs
${o.modules.map((m) => `load_module ${m};`).join('\n')}
${process.getuid && process.getuid() === 0 ? 'user root;' : ''}
worker_processes 2;
master_process on;
daemon off;
error_log ${o.prefix}/logs/error.log info;
pid ${o.prefix}/logs/nginx.pid;

events {
    worker_connections 1024;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log ${o.prefix}/logs/access.log;

    client_body_temp_path ${o.prefix}/tmp/body;
    proxy_temp_path ${o.prefix}/tmp/proxy;
    fastcgi_temp_path ${o.prefix}/tmp/fastcgi;
    uwsgi_temp_path ${o.prefix}/tmp/uwsgi;
    scgi_temp_path ${o.prefix}/tmp/scgi;

    foko_chat_mongo_uri ${o.mongoUri};
    foko_chat_shm_size 32m;
    foko_chat_jwt_secret ${jwtSecret};
    # cheap hashes: the tests sign up many accounts on 2 shared cores
    foko_chat_password_hash argon2id t=1 m=1m p=1;
    foko_chat_presence_grace ${o.presenceGrace};
    foko_chat_public_url ${o.publicUrl};
    foko_chat_allowed_origins ${o.origins.join(' ')};
    ${mail}
    # every browser comes through the relay, from 127.0.0.1
    foko_chat_limit signup_address 10000/1h;
    foko_chat_limit login_address 10000/15m;
    foko_chat_limit forgot_address 1000/1h;
${o.extraHttp || ''}

    server {
        listen 127.0.0.1:${o.port};
        server_name localhost;

        location /api/ {
            foko_chat_api;
        }

        location = /ws {
            foko_chat_websocket;
        }

        location = /status {
            allow 127.0.0.1;
            deny all;
            foko_chat_status;
        }

        # the web client, built into frontend/dist, served as dev.conf does
        root ${o.dist};
${o.clientBlock}
    }
}
`;
}

export async function startStack(opts = {}) {
  const mongoBase = process.env.TEST_NGINX_MONGO_URI;
  if (!mongoBase) throw new Error('TEST_NGINX_MONGO_URI is not set (use e2e/run.sh)');
  if (!fs.existsSync(path.join(distDir, 'index.html'))) {
    throw new Error(`${distDir}/index.html missing: npm run build first`);
  }
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'foko-e2e-'));
  for (const d of ['conf', 'logs', 'tmp']) fs.mkdirSync(path.join(prefix, d));
  const db = `foko_e2e_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const port = await freePort();
  const relay = new Relay(port);
  const relayPort = await relay.listen();
  const url = `http://127.0.0.1:${relayPort}`;
  const conf = renderConf({
    prefix,
    port,
    modules: modulePaths(),
    mongoUri: withDatabase(mongoBase, db),
    presenceGrace: opts.presenceGrace || '1s',
    publicUrl: url,
    origins: [url, `http://localhost:${relayPort}`],
    smtpPort: process.env.TEST_NGINX_MAIL_SMTP_PORT,
    dist: distDir,
    clientBlock: fs.existsSync(clientConf)
      ? `        include ${clientConf};`
      : '        location / {\n            try_files $uri /index.html;\n        }',
    extraHttp: opts.extraHttp,
  });
  const confPath = path.join(prefix, 'conf/nginx.conf');
  fs.writeFileSync(confPath, conf);
  const bin = nginxBinary();
  const nginxArgs = ['-p', prefix + '/', '-c', confPath, '-e', path.join(prefix, 'logs/error.log')];
  const test = spawnSync(bin, [...nginxArgs, '-t'], { encoding: 'utf8' });
  if (test.status !== 0) {
    throw new Error(`nginx -t failed:\n${test.stderr}${test.stdout}\n${conf}`);
  }
  const proc = spawn(bin, nginxArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => (output += d));
  proc.stderr.on('data', (d) => (output += d));
  let exited = null;
  proc.on('exit', (code, sig) => (exited = { code, sig }));
  const killOnExit = () => {
    try {
      proc.kill('SIGKILL');
    } catch {
      /* gone */
    }
  };
  process.on('exit', killOnExit);

  const nginxUrl = `http://127.0.0.1:${port}`;
  const stack = {
    prefix,
    db,
    port,
    relay,
    url,
    nginxUrl,
    conf,
    errorLogPath: path.join(prefix, 'logs/error.log'),
    pid: proc.pid,

    async reload() {
      const r = spawnSync(bin, [...nginxArgs, '-s', 'reload'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`nginx -s reload: ${r.stderr}`);
    },

    errorLog() {
      try {
        return fs.readFileSync(stack.errorLogPath, 'utf8');
      } catch {
        return '';
      }
    },

    // Lines at [alert]/[crit]/[emerg], and [error] lines matching none of
    // `allowErrors` (regexps): an empty list when the log is clean.
    errorLogProblems({ allowErrors = [] } = {}) {
      return stack
        .errorLog()
        .split('\n')
        .filter((l) => {
          if (/\[(alert|crit|emerg)\]/.test(l)) return true;
          if (/\[error\]/.test(l)) return !allowErrors.some((re) => re.test(l));
          return false;
        });
    },

    // The mails the mail peer recorded for `to`, waiting up to `wait` s for
    // at least one (and, with `count`, for that many).
    async mails(to, { wait = 10, count = 1 } = {}) {
      const httpPort = process.env.TEST_NGINX_MAIL_HTTP_PORT;
      if (!httpPort) throw new Error('TEST_NGINX_MAIL_HTTP_PORT is not set');
      const deadline = Date.now() + wait * 1000;
      for (;;) {
        const left = Math.max(0, (deadline - Date.now()) / 1000);
        const r = await fetch(
          `http://127.0.0.1:${httpPort}/messages?to=${encodeURIComponent(to)}&wait=${left.toFixed(1)}`,
        );
        const list = await r.json();
        if (list.length >= count || Date.now() >= deadline) return list;
        await sleep(200);
      }
    },

    // REST straight to nginx (not through the relay, so cuts spare it).
    async api(method, p, body, token) {
      const headers = {};
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (token) headers.authorization = `Bearer ${token}`;
      const r = await fetch(nginxUrl + p, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = text;
      }
      return { status: r.status, body: json, headers: r.headers };
    },

    // Signs up an account; returns {user, token, email, password}.
    async signup(username, { email, password = 'correct horse battery' } = {}) {
      email = email || uniqueEmail(username);
      const r = await stack.api('POST', '/api/auth/signup', { email, password, username });
      if (r.status !== 201) throw new Error(`signup ${email}: ${r.status} ${JSON.stringify(r.body)}`);
      return { ...r.body, email, password };
    },

    async stop() {
      process.off('exit', killOnExit);
      await relay.close();
      if (exited === null) {
        proc.kill('SIGQUIT');
        for (let i = 0; i < 100 && exited === null; i++) await sleep(50);
        if (exited === null) {
          proc.kill('SIGKILL');
          for (let i = 0; i < 40 && exited === null; i++) await sleep(50);
        }
      }
      if (!process.env.E2E_KEEP) fs.rmSync(prefix, { recursive: true, force: true });
    },

    get nginxOutput() {
      return output;
    },
    get exited() {
      return exited;
    },
  };

  // listening once /api/health answers
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`nginx exited (${JSON.stringify(exited)}): ${output}\n${stack.errorLog()}`);
    try {
      const r = await fetch(nginxUrl + '/api/health');
      if (r.status === 200) break;
    } catch {
      /* not yet */
    }
    if (i > 200) {
      await stack.stop();
      throw new Error(`nginx did not answer /api/health in 10 s: ${output}`);
    }
    await sleep(50);
  }
  return stack;
}

let emailCounter = 0;
export function uniqueEmail(name = 'user') {
  const tag = `${Date.now().toString(36)}${process.pid.toString(36)}${(emailCounter++).toString(36)}`;
  return `${String(name).toLowerCase().replace(/\W/g, '') || 'user'}.${tag}@example.com`;
}

// The browser: the system's Chromium through playwright-core.
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
}

export async function waitFor(fn, { timeout = 10000, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${message} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(interval);
  }
}

export { sleep };
