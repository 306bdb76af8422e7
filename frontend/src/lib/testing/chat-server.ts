// A small chat server for the tests, speaking the protocol of README.md
// ("API", "WebSocket") on 127.0.0.1 with a random port: sign-in with the
// first frame (4001 otherwise), ready with each channel's last_seq, the
// auth frame's resume and the resume message replaying what was missed
// (never what the connection was sent already) then resumed, send stored
// once per (author, client_id) and acknowledged by ref, read marks,
// typing, and the REST calls the client's data layer makes (refresh,
// history, read).

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket as WsSocket } from 'ws';
import type { Message, User } from '../types';

interface Conn {
  ws: WsSocket;
  user: User | null;
  received: Record<string, unknown>[];
  sent: Map<string, Set<number>>; // channel -> seqs of the messages sent
}

export interface ServerOptions {
  // Send handling: 'normal', or 'store-then-drop' (stored, broadcast to
  // the others, then the sender's connection dies before any answer),
  // 'drop' (the connection dies before the send is stored), 'silent'
  // (stored and broadcast to others, no answer to the sender).
  sendMode?: 'normal' | 'store-then-drop' | 'drop' | 'silent';
}

export class ChatServer {
  readonly http: http.Server;
  readonly wss: WebSocketServer;
  readonly conns = new Set<Conn>();
  // every connection ever made, with what the client sent on it
  readonly history: Conn[] = [];
  readonly tokens = new Map<string, User>(); // access token -> user
  readonly refreshable = new Map<string, string>(); // old token -> new token
  readonly channels = new Map<string, { members: Set<string>; messages: Message[] }>();
  readonly reads: { channel_id: string; user_id: string; seq: number; via: string }[] = [];
  readonly connectTimes: number[] = [];
  refusing = false; // terminate every new connection at once
  options: ServerOptions = { sendMode: 'normal' };
  private nextId = 1;
  url = '';
  origin = '';

  constructor() {
    this.http = http.createServer((req, res) => this.rest(req, res));
    this.wss = new WebSocketServer({ server: this.http, path: '/ws' });
    this.wss.on('connection', (ws) => this.accept(ws));
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.http.listen(0, '127.0.0.1', resolve));
    const port = (this.http.address() as AddressInfo).port;
    this.url = `ws://127.0.0.1:${port}/ws`;
    this.origin = `http://127.0.0.1:${port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }

  // --- fixtures ----------------------------------------------------------------

  addUser(id: string, username: string, token: string): User {
    const u = { id, username };
    this.tokens.set(token, u);
    return u;
  }

  addChannel(id: string, members: string[]): void {
    this.channels.set(id, { members: new Set(members), messages: [] });
  }

  // A message stored by someone else (as a REST post would): broadcast.
  post(channelId: string, author: User, text: string, clientId?: string): Message {
    return this.store(channelId, author, text, clientId).message;
  }

  messages(channelId: string): Message[] {
    return this.channels.get(channelId)?.messages ?? [];
  }

  // --- faults ------------------------------------------------------------------

  dropAll(): void {
    for (const c of this.conns) c.ws.terminate();
  }

  closeAll(code: number): void {
    for (const c of this.conns) c.ws.close(code);
  }

  // A raw frame to every signed-in connection.
  inject(frame: unknown): void {
    const data = JSON.stringify(frame);
    for (const c of this.conns) if (c.user) c.ws.send(data);
  }

  authed(): Conn[] {
    return [...this.conns].filter((c) => c.user);
  }

  // --- the protocol ------------------------------------------------------------

  private accept(ws: WsSocket): void {
    this.connectTimes.push(Date.now());
    if (this.refusing) {
      ws.terminate();
      return;
    }
    const conn: Conn = { ws, user: null, received: [], sent: new Map() };
    this.conns.add(conn);
    this.history.push(conn);
    ws.on('close', () => this.conns.delete(conn));
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        ws.close(1003);
        return;
      }
      let f: Record<string, unknown>;
      try {
        f = JSON.parse(String(data)) as Record<string, unknown>;
      } catch {
        ws.close(1007);
        return;
      }
      conn.received.push(f);
      this.frame(conn, f);
    });
  }

  private send(conn: Conn, f: unknown): void {
    if (conn.ws.readyState !== conn.ws.OPEN) return;
    const m = (f as { type?: string; message?: Message }).message;
    if ((f as { type?: string }).type === 'message' && m) {
      const sent = conn.sent.get(m.channel_id) ?? new Set<number>();
      sent.add(m.seq);
      conn.sent.set(m.channel_id, sent);
    }
    conn.ws.send(JSON.stringify(f));
  }

  // What was missed after each channel's seq, in order, but what this
  // connection was sent already; then resumed.
  private replay(conn: Conn, user: User, chans: Record<string, number>, quiet: boolean): void {
    for (const [id, from] of Object.entries(chans)) {
      const c = this.channels.get(id);
      if (!c || !c.members.has(user.id)) {
        if (!quiet) {
          this.send(conn, { type: 'error', code: 'not_found', message: 'no such channel' });
        }
        continue;
      }
      const sent = conn.sent.get(id);
      const missed = c.messages.filter((m) => m.seq > from && !sent?.has(m.seq));
      for (const m of missed) this.send(conn, { type: 'message', message: m });
      const top = c.messages.length ? c.messages[c.messages.length - 1]!.seq : 0;
      this.send(conn, { type: 'resumed', channel_id: id, from, to: Math.max(from, top) });
    }
  }

  private frame(conn: Conn, f: Record<string, unknown>): void {
    if (!conn.user) {
      const user = f.type === 'auth' ? this.tokens.get(String(f.token)) : undefined;
      if (!user) {
        conn.ws.close(4001, 'invalid_token');
        return;
      }
      conn.user = user;
      const channels = [...this.channels.entries()]
        .filter(([, c]) => c.members.has(user.id))
        .map(([id, c]) => ({ id, last_seq: c.messages.length }));
      this.send(conn, { type: 'ready', user, channels });
      // channels the user left are left out, as ready leaves them out
      if (f.resume) this.replay(conn, user, f.resume as Record<string, number>, true);
      return;
    }
    const user = conn.user;
    switch (f.type) {
      case 'resume':
        this.replay(conn, user, (f.channels ?? {}) as Record<string, number>, false);
        break;
      case 'send': {
        const mode = this.options.sendMode ?? 'normal';
        const c = this.channels.get(String(f.channel_id));
        if (!c || !c.members.has(user.id)) {
          this.send(conn, {
            type: 'error',
            ref: f.ref,
            code: 'not_found',
            message: 'no such channel',
          });
          break;
        }
        if (typeof f.text !== 'string' || f.text.length === 0) {
          this.send(conn, {
            type: 'error',
            ref: f.ref,
            code: 'invalid_request',
            message: 'text is required',
            field: 'text',
          });
          break;
        }
        if (mode === 'drop') {
          conn.ws.terminate();
          break;
        }
        const cid = typeof f.client_id === 'string' ? f.client_id : undefined;
        const { message } = this.store(
          String(f.channel_id),
          user,
          f.text,
          cid,
          mode === 'normal' ? undefined : conn,
        );
        if (mode === 'store-then-drop') conn.ws.terminate();
        else if (mode === 'normal') this.send(conn, { type: 'ack', ref: f.ref, message });
        break;
      }
      case 'typing': {
        const id = String(f.channel_id);
        for (const o of this.members(id)) {
          if (o.user?.id !== user.id) {
            this.send(o, { type: 'typing', channel_id: id, user });
          }
        }
        break;
      }
      case 'read':
        this.read(String(f.channel_id), user.id, Number(f.seq), 'ws');
        break;
      default:
        this.send(conn, {
          type: 'error',
          code: 'invalid_request',
          message: 'unknown type',
        });
    }
  }

  private members(channelId: string): Conn[] {
    const c = this.channels.get(channelId);
    if (!c) return [];
    return [...this.conns].filter((o) => o.user && c.members.has(o.user.id));
  }

  // As the real server: the same client_id from the same author is the
  // same message, stored and announced once.
  private store(
    channelId: string,
    author: User,
    text: string,
    clientId?: string,
    skip?: Conn,
  ): { message: Message; fresh: boolean } {
    const c = this.channels.get(channelId);
    if (!c) throw new Error(`no channel ${channelId}`);
    if (clientId) {
      const had = c.messages.find((m) => m.client_id === clientId && m.author.id === author.id);
      if (had) return { message: had, fresh: false };
    }
    const message: Message = {
      id: (this.nextId++).toString(16).padStart(24, '0'),
      channel_id: channelId,
      seq: c.messages.length + 1,
      author: { id: author.id, username: author.username },
      text,
      created_at: new Date().toISOString(),
    };
    if (clientId) message.client_id = clientId;
    c.messages.push(message);
    for (const o of this.members(channelId)) {
      if (o !== skip) this.send(o, { type: 'message', message });
    }
    return { message, fresh: true };
  }

  private read(channelId: string, userId: string, seq: number, via: string): void {
    this.reads.push({ channel_id: channelId, user_id: userId, seq, via });
    for (const o of this.members(channelId)) {
      this.send(o, { type: 'read', channel_id: channelId, user_id: userId, seq });
    }
  }

  // --- REST --------------------------------------------------------------------

  private rest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const json = (status: number, body?: unknown) => {
      res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8' });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    const fail = (status: number, code: string, message: string) =>
      json(status, { error: { code, message } });
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const url = new URL(req.url ?? '/', 'http://x');
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (req.method === 'POST' && url.pathname === '/api/auth/refresh') {
        const fresh = auth ? this.refreshable.get(auth) : undefined;
        const user = fresh ? this.tokens.get(fresh) : auth ? this.tokens.get(auth) : undefined;
        if (!user) return fail(401, 'invalid_token', 'Sign in again.');
        return json(200, { user, token: fresh ?? auth });
      }
      const user = auth ? this.tokens.get(auth) : undefined;
      if (!user) return fail(401, 'invalid_token', 'Sign in again.');
      const m = /^\/api\/channels\/([^/]+)\/(messages|read)$/.exec(url.pathname);
      const c = m ? this.channels.get(decodeURIComponent(m[1]!)) : undefined;
      if (!m || !c || !c.members.has(user.id)) return fail(404, 'not_found', 'Not found.');
      if (m[2] === 'read' && req.method === 'POST') {
        const seq = Number((JSON.parse(body) as { seq: number }).seq);
        this.read(m[1]!, user.id, seq, 'rest');
        return json(200, { channel_id: m[1], seq });
      }
      if (m[2] === 'messages' && req.method === 'GET') {
        const limit = Number(url.searchParams.get('limit') ?? 50);
        const before = url.searchParams.get('before');
        const all = c.messages;
        const below = before === null ? all : all.filter((x) => x.seq < Number(before));
        const page = below.slice(Math.max(0, below.length - limit));
        return json(200, { messages: page, has_more: below.length > page.length });
      }
      return fail(405, 'method_not_allowed', 'Method not allowed.');
    });
  }
}

// Waits until cond() holds, polling; fails after ms.
export async function until(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// localStorage for node.
export class MemoryStorage implements Storage {
  private m = new Map<string, string>();
  get length(): number {
    return this.m.size;
  }
  clear(): void {
    this.m.clear();
  }
  getItem(k: string): string | null {
    return this.m.get(k) ?? null;
  }
  key(i: number): string | null {
    return [...this.m.keys()][i] ?? null;
  }
  removeItem(k: string): void {
    this.m.delete(k);
  }
  setItem(k: string, v: string): void {
    this.m.set(k, String(v));
  }
}
