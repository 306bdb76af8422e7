import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import type { ReactNode } from 'react';
import { useChat, type Pending } from '../../lib/chat-store';
import type { Message, UserRef } from '../../lib/types';
import { formatTime } from '../../components/format';
import { MessageItem, PendingItem } from './MessageItem';

const ada: UserRef = { id: 'u-ada', username: 'Ada' };
const bea: UserRef = { id: 'u-bea', username: 'Bea' };

function msg(over: Partial<Message> = {}): Message {
  return {
    id: 'm1',
    channel_id: 'c1',
    seq: 1,
    author: bea,
    text: 'hello',
    created_at: '2025-03-04T10:15:00.000Z',
    ...over,
  };
}

function wrap(children: ReactNode) {
  const qc = new QueryClient({ defaultOptions: { mutations: { retry: false } } });
  return <QueryClientProvider client={qc}>{children}</QueryClientProvider>;
}

describe('MessageItem', () => {
  beforeEach(() => useChat.getState().reset());
  afterEach(cleanup);

  it('names the article by author and time and shows the text', () => {
    const m = msg();
    render(wrap(<MessageItem message={m} me={ada} grouped={false} day={null} />));
    const art = screen.getByRole('article', { name: `Bea at ${formatTime(m.created_at)}` });
    expect(art.querySelector('.message-text')?.textContent).toBe('hello');
    // not mine: nothing to edit or delete
    expect(within(art).queryByRole('button', { name: 'Edit message' })).toBeNull();
    expect(within(art).queryByRole('button', { name: 'Delete message' })).toBeNull();
  });

  it('renders markup in a message as text, never as HTML', () => {
    const text = '<img src=x onerror=alert(1)>';
    const { container } = render(
      wrap(<MessageItem message={msg({ text })} me={ada} grouped={false} day={null} />),
    );
    expect(container.querySelector('img')).toBeNull();
    expect(container.querySelector('.message-text')?.textContent).toBe(text);
  });

  it('turns links into links that open safely', () => {
    const { container } = render(
      wrap(<MessageItem message={msg({ text: 'see https://example.com/a?b=1 now' })} me={ada} grouped={false} day={null} />),
    );
    const a = container.querySelector('.message-text a');
    expect(a?.getAttribute('href')).toBe('https://example.com/a?b=1');
    expect(a?.getAttribute('rel')).toContain('noopener');
  });

  it('says a deleted message was deleted, with no actions', () => {
    render(wrap(<MessageItem message={msg({ author: ada, text: '', deleted: true })} me={ada} grouped={false} day={null} />));
    expect(screen.getByText('This message was deleted')).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Edit message' })).toBeNull();
  });

  it('shows a day separator above the first message of a day', () => {
    render(wrap(<MessageItem message={msg()} me={ada} grouped={false} day="Yesterday" />));
    expect(screen.getByRole('separator', { name: 'Yesterday' })).toBeTruthy();
  });

  it('edits my own message in place: Escape cancels', async () => {
    const user = userEvent.setup();
    render(wrap(<MessageItem message={msg({ author: ada, text: 'typo' })} me={ada} grouped={false} day={null} />));
    await user.click(screen.getByRole('button', { name: 'Edit message' }));
    const box = screen.getByRole('textbox', { name: 'Edit message' }) as HTMLTextAreaElement;
    expect(box.value).toBe('typo');
    expect(document.activeElement).toBe(box);
    expect(screen.getByRole('button', { name: 'Save' })).toBeTruthy();
    await user.type(box, 'x{Escape}');
    expect(screen.queryByRole('textbox', { name: 'Edit message' })).toBeNull();
    expect(document.querySelector('.message-text')?.textContent).toBe('typo');
  });

  it('edits with the text unchanged: Enter just closes the editor', async () => {
    const user = userEvent.setup();
    render(wrap(<MessageItem message={msg({ author: ada, text: 'same' })} me={ada} grouped={false} day={null} />));
    await user.click(screen.getByRole('button', { name: 'Edit message' }));
    await user.keyboard('{Enter}');
    expect(screen.queryByRole('textbox', { name: 'Edit message' })).toBeNull();
  });
});

describe('PendingItem', () => {
  afterEach(cleanup);

  const pending = (over: Partial<Pending> = {}): Pending => ({
    clientId: 'k1',
    channelId: 'c1',
    text: 'on its way',
    state: 'sending',
    createdAt: Date.parse('2025-03-04T10:16:00.000Z'),
    ...over,
  });

  it('says "Sending…" until the server has it', () => {
    render(wrap(<PendingItem pending={pending()} me={ada} grouped={false} day={null} />));
    expect(screen.getByText('Sending…')).toBeTruthy();
    expect(screen.queryByText('Not sent')).toBeNull();
    expect(screen.getByRole('article').getAttribute('aria-label')).toMatch(/^Ada at /);
  });

  it('says "Not sent" with the reason and offers Retry', async () => {
    render(
      wrap(<PendingItem pending={pending({ state: 'failed', error: 'message is too large' })} me={ada} grouped={false} day={null} />),
    );
    expect(screen.getByText('Not sent')).toBeTruthy();
    expect(screen.getByText(/message is too large/)).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Retry' })).toBeTruthy();
    expect(screen.queryByText('Sending…')).toBeNull();
  });
});
