// The glue between the WebSocket session and the rest of the app: it
// connects on sign-in, keeps the ['channels'] list of TanStack Query
// current from events, writes typing and presence to the chat store, puts
// the unread count in the tab title and shows desktop notifications when
// the user asked for them.

import type { QueryClient } from '@tanstack/react-query';
import { create } from 'zustand';
import type { Channel, Message, ServerFrame } from './types';
import { api, ApiError } from './api';
import { startTokenRefresh, useAuth } from './auth';
import { useChat } from './chat-store';
import { ChatSession } from './session';

export const TYPING_SHOWN_MS = 3500;
export const SEEN_DEBOUNCE_MS = 500;
const TITLE = 'Foko chat';
const NOTIFY_KEY = 'foko.notify';

// --- the session ------------------------------------------------------------

let session: ChatSession | null = null;

function wsUrl(): string {
  const l = globalThis.location;
  if (!l) return 'ws://127.0.0.1/ws';
  return `${l.protocol === 'https:' ? 'wss:' : 'ws:'}//${l.host}/ws`;
}

// A 4001 close: the token may just have expired; one refresh, else out.
async function refreshAfterReject(): Promise<boolean> {
  try {
    const r = await api.refresh();
    useAuth.getState().setSession(r);
    return true;
  } catch (e) {
    // unreachable or overloaded: try the socket again, a second 4001 ends it
    return e instanceof ApiError && (e.status === 0 || e.status >= 500);
  }
}

export function getSession(): ChatSession {
  if (!session) {
    session = new ChatSession({
      url: wsUrl(),
      getToken: () => useAuth.getState().token,
      onAuthRejected: refreshAfterReject,
      onAuthFailed: () => useAuth.getState().signOut(),
    });
  }
  return session;
}

// Replaces the app's session (tests).
export function setSession(s: ChatSession | null): void {
  session = s;
}

export function sendMessage(channelId: string, text: string): void {
  if (text.trim() === '') return;
  getSession().send(channelId, text);
}

export function retryMessage(clientId: string): void {
  getSession().retry(clientId);
}

export function discardMessage(clientId: string): void {
  getSession().discard(clientId);
}

export function notifyTyping(channelId: string): void {
  getSession().typing(channelId);
}

// --- read marks ---------------------------------------------------------------

const seenSent = new Map<string, number>(); // highest seq sent per channel
const seenWanted = new Map<string, number>();
const seenTimers = new Map<string, ReturnType<typeof setTimeout>>();
let liveClient: QueryClient | null = null;

// The user has seen a channel up to seq: the unread count drops at once,
// the mark goes to the server after 500 ms of quiet (WebSocket when
// online, else REST). Marks only rise.
export function markSeen(channelId: string, seq: number): void {
  if (!(seq > 0)) return;
  const top = Math.max(seenSent.get(channelId) ?? 0, seenWanted.get(channelId) ?? 0);
  if (seq <= top) return;
  seenWanted.set(channelId, seq);
  if (liveClient) applyRead(liveClient, channelId, seq);
  clearTimeout(seenTimers.get(channelId));
  seenTimers.set(
    channelId,
    setTimeout(() => flushSeen(channelId), SEEN_DEBOUNCE_MS),
  );
}

function flushSeen(channelId: string): void {
  seenTimers.delete(channelId);
  const seq = seenWanted.get(channelId);
  if (seq === undefined) return;
  seenWanted.delete(channelId);
  if ((seenSent.get(channelId) ?? 0) >= seq) return;
  seenSent.set(channelId, seq);
  if (getSession().read(channelId, seq)) return;
  api.markRead(channelId, seq).catch(() => {
    // not stored: let a later mark try again
    if (seenSent.get(channelId) === seq) seenSent.delete(channelId);
  });
}

// --- the ['channels'] cache ---------------------------------------------------

function myId(): string | undefined {
  return useAuth.getState().user?.id ?? getSession().user?.id;
}

function updateChannels(qc: QueryClient, fn: (list: Channel[]) => Channel[]): void {
  qc.setQueryData<Channel[]>(['channels'], (list) => (list ? fn(list) : list));
}

function updateChannel(qc: QueryClient, id: string, fn: (c: Channel) => Channel): void {
  updateChannels(qc, (list) => {
    const i = list.findIndex((c) => c.id === id);
    if (i < 0) return list;
    const next = list.slice();
    next[i] = fn(list[i]!);
    return next;
  });
  qc.setQueryData<Channel>(['channel', id], (c) => (c ? fn(c) : c));
}

function applyRead(qc: QueryClient, channelId: string, seq: number): void {
  updateChannel(qc, channelId, (c) => {
    const unread = seq >= c.last_seq ? 0 : Math.min(c.unread, c.last_seq - seq);
    return unread === c.unread ? c : { ...c, unread };
  });
}

function applyMessage(qc: QueryClient, m: Message): boolean {
  const list = qc.getQueryData<Channel[]>(['channels']);
  const known = list?.find((c) => c.id === m.channel_id);
  if (list && !known) {
    void qc.invalidateQueries({ queryKey: ['channels'] });
    return false;
  }
  const fresh = !known || m.seq > known.last_seq;
  const mine = m.author.id === myId();
  const open = useChat.getState().openChannelId === m.channel_id;
  const fn = (c: Channel): Channel => {
    if (m.seq <= c.last_seq && c.last_message && c.last_message.seq >= m.seq) return c;
    return {
      ...c,
      last_message: m,
      last_seq: Math.max(c.last_seq, m.seq),
      unread: m.seq > c.last_seq && !mine && !open ? c.unread + 1 : c.unread,
    };
  };
  updateChannels(qc, (l) => {
    const i = l.findIndex((c) => c.id === m.channel_id);
    if (i < 0) return l;
    const c = fn(l[i]!);
    if (c === l[i]) return l;
    // latest activity first
    return [c, ...l.slice(0, i), ...l.slice(i + 1)];
  });
  qc.setQueryData<Channel>(['channel', m.channel_id], (c) => (c ? fn(c) : c));
  return fresh;
}

function applyEdit(qc: QueryClient, m: Message): void {
  updateChannel(qc, m.channel_id, (c) =>
    c.last_message?.id === m.id ? { ...c, last_message: m } : c,
  );
}

function applyChannelEvent(
  qc: QueryClient,
  f: Extract<ServerFrame, { type: 'channel' }>,
): void {
  const ch = f.channel;
  const me = myId();
  if (f.event === 'left' && f.user.id === me) {
    updateChannels(qc, (l) => l.filter((c) => c.id !== ch.id));
    qc.removeQueries({ queryKey: ['channel', ch.id] });
    return;
  }
  const list = qc.getQueryData<Channel[]>(['channels']);
  const known = list?.some((c) => c.id === ch.id);
  if (!known) {
    if (list) qc.setQueryData<Channel[]>(['channels'], [ch, ...list]);
    // the list as the server counts it (unread is the caller's)
    void qc.invalidateQueries({ queryKey: ['channels'] });
    return;
  }
  // name and members from the event; last message and unread are ours
  updateChannel(qc, ch.id, (c) => ({ ...c, name: ch.name, members: ch.members }));
}

function applyPresence(qc: QueryClient, userId: string, online: boolean): void {
  const fix = (c: Channel): Channel =>
    c.members.some((m) => m.id === userId && m.online !== online)
      ? { ...c, members: c.members.map((m) => (m.id === userId ? { ...m, online } : m)) }
      : c;
  updateChannels(qc, (l) => {
    const next = l.map(fix);
    return next.some((c, i) => c !== l[i]) ? next : l;
  });
  for (const q of qc.getQueryCache().findAll({ queryKey: ['channel'] })) {
    qc.setQueryData<Channel>(q.queryKey, (c) => (c && c.members ? fix(c) : c));
  }
}

// The name of a channel as the UI shows it: a direct one is the other
// person's username.
export function channelName(c: Channel, meId?: string): string {
  if (c.name) return c.name;
  const others = c.members.filter((m) => m.id !== meId);
  return others.map((m) => m.username).join(', ') || 'Direct message';
}

// --- the tab title ------------------------------------------------------------

export function totalUnread(list: Channel[] | undefined): number {
  return (list ?? []).reduce((n, c) => n + (c.unread > 0 ? c.unread : 0), 0);
}

export function titleFor(unread: number): string {
  return unread > 0 ? `(${unread}) ${TITLE}` : TITLE;
}

// --- desktop notifications ----------------------------------------------------

function notifySupported(): boolean {
  return typeof Notification !== 'undefined';
}

function storedNotify(): boolean {
  try {
    return typeof localStorage !== 'undefined' && localStorage.getItem(NOTIFY_KEY) === 'on';
  } catch {
    return false;
  }
}

interface NotifyState {
  supported: boolean;
  // the user turned them on and the browser allows them
  enabled: boolean;
  // the browser refuses (the user said no once); the button can say so
  denied: boolean;
  setEnabled(on: boolean): Promise<boolean>;
}

export const useNotify = create<NotifyState>()((set) => ({
  supported: notifySupported(),
  enabled: notifySupported() && storedNotify() && Notification.permission === 'granted',
  denied: notifySupported() && Notification.permission === 'denied',
  // Turning them on asks the browser's permission, only then and only
  // while it has not been answered.
  async setEnabled(on) {
    const save = (v: boolean) => {
      try {
        localStorage.setItem(NOTIFY_KEY, v ? 'on' : 'off');
      } catch {
        // private mode: the setting lasts as long as the page
      }
    };
    if (!on || !notifySupported()) {
      save(false);
      set({ enabled: false });
      return false;
    }
    let perm = Notification.permission;
    if (perm === 'default') {
      try {
        perm = await Notification.requestPermission();
      } catch {
        perm = 'denied';
      }
    }
    const ok = perm === 'granted';
    save(ok);
    set({ enabled: ok, denied: perm === 'denied' });
    return ok;
  },
}));

let notificationClick: ((channelId: string) => void) | null = null;

// What a click on a notification does (the UI navigates to the channel).
export function onNotificationClick(fn: ((channelId: string) => void) | null): void {
  notificationClick = fn;
}

function maybeNotify(qc: QueryClient, m: Message): void {
  if (!useNotify.getState().enabled || !notifySupported()) return;
  if (Notification.permission !== 'granted') return;
  if (typeof document === 'undefined' || !document.hidden) return;
  if (m.author.id === myId()) return;
  if (useChat.getState().openChannelId === m.channel_id) return;
  if (m.deleted) return;
  const c = qc.getQueryData<Channel[]>(['channels'])?.find((x) => x.id === m.channel_id);
  const title = c && !c.direct ? `${m.author.username} in ${channelName(c, myId())}` : m.author.username;
  const body = m.text.length > 200 ? `${m.text.slice(0, 199)}…` : m.text;
  try {
    const n = new Notification(title, { body, tag: m.channel_id });
    n.onclick = () => {
      window.focus();
      notificationClick?.(m.channel_id);
      n.close();
    };
  } catch {
    // some browsers only allow notifications from a service worker
  }
}

// --- wiring -------------------------------------------------------------------

let typingTimer: ReturnType<typeof setTimeout> | undefined;

function scheduleTypingPrune(): void {
  if (typingTimer !== undefined) return;
  typingTimer = setTimeout(function prune() {
    typingTimer = undefined;
    const chat = useChat.getState();
    chat.pruneTyping(Date.now());
    const left = Object.values(useChat.getState().typing).some((u) => Object.keys(u).length);
    if (left) typingTimer = setTimeout(prune, 500);
  }, 500);
}

export function handleFrame(qc: QueryClient, f: ServerFrame, s: ChatSession): void {
  switch (f.type) {
    case 'ready': {
      useChat.setState({ presence: {} });
      const st = qc.getQueryState(['channels']);
      // a reconnect, or a list older than the connection: catch up
      if (s.readies > 1 || !st || Date.now() - st.dataUpdatedAt > 5000) {
        void qc.invalidateQueries({ queryKey: ['channels'] });
      }
      break;
    }
    case 'message':
      if (applyMessage(qc, f.message)) maybeNotify(qc, f.message);
      break;
    case 'ack':
      applyMessage(qc, f.message);
      break;
    case 'message_updated':
      applyEdit(qc, f.message);
      break;
    case 'message_deleted': {
      const list = qc.getQueryData<Channel[]>(['channels']);
      const c = list?.find((x) => x.id === f.channel_id);
      if (c?.last_message?.id === f.id) {
        applyEdit(qc, { ...c.last_message, text: '', deleted: true });
      }
      break;
    }
    case 'read':
      if (f.user_id === myId()) {
        seenSent.set(f.channel_id, Math.max(seenSent.get(f.channel_id) ?? 0, f.seq));
        applyRead(qc, f.channel_id, f.seq);
      }
      break;
    case 'channel':
      applyChannelEvent(qc, f);
      break;
    case 'presence':
      useChat.getState().setPresence(f.user_id, f.online);
      applyPresence(qc, f.user_id, f.online);
      break;
    case 'typing':
      if (f.user.id !== myId()) {
        useChat.getState().setTyping(f.channel_id, f.user, Date.now() + TYPING_SHOWN_MS);
        scheduleTypingPrune();
      }
      break;
    default:
      break;
  }
}

// Connects while someone is signed in and keeps the caches current; on
// sign-out stops the session, forgets the outbox, the live state and the
// query cache. Returns stop.
export function startLive(queryClient: QueryClient): () => void {
  const s = getSession();
  liveClient = queryClient;
  const offFrames = s.on((f) => handleFrame(queryClient, f, s));
  const stopRefresh = startTokenRefresh();

  const sync = (token: string | null, prev: string | null) => {
    if (token) {
      s.start();
    } else if (prev) {
      s.stop();
      s.clearOutbox();
      useChat.getState().reset();
      queryClient.clear();
      seenSent.clear();
      seenWanted.clear();
      for (const t of seenTimers.values()) clearTimeout(t);
      seenTimers.clear();
    }
  };
  sync(useAuth.getState().token, null);
  const offAuth = useAuth.subscribe((st, prev) => {
    if (st.token !== prev.token) sync(st.token, prev.token);
  });

  const setTitle = () => {
    if (typeof document === 'undefined') return;
    document.title = titleFor(totalUnread(queryClient.getQueryData<Channel[]>(['channels'])));
  };
  setTitle();
  const offCache = queryClient.getQueryCache().subscribe((ev) => {
    if (ev.query.queryKey[0] === 'channels') setTitle();
  });

  return () => {
    offFrames();
    offAuth();
    offCache();
    stopRefresh();
    s.stop();
    if (liveClient === queryClient) liveClient = null;
    clearTimeout(typingTimer);
    typingTimer = undefined;
  };
}
