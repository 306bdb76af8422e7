// The REST API (README.md, "API"): one function per call, JSON in and out.
// Errors become ApiError carrying the server's own error.message.

import type {
  AuthResult,
  Channel,
  HistoryPage,
  Message,
  User,
  UserRef,
} from './types';
import { useAuth } from './auth';

export const NETWORK_MESSAGE = 'Cannot reach the server. Check your connection.';

export class ApiError extends Error {
  status: number;
  code: string;
  field?: string;
  retryAfter?: number;

  constructor(
    status: number,
    code: string,
    message: string,
    field?: string,
    retryAfter?: number,
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    if (field !== undefined) this.field = field;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

let base = '';

// Where /api lives; '' (same origin) in the app, an absolute origin in
// tests that run outside a browser.
export function setApiBase(origin: string): void {
  base = origin.replace(/\/$/, '');
}

interface Options {
  body?: unknown;
  auth?: boolean;
}

function fallbackMessage(status: number): string {
  if (status === 429) return 'Too many attempts. Try again later.';
  if (status >= 500) return 'The server is unavailable. Try again shortly.';
  return 'The request failed.';
}

async function request<T>(method: string, path: string, o: Options = {}): Promise<T> {
  const auth = o.auth ?? true;
  const headers: Record<string, string> = { Accept: 'application/json' };
  const token = useAuth.getState().token;
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  if (o.body !== undefined) headers['Content-Type'] = 'application/json';

  let res: Response;
  try {
    res = await fetch(base + path, {
      method,
      headers,
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
    });
  } catch {
    throw new ApiError(0, 'network', NETWORK_MESSAGE);
  }

  const text = res.status === 204 ? '' : await res.text().catch(() => '');
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }

  if (!res.ok) {
    const err = (data as { error?: { code?: string; message?: string; field?: string } } | undefined)
      ?.error;
    const ra = res.headers.get('Retry-After');
    const retryAfter = ra !== null && /^\d+$/.test(ra.trim()) ? Number(ra) : undefined;
    const e = new ApiError(
      res.status,
      err?.code ?? (res.status === 413 ? 'too_large' : 'http_error'),
      err?.message ?? fallbackMessage(res.status),
      err?.field,
      retryAfter,
    );
    // the token is no good any more (expired, revoked by a reset): sign out
    if (auth && token && res.status === 401 && e.code === 'invalid_token') {
      if (useAuth.getState().token === token) useAuth.getState().signOut();
    }
    throw e;
  }
  return data as T;
}

const enc = encodeURIComponent;

export const api = {
  signup(email: string, password: string, username: string): Promise<AuthResult> {
    return request('POST', '/api/auth/signup', {
      body: { email, password, username },
      auth: false,
    });
  },
  login(email: string, password: string): Promise<AuthResult> {
    return request('POST', '/api/auth/login', { body: { email, password }, auth: false });
  },
  refresh(): Promise<AuthResult> {
    return request('POST', '/api/auth/refresh');
  },
  async forgotPassword(email: string): Promise<void> {
    await request('POST', '/api/auth/password/forgot', { body: { email }, auth: false });
  },
  resetPassword(token: string, password: string): Promise<AuthResult> {
    return request('POST', '/api/auth/password/reset', {
      body: { token, password },
      auth: false,
    });
  },
  acceptInvite(token: string, username: string, password: string): Promise<AuthResult> {
    return request('POST', '/api/auth/invite/accept', {
      body: { token, password, username },
      auth: false,
    });
  },
  async me(): Promise<User> {
    const r = await request<{ user: User }>('GET', '/api/me');
    return r.user;
  },
  searchUsers(q: string): Promise<UserRef[]> {
    return request('GET', `/api/users?q=${enc(q)}`);
  },
  channels(): Promise<Channel[]> {
    return request('GET', '/api/channels');
  },
  channel(id: string): Promise<Channel> {
    return request('GET', `/api/channels/${enc(id)}`);
  },
  createChannel(input: { name?: string; members: string[] }): Promise<Channel> {
    return request('POST', '/api/channels', { body: input });
  },
  renameChannel(id: string, name: string): Promise<Channel> {
    return request('PATCH', `/api/channels/${enc(id)}`, { body: { name } });
  },
  invite(id: string, email: string): Promise<Channel> {
    return request('POST', `/api/channels/${enc(id)}/invite`, { body: { email } });
  },
  async leaveChannel(id: string): Promise<void> {
    await request('DELETE', `/api/channels/${enc(id)}/members/me`);
  },
  history(
    id: string,
    q: { before?: number; after?: number; limit?: number } = {},
  ): Promise<HistoryPage> {
    const p = new URLSearchParams();
    if (q.before !== undefined) p.set('before', String(q.before));
    if (q.after !== undefined) p.set('after', String(q.after));
    if (q.limit !== undefined) p.set('limit', String(q.limit));
    const qs = p.toString();
    return request('GET', `/api/channels/${enc(id)}/messages${qs ? `?${qs}` : ''}`);
  },
  async postMessage(id: string, text: string, clientId: string): Promise<Message> {
    const r = await request<{ message: Message }>('POST', `/api/channels/${enc(id)}/messages`, {
      body: { text, client_id: clientId },
    });
    return r.message;
  },
  async editMessage(id: string, mid: string, text: string): Promise<Message> {
    const r = await request<{ message: Message }>(
      'PATCH',
      `/api/channels/${enc(id)}/messages/${enc(mid)}`,
      { body: { text } },
    );
    return r.message;
  },
  async deleteMessage(id: string, mid: string): Promise<Message> {
    const r = await request<{ message: Message }>(
      'DELETE',
      `/api/channels/${enc(id)}/messages/${enc(mid)}`,
    );
    return r.message;
  },
  async markRead(id: string, seq: number): Promise<void> {
    await request('POST', `/api/channels/${enc(id)}/read`, { body: { seq } });
  },
};
