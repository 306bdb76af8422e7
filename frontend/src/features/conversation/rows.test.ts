import { describe, expect, it } from 'vitest';
import type { Message } from '../../lib/types';
import { buildRows } from './rows';

const me = { id: 'u-ada', username: 'Ada' };

function m(seq: number, author: string, at: string, over: Partial<Message> = {}): Message {
  return {
    id: `m${seq}`,
    channel_id: 'c1',
    seq,
    author: { id: author, username: author },
    text: `text ${seq}`,
    created_at: at,
    ...over,
  };
}

describe('buildRows', () => {
  const now = new Date(2025, 2, 4, 12, 0);
  const local = (d: number, h: number, min: number) => new Date(2025, 2, d, h, min).toISOString();

  it('labels days and groups one author’s close messages', () => {
    const rows = buildRows(
      [
        m(1, 'bea', local(3, 9, 0)),
        m(2, 'bea', local(3, 9, 2)),
        m(3, 'bea', local(4, 9, 3)),
        m(4, 'ada', local(4, 9, 4)),
        m(5, 'ada', local(4, 9, 30)),
      ],
      [],
      me,
      false,
      now,
    );
    expect(rows[0]!.kind).toBe('start');
    const shape = rows.slice(1).map((r) => (r.kind === 'message' ? [r.key, r.day, r.grouped] : null));
    expect(shape).toEqual([
      ['m1', 'Yesterday', false],
      ['m2', null, true],
      ['m3', 'Today', false],
      ['m4', null, false],
      ['m5', null, false],
    ]);
  });

  it('puts the outbox after the history, without the ones already stored', () => {
    const rows = buildRows(
      [m(1, 'u-ada', local(4, 11, 59), { client_id: 'k1' })],
      [
        { clientId: 'k1', channelId: 'c1', text: 'a', state: 'sending', createdAt: now.getTime() },
        { clientId: 'k2', channelId: 'c1', text: 'b', state: 'failed', createdAt: now.getTime() },
      ],
      me,
      false,
      now,
    );
    expect(rows.map((r) => r.key)).toEqual(['start', 'm1', 'pending:k2']);
    // more history above: no start row, the first row is a message
    expect(buildRows([m(7, 'bea', local(4, 9, 0))], [], me, true, now).map((r) => r.key)).toEqual(['m7']);
    const last = rows[2]!;
    expect(last.kind === 'pending' && last.grouped).toBe(true);
  });
});
