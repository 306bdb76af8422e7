import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, within } from '@testing-library/react';
import { MemoryRouter } from 'react-router';
import { useChat } from '../../lib/chat-store';
import type { Channel, UserRef } from '../../lib/types';
import { ChannelListItem } from './ChannelListItem';

const ada: UserRef = { id: 'u-ada', username: 'Ada' };

function direct(over: Partial<Channel> = {}): Channel {
  return {
    id: '65f000000000000000000001',
    name: null,
    direct: true,
    members: [
      { id: 'u-ada', username: 'Ada', online: true },
      { id: 'u-bea', username: 'Bea', online: true },
    ],
    last_message: {
      id: 'm9',
      channel_id: '65f000000000000000000001',
      seq: 9,
      author: { id: 'u-bea', username: 'Bea' },
      text: 'see you',
      created_at: new Date(Date.now() - 5 * 60_000).toISOString(),
    },
    last_seq: 9,
    unread: 3,
    ...over,
  };
}

function renderItem(c: Channel) {
  return render(
    <MemoryRouter>
      <ul>
        <ChannelListItem channel={c} me={ada} now={Date.now()} />
      </ul>
    </MemoryRouter>,
  );
}

describe('ChannelListItem', () => {
  beforeEach(() => useChat.getState().reset());
  afterEach(cleanup);

  it('names a direct conversation after the other person, with unread and presence', () => {
    renderItem(direct());
    const link = screen.getByRole('link', { name: /^Bea/ });
    expect(link.getAttribute('href')).toBe('/c/65f000000000000000000001');
    const badge = within(link).getByLabelText('3 unread');
    expect(badge.textContent).toBe('3');
    expect(within(link).getByLabelText('online')).toBeTruthy();
    expect(within(link).getByText('see you')).toBeTruthy();
    expect(within(link).getByText('5 min')).toBeTruthy();
  });

  it('follows live presence over the channel data', () => {
    useChat.getState().setPresence('u-bea', false);
    renderItem(direct());
    expect(screen.getByLabelText('offline')).toBeTruthy();
  });

  it('prefixes my own last message with "You:" and has no badge when read', () => {
    const c = direct({ unread: 0 });
    c.last_message = { ...c.last_message!, author: ada, text: 'on my way' };
    renderItem(c);
    expect(screen.getByText('You: on my way')).toBeTruthy();
    expect(screen.queryByLabelText(/unread/)).toBeNull();
  });

  it('says when the last message was deleted', () => {
    const c = direct();
    c.last_message = { ...c.last_message!, text: '', deleted: true };
    renderItem(c);
    expect(screen.getByText('This message was deleted')).toBeTruthy();
  });

  it('shows a named channel by its name, without a presence dot', () => {
    renderItem(direct({ direct: false, name: 'general' }));
    const link = screen.getByRole('link', { name: /^general/ });
    expect(within(link).getByText('Bea: see you')).toBeTruthy();
    expect(within(link).queryByLabelText(/online|offline/)).toBeNull();
  });
});
