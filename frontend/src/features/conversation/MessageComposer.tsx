import { useId, useLayoutEffect, useRef, useState } from 'react';
import { useConnection } from '../../lib/chat-store';
import { notifyTyping, sendMessage } from '../../lib/live';

interface MessageComposerProps {
  channelId: string;
  placeholder: string;
}

// Unsent text per channel, kept while the person looks elsewhere.
const drafts = new Map<string, string>();

const MAX_HEIGHT = 200;

// Enter sends, Shift+Enter starts a new line. Offline, it still takes
// messages: they wait in the outbox and go out on reconnect.
export function MessageComposer({ channelId, placeholder }: MessageComposerProps) {
  const [text, setText] = useState(() => drafts.get(channelId) ?? '');
  const ref = useRef<HTMLTextAreaElement>(null);
  const id = useId();
  const { status } = useConnection();
  const offline = status !== 'online';

  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, MAX_HEIGHT)}px`;
    el.style.overflowY = el.scrollHeight > MAX_HEIGHT ? 'auto' : 'hidden';
  }, [text]);

  const update = (value: string) => {
    setText(value);
    if (value) drafts.set(channelId, value);
    else drafts.delete(channelId);
  };

  const send = () => {
    if (text.trim() === '') return;
    sendMessage(channelId, text.trim());
    update('');
    ref.current?.focus();
  };

  return (
    <form
      className={`composer${offline ? ' composer--offline' : ''}`}
      onSubmit={(e) => {
        e.preventDefault();
        send();
      }}
    >
      <label htmlFor={id} className="visually-hidden">
        Message
      </label>
      <textarea
        id={id}
        ref={ref}
        className="composer-input"
        rows={1}
        value={text}
        placeholder={offline ? 'Offline — messages go out when you reconnect' : placeholder}
        aria-describedby={offline ? `${id}-offline` : undefined}
        onChange={(e) => {
          update(e.target.value);
          if (e.target.value.trim() !== '') notifyTyping(channelId);
        }}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
            e.preventDefault();
            send();
          }
        }}
      />
      {offline && (
        <span id={`${id}-offline`} className="visually-hidden">
          You are offline; messages are sent when the connection is back.
        </span>
      )}
      <button
        type="submit"
        className="composer-send"
        aria-label="Send"
        title="Send (Enter)"
        aria-disabled={text.trim() === '' || undefined}
      >
        <svg viewBox="0 0 20 20" width="18" height="18" aria-hidden="true">
          <path d="M3 10l14-6-5 14-2.5-5.5z" fill="currentColor" />
        </svg>
      </button>
    </form>
  );
}
