// @vitest-environment node
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { QueryClient, QueryObserver } from '@tanstack/react-query';
import { WebSocket as WsWebSocket } from 'ws';
import {
  handleFrame,
  markSeen,
  setSession,
  startLive,
  titleFor,
  totalUnread,
} from './live';
import { ChatSession } from './session';
import { useChat } from './chat-store';
import { useAuth } from './auth';
import { setApiBase } from './api';
import { ChatServer, MemoryStorage, until } from './testing/chat-server';
import type { Channel, Message, User } from './types';

const ada: User = { id: 'a'.repeat(24), username: 'ada' };
const bob: User = { id: 'b'.repeat(24), username: 'bob' };

function channel(id: string, extra: Partial<Channel> = {}): Channel {
  return {
    id,
    name: id,
    direct: false,
    members: [
      { ...ada, online: true },
      { ...bob, online: false },
    ],
    last_message: null,
    last_seq: 0,
    unread: 0,
    ...extra,
  };
}

function message(ch: string, seq: number, author: User = bob): Message {
  return {
    id: `${ch}-${seq}`,
    channel_id: ch,
    seq,
    author,
    text: `m${seq}`,
    created_at: new Date().toISOString(),
  };
}

let qc: QueryClient;
let s: ChatSession;
const list = () => qc.getQueryData<Channel[]>(['channels'])!;
const byId = (id: string) => list().find((c) => c.id === id)!;

beforeEach(() => {
  useChat.getState().reset();
  useAuth.setState({ token: null, user: ada });
  qc = new QueryClient();
  qc.setQueryData(['channels'], [channel('c1'), channel('c2'), channel('c3')]);
  s = new ChatSession({
    url: 'ws://127.0.0.1:9/ws',
    getToken: () => null,
    storage: null,
    events: null,
  });
});

describe('the channel list follows events', () => {
  it('a message: last message, unread +1, first in the list', () => {
    handleFrame(qc, { type: 'message', message: message('c3', 1) }, s);
    expect(list().map((c) => c.id)).toEqual(['c3', 'c1', 'c2']);
    expect(byId('c3')).toMatchObject({ last_seq: 1, unread: 1, last_message: { id: 'c3-1' } });
    // the same message again (a replay) counts once
    handleFrame(qc, { type: 'message', message: message('c3', 1) }, s);
    expect(byId('c3').unread).toBe(1);
    handleFrame(qc, { type: 'message', message: message('c2', 1) }, s);
    expect(list().map((c) => c.id)).toEqual(['c2', 'c3', 'c1']);
    expect(totalUnread(list())).toBe(2);
    expect(titleFor(totalUnread(list()))).toBe('(2) Foko chat');
    expect(titleFor(0)).toBe('Foko chat');
  });

  it('my own messages and the open channel do not count as unread', () => {
    handleFrame(qc, { type: 'message', message: message('c1', 1, ada) }, s);
    useChat.getState().setOpenChannel('c2');
    handleFrame(qc, { type: 'message', message: message('c2', 1) }, s);
    expect(byId('c1')).toMatchObject({ unread: 0, last_seq: 1 });
    expect(byId('c2')).toMatchObject({ unread: 0, last_seq: 1 });
  });

  it('a read mark of mine clears unread up to its seq', () => {
    for (let i = 1; i <= 4; i++) handleFrame(qc, { type: 'message', message: message('c1', i) }, s);
    expect(byId('c1').unread).toBe(4);
    handleFrame(qc, { type: 'read', channel_id: 'c1', user_id: ada.id, seq: 2 }, s);
    expect(byId('c1').unread).toBe(2);
    handleFrame(qc, { type: 'read', channel_id: 'c1', user_id: bob.id, seq: 4 }, s);
    expect(byId('c1').unread).toBe(2);
    handleFrame(qc, { type: 'read', channel_id: 'c1', user_id: ada.id, seq: 4 }, s);
    expect(byId('c1').unread).toBe(0);
  });

  it('channel events: created adds, renamed renames, left by me removes', () => {
    handleFrame(qc, { type: 'channel', event: 'created', channel: channel('c4'), user: bob }, s);
    expect(list()[0]!.id).toBe('c4');
    handleFrame(
      qc,
      {
        type: 'channel',
        event: 'renamed',
        channel: channel('c2', { name: 'Lunch', unread: 9 }),
        user: bob,
      },
      s,
    );
    expect(byId('c2')).toMatchObject({ name: 'Lunch', unread: 0 });
    handleFrame(qc, { type: 'channel', event: 'left', channel: channel('c1'), user: ada }, s);
    expect(list().map((c) => c.id)).not.toContain('c1');
    const members = [{ ...ada, online: true }];
    handleFrame(
      qc,
      { type: 'channel', event: 'left', channel: channel('c3', { members }), user: bob },
      s,
    );
    expect(byId('c3').members).toEqual(members);
  });

  it('presence updates members everywhere and the live overrides', () => {
    qc.setQueryData(['channel', 'c1'], channel('c1'));
    handleFrame(qc, { type: 'presence', user_id: bob.id, online: true }, s);
    for (const c of list()) expect(c.members.find((m) => m.id === bob.id)!.online).toBe(true);
    expect(qc.getQueryData<Channel>(['channel', 'c1'])!.members[1]!.online).toBe(true);
    expect(useChat.getState().presence[bob.id]).toBe(true);
  });

  it('typing of others shows for a while, mine never', () => {
    handleFrame(qc, { type: 'typing', channel_id: 'c1', user: bob }, s);
    handleFrame(qc, { type: 'typing', channel_id: 'c1', user: ada }, s);
    expect(Object.values(useChat.getState().typing.c1!).map((t) => t.username)).toEqual(['bob']);
  });
});

describe('markSeen and startLive against a server', () => {
  let server: ChatServer;
  let stop: (() => void) | undefined;
  beforeAll(async () => {
    server = await new ChatServer().listen();
    server.addUser(ada.id, 'ada', 'tok-ada');
    server.addUser(bob.id, 'bob', 'tok-bob');
    server.addChannel('c1', [ada.id, bob.id]);
    setApiBase(server.origin);
  });
  afterAll(async () => {
    setApiBase('');
    await server.close();
  });
  afterEach(() => {
    useAuth.getState().signOut();
    stop?.();
    stop = undefined;
    server.reads.length = 0;
    server.refusing = false;
  });

  const live = () => {
    s = new ChatSession({
      url: server.url,
      getToken: () => useAuth.getState().token,
      WebSocketImpl: WsWebSocket as unknown as typeof WebSocket,
      storage: new MemoryStorage(),
      events: null,
      baseDelayMs: 20,
    });
    setSession(s);
    stop = startLive(qc);
  };

  it('debounces, only rises, and uses REST while offline', async () => {
    useAuth.setState({ token: 'tok-ada', user: ada });
    server.refusing = true;
    live();
    markSeen('c1', 3);
    markSeen('c1', 5);
    markSeen('c1', 4);
    await new Promise((r) => setTimeout(r, 300));
    expect(server.reads).toEqual([]);
    await until(() => server.reads.length === 1, 2000);
    expect(server.reads).toEqual([{ channel_id: 'c1', user_id: ada.id, seq: 5, via: 'rest' }]);
    markSeen('c1', 5);
    await new Promise((r) => setTimeout(r, 700));
    expect(server.reads.length).toBe(1);
  });

  it('connects on sign-in, sends marks over the socket, clears everything on sign-out', async () => {
    useAuth.setState({ token: 'tok-ada', user: ada });
    live();
    await until(() => s.online, 2000, 'online');
    server.post('c1', bob, 'hi');
    await until(() => byId('c1').unread === 1, 2000, 'unread from the socket');
    markSeen('c1', 1);
    expect(byId('c1').unread).toBe(0); // at once
    await until(() => server.reads.length === 1, 2000);
    expect(server.reads[0]).toMatchObject({ seq: 1, via: 'ws' });
    s.send('c1', 'unsent?');
    useAuth.getState().signOut();
    expect(s.online).toBe(false);
    expect(useChat.getState().pending).toEqual([]);
    expect(useChat.getState().timelines).toEqual({});
    expect(qc.getQueryData(['channels'])).toBeUndefined();
  });

  it('refetches the channel list after a reconnect', async () => {
    useAuth.setState({ token: 'tok-ada', user: ada });
    live();
    await until(() => s.online, 2000, 'online');
    let fetched = 0;
    const observer = new QueryObserver(qc, {
      queryKey: ['channels'],
      queryFn: async () => {
        fetched++;
        return [channel('c1')];
      },
      staleTime: Infinity,
    });
    const unsubscribe = observer.subscribe(() => {});
    await new Promise((r) => setTimeout(r, 100));
    const before = fetched;
    server.dropAll();
    await until(() => !s.online, 2000);
    await until(() => s.online, 2000, 'back');
    await until(() => fetched === before + 1, 2000, 'refetched after the reconnect');
    unsubscribe();
  });
});
