// Queries on the client's screens by the accessible names of the contract
// (conversation log, messages, banner), shared by the scenarios.

import { waitFor } from './stack.mjs';

export const log = (page) => page.getByRole('log', { name: 'Messages' });

// The article of the message whose text contains `text`.
export const article = (page, text) =>
  log(page)
    .locator('article')
    .filter({ has: page.locator('.message-text', { hasText: text }) });

// How many messages in the log have exactly this text.
export function countText(page, text) {
  return page.evaluate((text) => {
    const log = document.querySelector('[role="log"]');
    if (!log) return -1;
    return [...log.querySelectorAll('article .message-text')].filter(
      (e) => e.textContent.trim() === text,
    ).length;
  }, text);
}

export function waitForText(page, text, { timeout = 10000, count = 1 } = {}) {
  return waitFor(async () => (await countText(page, text)) === count, {
    timeout,
    message: `${count} message(s) "${text}" in the log of ${page.url()}`,
  });
}

export async function send(page, text, { button = false } = {}) {
  const box = page.getByRole('textbox', { name: 'Message', exact: true });
  await box.fill(text);
  if (button) await page.getByRole('button', { name: 'Send', exact: true }).click();
  else await box.press('Enter');
}

export const token = (page) => page.evaluate(() => localStorage.getItem('foko.token'));

// The message texts in the log in DOM order, and the scroll state of the
// element that scrolls it.
export function logState(page) {
  return page.evaluate(() => {
    const log = document.querySelector('[role="log"]');
    const box = scroller(log);
    const b = box.getBoundingClientRect();
    const items = [...log.querySelectorAll('article')].map((a) => {
      const r = a.getBoundingClientRect();
      return {
        text: a.querySelector('.message-text')?.textContent.trim() ?? '',
        top: r.top - b.top,
        bottom: r.bottom - b.top,
        label: a.getAttribute('aria-label'),
      };
    });
    return { items, scrollTop: box.scrollTop, scrollHeight: box.scrollHeight, height: box.clientHeight };
    function scroller(el) {
      for (let e = el; e; e = e.parentElement) {
        const s = getComputedStyle(e).overflowY;
        if (s === 'auto' || s === 'scroll') return e;
      }
      return document.scrollingElement;
    }
  });
}

// Scrolls the log by dy pixels (negative: up, toward older messages), or
// to the very top / bottom.
export function scrollLog(page, how) {
  return page.evaluate((how) => {
    const log = document.querySelector('[role="log"]');
    let box = document.scrollingElement;
    for (let e = log; e; e = e.parentElement) {
      const s = getComputedStyle(e).overflowY;
      if (s === 'auto' || s === 'scroll') {
        box = e;
        break;
      }
    }
    if (how === 'top') box.scrollTop = 0;
    else if (how === 'bottom') box.scrollTop = box.scrollHeight;
    else box.scrollTop += how;
    return box.scrollTop;
  }, how);
}

// The connection banner's text, or null when it is hidden.
export function bannerText(page) {
  return page.evaluate(() => {
    for (const e of document.querySelectorAll('[role="status"]')) {
      const t = e.textContent.trim();
      if (/Connecting…|Offline|Reconnecting/.test(t) && e.offsetParent !== null) return t;
    }
    return null;
  });
}
