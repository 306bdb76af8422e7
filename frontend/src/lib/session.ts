// The one WebSocket session of the app (README.md, "WebSocket"): signs in
// with the first frame, which also resumes every channel it has seen (so
// the server replays what was missed before any live message of it, in
// seq order), reconnects with jittered exponential backoff, and owns the
// outbox: every message is sent with a client_id that stays the same on
// every retry, so the server stores it once however often it is sent.

import type { Message, ServerFrame, User } from './types';
import { useChat, type Pending } from './chat-store';

export interface SessionOptions {
  url: string;
  getToken(): string | null;
  WebSocketImpl?: typeof WebSocket; // tests pass ws's WebSocket
  random?: () => number;
  baseDelayMs?: number; // first reconnect delay (before jitter), 1 s
  maxDelayMs?: number; // the longest delay, 30 s
  ackTimeoutMs?: number; // a send without an answer is failed, 15 s
  // one typing per channel per 2.25 s: the server drops a second one
  // within 2 s of its arrival, and arrivals jitter
  typingIntervalMs?: number;
  // Further behind than this, a timeline is dropped and loaded again over
  // REST instead of replayed.
  maxResumeGap?: number;
  storage?: Storage | null; // the persisted outbox; localStorage by default
  storageKey?: string; // 'foko.outbox'
  events?: EventTarget | null; // 'online' / 'offline'; window by default
  // After a 4001 close: get a fresh token; true reconnects with it, false
  // ends the session. Called once; a second 4001 before ready ends it.
  onAuthRejected?: () => Promise<boolean>;
  // The server refused the token for good: sign out.
  onAuthFailed?: () => void;
}

type SendFrame = {
  type: 'send';
  ref: string;
  channel_id: string;
  text: string;
  client_id: string;
};
type ClientFrame =
  | { type: 'auth'; token: string; resume?: Record<string, number> }
  | SendFrame
  | { type: 'typing'; channel_id: string }
  | { type: 'read'; channel_id: string; seq: number }
  | { type: 'resume'; channels: Record<string, number> };

// channels an auth frame may resume (the server's limit); the others get a
// resume message after ready
const AUTH_RESUME_MAX = 1000;

// errors that will not go away by sending the same message again
const PERMANENT = new Set(['too_large', 'invalid_request', 'not_found', 'direct_channel']);

const OPEN = 1;

function defaultStorage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null;
  }
}

function defaultEvents(): EventTarget | null {
  return typeof window === 'undefined' ? null : window;
}

function browserOffline(): boolean {
  return typeof navigator !== 'undefined' && navigator.onLine === false;
}

export class ChatSession {
  private readonly o: Required<
    Omit<
      SessionOptions,
      'WebSocketImpl' | 'onAuthRejected' | 'onAuthFailed' | 'storage' | 'events'
    >
  > &
    Pick<SessionOptions, 'onAuthRejected' | 'onAuthFailed'>;
  private readonly Impl: typeof WebSocket | undefined;
  private readonly storage: Storage | null;
  private readonly events: EventTarget | null;

  private ws: WebSocket | null = null;
  private running = false;
  private ready = false;
  private offline = false;
  private authRetried = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private attempt = 0;
  private readyCount = 0;
  private readonly ackTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly typingSent = new Map<string, number>();
  private readonly typingLater = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly listeners = new Set<(f: ServerFrame) => void>();
  private me: User | null = null;
  // the channels the auth frame of this socket resumes
  private authResumed = new Set<string>();
  // replayed messages up to this seq are not kept: the timeline was too
  // far behind and is loaded over REST instead
  private readonly dropUpTo = new Map<string, number>();

  constructor(opts: SessionOptions) {
    this.o = {
      url: opts.url,
      getToken: opts.getToken,
      random: opts.random ?? Math.random,
      baseDelayMs: opts.baseDelayMs ?? 1000,
      maxDelayMs: opts.maxDelayMs ?? 30_000,
      ackTimeoutMs: opts.ackTimeoutMs ?? 15_000,
      typingIntervalMs: opts.typingIntervalMs ?? 2250,
      maxResumeGap: opts.maxResumeGap ?? 1000,
      storageKey: opts.storageKey ?? 'foko.outbox',
      onAuthRejected: opts.onAuthRejected,
      onAuthFailed: opts.onAuthFailed,
    };
    this.Impl = opts.WebSocketImpl ?? (globalThis.WebSocket as typeof WebSocket | undefined);
    this.storage = opts.storage === undefined ? defaultStorage() : opts.storage;
    this.events = opts.events === undefined ? defaultEvents() : opts.events;
    this.loadOutbox();
  }

  // --- public ----------------------------------------------------------------

  start(): void {
    if (this.running) return;
    this.running = true;
    this.authRetried = false;
    this.attempt = 0;
    this.events?.addEventListener('online', this.onOnline);
    this.events?.addEventListener('offline', this.onOffline);
    this.offline = browserOffline();
    this.loadOutbox();
    this.connect();
  }

  stop(): void {
    this.running = false;
    this.ready = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    for (const t of this.typingLater.values()) clearTimeout(t);
    this.typingLater.clear();
    this.events?.removeEventListener('online', this.onOnline);
    this.events?.removeEventListener('offline', this.onOffline);
    const ws = this.ws;
    this.ws = null;
    if (ws) this.closeSocket(ws);
    this.requeueInFlight();
    useChat.getState().setConnection({ status: 'connecting', retryAt: null, attempt: 0 });
  }

  get online(): boolean {
    return this.ready && this.ws?.readyState === OPEN;
  }

  // The user named by the last ready.
  get user(): User | null {
    return this.me;
  }

  send(channelId: string, text: string, clientId?: string): string {
    const id = clientId ?? crypto.randomUUID();
    const known = useChat.getState().pending.find((p) => p.clientId === id);
    if (known) {
      this.retry(id);
      return id;
    }
    const entry: Pending = {
      clientId: id,
      channelId,
      text,
      state: 'queued',
      createdAt: Date.now(),
    };
    const uid = this.me?.id;
    if (uid) entry.userId = uid;
    this.writePending([...useChat.getState().pending, entry]);
    if (this.online) this.transmit(entry);
    return id;
  }

  retry(clientId: string): void {
    const p = useChat.getState().pending.find((x) => x.clientId === clientId);
    if (!p || p.state === 'sending') return;
    const queued: Pending = { ...p, state: 'queued' };
    delete queued.error;
    delete queued.code;
    this.replacePending(queued);
    if (this.online) this.transmit(queued);
  }

  // Forgets an unsent message.
  discard(clientId: string): void {
    clearTimeout(this.ackTimers.get(clientId));
    this.ackTimers.delete(clientId);
    this.writePending(useChat.getState().pending.filter((p) => p.clientId !== clientId));
  }

  // Forgets every unsent message (signing out).
  clearOutbox(): void {
    for (const t of this.ackTimers.values()) clearTimeout(t);
    this.ackTimers.clear();
    this.writePending([]);
  }

  // At most one typing event per channel per interval (the server drops
  // more). Typing inside the interval is announced once at its end, so
  // typing that starts just after an event still shows.
  typing(channelId: string): void {
    if (!this.online) return;
    const now = Date.now();
    const last = this.typingSent.get(channelId);
    if (last === undefined || now - last >= this.o.typingIntervalMs) {
      this.typingSent.set(channelId, now);
      this.write({ type: 'typing', channel_id: channelId });
      return;
    }
    if (this.typingLater.has(channelId)) return;
    const later = setTimeout(() => {
      this.typingLater.delete(channelId);
      this.typing(channelId);
    }, last + this.o.typingIntervalMs - now);
    this.typingLater.set(channelId, later);
  }

  // Sends a read mark; false when offline (the caller uses REST then).
  read(channelId: string, seq: number): boolean {
    if (!this.online) return false;
    this.write({ type: 'read', channel_id: channelId, seq });
    return true;
  }

  on(listener: (f: ServerFrame) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  // How many times ready has come; more than 1 means a reconnect.
  get readies(): number {
    return this.readyCount;
  }

  // --- connection ------------------------------------------------------------

  private connect(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (!this.running || this.ws) return;
    const token = this.o.getToken();
    if (!token) {
      this.stop();
      return;
    }
    const Impl = this.Impl;
    if (!Impl) throw new Error('no WebSocket implementation');
    const first = this.readyCount === 0 && this.attempt === 0;
    useChat.getState().setConnection({
      status: this.offline ? 'offline' : first ? 'connecting' : 'reconnecting',
      retryAt: null,
      attempt: this.attempt,
    });

    let ws: WebSocket;
    try {
      ws = new Impl(this.o.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.ready = false;
    this.authResumed = new Set();
    this.dropUpTo.clear();
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const t = this.o.getToken();
      if (!t) {
        this.stop();
        return;
      }
      const auth: Extract<ClientFrame, { type: 'auth' }> = { type: 'auth', token: t };
      const resume = this.resumePositions();
      if (Object.keys(resume).length > 0) auth.resume = resume;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws) return;
      if (typeof ev.data !== 'string') return;
      let f: unknown;
      try {
        f = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (f && typeof f === 'object' && typeof (f as { type?: unknown }).type === 'string') {
        this.handle(f as ServerFrame);
      }
    };
    ws.onerror = () => {
      // a close follows
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.onClosed(ev.code);
    };
  }

  // Where we are in each channel we have a timeline of: the auth frame
  // resumes them all from there.
  private resumePositions(): Record<string, number> {
    const at: Record<string, number> = {};
    for (const [id, tl] of Object.entries(useChat.getState().timelines)) {
      if (tl.syncedSeq === null) continue;
      if (this.authResumed.size >= AUTH_RESUME_MAX) break;
      at[id] = tl.syncedSeq;
      this.authResumed.add(id);
    }
    return at;
  }

  private closeSocket(ws: WebSocket): void {
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = () => {
      // closing one still connecting reports an error: nothing to do
    };
    try {
      ws.close(1000);
    } catch {
      // already closed
    }
  }

  private onClosed(code: number): void {
    this.ws = null;
    this.ready = false;
    this.requeueInFlight();
    if (!this.running) return;
    if (code === 4001) {
      const cb = this.o.onAuthRejected;
      if (this.authRetried || !cb) {
        this.authFailed();
        return;
      }
      this.authRetried = true;
      useChat.getState().setConnection({ status: 'reconnecting', retryAt: null });
      cb().then(
        (ok) => {
          if (!this.running) return;
          if (ok) this.connect();
          else this.authFailed();
        },
        () => {
          if (this.running) this.authFailed();
        },
      );
      return;
    }
    this.scheduleReconnect();
  }

  private authFailed(): void {
    this.stop();
    this.o.onAuthFailed?.();
  }

  // Equal jitter: half of the exponential delay plus a random part of the
  // other half, so clients coming back together spread out.
  private delay(attempt: number): number {
    const exp = Math.min(this.o.maxDelayMs, this.o.baseDelayMs * 2 ** Math.max(0, attempt - 1));
    return Math.round(exp / 2 + this.o.random() * (exp / 2));
  }

  private scheduleReconnect(): void {
    if (!this.running) return;
    this.attempt += 1;
    const d = this.offline ? this.o.maxDelayMs : this.delay(this.attempt);
    const retryAt = Date.now() + d;
    useChat.getState().setConnection({
      status: this.offline ? 'offline' : 'reconnecting',
      retryAt,
      attempt: this.attempt,
    });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), d);
  }

  private readonly onOnline = () => {
    this.offline = false;
    if (!this.running) return;
    if (this.ws) return; // connecting or connected already
    this.attempt = 0;
    this.connect();
  };

  private readonly onOffline = () => {
    this.offline = true;
    if (!this.running) return;
    const ws = this.ws;
    if (ws) {
      // the socket is as good as dead; close it and wait for 'online'
      this.ws = null;
      this.closeSocket(ws);
      this.ready = false;
      this.requeueInFlight();
    }
    this.scheduleReconnect();
  };

  // --- frames ----------------------------------------------------------------

  private write(f: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(f));
    return true;
  }

  private handle(f: ServerFrame): void {
    const chat = useChat.getState();
    switch (f.type) {
      case 'ready':
        this.onReady(f);
        break;
      case 'message':
        this.onMessage(f.message);
        break;
      case 'message_updated':
        chat.updateMessage(f.message);
        break;
      case 'message_deleted':
        chat.markDeleted(f.channel_id, f.id, f.seq);
        break;
      case 'ack':
        this.onAck(f.ref, f.message);
        break;
      case 'resumed':
        this.dropUpTo.delete(f.channel_id);
        break;
      case 'error':
        if (f.ref !== undefined) this.onSendError(f.ref, f.code, f.message);
        break;
      case 'channel':
        if (f.event === 'left' && f.user.id === this.me?.id) {
          chat.dropTimeline(f.channel.id);
        }
        break;
      default:
        break;
    }
    for (const l of [...this.listeners]) {
      try {
        l(f);
      } catch (e) {
        console.error(e);
      }
    }
  }

  private onReady(f: Extract<ServerFrame, { type: 'ready' }>): void {
    this.ready = true;
    this.readyCount += 1;
    this.attempt = 0;
    this.authRetried = false;
    this.me = f.user;
    useChat.getState().setConnection({ status: 'online', retryAt: null, attempt: 0 });

    // The auth frame resumed what we have seen (the replay is on its way);
    // a timeline too far behind is dropped and loaded over REST instead,
    // and so is its replay. What the auth frame could not carry is resumed
    // now, for the channels we are behind in.
    const chat = useChat.getState();
    const member = new Set<string>();
    const channels: Record<string, number> = {};
    for (const c of f.channels) {
      member.add(c.id);
      const synced = chat.timelines[c.id]?.syncedSeq;
      if (synced === null || synced === undefined || synced >= c.last_seq) continue;
      const far = c.last_seq - synced > this.o.maxResumeGap;
      if (this.authResumed.has(c.id)) {
        if (far) {
          chat.resetTimeline(c.id);
          this.dropUpTo.set(c.id, c.last_seq);
        }
      } else if (far) {
        chat.resetTimeline(c.id);
      } else {
        channels[c.id] = synced;
      }
    }
    for (const id of Object.keys(chat.timelines)) {
      if (!member.has(id)) chat.dropTimeline(id);
    }
    if (Object.keys(channels).length > 0) this.write({ type: 'resume', channels });

    // then the outbox, in order: what was queued, in flight when the
    // connection dropped, or failed for want of an answer
    let pending = useChat.getState().pending.filter(
      (p) => p.userId === undefined || p.userId === f.user.id,
    );
    pending = pending.map((p) => (p.userId ? p : { ...p, userId: f.user.id }));
    this.writePending(pending);
    for (const p of pending) {
      if (p.state === 'queued' || (p.state === 'failed' && !PERMANENT.has(p.code ?? ''))) {
        this.transmit(p);
      }
    }
  }

  private onMessage(m: Message): void {
    const drop = this.dropUpTo.get(m.channel_id);
    if (drop === undefined || m.seq > drop) {
      useChat.getState().addMessages(m.channel_id, [m], { synced: true });
    }
    // our own message, come back before (or instead of) its ack
    if (m.client_id && m.author.id === this.me?.id) {
      const p = useChat.getState().pending.find((x) => x.clientId === m.client_id);
      if (p) this.settle(p.clientId, m);
    }
  }

  private onAck(ref: string, m: Message): void {
    const p = useChat.getState().pending.find((x) => x.clientId === ref);
    if (p) this.settle(ref, m);
    else useChat.getState().addMessages(m.channel_id, [m]);
  }

  private settle(clientId: string, m: Message): void {
    clearTimeout(this.ackTimers.get(clientId));
    this.ackTimers.delete(clientId);
    useChat.getState().settle(clientId, m);
    this.persist();
  }

  private onSendError(ref: string, code: string, message: string): void {
    const p = useChat.getState().pending.find((x) => x.clientId === ref);
    if (!p) return;
    clearTimeout(this.ackTimers.get(ref));
    this.ackTimers.delete(ref);
    this.replacePending({ ...p, state: 'failed', error: message, code });
  }

  private transmit(p: Pending): void {
    const sending: Pending = { ...p, state: 'sending' };
    delete sending.error;
    delete sending.code;
    this.replacePending(sending);
    const ok = this.write({
      type: 'send',
      ref: p.clientId,
      channel_id: p.channelId,
      text: p.text,
      client_id: p.clientId,
    });
    if (!ok) {
      this.replacePending({ ...sending, state: 'queued' });
      return;
    }
    clearTimeout(this.ackTimers.get(p.clientId));
    this.ackTimers.set(
      p.clientId,
      setTimeout(() => {
        this.ackTimers.delete(p.clientId);
        const cur = useChat.getState().pending.find((x) => x.clientId === p.clientId);
        if (cur?.state !== 'sending') return;
        this.replacePending({
          ...cur,
          state: 'failed',
          code: 'timeout',
          error: 'No answer from the server.',
        });
      }, this.o.ackTimeoutMs),
    );
  }

  // In flight when the connection went: sent again after the next ready.
  private requeueInFlight(): void {
    for (const t of this.ackTimers.values()) clearTimeout(t);
    this.ackTimers.clear();
    const pending = useChat.getState().pending;
    if (!pending.some((p) => p.state === 'sending')) return;
    this.writePending(
      pending.map((p) => (p.state === 'sending' ? { ...p, state: 'queued' as const } : p)),
    );
  }

  // --- the outbox ------------------------------------------------------------

  private replacePending(p: Pending): void {
    this.writePending(
      useChat.getState().pending.map((x) => (x.clientId === p.clientId ? p : x)),
    );
  }

  private writePending(pending: Pending[]): void {
    useChat.getState().setPending(pending);
    this.persist();
  }

  private persist(): void {
    const s = this.storage;
    if (!s) return;
    const pending = useChat.getState().pending;
    try {
      if (pending.length === 0) s.removeItem(this.o.storageKey);
      else s.setItem(this.o.storageKey, JSON.stringify(pending));
    } catch {
      // full or unavailable: the outbox still lives in memory
    }
  }

  // Entries saved by an earlier page (or session object) join the outbox;
  // what was in flight then is queued again, same client_id.
  private loadOutbox(): void {
    const raw = this.storage?.getItem(this.o.storageKey);
    if (!raw) return;
    let saved: unknown;
    try {
      saved = JSON.parse(raw);
    } catch {
      return;
    }
    if (!Array.isArray(saved)) return;
    const have = new Set(useChat.getState().pending.map((p) => p.clientId));
    const add: Pending[] = [];
    for (const x of saved as Partial<Pending>[]) {
      if (
        !x ||
        typeof x.clientId !== 'string' ||
        typeof x.channelId !== 'string' ||
        typeof x.text !== 'string' ||
        have.has(x.clientId)
      ) {
        continue;
      }
      const p: Pending = {
        clientId: x.clientId,
        channelId: x.channelId,
        text: x.text,
        state: x.state === 'failed' ? 'failed' : 'queued',
        createdAt: typeof x.createdAt === 'number' ? x.createdAt : Date.now(),
      };
      if (typeof x.error === 'string') p.error = x.error;
      if (typeof x.code === 'string') p.code = x.code;
      if (typeof x.userId === 'string') p.userId = x.userId;
      add.push(p);
    }
    if (add.length) useChat.getState().setPending([...useChat.getState().pending, ...add]);
  }
}
