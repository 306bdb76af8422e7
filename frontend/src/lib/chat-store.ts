// Live state of the chat (zustand): the connection, the loaded timelines,
// the outbox as the UI sees it, who is typing, presence overrides. The
// REST lists (channels, users) live in TanStack Query instead.

import { create } from 'zustand';
import { useShallow } from 'zustand/react/shallow';
import type { Message, UserRef } from './types';
import { api, ApiError } from './api';

export type ConnStatus = 'connecting' | 'online' | 'offline' | 'reconnecting';

export interface Connection {
  status: ConnStatus;
  retryAt: number | null; // when the next attempt starts (ms since epoch)
  attempt: number; // failed attempts since the last ready
}

export interface Pending {
  clientId: string;
  channelId: string;
  text: string;
  state: 'queued' | 'sending' | 'failed';
  error?: string; // the server's message, or why it was not sent
  code?: string; // the server's error code, 'timeout' without an answer
  userId?: string; // the author it was written as
  createdAt: number;
}

export interface ChannelTimeline {
  messages: Message[]; // sorted by seq, unique by id and by seq
  oldestSeq: number | null; // lowest seq loaded
  hasOlder: boolean; // more history before oldestSeq
  loaded: boolean; // the newest page was fetched
  // Every message up to this seq has reached us (newest page, then the
  // live stream); a reconnect resumes from here. null: nothing yet.
  syncedSeq: number | null;
  loadingOlder: boolean;
  error: string | null; // the last failed load, as the API words it
}

export interface TypingEntry {
  username: string;
  until: number;
}

export interface AddOptions {
  older?: boolean; // a page before oldestSeq (loadOlder)
  newest?: boolean; // the newest page (loadNewest): marks loaded
  hasOlder?: boolean; // from the page's has_more
  synced?: boolean; // from the stream or a newest page: raises syncedSeq
}

export interface ChatState {
  connection: Connection;
  timelines: Record<string, ChannelTimeline>;
  pending: Pending[]; // in send order
  typing: Record<string, Record<string, TypingEntry>>; // channel -> user id ->
  presence: Record<string, boolean>; // user id -> online
  openChannelId: string | null; // the conversation on screen

  addMessages(channelId: string, msgs: Message[], opts?: AddOptions): void;
  updateMessage(msg: Message): void; // an edit or a tombstone, if loaded
  markDeleted(channelId: string, id: string, seq: number): void;
  resetTimeline(channelId: string): void; // forget it; loaded again on demand
  dropTimeline(channelId: string): void;
  setLoadState(channelId: string, s: { loadingOlder?: boolean; error?: string | null }): void;
  setConnection(c: Partial<Connection>): void;
  setPending(p: Pending[]): void;
  settle(clientId: string, msg: Message): void; // acknowledged: pending -> timeline
  setTyping(channelId: string, user: UserRef, until: number): void;
  clearTyping(channelId: string, userId: string): void;
  pruneTyping(now: number): void;
  setPresence(userId: string, online: boolean): void;
  setOpenChannel(channelId: string | null): void;
  reset(): void; // sign-out: everything back to empty
}

function emptyTimeline(): ChannelTimeline {
  return {
    messages: [],
    oldestSeq: null,
    hasOlder: false,
    loaded: false,
    syncedSeq: null,
    loadingOlder: false,
    error: null,
  };
}

const EMPTY_TIMELINE: ChannelTimeline = Object.freeze(emptyTimeline()) as ChannelTimeline;

// Merges msgs into a sorted, unique list. A known id takes the incoming
// version (edits, tombstones); a seq already held by another id keeps the
// one held.
export function mergeMessages(current: Message[], msgs: Message[]): Message[] {
  if (msgs.length === 0) return current;
  const last = current[current.length - 1];
  // the common case: one new message after the newest
  if (msgs.length === 1 && (!last || msgs[0]!.seq > last.seq)) {
    const m = msgs[0]!;
    if (!current.some((c) => c.id === m.id)) return [...current, m];
  }
  const byId = new Map<string, Message>();
  const seqs = new Map<number, string>();
  for (const m of current) {
    byId.set(m.id, m);
    seqs.set(m.seq, m.id);
  }
  let changed = false;
  for (const m of msgs) {
    const had = byId.get(m.id);
    if (had) {
      if (had !== m && (had.seq === m.seq || !seqs.has(m.seq))) {
        if (had.seq !== m.seq) seqs.delete(had.seq);
        byId.set(m.id, m);
        seqs.set(m.seq, m.id);
        changed = true;
      }
      continue;
    }
    if (seqs.has(m.seq)) continue;
    byId.set(m.id, m);
    seqs.set(m.seq, m.id);
    changed = true;
  }
  if (!changed) return current;
  return [...byId.values()].sort((a, b) => a.seq - b.seq);
}

const initial = () => ({
  connection: { status: 'connecting' as ConnStatus, retryAt: null, attempt: 0 },
  timelines: {} as Record<string, ChannelTimeline>,
  pending: [] as Pending[],
  typing: {} as Record<string, Record<string, TypingEntry>>,
  presence: {} as Record<string, boolean>,
  openChannelId: null as string | null,
});

export const useChat = create<ChatState>()((set, get) => ({
  ...initial(),

  addMessages(channelId, msgs, opts = {}) {
    set((s) => {
      const tl = s.timelines[channelId] ?? emptyTimeline();
      const messages = mergeMessages(tl.messages, msgs);
      const next: ChannelTimeline = { ...tl, messages };
      next.oldestSeq = messages.length ? messages[0]!.seq : null;
      if (opts.older) {
        next.hasOlder = opts.hasOlder ?? msgs.length > 0;
      } else if (opts.newest) {
        next.hasOlder = opts.hasOlder ?? false;
        next.loaded = true;
      } else if (!s.timelines[channelId]) {
        next.hasOlder = next.oldestSeq !== null && next.oldestSeq > 1;
      }
      if (opts.synced && msgs.length) {
        const top = Math.max(...msgs.map((m) => m.seq));
        next.syncedSeq = Math.max(tl.syncedSeq ?? 0, top);
      } else if (opts.newest && next.syncedSeq === null) {
        next.syncedSeq = 0; // an empty channel, fully seen
      }
      if (opts.newest || opts.older) next.error = null;
      // a message ends its author's typing
      let typing = s.typing;
      const t = s.typing[channelId];
      if (t && msgs.some((m) => t[m.author.id])) {
        const rest = { ...t };
        for (const m of msgs) delete rest[m.author.id];
        typing = { ...s.typing, [channelId]: rest };
      }
      return { timelines: { ...s.timelines, [channelId]: next }, typing };
    });
  },

  updateMessage(msg) {
    const tl = get().timelines[msg.channel_id];
    if (!tl || !tl.messages.some((m) => m.id === msg.id)) return;
    get().addMessages(msg.channel_id, [msg]);
  },

  markDeleted(channelId, id, seq) {
    const tl = get().timelines[channelId];
    const m = tl?.messages.find((x) => x.id === id && x.seq === seq);
    if (!m) return;
    get().addMessages(channelId, [{ ...m, text: '', deleted: true }]);
  },

  resetTimeline(channelId) {
    set((s) => {
      if (!s.timelines[channelId]) return s;
      return { timelines: { ...s.timelines, [channelId]: emptyTimeline() } };
    });
    if (get().openChannelId === channelId) void loadNewest(channelId);
  },

  dropTimeline(channelId) {
    set((s) => {
      if (!s.timelines[channelId]) return s;
      const timelines = { ...s.timelines };
      delete timelines[channelId];
      return { timelines };
    });
  },

  setLoadState(channelId, st) {
    set((s) => {
      const tl = s.timelines[channelId] ?? emptyTimeline();
      return { timelines: { ...s.timelines, [channelId]: { ...tl, ...st } } };
    });
  },

  setConnection(c) {
    set((s) => ({ connection: { ...s.connection, ...c } }));
  },

  setPending(pending) {
    set({ pending });
  },

  settle(clientId, msg) {
    set((s) => ({ pending: s.pending.filter((p) => p.clientId !== clientId) }));
    get().addMessages(msg.channel_id, [msg]);
  },

  setTyping(channelId, user, until) {
    set((s) => ({
      typing: {
        ...s.typing,
        [channelId]: { ...s.typing[channelId], [user.id]: { username: user.username, until } },
      },
    }));
  },

  clearTyping(channelId, userId) {
    set((s) => {
      const t = s.typing[channelId];
      if (!t || !t[userId]) return s;
      const rest = { ...t };
      delete rest[userId];
      return { typing: { ...s.typing, [channelId]: rest } };
    });
  },

  pruneTyping(now) {
    set((s) => {
      let changed = false;
      const typing: ChatState['typing'] = {};
      for (const [ch, users] of Object.entries(s.typing)) {
        const kept: Record<string, TypingEntry> = {};
        for (const [uid, e] of Object.entries(users)) {
          if (e.until > now) kept[uid] = e;
          else changed = true;
        }
        typing[ch] = kept;
      }
      return changed ? { typing } : s;
    });
  },

  setPresence(userId, online) {
    set((s) => (s.presence[userId] === online ? s : { presence: { ...s.presence, [userId]: online } }));
  },

  setOpenChannel(channelId) {
    set({ openChannelId: channelId });
  },

  reset() {
    set(initial());
  },
}));

// --- hooks and loaders for the UI -------------------------------------------

export function useTimeline(channelId: string): ChannelTimeline {
  return useChat((s) => s.timelines[channelId] ?? EMPTY_TIMELINE);
}

// The outbox entries of a channel, in send order.
export function pendingFor(channelId: string): Pending[] {
  return useChat.getState().pending.filter((p) => p.channelId === channelId);
}

export function usePending(channelId: string): Pending[] {
  return useChat(useShallow((s) => s.pending.filter((p) => p.channelId === channelId)));
}

// Usernames typing in a channel right now (live.ts prunes expired ones).
export function typingIn(channelId: string, now = Date.now()): string[] {
  const t = useChat.getState().typing[channelId];
  return t ? Object.values(t).filter((e) => e.until > now).map((e) => e.username) : [];
}

export function useTyping(channelId: string): string[] {
  return useChat(
    useShallow((s) => Object.values(s.typing[channelId] ?? {}).map((e) => e.username)),
  );
}

export function useConnection(): Connection {
  return useChat((s) => s.connection);
}

// A member's online state: the live presence if heard, else the channel's.
export function usePresence(userId: string, fallback: boolean): boolean {
  return useChat((s) => s.presence[userId] ?? fallback);
}

export const PAGE_SIZE = 50;

const inflightNewest = new Map<string, Promise<void>>();
const inflightOlder = new Map<string, Promise<void>>();

function errorText(e: unknown): string {
  return e instanceof ApiError ? e.message : 'Could not load messages.';
}

// Fetches the newest page once; a failure is kept in timeline.error.
export function loadNewest(channelId: string): Promise<void> {
  const tl = useChat.getState().timelines[channelId];
  if (tl?.loaded) return Promise.resolve();
  const running = inflightNewest.get(channelId);
  if (running) return running;
  const p = (async () => {
    try {
      const page = await api.history(channelId, { limit: PAGE_SIZE });
      useChat.getState().addMessages(channelId, page.messages, {
        newest: true,
        hasOlder: page.has_more,
        synced: true,
      });
    } catch (e) {
      useChat.getState().setLoadState(channelId, { error: errorText(e) });
    } finally {
      inflightNewest.delete(channelId);
    }
  })();
  inflightNewest.set(channelId, p);
  return p;
}

// Fetches the page before oldestSeq; nothing when there is none or one is
// on its way.
export function loadOlder(channelId: string): Promise<void> {
  const tl = useChat.getState().timelines[channelId];
  if (!tl || !tl.hasOlder || tl.oldestSeq === null) return Promise.resolve();
  const running = inflightOlder.get(channelId);
  if (running) return running;
  const before = tl.oldestSeq;
  const p = (async () => {
    useChat.getState().setLoadState(channelId, { loadingOlder: true });
    try {
      const page = await api.history(channelId, { before, limit: PAGE_SIZE });
      useChat.getState().addMessages(channelId, page.messages, {
        older: true,
        hasOlder: page.has_more,
      });
      useChat.getState().setLoadState(channelId, { loadingOlder: false });
    } catch (e) {
      useChat.getState().setLoadState(channelId, { loadingOlder: false, error: errorText(e) });
    } finally {
      inflightOlder.delete(channelId);
    }
  })();
  inflightOlder.set(channelId, p);
  return p;
}
