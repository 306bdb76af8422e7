// @vitest-environment node
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadNewest, loadOlder, mergeMessages, typingIn, useChat } from './chat-store';
import { setApiBase } from './api';
import { useAuth } from './auth';
import { ChatServer } from './testing/chat-server';
import type { Message } from './types';

function msg(seq: number, extra: Partial<Message> = {}): Message {
  return {
    id: `m${seq}`,
    channel_id: 'c1',
    seq,
    author: { id: 'u1', username: 'ada' },
    text: `text ${seq}`,
    created_at: new Date(1_700_000_000_000 + seq * 1000).toISOString(),
    ...extra,
  };
}

const tl = (ch = 'c1') => useChat.getState().timelines[ch]!;
const seqs = (ch = 'c1') => tl(ch).messages.map((m) => m.seq);

beforeEach(() => useChat.getState().reset());

describe('addMessages', () => {
  it('keeps a timeline sorted by seq and unique by id and seq', () => {
    const add = useChat.getState().addMessages;
    add('c1', [msg(5), msg(3)]);
    add('c1', [msg(4), msg(5), msg(3)]);
    add('c1', [msg(4, { id: 'other' })]);
    expect(seqs()).toEqual([3, 4, 5]);
    expect(tl().messages.map((m) => m.id)).toEqual(['m3', 'm4', 'm5']);
    expect(tl().oldestSeq).toBe(3);
  });

  it('takes an edit of a known id', () => {
    const add = useChat.getState().addMessages;
    add('c1', [msg(1), msg(2)]);
    useChat.getState().updateMessage(msg(2, { text: 'edited', edited_at: 'now' }));
    useChat.getState().updateMessage(msg(9)); // not loaded: ignored
    expect(tl().messages.map((m) => m.text)).toEqual(['text 1', 'edited']);
    useChat.getState().markDeleted('c1', 'm1', 1);
    expect(tl().messages[0]).toMatchObject({ deleted: true, text: '' });
  });

  it('prepends older pages and takes hasOlder from them', () => {
    const add = useChat.getState().addMessages;
    add('c1', [msg(51), msg(52), msg(53)], { newest: true, hasOlder: true, synced: true });
    expect(tl()).toMatchObject({ loaded: true, hasOlder: true, oldestSeq: 51, syncedSeq: 53 });
    add('c1', [msg(49), msg(50), msg(51)], { older: true, hasOlder: true });
    expect(seqs()).toEqual([49, 50, 51, 52, 53]);
    expect(tl()).toMatchObject({ hasOlder: true, oldestSeq: 49, syncedSeq: 53 });
    add('c1', [msg(48)], { older: true, hasOlder: false });
    expect(tl()).toMatchObject({ hasOlder: false, oldestSeq: 48 });
  });

  it('keeps the same list when nothing new arrives', () => {
    const add = useChat.getState().addMessages;
    add('c1', [msg(1), msg(2)]);
    const before = tl().messages;
    expect(mergeMessages(before, [before[0]!, before[1]!])).toBe(before);
  });

  it('does not raise syncedSeq for acks (not from the stream)', () => {
    const add = useChat.getState().addMessages;
    add('c1', [msg(1)], { synced: true });
    add('c1', [msg(3)]);
    expect(tl().syncedSeq).toBe(1);
  });

  it('ends a user\'s typing when their message arrives', () => {
    useChat.getState().setTyping('c1', { id: 'u1', username: 'ada' }, Date.now() + 5000);
    useChat.getState().setTyping('c1', { id: 'u2', username: 'bob' }, Date.now() + 5000);
    expect(typingIn('c1').sort()).toEqual(['ada', 'bob']);
    useChat.getState().addMessages('c1', [msg(1)]);
    expect(typingIn('c1')).toEqual(['bob']);
    useChat.getState().pruneTyping(Date.now() + 6000);
    expect(typingIn('c1')).toEqual([]);
  });
});

describe('loadNewest and loadOlder against the REST API', () => {
  let server: ChatServer;
  beforeAll(async () => {
    server = await new ChatServer().listen();
    const ada = server.addUser('a'.repeat(24), 'ada', 'tok');
    server.addChannel('c1', [ada.id]);
    server.addChannel('empty', [ada.id]);
    for (let i = 1; i <= 120; i++) server.post('c1', ada, `m${i}`);
    setApiBase(server.origin);
    useAuth.setState({ token: 'tok', user: ada });
  });
  afterAll(async () => {
    setApiBase('');
    useAuth.setState({ token: null, user: null });
    await server.close();
  });

  it('loads the newest page once, then older pages until the start', async () => {
    await Promise.all([loadNewest('c1'), loadNewest('c1')]);
    expect(seqs()).toEqual(Array.from({ length: 50 }, (_, i) => 71 + i));
    expect(tl()).toMatchObject({ loaded: true, hasOlder: true, syncedSeq: 120 });
    await loadNewest('c1'); // loaded: no-op
    await Promise.all([loadOlder('c1'), loadOlder('c1')]); // one request
    expect(seqs()[0]).toBe(21);
    expect(tl().hasOlder).toBe(true);
    await loadOlder('c1');
    expect(seqs()).toEqual(Array.from({ length: 120 }, (_, i) => 1 + i));
    expect(tl().hasOlder).toBe(false);
    expect(tl().loadingOlder).toBe(false);
    await loadOlder('c1'); // nothing older: no-op
    expect(seqs().length).toBe(120);
  });

  it('marks an empty channel loaded and fully seen', async () => {
    await loadNewest('empty');
    expect(tl('empty')).toMatchObject({ loaded: true, hasOlder: false, messages: [], syncedSeq: 0 });
  });

  it('keeps the API\'s message when a load fails', async () => {
    await loadNewest('not-mine');
    expect(tl('not-mine')).toMatchObject({ loaded: false, error: 'Not found.' });
  });
});
