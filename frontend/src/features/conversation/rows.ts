import type { Pending } from '../../lib/chat-store';
import type { Message, UserRef } from '../../lib/types';
import { dayKey, formatDay } from '../../components/format';

// One row of the virtualized list: the top of the history, a message or a
// message still in the outbox. A row that starts a new day carries the
// day's label, and a row by the same author a few minutes after the one
// before it is drawn as part of that group.
export type Row =
  | { kind: 'start'; key: string }
  | { kind: 'message'; key: string; message: Message; day: string | null; grouped: boolean }
  | { kind: 'pending'; key: string; pending: Pending; day: string | null; grouped: boolean };

const GROUP_MS = 5 * 60_000;

// dayKey of each message, computed once per message object: a 10,000
// message timeline is rebuilt on every new message.
const dayCache = new WeakMap<Message, string>();

function dayOf(m: Message): string {
  let d = dayCache.get(m);
  if (d === undefined) {
    d = dayKey(m.created_at);
    dayCache.set(m, d);
  }
  return d;
}

// The 'start' row (the beginning of the conversation) comes only once
// nothing older is left: while pages load above, the first row is always
// a message, which the virtualizer can keep in place.
export function buildRows(
  messages: Message[],
  pending: Pending[],
  me: UserRef | null,
  hasOlder: boolean,
  now: Date = new Date(),
): Row[] {
  const rows: Row[] = hasOlder ? [] : [{ kind: 'start', key: 'start' }];
  let prevDay: string | null = null;
  let prevAuthor: string | null = null;
  let prevTime = 0;

  for (const m of messages) {
    const day = dayOf(m);
    const time = Date.parse(m.created_at);
    const newDay = day !== prevDay;
    const grouped = !newDay && prevAuthor === m.author.id && time - prevTime < GROUP_MS;
    rows.push({
      kind: 'message',
      key: m.id,
      message: m,
      day: newDay ? formatDay(m.created_at, now) : null,
      grouped,
    });
    prevDay = day;
    prevAuthor = m.author.id;
    prevTime = time;
  }

  // the outbox, in send order, after everything the server has
  const settled = new Set<string>();
  for (let i = messages.length - 1; i >= 0 && i >= messages.length - 200; i--) {
    const id = messages[i]!.client_id;
    if (id) settled.add(id);
  }
  for (const p of pending) {
    if (settled.has(p.clientId)) continue;
    const iso = new Date(p.createdAt).toISOString();
    const day = dayKey(iso);
    const newDay = day !== prevDay;
    const mine = me?.id ?? null;
    const grouped = !newDay && prevAuthor === mine && p.createdAt - prevTime < GROUP_MS;
    rows.push({
      kind: 'pending',
      key: `pending:${p.clientId}`,
      pending: p,
      day: newDay ? formatDay(iso, now) : null,
      grouped,
    });
    prevDay = day;
    prevAuthor = mine;
    prevTime = p.createdAt;
  }
  return rows;
}
