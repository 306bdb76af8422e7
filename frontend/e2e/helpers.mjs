// Browser-side helpers of the end-to-end tests: pages that record their
// errors and dialogs, axe-core checks, screenshots.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { frontendDir } from './stack.mjs';

const require = createRequire(import.meta.url);
const axePath = require.resolve('axe-core/axe.min.js');
export const screenshotDir = path.join(frontendDir, 'e2e/screenshots');

// A new page that records console errors, uncaught exceptions and every
// dialog in page.problems / page.dialogs; dialogs are dismissed at once
// (accepted while page.acceptDialogs is set).
export async function trackedPage(context) {
  const page = await context.newPage();
  page.problems = [];
  page.dialogs = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console: ${m.text()}`);
  });
  page.on('dialog', async (d) => {
    page.dialogs.push(`${d.type()}: ${d.message()}`);
    await (page.acceptDialogs ? d.accept() : d.dismiss()).catch(() => {});
  });
  return page;
}

// Console errors other than those of failed network requests (which cuts
// of the relay cause on purpose).
export function realProblems(page) {
  return page.problems.filter(
    (p) =>
      !/Failed to load resource|net::ERR_|WebSocket connection to .* failed|WebSocket is closed/.test(p),
  );
}

// Runs axe-core on the page; returns the serious and critical violations,
// formatted for an assertion message ('' when there are none).
export async function axeViolations(page, label) {
  const loaded = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!loaded) await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(() =>
    window.axe.run(document, { resultTypes: ['violations'] }),
  );
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length === 0) return '';
  return (
    `axe on ${label}: ${bad.length} serious/critical violation(s)\n` +
    bad
      .map(
        (v) =>
          `- [${v.impact}] ${v.id}: ${v.help}\n` +
          v.nodes
            .slice(0, 5)
            .map((n) => `    ${n.target.join(' ')} — ${n.failureSummary?.split('\n').join(' ')}`)
            .join('\n'),
      )
      .join('\n')
  );
}

export const viewports = {
  phone: { width: 390, height: 844 },
  desktop: { width: 1280, height: 800 },
};

// Screenshots of the page as it is now at both sizes, light and dark:
// screenshots/<name>-<w>x<h>-<scheme>.png.  The viewport and colour
// scheme are put back afterwards.
export async function screenshots(page, name) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  const before = page.viewportSize();
  const files = [];
  for (const vp of Object.values(viewports)) {
    await page.setViewportSize(vp);
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.waitForTimeout(150);
      const file = path.join(screenshotDir, `${name}-${vp.width}x${vp.height}-${scheme}.png`);
      await page.screenshot({ path: file });
      files.push(file);
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  if (before) await page.setViewportSize(before);
  return files;
}
