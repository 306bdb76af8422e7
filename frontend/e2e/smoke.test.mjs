// The harness itself: the client is served through the relay with the
// index.html fallback, the API answers through it, a browser's WebSocket
// connects through it and a cut of the relay really closes it.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { launchBrowser, startStack, waitFor } from './stack.mjs';
import { trackedPage } from './helpers.mjs';

describe('harness', { timeout: 60000 }, () => {
  let stack;
  let browser;
  let context;

  before(async () => {
    stack = await startStack();
    browser = await launchBrowser();
    context = await browser.newContext();
  });

  after(async () => {
    await browser?.close();
    const problems = stack?.errorLogProblems() ?? [];
    await stack?.stop();
    assert.deepEqual(problems, [], 'error log');
  });

  it('serves the client with the index.html fallback', async () => {
    for (const p of ['/', '/signin', '/c/0123456789abcdef01234567']) {
      const r = await fetch(stack.url + p);
      assert.equal(r.status, 200, p);
      assert.match(r.headers.get('content-type'), /text\/html/, p);
      assert.match(await r.text(), /<div id="root">/, p);
    }
    const page = await trackedPage(context);
    await page.goto(stack.url + '/signin');
    assert.equal(await page.title(), 'Foko chat');
    await page.close();
  });

  it('answers the API through the relay', async () => {
    const r = await fetch(stack.url + '/api/health');
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { status: 'ok', mongo: 'up' });
  });

  it('connects a WebSocket through the relay and a cut closes it', async () => {
    const ada = await stack.signup('ada');
    const page = await trackedPage(context);
    await page.goto(stack.url + '/signin');
    const ready = await page.evaluate(
      (token) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
          window.__ws = ws;
          window.__closed = null;
          ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
          ws.onmessage = (e) => resolve(JSON.parse(e.data));
          ws.onclose = (e) => {
            window.__closed = { code: e.code };
            reject(new Error('closed ' + e.code));
          };
          setTimeout(() => reject(new Error('no ready in 5 s')), 5000);
        }),
      ada.token,
    );
    assert.equal(ready.type, 'ready');
    assert.equal(ready.user.id, ada.user.id);
    assert.ok(stack.relay.open >= 1, 'the relay carries the WebSocket');

    const cut = stack.relay.cut({ refuseMs: 1000 });
    assert.ok(cut >= 1);
    const closed = await waitFor(() => page.evaluate(() => window.__closed), {
      timeout: 5000,
      message: 'the WebSocket to close after the cut',
    });
    assert.equal(closed.code, 1006, 'an abnormal close, as on a lost network');

    // refused while the relay is down, accepted again afterwards
    const refusedBefore = stack.relay.refused;
    const during = await page.evaluate(
      () =>
        new Promise((resolve) => {
          const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
          ws.onopen = () => resolve('open');
          ws.onclose = () => resolve('closed');
        }),
    );
    assert.equal(during, 'closed');
    assert.ok(stack.relay.refused > refusedBefore);
    await new Promise((r) => setTimeout(r, 1100));
    const afterwards = await page.evaluate(
      () =>
        new Promise((resolve) => {
          const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
          ws.onopen = () => {
            ws.close();
            resolve('open');
          };
          ws.onclose = () => resolve('closed');
        }),
    );
    assert.equal(afterwards, 'open');
    await page.close();
  });

  it('reloads nginx and the WebSocket gets 1001', async () => {
    const bob = await stack.signup('bob');
    const page = await trackedPage(context);
    await page.goto(stack.url + '/signin');
    await page.evaluate(
      (token) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
          window.__closed = null;
          ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
          ws.onmessage = () => resolve();
          ws.onclose = (e) => (window.__closed = { code: e.code });
          setTimeout(() => reject(new Error('no ready in 5 s')), 5000);
        }),
      bob.token,
    );
    await stack.reload();
    const closed = await waitFor(() => page.evaluate(() => window.__closed), {
      timeout: 10000,
      message: 'the close of the reload',
    });
    assert.equal(closed.code, 1001);
    await page.close();
  });

  it('reads mail from the mail peer', { skip: !process.env.TEST_NGINX_MAIL_HTTP_PORT }, async () => {
    const cy = await stack.signup('cy');
    const r = await stack.api('POST', '/api/auth/password/forgot', { email: cy.email });
    assert.equal(r.status, 202);
    const [mail] = await stack.mails(cy.email);
    assert.ok(mail, 'a reset mail');
    assert.ok(mail.link.startsWith(stack.url + '/reset-password?token='), mail.link);
  });
});
