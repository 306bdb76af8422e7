import { useQuery } from '@tanstack/react-query';
import { api } from '../../lib/api';
import type { Channel, Member, UserRef } from '../../lib/types';

// The signed-in user's channels, newest activity first. live.ts keeps the
// cache current from WebSocket events.
export function useChannels() {
  return useQuery({
    queryKey: ['channels'],
    queryFn: () => api.channels(),
    select: sortByActivity,
  });
}

// One channel: from the list when it holds it, else asked for on its own
// (a deep link, or a channel joined a moment ago).
export function useChannel(id: string) {
  const list = useQuery({
    queryKey: ['channels'],
    queryFn: () => api.channels(),
    select: (cs: Channel[]) => cs.find((c) => c.id === id) ?? null,
  });
  const inList = list.data ?? null;
  const single = useQuery({
    queryKey: ['channel', id],
    queryFn: () => api.channel(id),
    enabled: list.isSuccess && inList === null,
    retry: false,
  });
  return {
    channel: inList ?? (list.isSuccess ? single.data ?? null : null),
    isPending: list.isPending || (list.isSuccess && !inList && single.isPending),
    error: list.error ?? (inList ? null : single.error),
  };
}

// The latest activity: the last message, else the channel's creation,
// which a MongoDB ObjectId carries in its first four bytes.
function activity(c: Channel): number {
  if (c.last_message) return Date.parse(c.last_message.created_at);
  const created = Number.parseInt(c.id.slice(0, 8), 16);
  return Number.isFinite(created) ? created * 1000 : 0;
}

export function sortByActivity(cs: Channel[]): Channel[] {
  return [...cs].sort((a, b) => activity(b) - activity(a));
}

// A direct conversation's other person (null for a named channel).
export function otherMember(c: Channel, meId: string | undefined): Member | null {
  if (!c.direct) return null;
  return c.members.find((m) => m.id !== meId) ?? c.members[0] ?? null;
}

// What a person calls the channel: its name, or for a direct
// conversation the other person's username.
export function channelDisplayName(c: Channel, me: UserRef | null): string {
  if (c.direct) return otherMember(c, me?.id)?.username ?? 'Direct message';
  if (c.name) return c.name;
  const others = c.members.filter((m) => m.id !== me?.id).map((m) => m.username);
  return others.length ? others.join(', ') : 'Untitled channel';
}
