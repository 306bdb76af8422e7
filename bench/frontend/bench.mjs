// Benchmarks of the web client (not tests: they measure and print).
//
//   bundle   the production build's JS and CSS, raw and gzipped, and what
//            the first screen loads (index.html and what it references)
//   list     time to the first rendered channel list: cold page loads (a
//            new browser context each, so no cache) of "/" signed in with a
//            stored token, 20 channels; median over --loads
//   scroll   frame rate while the log of a channel of 10,000 messages is
//            scrolled programmatically toward the oldest message in
//            headless Chromium: requestAnimationFrame deltas (mean fps, p95
//            and p99 frame time, frames over 50 ms)
//
// Run through bench/frontend/run.sh, which starts FerretDB; the data is
// seeded through the REST API of the bench's own stack (e2e/stack.mjs).
//
//   node bench/frontend/bench.mjs [--only bundle,list,scroll]
//        [--loads 7] [--messages 10000] [--scroll-seconds 10] [--json FILE]

import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const e2e = path.resolve(here, '../../frontend/e2e/stack.mjs');
const { startStack, launchBrowser, distDir } = await import(e2e);

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', default: 'bundle,list,scroll' },
    loads: { type: 'string', default: '7' },
    messages: { type: 'string', default: '10000' },
    'scroll-seconds': { type: 'string', default: '10' },
    json: { type: 'string' },
  },
});
const only = new Set(args.only.split(','));
const results = { date: new Date().toISOString() };

const kb = (n) => (n / 1024).toFixed(1);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const gz = (buf) => zlib.gzipSync(buf, { level: 6 }).length;

function bundle() {
  const files = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else files.push(p);
    }
  };
  walk(distDir);
  const rows = files
    .filter((f) => /\.(js|css|html)$/.test(f))
    .map((f) => {
      const buf = fs.readFileSync(f);
      return { file: path.relative(distDir, f), raw: buf.length, gzip: gz(buf) };
    });
  const sum = (re) =>
    rows.filter((r) => re.test(r.file)).reduce((a, r) => ({ raw: a.raw + r.raw, gzip: a.gzip + r.gzip }), { raw: 0, gzip: 0 });
  // the first screen: index.html and every script, modulepreload and
  // stylesheet it names (lazy chunks are not loaded before they are needed)
  const html = fs.readFileSync(path.join(distDir, 'index.html'), 'utf8');
  const refs = [...html.matchAll(/(?:src|href)="\/?([^"]+\.(?:js|css))"/g)].map((m) => m[1]);
  const first = rows.filter((r) => r.file === 'index.html' || refs.includes(r.file));
  const firstSum = first.reduce((a, r) => ({ raw: a.raw + r.raw, gzip: a.gzip + r.gzip }), { raw: 0, gzip: 0 });
  const out = { files: rows, js: sum(/\.js$/), css: sum(/\.css$/), firstScreen: { files: first.map((r) => r.file), ...firstSum } };
  console.log('\n## bundle (gzip level 6)');
  for (const r of rows) console.log(`  ${r.file.padEnd(40)} ${kb(r.raw).padStart(8)} KB  ${kb(r.gzip).padStart(7)} KB gz`);
  console.log(`  JS total   ${kb(out.js.raw)} KB raw, ${kb(out.js.gzip)} KB gzipped`);
  console.log(`  CSS total  ${kb(out.css.raw)} KB raw, ${kb(out.css.gzip)} KB gzipped`);
  console.log(`  first screen (${out.firstScreen.files.join(', ')}): ${kb(firstSum.raw)} KB raw, ${kb(firstSum.gzip)} KB gzipped (target < 200 KB)`);
  return out;
}

// Stores the session the way the client does (src/lib/auth.ts) before any
// script of the page runs.
async function signedInContext(browser, who, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...opts });
  await context.addInitScript(
    ([token, user]) => {
      localStorage.setItem('foko.token', token);
      localStorage.setItem('foko.user', user);
    },
    [who.token, JSON.stringify(who.user)],
  );
  return context;
}

async function firstList(stack, browser, loads) {
  const ada = await stack.signup('ada');
  for (let i = 0; i < 20; i++) {
    const r = await stack.api('POST', '/api/channels', { name: `room ${String(i + 1).padStart(2, '0')}`, members: [] }, ada.token);
    if (r.status !== 201) throw new Error(`create channel: ${r.status} ${JSON.stringify(r.body)}`);
  }
  const times = [];
  const navTimes = [];
  for (let i = 0; i < loads + 1; i++) {
    const context = await signedInContext(browser, ada);
    // the moment the channel list holds its 20 links, in ms since the
    // navigation started (performance.now()'s origin)
    await context.addInitScript(() => {
      const check = () => {
        const nav = document.querySelector('nav[aria-label="Channels"]');
        if (nav && nav.querySelectorAll('a').length >= 20 && window.__listAt === undefined) {
          window.__listAt = performance.now();
          obs.disconnect();
        }
      };
      const obs = new MutationObserver(check);
      obs.observe(document, { childList: true, subtree: true });
    });
    const page = await context.newPage();
    await page.goto(stack.url + '/', { waitUntil: 'commit' });
    await page.waitForFunction(() => window.__listAt !== undefined, null, { timeout: 15000 });
    const t = await page.evaluate(() => window.__listAt);
    const nav = await page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0];
      return { ttfb: n.responseStart, dcl: n.domContentLoadedEventEnd };
    });
    await context.close();
    if (i === 0) continue; // the first load warms nginx and the disk cache
    times.push(t);
    navTimes.push(nav);
  }
  const out = {
    loads,
    channels: 20,
    medianMs: median(times),
    minMs: Math.min(...times),
    maxMs: Math.max(...times),
    medianDomContentLoadedMs: median(navTimes.map((n) => n.dcl)),
    samplesMs: times.map((t) => Math.round(t)),
  };
  console.log('\n## first rendered channel list (cold loads, stored token, 20 channels)');
  console.log(`  median ${out.medianMs.toFixed(0)} ms (min ${out.minMs.toFixed(0)}, max ${out.maxMs.toFixed(0)}) over ${loads} loads; DOMContentLoaded median ${out.medianDomContentLoadedMs.toFixed(0)} ms`);
  console.log(`  samples: ${out.samplesMs.join(', ')}`);
  return out;
}

async function seedMessages(stack, token, channelId, n) {
  const t0 = Date.now();
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const text = `message ${i + 1} of ${n}: ` + 'lorem ipsum dolor sit amet '.repeat(1 + (i % 4));
      const r = await stack.api('POST', `/api/channels/${channelId}/messages`, { text, client_id: `seed-${i}` }, token);
      if (r.status !== 201) throw new Error(`post ${i}: ${r.status} ${JSON.stringify(r.body)}`);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return (Date.now() - t0) / 1000;
}

async function scroll(stack, browser, nMessages, seconds) {
  const bo = await stack.signup('bo');
  const ch = await stack.api('POST', '/api/channels', { name: 'ten thousand', members: [] }, bo.token);
  if (ch.status !== 201) throw new Error(`create channel: ${ch.status}`);
  const id = ch.body.id;
  const seedS = await seedMessages(stack, bo.token, id, nMessages);
  console.log(`\n  seeded ${nMessages} messages in ${seedS.toFixed(1)} s`);

  const context = await signedInContext(browser, bo);
  const page = await context.newPage();
  await page.goto(`${stack.url}/c/${id}`);
  const log = page.getByRole('log', { name: 'Messages' });
  await log.locator('article').first().waitFor({ timeout: 15000 });
  await page.waitForTimeout(500);
  const scrollFor = (seconds, dir) => page.evaluate(
    async ({ seconds, dir }) => {
      const log = document.querySelector('[role="log"]');
      const scrollable = (el) => {
        for (let e = el; e; e = e.parentElement) {
          const s = getComputedStyle(e).overflowY;
          if ((s === 'auto' || s === 'scroll') && e.scrollHeight > e.clientHeight) return e;
        }
        return null;
      };
      const box = scrollable(log) || scrollable(log.querySelector('article')) || document.scrollingElement;
      const deltas = [];
      const texts = new Set();
      const until = performance.now() + seconds * 1000;
      let last = performance.now();
      let atTop = 0;
      let moved = 0;
      const step = 40; // px per frame: 2,400 px/s at 60 fps
      await new Promise((resolve) => {
        const frame = (now) => {
          deltas.push(now - last);
          last = now;
          const before = box.scrollTop;
          if (dir < 0 && before === 0) atTop++;
          const end = box.scrollHeight - box.clientHeight;
          box.scrollTop = dir < 0 ? Math.max(0, before - step) : Math.min(end, before + step);
          moved += Math.abs(before - box.scrollTop);
          if (now >= until || (dir > 0 && box.scrollTop >= end - 1)) return resolve();
          requestAnimationFrame(frame);
        };
        requestAnimationFrame((now) => {
          last = now;
          requestAnimationFrame(frame);
        });
      });
      for (const a of log.querySelectorAll('article .message-text')) texts.add(a.textContent);
      const nums = [...texts].map((t) => Number(/^message (\d+)/.exec(t)?.[1])).filter(Boolean);
      return {
        deltas,
        oldestVisible: nums.length ? Math.min(...nums) : null,
        articles: log.querySelectorAll('article').length,
        atTop,
        moved,
        scrollTop: box.scrollTop,
      };
    },
    { seconds, dir },
  );
  const r = await scrollFor(seconds, -1);
  // back down through what is loaded now: rendering alone, no waiting
  const down = await scrollFor(seconds, 1);
  await context.close();
  const dd = down.deltas;
  const dTotal = dd.reduce((a, b) => a + b, 0);
  const back = {
    frames: dd.length,
    meanFps: (dd.length / dTotal) * 1000,
    p95FrameMs: pct(dd, 95),
    p99FrameMs: pct(dd, 99),
    maxFrameMs: Math.max(...dd),
    longFrames: dd.filter((x) => x > 50).length,
    scrolledPx: Math.round(down.moved),
  };
  const d = r.deltas;
  const total = d.reduce((a, b) => a + b, 0);
  const out = {
    messages: nMessages,
    seconds,
    frames: d.length,
    meanFps: (d.length / total) * 1000,
    p95FrameMs: pct(d, 95),
    p99FrameMs: pct(d, 99),
    maxFrameMs: Math.max(...d),
    longFrames: d.filter((x) => x > 50).length,
    oldestMessageReached: r.oldestVisible,
    framesAtTop: r.atTop,
    scrolledPx: Math.round(r.moved),
    articlesInDom: r.articles,
    backDown: back,
  };
  console.log(`## scrolling a channel of ${nMessages} messages for ${seconds} s (40 px per frame toward the oldest)`);
  console.log(`  mean ${out.meanFps.toFixed(1)} fps; frame time p95 ${out.p95FrameMs.toFixed(1)} ms, p99 ${out.p99FrameMs.toFixed(1)} ms, max ${out.maxFrameMs.toFixed(1)} ms; ${out.longFrames} frames > 50 ms of ${out.frames}`);
  console.log(`  oldest message in view at the end: #${out.oldestMessageReached}; ${out.articlesInDom} articles in the DOM`);
  console.log(`  scrolled ${out.scrolledPx} px; ${out.framesAtTop} frames began at the top of what was loaded (waiting for an older page)`);
  console.log(`  back down through the loaded messages (${back.scrolledPx} px): mean ${back.meanFps.toFixed(1)} fps; p95 ${back.p95FrameMs.toFixed(1)} ms, p99 ${back.p99FrameMs.toFixed(1)} ms, max ${back.maxFrameMs.toFixed(1)} ms; ${back.longFrames} frames > 50 ms of ${back.frames}`);
  return out;
}

let stack;
let browser;
try {
  if (only.has('bundle')) results.bundle = bundle();
  if (only.has('list') || only.has('scroll')) {
    stack = await startStack();
    browser = await launchBrowser();
    results.chromium = browser.version();
    if (only.has('list')) results.firstList = await firstList(stack, browser, Number(args.loads));
    if (only.has('scroll')) results.scroll = await scroll(stack, browser, Number(args.messages), Number(args['scroll-seconds']));
  }
} finally {
  await browser?.close();
  await stack?.stop();
}
if (args.json) {
  fs.mkdirSync(path.dirname(path.resolve(args.json)), { recursive: true });
  fs.writeFileSync(args.json, JSON.stringify(results, null, 2) + '\n');
  console.log(`\nwrote ${args.json}`);
}
