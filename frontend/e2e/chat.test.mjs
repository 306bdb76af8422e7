// Two people in two browser contexts against the real server: sign-up,
// a channel, an invitation by mail, live chat, typing, reload, scroll-back,
// edit and delete, a message sent while the network is cut, escaping, a
// direct conversation and presence.  Each step depends on the ones before;
// after a failed step that the rest needs, the rest is skipped.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { launchBrowser, sleep, startStack, uniqueEmail, waitFor } from './stack.mjs';
import { axeViolations, realProblems, screenshots, trackedPage } from './helpers.mjs';
import { article, bannerText, countText, log, logState, scrollLog, send, token, waitForText } from './lib.mjs';

const PASSWORD = 'a long enough password';

describe('two people chatting', { timeout: 200000 }, () => {
  let stack;
  let browser;
  let ctxA;
  let ctxB;
  let pageA;
  let pageB;
  const a = { username: 'Ada', email: uniqueEmail('ada') };
  const b = { username: 'Bea', email: uniqueEmail('bea') };
  let channelId;
  const a11y = {};
  let blocked = null;

  // A step of the story; `needed`: the later steps cannot run without it.
  function step(name, fn, { needed = false, timeout = 30000 } = {}) {
    it(name, { timeout }, async (t) => {
      if (blocked) return t.skip(`needs "${blocked}", which failed`);
      try {
        await fn(t);
      } catch (e) {
        if (needed) blocked = name;
        throw e;
      }
    });
  }

  async function checkA11y(page, label) {
    a11y[label] = await axeViolations(page, label);
  }

  before(async () => {
    stack = await startStack({ presenceGrace: '1s' });
    browser = await launchBrowser();
    ctxA = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    ctxB = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    pageA = await trackedPage(ctxA);
    pageB = await trackedPage(ctxB);
  });

  after(async () => {
    await browser?.close();
    const problems = stack?.errorLogProblems() ?? [];
    await stack?.stop();
    assert.deepEqual(problems, [], 'nginx error log');
  });

  step(
    'A signs up and sees the empty channel list',
    async () => {
      await pageA.goto(stack.url + '/signup');
      await pageA.getByRole('heading', { name: 'Create your account' }).waitFor();
      await checkA11y(pageA, 'sign up');
      await pageA.getByLabel('Email').fill(a.email);
      await pageA.getByLabel('Username').fill(a.username);
      await pageA.getByLabel('Password').fill(PASSWORD);
      await screenshots(pageA, 'signup');
      await pageA.getByRole('button', { name: 'Create account' }).click();
      await pageA.getByText('No channels yet — create one').waitFor({ timeout: 10000 });
      assert.equal(new URL(pageA.url()).pathname, '/');
      await pageA.getByRole('navigation', { name: 'Channels' }).waitFor();
      await pageA.getByText(a.username, { exact: true }).first().waitFor();
      await checkA11y(pageA, 'channel list (empty)');
      await screenshots(pageA, 'channels-empty');
    },
    { needed: true },
  );

  step(
    'A creates a named channel with only herself',
    async () => {
      await pageA.getByRole('button', { name: 'New channel' }).click();
      const dialog = pageA.getByRole('dialog', { name: 'New channel' });
      await dialog.waitFor();
      assert.equal(await dialog.getByRole('radio', { name: 'Channel', exact: true }).isChecked(), true);
      await dialog.getByRole('textbox', { name: 'Channel name' }).fill('Project Foko');
      await checkA11y(pageA, 'new channel dialog');
      await screenshots(pageA, 'dialog-new-channel');
      await dialog.getByRole('button', { name: 'Create' }).click();
      await pageA.waitForURL(/\/c\/[0-9a-f]{24}$/, { timeout: 10000 });
      channelId = new URL(pageA.url()).pathname.split('/')[2];
      await pageA.getByRole('heading', { name: 'Project Foko' }).waitFor();
      await log(pageA).waitFor();
      await pageA
        .getByRole('navigation', { name: 'Channels' })
        .getByRole('link', { name: /^Project Foko/ })
        .waitFor();
      const r = await stack.api('GET', `/api/channels/${channelId}`, undefined, await token(pageA));
      assert.equal(r.status, 200);
      assert.deepEqual(r.body.members.map((m) => m.username), [a.username]);
    },
    { needed: true },
  );

  step(
    "A invites B's email and the mail has a link",
    async () => {
      await pageA.getByRole('button', { name: 'Channel settings' }).click();
      const dialog = pageA.getByRole('dialog', { name: 'Channel settings' });
      await dialog.waitFor();
      await dialog.getByRole('textbox', { name: 'Invite by email' }).fill(b.email);
      await checkA11y(pageA, 'channel settings dialog');
      await screenshots(pageA, 'dialog-channel-settings');
      await dialog.getByRole('button', { name: 'Invite' }).click();
      // the invited account shows among the members
      await waitFor(
        async () => {
          const r = await stack.api('GET', `/api/channels/${channelId}`, undefined, await token(pageA));
          return r.body.members.length === 2;
        },
        { message: 'the invited member in the channel' },
      );
      await pageA.keyboard.press('Escape');
      await dialog.waitFor({ state: 'hidden' });
      const [mail] = await stack.mails(b.email, { wait: 15 });
      assert.ok(mail, 'an invitation mail');
      b.link = mail.link;
      assert.match(b.link, new RegExp(`^${stack.url}/invite\\?channel=${channelId}&token=`));
    },
    { needed: true },
  );

  step(
    'B opens the link, chooses a name and password and lands in the channel',
    async () => {
      await pageB.goto(b.link);
      await pageB.getByRole('heading', { name: 'Join the conversation' }).waitFor();
      await pageB.getByLabel('Username').fill(b.username);
      await pageB.getByLabel('Password').fill(PASSWORD);
      await checkA11y(pageB, 'invitation');
      await screenshots(pageB, 'invite');
      await pageB.getByRole('button', { name: 'Join' }).click();
      await pageB.waitForURL(`${stack.url}/c/${channelId}`, { timeout: 10000 });
      await pageB.getByRole('heading', { name: 'Project Foko' }).waitFor();
      await log(pageB).waitFor();
      assert.ok(await token(pageB), 'B is signed in');
    },
    { needed: true },
  );

  step(
    'they chat live both ways',
    async () => {
      await send(pageA, 'hello from Ada');
      await waitForText(pageB, 'hello from Ada');
      await send(pageB, 'hi Ada, Bea here', { button: true });
      await waitForText(pageA, 'hi Ada, Bea here');
      const label = await article(pageA, 'hi Ada, Bea here').getAttribute('aria-label');
      assert.match(label ?? '', /^Bea at .+/);
      assert.equal(await countText(pageA, 'hello from Ada'), 1);
      assert.equal(await countText(pageB, 'hi Ada, Bea here'), 1);
      // the composer is empty again after sending
      assert.equal(await pageA.getByRole('textbox', { name: 'Message', exact: true }).inputValue(), '');
      await checkA11y(pageA, 'conversation');
      await screenshots(pageA, 'conversation');
    },
    { needed: true },
  );

  step('typing shows on the other side', async () => {
    const box = pageB.getByRole('textbox', { name: 'Message', exact: true });
    // right after B's send in the last step: sending must not leave the
    // 2 s typing throttle closed
    await box.click();
    await box.pressSequentially('typing something', { delay: 30 });
    await pageA.getByText('Bea is typing…').waitFor({ timeout: 5000 });
    await screenshots(pageA, 'conversation-typing');
    await box.fill('');
    // it goes away on its own
    await pageA.getByText('Bea is typing…').waitFor({ state: 'hidden', timeout: 10000 });
  });

  step('a reload keeps the session and the history', async () => {
    await pageA.reload();
    await pageA.getByRole('heading', { name: 'Project Foko' }).waitFor({ timeout: 10000 });
    assert.equal(new URL(pageA.url()).pathname, `/c/${channelId}`);
    await waitForText(pageA, 'hello from Ada');
    await waitForText(pageA, 'hi Ada, Bea here');
    // and it is live again
    await send(pageB, 'after your reload');
    await waitForText(pageA, 'after your reload');
  });

  step('scroll-back loads older messages and keeps the visible one in view', async (t) => {
    const ta = await token(pageA);
    for (let i = 1; i <= 120; i++) {
      const r = await stack.api(
        'POST',
        `/api/channels/${channelId}/messages`,
        { text: `backlog ${String(i).padStart(3, '0')}`, client_id: `backlog-${i}` },
        ta,
      );
      assert.equal(r.status, 201);
    }
    // a fresh load holds only the newest page; older pages are slowed down
    // so that the moment one arrives can be watched
    const older = /\/api\/channels\/[0-9a-f]+\/messages\?.*before=/;
    let asked = 0;
    let arrived = 0;
    const onFinished = (req) => {
      if (older.test(req.url())) arrived++;
    };
    pageA.on('requestfinished', onFinished);
    await pageA.route(older, async (route) => {
      asked++;
      await sleep(700);
      await route.continue();
    });
    await pageA.reload();
    await waitForText(pageA, 'backlog 120');
    const num = (t) => Number(/^backlog (\d+)$/.exec(t)?.[1] || 0);

    const seen = new Set();
    const arrivals = [];
    const deadline = Date.now() + 30000;
    try {
      while (Date.now() < deadline) {
        const arrivedBefore = arrived;
        const s = await logState(pageA);
        for (const item of s.items) seen.add(item.text);
        const nums = s.items.map((i) => num(i.text)).filter(Boolean);
        for (let k = 1; k < nums.length; k++) {
          assert.ok(nums[k] > nums[k - 1], `messages in order: ${nums.join(',')}`);
        }
        if (seen.has('hello from Ada') && s.scrollTop === 0) break;
        // the topmost message in view, then a scroll up (none at the top:
        // there the next page is awaited)
        const anchor = s.items.find((i) => i.bottom > 0 && i.top < s.height && i.text);
        await scrollLog(pageA, -Math.round(s.height * 0.6));
        await pageA.waitForTimeout(100);
        if (anchor && arrived > arrivedBefore) {
          // an older page came in meanwhile: the message that was in view
          // must still be there, not pushed away by what was put above it
          await pageA.waitForTimeout(300);
          const s2 = await logState(pageA);
          const same = s2.items.find((i) => i.text === anchor.text);
          arrivals.push({ anchor: anchor.text, was: Math.round(anchor.top), now: same ? Math.round(same.top) : null, height: s2.height });
          assert.ok(
            same && same.bottom > 0 && same.top < s2.height,
            `"${anchor.text}" stays in view when older messages arrive (it was ${Math.round(anchor.top)} px below the top of the log` +
              (same ? `, now ${Math.round(same.top)} px of ${s2.height} px)` : `, now no longer rendered; in view: ${s2.items.filter((i) => i.bottom > 0 && i.top < s2.height).map((i) => i.text).join(', ')})`),
          );
        }
      }
    } finally {
      pageA.off('requestfinished', onFinished);
      await pageA.unroute(older);
    }
    assert.ok(asked >= 2, `older pages were asked for (${asked})`);
    assert.ok(arrivals.length >= 1, 'the arrival of an older page was watched');
    t.diagnostic(`older pages arrived with in view: ${arrivals.map((a) => `${a.anchor} ${a.was}->${a.now} px`).join('; ')}`);
    assert.ok(seen.has('hello from Ada'), 'scrolled back to the first message');
    for (let i = 1; i <= 120; i++) {
      assert.ok(seen.has(`backlog ${String(i).padStart(3, '0')}`), `backlog ${i} was shown on the way up`);
    }
    await screenshots(pageA, 'conversation-scrolled-back');
  });

  // The oldest loaded message starts a group (name, time, day) until the
  // page above it arrives; then it continues the group of the page's last
  // message and gets shorter.  That happens above the view, and while the
  // reader is still scrolling up: what is on screen must not move.
  step('an older page arriving during a scroll up leaves the view where it was', async (t) => {
    const older = /\/api\/channels\/[0-9a-f]+\/messages\?.*before=/;
    let release;
    const held = new Promise((r) => (release = r));
    let asked = 0;
    await pageA.route(older, async (route) => {
      asked++;
      await held;
      await route.continue();
    });
    try {
      await pageA.reload();
      await waitForText(pageA, 'backlog 120');
      await waitFor(() => asked >= 1, { message: 'the older page was asked for' });
      // the oldest loaded message (backlog 071) 150 px above the view
      const seam = 'backlog 071';
      const seamBefore = await pageA.evaluate(async (seam) => {
        const box = document.querySelector('[role="log"]');
        const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
        box.scrollTop = 0;
        for (let i = 0; i < 5; i++) await frame();
        const el = [...box.querySelectorAll('article')].find(
          (a) => a.querySelector('.message-text')?.textContent.trim() === seam,
        );
        if (!el) return null;
        const b = box.getBoundingClientRect();
        box.scrollTop += el.getBoundingClientRect().bottom - b.top + 150;
        for (let i = 0; i < 5; i++) await frame();
        return el.getBoundingClientRect().height;
      }, seam);
      assert.ok(seamBefore, `"${seam}" is rendered at the top of the first page`);

      // scroll up 2 px a frame for 30 frames, the page let through at the
      // tenth; the first message fully in view must move down by what was
      // scrolled.  Each row measured while the scroll is under way may cost
      // up to 2 px (the adjustment races the scroll); the lost header of
      // the oldest row would cost more than 16.
      const watching = pageA.evaluate(async () => {
        const box = document.querySelector('[role="log"]');
        const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
        const b = box.getBoundingClientRect();
        const articles = () => [...box.querySelectorAll('article')];
        const text = (a) => a.querySelector('.message-text')?.textContent.trim();
        const first = articles().find((a) => a.getBoundingClientRect().top >= b.top);
        const name = text(first);
        const topOf = () => {
          const a = articles().find((x) => text(x) === name);
          return a ? a.getBoundingClientRect().top - b.top : null;
        };
        const start = topOf();
        let scrolled = 0;
        const worst = { off: 0, frame: -1 };
        for (let i = 0; i < 30; i++) {
          const before = box.scrollTop;
          box.scrollTop -= 2;
          scrolled += before - box.scrollTop;
          if (i === 10) window.__releaseOlder = true;
          await frame();
          const now = topOf();
          const off = now === null ? Infinity : now - start - scrolled;
          if (Math.abs(off) > Math.abs(worst.off)) Object.assign(worst, { off, frame: i });
        }
        for (let i = 0; i < 15; i++) await frame();
        const now = topOf();
        return { name, start, end: now, scrolled, off: now === null ? null : now - start - scrolled, worst };
      });
      await waitFor(() => pageA.evaluate(() => window.__releaseOlder === true), {
        interval: 10,
        message: 'the scroll up under way',
      });
      release();
      const w = await watching;
      const seamAfter = await pageA.evaluate((seam) => {
        const el = [...document.querySelectorAll('[role="log"] article')].find(
          (a) => a.querySelector('.message-text')?.textContent.trim() === seam,
        );
        return el ? el.getBoundingClientRect().height : null;
      }, seam);
      t.diagnostic(
        `"${w.name}" ${Math.round(w.start)} -> ${Math.round(w.end)} px after ${w.scrolled} px scrolled; ` +
          `worst ${Math.round(w.worst.off)} px at frame ${w.worst.frame}; "${seam}" ${seamBefore} -> ${seamAfter} px`,
      );
      assert.ok(seamAfter !== null && seamAfter < seamBefore, `"${seam}" joined the group above it (${seamBefore} -> ${seamAfter} px)`);
      assert.ok(w.off !== null && Math.abs(w.off) <= 16, `"${w.name}" moved only by the scroll (off by ${w.off} px)`);
      assert.ok(Math.abs(w.worst.off) <= 16, `and never jumped meanwhile (worst ${w.worst.off} px at frame ${w.worst.frame})`);
    } finally {
      release();
      await pageA.unroute(older);
    }
  });

  step('an edit shows on the other side', async () => {
    for (let i = 0; i < 5; i++) await scrollLog(pageA, 'bottom');
    await send(pageA, 'please edit me');
    await send(pageA, 'please delete me');
    await waitForText(pageB, 'please edit me');
    await waitForText(pageB, 'please delete me');
    await waitForText(pageA, 'please delete me');

    const edited = article(pageA, 'please edit me');
    await edited.hover();
    await edited.getByRole('button', { name: 'Edit message' }).click();
    const editBox = pageA.getByRole('textbox', { name: 'Edit message' });
    await editBox.fill('edited by Ada');
    await pageA.getByRole('button', { name: 'Save' }).click();
    await editBox.waitFor({ state: 'hidden' });
    await waitFor(async () => (await countText(pageB, 'please edit me')) === 0, { message: 'the old text to go on B' });
    // the text element holds the message's text, nothing else
    const onB = await article(pageB, 'edited by Ada').locator('.message-text').textContent({ timeout: 5000 });
    assert.equal(onB.trim(), 'edited by Ada', 'the edited text on B (class message-text)');
    await waitForText(pageA, 'edited by Ada');
  });

  step('a delete shows on the other side', async (t) => {
    await waitForText(pageA, 'please delete me');
    const del = article(pageA, 'please delete me');
    await del.hover();
    pageA.acceptDialogs = true;
    const dialogsBefore = pageA.dialogs.length;
    await del.getByRole('button', { name: 'Delete message' }).click();
    // a confirmation, if the client asks for one
    const confirm = pageA.getByRole('dialog').or(pageA.getByRole('alertdialog'));
    try {
      await confirm.first().waitFor({ timeout: 1000 });
      await checkA11y(pageA, 'delete message dialog');
      await screenshots(pageA, 'dialog-delete-message');
      await confirm.first().getByRole('button', { name: /^Delete/ }).click();
      t.diagnostic('delete asks for a confirmation in a dialog');
    } catch {
      /* no confirmation */
    }
    pageA.acceptDialogs = false;
    assert.equal(pageA.dialogs.length, dialogsBefore, `no native dialog for a delete: ${pageA.dialogs.slice(dialogsBefore)}`);
    await log(pageB).getByText('This message was deleted').waitFor({ timeout: 10000 });
    assert.equal(await countText(pageB, 'please delete me'), 0);
    await log(pageA).getByText('This message was deleted').waitFor({ timeout: 10000 });
  });

  step(
    'a message sent while the network is cut arrives exactly once',
    async (t) => {
      const text = 'sent while the network was down';
      const cut = stack.relay.down();
      assert.ok(cut >= 2, `both WebSockets cut (${cut} connections)`);
      let banner = null;
      try {
        banner = await waitFor(() => bannerText(pageB), { timeout: 8000, message: 'the offline banner' });
      } catch {
        /* checked below */
      }
      await send(pageB, text);
      // pending while the relay refuses
      let pendingShown = false;
      try {
        await article(pageB, text).getByText('Sending…').waitFor({ timeout: 3000 });
        pendingShown = true;
      } catch {
        /* checked below */
      }
      await screenshots(pageB, 'conversation-offline');
      await sleep(2000);
      assert.equal(await countText(pageA, text), 0, 'A cannot have it while the network is down');
      stack.relay.restore();
      t.diagnostic(`relay refused ${stack.relay.refused} connection(s) while down`);

      await waitForText(pageA, text, { timeout: 40000 });
      await waitFor(async () => (await bannerText(pageB)) === null && (await bannerText(pageA)) === null, {
        timeout: 15000,
        message: 'the banners to go once online',
      });
      await sleep(2500); // time for a duplicate to show up
      assert.equal(await countText(pageA, text), 1, "once in A's log");
      assert.equal(await countText(pageB, text), 1, "once in B's log");
      assert.equal(await article(pageB, text).getByText('Sending…').count(), 0, 'no longer pending');
      const h = await stack.api('GET', `/api/channels/${channelId}/messages?limit=20`, undefined, await token(pageA));
      assert.equal(h.body.messages.filter((m) => m.text === text).length, 1, 'once in the history');
      // and the connection is live again both ways
      await send(pageA, 'back online');
      await waitForText(pageB, 'back online');
      assert.match(banner ?? '', /^(Offline — reconnecting in \d+ s|Reconnecting…|Connecting…)$/, `offline banner (role=status) shown while cut; saw ${JSON.stringify(banner)}`);
      assert.ok(pendingShown, 'the message showed "Sending…" while the network was down');
    },
    { timeout: 90000 },
  );

  step(
    'a message whose acknowledgement is lost is not duplicated by the retry',
    async () => {
      const text = 'stored but never acknowledged';
      const n = stack.relay.swallowReplies();
      assert.ok(n >= 2, `both WebSockets affected (${n})`);
      await send(pageB, text);
      // the server has it once, B never heard back
      const ta = await token(pageA);
      await waitFor(
        async () => {
          const h = await stack.api('GET', `/api/channels/${channelId}/messages?limit=10`, undefined, ta);
          return h.body.messages.filter((m) => m.text === text).length === 1;
        },
        { timeout: 10000, message: 'the message stored' },
      );
      await sleep(300);
      assert.equal(await countText(pageA, text), 0, 'A heard nothing either');
      // then the connections drop, and come back
      stack.relay.down();
      await sleep(1500);
      stack.relay.restore();
      await waitForText(pageA, text, { timeout: 40000 });
      await waitForText(pageB, text, { timeout: 40000 });
      await waitFor(async () => (await article(pageB, text).getByText('Sending…').count()) === 0, {
        timeout: 15000,
        message: 'the message no longer pending on B',
      });
      await sleep(2500);
      assert.equal(await countText(pageA, text), 1, "once in A's log");
      assert.equal(await countText(pageB, text), 1, "once in B's log");
      const h = await stack.api('GET', `/api/channels/${channelId}/messages?limit=20`, undefined, ta);
      assert.equal(h.body.messages.filter((m) => m.text === text).length, 1, 'once in the history');
      await send(pageB, 'and live again');
      await waitForText(pageA, 'and live again');
    },
    { timeout: 90000 },
  );

  step('markup in a message is shown as text and never runs', async () => {
    const xss = '<img src=x onerror=alert(1)>';
    await send(pageA, xss);
    await waitForText(pageB, xss);
    await waitForText(pageA, xss);
    await sleep(500);
    for (const p of [pageA, pageB]) {
      assert.equal(await log(p).locator('img').count(), 0, 'no img element in the log');
      assert.equal(await p.locator('img[src="x"]').count(), 0, 'no img anywhere');
      assert.deepEqual(p.dialogs.filter((d) => d.startsWith('alert')), [], 'no alert ran');
    }
  });

  step('a direct conversation shows presence, and offline after B leaves', async (t) => {
    await pageA.getByRole('button', { name: 'New channel' }).click();
    const dialog = pageA.getByRole('dialog', { name: 'New channel' });
    await dialog.getByRole('radio', { name: 'Direct message' }).check();
    await dialog.getByRole('searchbox', { name: 'Find a person' }).fill('Be');
    await dialog.getByRole('option', { name: 'Bea' }).click();
    await checkA11y(pageA, 'new direct message dialog');
    await screenshots(pageA, 'dialog-direct');
    await dialog.getByRole('button', { name: 'Create' }).click();
    await pageA.waitForURL((u) => /^\/c\/[0-9a-f]{24}$/.test(u.pathname) && !u.pathname.endsWith(channelId));
    await pageA.getByRole('heading', { name: 'Bea' }).waitFor();
    const link = pageA.getByRole('navigation', { name: 'Channels' }).getByRole('link', { name: /^Bea/ });
    try {
      await link.getByRole('img', { name: 'online' }).waitFor({ timeout: 10000 });
    } catch (e) {
      // whose view is wrong: the server's or the client's?
      const dm = new URL(pageA.url()).pathname.split('/')[2];
      const r = await stack.api('GET', `/api/channels/${dm}`, undefined, await token(pageA));
      const dot = await link.getByRole('img').first().getAttribute('aria-label').catch(() => null);
      throw new Error(
        `B is connected, yet A's list shows ${dot}; the server says ${JSON.stringify(r.body.members?.map((m) => [m.username, m.online]))}: ${e.message}`,
      );
    }
    await checkA11y(pageA, 'channel list with channels');
    await screenshots(pageA, 'direct-conversation');

    const closedAt = Date.now();
    await ctxB.close();
    await link.getByRole('img', { name: 'offline' }).waitFor({ timeout: 15000 });
    const took = Date.now() - closedAt;
    t.diagnostic(`offline shown ${took} ms after B closed (grace 1 s)`);
    assert.ok(took >= 900, `not before the grace period (${took} ms)`);
  });

  it('has no serious or critical axe violations on the main screens', () => {
    const failing = Object.values(a11y).filter(Boolean);
    assert.ok(Object.keys(a11y).length > 0, 'some screens were checked');
    assert.equal(failing.length, 0, '\n' + failing.join('\n\n'));
  });

  it('shows no script errors and no dialogs', () => {
    for (const [name, p] of [['A', pageA], ['B', pageB]]) {
      assert.deepEqual(realProblems(p), [], `page ${name}`);
      assert.deepEqual(p.dialogs, [], `page ${name}`);
    }
  });
});
