// @vitest-environment node
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocket as WsWebSocket } from 'ws';
import { ChatSession, type SessionOptions } from './session';
import { useChat, type ConnStatus } from './chat-store';
import { useAuth } from './auth';
import { api, setApiBase } from './api';
import { ChatServer, MemoryStorage, until } from './testing/chat-server';
import type { User } from './types';

const WS = WsWebSocket as unknown as typeof WebSocket;

let server: ChatServer;
let ada: User;
let bob: User;
let sessions: ChatSession[] = [];
let storage: MemoryStorage;
let token = 'tok-ada';

function session(extra: Partial<SessionOptions> = {}): ChatSession {
  const s = new ChatSession({
    url: server.url,
    getToken: () => token,
    WebSocketImpl: WS,
    random: () => 0.5,
    baseDelayMs: 20,
    maxDelayMs: 200,
    storage,
    events: null,
    ...extra,
  });
  sessions.push(s);
  return s;
}

const seqs = (ch: string) => (useChat.getState().timelines[ch]?.messages ?? []).map((m) => m.seq);
const ids = (ch: string) => (useChat.getState().timelines[ch]?.messages ?? []).map((m) => m.id);
const status = () => useChat.getState().connection.status;
const online = () => status() === 'online';

// every status the store goes through
function recordStatuses(): ConnStatus[] {
  const seen: ConnStatus[] = [useChat.getState().connection.status];
  const off = useChat.subscribe((s) => {
    if (s.connection.status !== seen[seen.length - 1]) seen.push(s.connection.status);
  });
  offs.push(off);
  return seen;
}
let offs: (() => void)[] = [];

beforeEach(async () => {
  useChat.getState().reset();
  storage = new MemoryStorage();
  token = 'tok-ada';
  server = await new ChatServer().listen();
  ada = server.addUser('a'.repeat(24), 'ada', 'tok-ada');
  bob = server.addUser('b'.repeat(24), 'bob', 'tok-bob');
  server.addChannel('c1', [ada.id, bob.id]);
  server.addChannel('c2', [ada.id, bob.id]);
  server.addChannel('c3', [ada.id, bob.id]);
});

afterEach(async () => {
  for (const s of sessions) s.stop();
  sessions = [];
  for (const off of offs) off();
  offs = [];
  await server.close();
});

describe('signing in', () => {
  it('sends auth first and goes online on ready', async () => {
    const seen = recordStatuses();
    const s = session();
    s.start();
    await until(online, 2000, 'online');
    expect(server.history[0]!.received[0]).toEqual({ type: 'auth', token: 'tok-ada' });
    expect(s.user).toEqual(ada);
    expect(s.online).toBe(true);
    expect(seen).toEqual(['connecting', 'online']);
  });
});

describe('reconnecting', () => {
  it('backs off exponentially with jitter, then comes back online', async () => {
    const seen = recordStatuses();
    const s = session();
    s.start();
    await until(online, 2000, 'online');
    server.refusing = true;
    const t0 = Date.now();
    server.dropAll();
    await until(() => server.connectTimes.length >= 5, 3000, 'four retries');
    const c = useChat.getState().connection;
    expect(c.status).toBe('reconnecting');
    expect(c.attempt).toBeGreaterThanOrEqual(4);
    // random 0.5: delays 3/4 of 20, 40, 80, 160 ms
    const times = server.connectTimes.slice(1);
    const gaps = [times[0]! - t0, ...times.slice(1).map((t, i) => t - times[i]!)];
    const want = [15, 30, 60, 120];
    for (let i = 0; i < 4; i++) {
      expect(gaps[i]).toBeGreaterThanOrEqual(want[i]! - 3);
      expect(gaps[i]).toBeLessThan(want[i]! + 100);
    }
    server.refusing = false;
    await until(online, 2000, 'online again');
    expect(useChat.getState().connection).toEqual({ status: 'online', retryAt: null, attempt: 0 });
    expect(seen.slice(0, 3)).toEqual(['connecting', 'online', 'reconnecting']);
    expect(seen[seen.length - 1]).toBe('online');
    expect(seen).not.toContain('offline');
  });

  it('announces when the next attempt starts, capped by maxDelayMs', async () => {
    const s = session({ baseDelayMs: 1000, maxDelayMs: 4000, random: () => 1 });
    s.start();
    await until(online, 2000);
    server.refusing = true;
    const before = Date.now();
    server.dropAll();
    await until(() => useChat.getState().connection.retryAt !== null, 2000);
    const c = useChat.getState().connection;
    expect(c.status).toBe('reconnecting');
    expect(c.attempt).toBe(1);
    expect(c.retryAt! - before).toBeGreaterThanOrEqual(1000);
    expect(c.retryAt! - before).toBeLessThan(1100);
    s.stop();
  });

  it('goes offline on the browser\'s offline event and reconnects on online', async () => {
    const events = new EventTarget();
    const s = session({ events, maxDelayMs: 60_000 });
    s.start();
    await until(online, 2000);
    events.dispatchEvent(new Event('offline'));
    expect(status()).toBe('offline');
    expect(s.online).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    expect(status()).toBe('offline'); // waits for the browser, not the 60 s timer
    expect(server.connectTimes.length).toBe(1);
    events.dispatchEvent(new Event('online'));
    await until(online, 2000, 'online after online');
    expect(server.connectTimes.length).toBe(2);
  });

  it('reconnects after 1001 and 1013 closes', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    server.closeAll(1001);
    await until(() => !online(), 2000);
    await until(online, 2000, 'back after 1001');
    server.closeAll(1013);
    await until(() => !online(), 2000);
    await until(online, 2000, 'back after 1013');
    expect(server.history.filter((c) => c.user).length).toBe(3);
  });
});

describe('resume', () => {
  it('resumes the channels it has seen in the auth frame, and ends complete, in order, once', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    for (let i = 1; i <= 3; i++) server.post('c1', bob, `m${i}`);
    server.post('c2', bob, 'x1');
    await until(() => seqs('c1').length === 3 && seqs('c2').length === 1, 2000);
    server.refusing = true;
    server.dropAll();
    await until(() => !online(), 2000);
    for (let i = 4; i <= 7; i++) server.post('c1', bob, `m${i}`);
    server.post('c3', bob, 'never loaded');
    server.refusing = false;
    await until(() => seqs('c1').length === 7, 3000, 'replay');
    const last = server.history[server.history.length - 1]!;
    // c1 from seq 3, c2 (up to date) from 1; c3 was never seen
    expect(last.received[0]).toEqual({
      type: 'auth',
      token: 'tok-ada',
      resume: { c1: 3, c2: 1 },
    });
    // and no resume message besides
    expect(last.received.filter((f) => f.type === 'resume')).toEqual([]);
    expect(seqs('c1')).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(ids('c1')).toEqual(server.messages('c1').map((m) => m.id));
    expect(seqs('c2')).toEqual([1]);
    expect(useChat.getState().timelines.c3).toBeUndefined();
  });

  it('drops a timeline too far behind instead of replaying it', async () => {
    const s = session({ maxResumeGap: 3 });
    s.start();
    await until(online, 2000);
    server.post('c1', bob, 'm1');
    await until(() => seqs('c1').length === 1, 2000);
    server.refusing = true;
    server.dropAll();
    await until(() => !online(), 2000);
    for (let i = 2; i <= 6; i++) server.post('c1', bob, `m${i}`);
    server.refusing = false;
    await until(online, 2000);
    await new Promise((r) => setTimeout(r, 50));
    const last = server.history[server.history.length - 1]!;
    // the auth frame resumed it; the replay that came is not kept
    expect(last.received[0]).toMatchObject({ type: 'auth', resume: { c1: 1 } });
    expect(last.received.filter((f) => f.type === 'resume')).toEqual([]);
    expect(useChat.getState().timelines.c1).toMatchObject({ messages: [], loaded: false });
    // live messages after it are
    const m7 = server.post('c1', bob, 'm7');
    await until(() => seqs('c1').includes(m7.seq), 2000);
    expect(seqs('c1')).toEqual([7]);
  });

  it('resumes what the auth frame cannot carry (1000 channels) with a resume message', async () => {
    const many = Array.from({ length: 1001 }, (_, i) => `m${i}`);
    for (const id of many) server.addChannel(id, [ada.id, bob.id]);
    const s = session();
    s.start();
    await until(online, 2000);
    for (const id of many) server.post(id, bob, 'first');
    await until(() => many.every((id) => seqs(id).length === 1), 5000);
    server.refusing = true;
    server.dropAll();
    await until(() => !online(), 2000);
    for (const id of many) server.post(id, bob, 'missed');
    server.refusing = false;
    await until(() => many.every((id) => seqs(id).length === 2), 5000, 'replay');
    const last = server.history[server.history.length - 1]!;
    const auth = last.received[0] as { resume?: Record<string, number> };
    const inAuth = Object.keys(auth.resume ?? {});
    expect(inAuth.length).toBe(1000);
    const resumes = last.received.filter((f) => f.type === 'resume') as {
      channels: Record<string, number>;
    }[];
    expect(resumes.length).toBe(1);
    const rest = Object.keys(resumes[0]!.channels);
    expect(rest.length).toBe(1);
    expect(inAuth).not.toContain(rest[0]);
    expect(many.every((id) => seqs(id).join() === '1,2')).toBe(true);
  });

  it('keeps live messages after a replay in order, each once', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    server.post('c1', bob, 'm1');
    await until(() => seqs('c1').length === 1, 2000);
    server.dropAll();
    server.post('c1', bob, 'm2'); // while no one is connected
    await until(online, 2000);
    server.post('c1', bob, 'm3');
    await until(() => seqs('c1').length === 3, 2000);
    await new Promise((r) => setTimeout(r, 50));
    expect(seqs('c1')).toEqual([1, 2, 3]);
  });

  it('orders out-of-order frames and drops duplicates by id and by seq', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    const msgs = [1, 2, 3, 4].map((n) => server.post('c1', bob, `m${n}`));
    await until(() => seqs('c1').length === 4, 2000);
    useChat.getState().reset();
    const [m1, m2, m3, m4] = msgs as [typeof msgs[0], typeof msgs[0], typeof msgs[0], typeof msgs[0]];
    for (const m of [m3, m1, m4, m1, m2, m3]) server.inject({ type: 'message', message: m });
    // another id claiming seq 2
    server.inject({ type: 'message', message: { ...m2, id: 'f'.repeat(24), text: 'impostor' } });
    const marker = server.post('c2', bob, 'marker');
    await until(() => seqs('c2').includes(marker.seq), 2000);
    expect(seqs('c1')).toEqual([1, 2, 3, 4]);
    expect(ids('c1')).toEqual([m1.id, m2.id, m3.id, m4.id]);
    expect(useChat.getState().timelines.c1!.messages[1]!.text).toBe('m2');
  });
});

describe('the outbox', () => {
  const count = (ch: string, text: string) =>
    server.messages(ch).filter((m) => m.text === text).length;
  const inTimeline = (ch: string, text: string) =>
    (useChat.getState().timelines[ch]?.messages ?? []).filter((m) => m.text === text).length;

  it('sends at once when online: acked, pending cleared, in the timeline', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    const id = s.send('c1', 'hello');
    expect(useChat.getState().pending.map((p) => p.clientId)).toEqual([id]);
    await until(() => useChat.getState().pending.length === 0, 2000, 'ack');
    expect(server.messages('c1')[0]).toMatchObject({ text: 'hello', client_id: id });
    expect(inTimeline('c1', 'hello')).toBe(1);
    const frames = server.history[0]!.received.filter((f) => f.type === 'send');
    expect(frames).toEqual([
      { type: 'send', ref: id, channel_id: 'c1', text: 'hello', client_id: id },
    ]);
    expect(storage.getItem('foko.outbox')).toBeNull();
  });

  it('delivers a message written while disconnected exactly once, in order', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    server.refusing = true;
    server.dropAll();
    await until(() => !online(), 2000);
    const a = s.send('c1', 'first while away');
    const b = s.send('c1', 'second while away');
    expect(useChat.getState().pending.map((p) => [p.clientId, p.state])).toEqual([
      [a, 'queued'],
      [b, 'queued'],
    ]);
    server.refusing = false;
    await until(() => useChat.getState().pending.length === 0, 3000, 'delivered');
    await new Promise((r) => setTimeout(r, 50));
    expect(server.messages('c1').map((m) => [m.text, m.client_id])).toEqual([
      ['first while away', a],
      ['second while away', b],
    ]);
    expect(inTimeline('c1', 'first while away')).toBe(1);
    expect(inTimeline('c1', 'second while away')).toBe(1);
  });

  it('re-sends a send in flight at the drop (stored, unanswered) and it stays one message', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    server.post('c1', bob, 'before');
    await until(() => seqs('c1').length === 1, 2000);
    server.options.sendMode = 'store-then-drop';
    const id = s.send('c1', 'in flight');
    await until(() => server.messages('c1').length === 2, 2000, 'stored');
    server.options.sendMode = 'normal';
    await until(() => useChat.getState().pending.length === 0 && online(), 3000, 'settled');
    await new Promise((r) => setTimeout(r, 50));
    expect(count('c1', 'in flight')).toBe(1);
    expect(inTimeline('c1', 'in flight')).toBe(1);
    expect(seqs('c1')).toEqual([1, 2]);
    // the same client_id went out on both connections
    const sent = server.history.flatMap((c) => c.received.filter((f) => f.type === 'send'));
    expect(sent.length).toBeGreaterThanOrEqual(1);
    for (const f of sent) expect(f.client_id).toBe(id);
  });

  it('re-sends a send lost with the connection and it arrives once', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    server.options.sendMode = 'drop';
    const id = s.send('c1', 'lost');
    await until(() => !online(), 2000);
    server.options.sendMode = 'normal';
    await until(() => useChat.getState().pending.length === 0, 3000, 'delivered');
    expect(server.messages('c1').map((m) => [m.text, m.client_id])).toEqual([['lost', id]]);
    expect(inTimeline('c1', 'lost')).toBe(1);
  });

  it('marks a send failed without an ack, and retry keeps the client_id', async () => {
    const s = session({ ackTimeoutMs: 150 });
    s.start();
    await until(online, 2000);
    server.options.sendMode = 'silent';
    const id = s.send('c1', 'slow');
    await until(() => useChat.getState().pending[0]?.state === 'failed', 2000, 'failed');
    expect(useChat.getState().pending[0]).toMatchObject({ clientId: id, code: 'timeout' });
    expect(JSON.parse(storage.getItem('foko.outbox')!)[0]).toMatchObject({
      clientId: id,
      state: 'failed',
    });
    server.options.sendMode = 'normal';
    s.retry(id);
    expect(useChat.getState().pending[0]!.state).toBe('sending');
    await until(() => useChat.getState().pending.length === 0, 2000, 'acked');
    expect(server.messages('c1').map((m) => [m.text, m.client_id])).toEqual([['slow', id]]);
    expect(inTimeline('c1', 'slow')).toBe(1);
  });

  it('marks a refused send failed with the server\'s message', async () => {
    const s = session();
    s.start();
    await until(online, 2000);
    s.send('nope', 'to nowhere');
    await until(() => useChat.getState().pending[0]?.state === 'failed', 2000);
    expect(useChat.getState().pending[0]).toMatchObject({
      code: 'not_found',
      error: 'no such channel',
    });
  });

  it('survives into a new session object (a reload) and is sent once with its client_id', async () => {
    server.refusing = true;
    const s1 = session();
    s1.start();
    const id = s1.send('c1', 'from the last page');
    const saved = JSON.parse(storage.getItem('foko.outbox')!) as { clientId: string }[];
    expect(saved.map((p) => p.clientId)).toEqual([id]);
    s1.stop();
    useChat.getState().reset(); // the page is gone

    server.refusing = false;
    const s2 = session();
    expect(useChat.getState().pending.map((p) => p.clientId)).toEqual([id]);
    s2.start();
    await until(() => useChat.getState().pending.length === 0, 3000, 'delivered');
    expect(server.messages('c1').map((m) => [m.text, m.client_id])).toEqual([
      ['from the last page', id],
    ]);
    expect(storage.getItem('foko.outbox')).toBeNull();
  });

  it('does not send another user\'s saved outbox', async () => {
    storage.setItem(
      'foko.outbox',
      JSON.stringify([
        { clientId: 'x1', channelId: 'c1', text: 'bob wrote this', state: 'queued', createdAt: 1, userId: bob.id },
      ]),
    );
    const s = session();
    s.start();
    await until(online, 2000);
    await new Promise((r) => setTimeout(r, 50));
    expect(server.messages('c1')).toEqual([]);
    expect(useChat.getState().pending).toEqual([]);
  });
});

describe('typing and read marks', () => {
  it('sends at most one typing per channel per interval', async () => {
    const s = session({ typingIntervalMs: 150 });
    s.start();
    await until(online, 2000);
    s.typing('c1');
    s.typing('c1');
    s.typing('c2');
    s.typing('c1');
    await new Promise((r) => setTimeout(r, 170));
    s.typing('c1');
    await new Promise((r) => setTimeout(r, 30));
    const typing = server.history[0]!.received.filter((f) => f.type === 'typing');
    expect(typing.map((f) => f.channel_id)).toEqual(['c1', 'c2', 'c1']);
  });

  it('announces typing inside the interval once, at its end', async () => {
    const s = session({ typingIntervalMs: 150 });
    s.start();
    await until(online, 2000);
    const sent = () =>
      server.history[0]!.received.filter((f) => f.type === 'typing').length;
    s.typing('c1');
    await new Promise((r) => setTimeout(r, 40));
    s.typing('c1');
    s.typing('c1');
    await new Promise((r) => setTimeout(r, 40));
    expect(sent()).toBe(1);
    await until(() => sent() === 2, 2000);
    await new Promise((r) => setTimeout(r, 200));
    expect(sent()).toBe(2);
  });

  it('sends read over the socket when online and says so', async () => {
    const s = session();
    expect(s.read('c1', 1)).toBe(false);
    s.start();
    await until(online, 2000);
    expect(s.read('c1', 1)).toBe(true);
    await until(() => server.reads.length === 1, 2000);
    expect(server.reads[0]).toMatchObject({ channel_id: 'c1', user_id: ada.id, seq: 1, via: 'ws' });
  });
});

describe('a refused token (4001)', () => {
  beforeEach(() => {
    setApiBase(server.origin);
  });
  afterEach(() => {
    setApiBase('');
    useAuth.getState().signOut();
  });

  const refreshOnce = async () => {
    try {
      useAuth.getState().setSession(await api.refresh());
      return true;
    } catch {
      return false;
    }
  };

  it('refreshes once and reconnects with the new token', async () => {
    server.addUser(ada.id, 'ada', 'tok-new');
    server.tokens.delete('tok-ada'); // expired for the socket
    server.refreshable.set('tok-ada', 'tok-new');
    useAuth.setState({ token: 'tok-ada', user: ada });
    let failed = 0;
    const s = session({
      getToken: () => useAuth.getState().token,
      onAuthRejected: refreshOnce,
      onAuthFailed: () => failed++,
    });
    s.start();
    await until(online, 3000, 'online with the new token');
    expect(useAuth.getState().token).toBe('tok-new');
    expect(server.history.map((c) => c.received[0])).toEqual([
      { type: 'auth', token: 'tok-ada' },
      { type: 'auth', token: 'tok-new' },
    ]);
    expect(failed).toBe(0);
  });

  it('signs out when the refresh is refused too', async () => {
    server.tokens.delete('tok-ada');
    useAuth.setState({ token: 'tok-ada', user: ada });
    const s = session({
      getToken: () => useAuth.getState().token,
      onAuthRejected: refreshOnce,
      onAuthFailed: () => useAuth.getState().signOut(),
    });
    s.start();
    await until(() => useAuth.getState().token === null, 3000, 'signed out');
    await new Promise((r) => setTimeout(r, 100));
    expect(server.history.length).toBe(1); // no more attempts
    expect(s.online).toBe(false);
  });

  it('signs out after a second 4001 in a row', async () => {
    server.tokens.delete('tok-ada');
    let asked = 0;
    let failed = 0;
    const s = session({
      onAuthRejected: async () => {
        asked++;
        return true; // claims a new token, which the server refuses again
      },
      onAuthFailed: () => failed++,
    });
    s.start();
    await until(() => failed === 1, 3000);
    expect(asked).toBe(1);
    expect(server.history.length).toBe(2);
  });
});
