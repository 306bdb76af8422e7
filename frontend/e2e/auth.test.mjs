// Signing in and out, and a forgotten password: the reset mail's link
// opens the reset screen, which sets the password and signs in.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { launchBrowser, startStack } from './stack.mjs';
import { axeViolations, realProblems, screenshots, trackedPage } from './helpers.mjs';

describe('accounts', { timeout: 120000 }, () => {
  let stack;
  let browser;
  let context;
  let page;
  let cy;
  const a11y = {};

  before(async () => {
    stack = await startStack();
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await trackedPage(context);
    cy = await stack.signup('Cyd');
  });

  after(async () => {
    await browser?.close();
    const problems = stack?.errorLogProblems() ?? [];
    await stack?.stop();
    assert.deepEqual(problems, [], 'nginx error log');
  });

  it('sends a signed-out visitor to the sign-in screen', async () => {
    await page.goto(stack.url + '/');
    await page.waitForURL(/\/signin/, { timeout: 10000 });
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    a11y['sign in'] = await axeViolations(page, 'sign in');
    await screenshots(page, 'signin');
  });

  it('shows the server’s message for a wrong password and signs in with the right one', async () => {
    await page.getByRole('textbox', { name: 'Email' }).fill(cy.email);
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor({ timeout: 10000 });
    const r = await stack.api('POST', '/api/auth/login', { email: cy.email, password: 'not the password' });
    assert.equal(r.status, 401);
    assert.equal((await alert.textContent()).trim(), r.body.error.message);
    a11y['sign in (error)'] = await axeViolations(page, 'sign in (error)');
    await screenshots(page, 'signin-error');

    await page.getByLabel('Password').fill(cy.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('navigation', { name: 'Channels' }).waitFor({ timeout: 10000 });
    assert.equal(new URL(page.url()).pathname, '/');
    await page.getByText('Cyd', { exact: true }).first().waitFor();
  });

  it('signs out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor({ timeout: 10000 });
    assert.equal(await page.evaluate(() => localStorage.getItem('foko.token')), null);
  });

  it('has a sign-up screen linked from the sign-in one', async () => {
    await page.getByRole('link', { name: 'Create an account' }).click();
    await page.getByRole('heading', { name: 'Create your account' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/signup');
    for (const name of ['Email', 'Username', 'Password']) await page.getByLabel(name).waitFor();
    // an email in use: the server's words
    await page.getByLabel('Email').fill(cy.email);
    await page.getByLabel('Username').fill('Cyd again');
    await page.getByLabel('Password').fill('long enough password');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('alert').waitFor({ timeout: 10000 });
    a11y['sign up (error)'] = await axeViolations(page, 'sign up (error)');
    await page.getByRole('link', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  });

  it('resets a forgotten password from the mailed link and signs in', async () => {
    await page.getByRole('link', { name: 'Forgot password?' }).click();
    await page.waitForURL(/\/forgot-password$/);
    await page.getByLabel('Email').fill(cy.email);
    a11y['forgot password'] = await axeViolations(page, 'forgot password');
    await screenshots(page, 'forgot-password');
    await page.getByRole('button', { name: 'Send reset link' }).click();
    await page.getByText('Check your email').first().waitFor({ timeout: 10000 });
    await screenshots(page, 'forgot-password-sent');

    const [mail] = await stack.mails(cy.email, { wait: 15 });
    assert.ok(mail, 'a reset mail');
    assert.match(mail.link, new RegExp(`^${stack.url}/reset-password\\?token=`));
    await page.goto(mail.link);
    await page.getByLabel('New password').waitFor({ timeout: 10000 });
    a11y['reset password'] = await axeViolations(page, 'reset password');
    await screenshots(page, 'reset-password');
    await page.getByLabel('New password').fill('a brand new password');
    await page.getByRole('button', { name: 'Set password' }).click();
    await page.getByRole('navigation', { name: 'Channels' }).waitFor({ timeout: 10000 });
    assert.equal(new URL(page.url()).pathname, '/');

    // the new password works, the old one does not
    const good = await stack.api('POST', '/api/auth/login', { email: cy.email, password: 'a brand new password' });
    assert.equal(good.status, 200);
    const old = await stack.api('POST', '/api/auth/login', { email: cy.email, password: cy.password });
    assert.equal(old.status, 401);

    // the link works once: opened again, the server's refusal is shown
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor({ timeout: 10000 });
    await page.goto(mail.link);
    await page.getByLabel('New password').fill('yet another password');
    await page.getByRole('button', { name: 'Set password' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor({ timeout: 10000 });
    assert.match(await alert.textContent(), /\S/);
    assert.equal(new URL(page.url()).pathname, '/reset-password');
  });

  it('has no serious or critical axe violations on these screens', () => {
    const failing = Object.values(a11y).filter(Boolean);
    assert.ok(Object.keys(a11y).length >= 4);
    assert.equal(failing.length, 0, '\n' + failing.join('\n\n'));
  });

  it('shows no script errors and no dialogs', () => {
    // a 401 of the wrong password is logged by Chromium as a failed load
    assert.deepEqual(realProblems(page), []);
    assert.deepEqual(page.dialogs, []);
  });
});
