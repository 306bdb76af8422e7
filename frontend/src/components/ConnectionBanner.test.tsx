import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { act, cleanup, render, screen } from '@testing-library/react';
import { useChat } from '../lib/chat-store';
import { ConnectionBanner, bannerText } from './ConnectionBanner';

describe('ConnectionBanner', () => {
  beforeEach(() => useChat.getState().reset());
  afterEach(cleanup);

  it('words each state', () => {
    const now = 1_000_000;
    expect(bannerText('online', null, 0, now)).toBeNull();
    expect(bannerText('connecting', null, 0, now)).toBe('Connecting…');
    expect(bannerText('reconnecting', now + 4200, 2, now)).toBe('Offline — reconnecting in 5 s');
    expect(bannerText('reconnecting', now - 10, 2, now)).toBe('Reconnecting…');
    expect(bannerText('connecting', null, 3, now)).toBe('Reconnecting…');
  });

  it('is hidden while online and speaks up when the connection drops', () => {
    render(<ConnectionBanner />);
    expect(screen.getByRole('status').textContent).toBe('Connecting…');
    act(() => useChat.getState().setConnection({ status: 'online', retryAt: null }));
    expect(screen.queryByRole('status')).toBeNull();
    act(() => useChat.getState().setConnection({ status: 'reconnecting', retryAt: Date.now() + 3000, attempt: 1 }));
    expect(screen.getByRole('status').textContent).toMatch(/^Offline — reconnecting in [23] s$/);
  });
});
