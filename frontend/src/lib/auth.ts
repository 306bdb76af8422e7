// The signed-in user and their access token, kept in localStorage so a
// reload signs in again at once ("foko.token", "foko.user"); api.me()
// confirms the token afterwards.

import { create } from 'zustand';
import type { AuthResult, User } from './types';
import { api } from './api';

const TOKEN_KEY = 'foko.token';
const USER_KEY = 'foko.user';

function storage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null;
  }
}

function readUser(): User | null {
  const raw = storage()?.getItem(USER_KEY);
  if (!raw) return null;
  try {
    return JSON.parse(raw) as User;
  } catch {
    return null;
  }
}

interface AuthState {
  token: string | null;
  user: User | null;
  setSession(r: AuthResult): void;
  setUser(user: User): void;
  signOut(): void;
}

export const useAuth = create<AuthState>()((set) => ({
  token: storage()?.getItem(TOKEN_KEY) ?? null,
  user: readUser(),
  setSession(r) {
    const s = storage();
    s?.setItem(TOKEN_KEY, r.token);
    s?.setItem(USER_KEY, JSON.stringify(r.user));
    set({ token: r.token, user: r.user });
  },
  setUser(user) {
    storage()?.setItem(USER_KEY, JSON.stringify(user));
    set({ user });
  },
  // live.ts watches the token: null stops the WebSocket session and
  // clears the live state.
  signOut() {
    const s = storage();
    s?.removeItem(TOKEN_KEY);
    s?.removeItem(USER_KEY);
    set({ token: null, user: null });
  },
}));

// The claims of a JWT's payload, or null when it cannot be read.
export function tokenClaims(
  token: string,
): { exp?: number; iat?: number; sub?: string } | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    return JSON.parse(json) as { exp?: number; iat?: number; sub?: string };
  } catch {
    return null;
  }
}

// Milliseconds from now until the token should be refreshed: a tenth of
// its lifetime before it expires (at least a minute before), never < 0.
// null when the token carries no exp.
export function refreshDelay(token: string, now = Date.now()): number | null {
  const c = tokenClaims(token);
  if (!c || typeof c.exp !== 'number') return null;
  const exp = c.exp * 1000;
  const life = typeof c.iat === 'number' ? exp - c.iat * 1000 : 0;
  const margin = Math.max(60_000, life / 10);
  return Math.max(0, exp - margin - now);
}

const RETRY_MS = 30_000;
const MAX_TIMER = 2 ** 31 - 1;

let refreshUsers = 0;
let stopRefresh: (() => void) | null = null;

// Keeps the token fresh: refreshes it before its exp claim, again whenever
// a new token arrives. A network failure retries in 30 s; a refused token
// signs out (api does that). Returns stop. Calling it more than once runs
// one refresher; it ends when every caller has stopped.
export function startTokenRefresh(): () => void {
  if (refreshUsers++ === 0) stopRefresh = runTokenRefresh();
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    if (--refreshUsers === 0) {
      stopRefresh?.();
      stopRefresh = null;
    }
  };
}

function runTokenRefresh(): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;

  const schedule = (token: string | null, delay?: number) => {
    clearTimeout(timer);
    timer = undefined;
    if (stopped || !token) return;
    const d = delay ?? refreshDelay(token);
    if (d === null) return;
    timer = setTimeout(() => void run(token), Math.min(d, MAX_TIMER));
  };

  const run = async (token: string) => {
    if (stopped || useAuth.getState().token !== token) return;
    try {
      const r = await api.refresh();
      if (!stopped && useAuth.getState().token === token) {
        useAuth.getState().setSession(r);
      }
    } catch {
      // a refused token has signed out already (api does it); anything
      // else is tried again later
      if (!stopped && useAuth.getState().token === token) {
        schedule(token, RETRY_MS);
      }
    }
  };

  schedule(useAuth.getState().token);
  const unsub = useAuth.subscribe((s, prev) => {
    if (s.token !== prev.token) schedule(s.token);
  });
  return () => {
    stopped = true;
    clearTimeout(timer);
    unsub();
  };
}
