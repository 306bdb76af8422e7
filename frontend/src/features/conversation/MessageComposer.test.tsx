import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { useChat } from '../../lib/chat-store';
import { MessageComposer } from './MessageComposer';

// The composer hands messages to the real session's outbox (not started,
// so they wait there as they would offline).
describe('MessageComposer', () => {
  beforeEach(() => {
    localStorage.clear();
    useChat.getState().reset();
  });
  afterEach(cleanup);

  const outbox = () => useChat.getState().pending.map((p) => [p.channelId, p.text]);

  it('sends on Enter and empties the box', async () => {
    const user = userEvent.setup();
    render(<MessageComposer channelId="c1" placeholder="Message #general" />);
    const box = screen.getByRole('textbox', { name: 'Message' });
    await user.type(box, 'hello there{Enter}');
    expect(outbox()).toEqual([['c1', 'hello there']]);
    expect((box as HTMLTextAreaElement).value).toBe('');
  });

  it('starts a new line on Shift+Enter without sending', async () => {
    const user = userEvent.setup();
    render(<MessageComposer channelId="c1" placeholder="Message" />);
    const box = screen.getByRole('textbox', { name: 'Message' });
    await user.type(box, 'line one{Shift>}{Enter}{/Shift}line two');
    expect(outbox()).toEqual([]);
    expect((box as HTMLTextAreaElement).value).toBe('line one\nline two');
    await user.click(screen.getByRole('button', { name: 'Send' }));
    expect(outbox()).toEqual([['c1', 'line one\nline two']]);
  });

  it('sends nothing for blank text', async () => {
    const user = userEvent.setup();
    render(<MessageComposer channelId="c1" placeholder="Message" />);
    await user.type(screen.getByRole('textbox', { name: 'Message' }), '   {Enter}');
    expect(outbox()).toEqual([]);
  });

  it('still takes messages while offline, for the outbox', async () => {
    useChat.getState().setConnection({ status: 'reconnecting', retryAt: Date.now() + 5000 });
    const user = userEvent.setup();
    const { container } = render(<MessageComposer channelId="c2" placeholder="Message" />);
    expect(container.querySelector('.composer--offline')).not.toBeNull();
    await user.type(screen.getByRole('textbox', { name: 'Message' }), 'later{Enter}');
    expect(outbox()).toEqual([['c2', 'later']]);
  });
});
