import { memo, useLayoutEffect, useRef, useState } from 'react';
import { useMutation } from '@tanstack/react-query';
import { api } from '../../lib/api';
import { useChat, type Pending } from '../../lib/chat-store';
import { discardMessage, retryMessage } from '../../lib/live';
import { linkify } from '../../lib/linkify';
import type { Message, UserRef } from '../../lib/types';
import { Avatar } from '../../components/Avatar';
import { Dialog } from '../../components/Dialog';
import { FormError } from '../../components/FormField';
import { formatFull, formatTime } from '../../components/format';

interface DaySeparatorProps {
  label: string;
}

export function DaySeparator({ label }: DaySeparatorProps) {
  return (
    <div role="separator" aria-label={label} className="day-separator">
      <span aria-hidden="true">{label}</span>
    </div>
  );
}

interface MessageItemProps {
  message: Message;
  me: UserRef | null;
  grouped: boolean;
  day: string | null;
}

// A message from the server: text, author and time; the author's own ones
// can be edited in place or deleted.
export const MessageItem = memo(function MessageItem({ message, me, grouped, day }: MessageItemProps) {
  const [editing, setEditing] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const own = message.author.id === me?.id;
  const deleted = message.deleted === true;
  const time = formatTime(message.created_at);

  return (
    <>
      {day && <DaySeparator label={day} />}
      <article
        aria-label={`${message.author.username} at ${time}`}
        className={`message${grouped ? ' message--grouped' : ''}${own ? ' message--own' : ''}${deleted ? ' message--deleted' : ''}${editing ? ' message--editing' : ''}`}
      >
        <MessageGutter author={message.author.username} grouped={grouped} time={time} iso={message.created_at} />
        <div className="message-body">
          {!grouped && (
            <MessageHeader author={message.author.username} time={time} iso={message.created_at} />
          )}
          {deleted ? (
            <p className="message-text message-text--deleted">This message was deleted</p>
          ) : editing ? (
            <EditMessageForm message={message} onDone={() => setEditing(false)} />
          ) : (
            <div className="message-content">
              <p className="message-text">{linkify(message.text)}</p>
              {message.edited_at && (
                <span className="message-edited" title={`Edited ${formatFull(message.edited_at)}`}>
                  (edited)
                </span>
              )}
            </div>
          )}
        </div>
        {own && !deleted && !editing && (
          <div className="message-actions">
            <button type="button" className="icon-button" aria-label="Edit message" title="Edit" onClick={() => setEditing(true)}>
              <PencilIcon />
            </button>
            <button type="button" className="icon-button" aria-label="Delete message" title="Delete" onClick={() => setConfirming(true)}>
              <TrashIcon />
            </button>
          </div>
        )}
      </article>
      {confirming && <DeleteMessageDialog message={message} onClose={() => setConfirming(false)} />}
    </>
  );
});

interface PendingItemProps {
  pending: Pending;
  me: UserRef | null;
  grouped: boolean;
  day: string | null;
}

// A message of mine the server has not confirmed yet.
export const PendingItem = memo(function PendingItem({ pending, me, grouped, day }: PendingItemProps) {
  const iso = new Date(pending.createdAt).toISOString();
  const time = formatTime(iso);
  const author = me?.username ?? 'You';
  const failed = pending.state === 'failed';
  return (
    <>
      {day && <DaySeparator label={day} />}
      <article
        aria-label={`${author} at ${time}`}
        className={`message message--own message--pending${failed ? ' message--failed' : ''}${grouped ? ' message--grouped' : ''}`}
      >
        <MessageGutter author={author} grouped={grouped} time={time} iso={iso} />
        <div className="message-body">
          {!grouped && <MessageHeader author={author} time={time} iso={iso} />}
          <p className="message-text">{linkify(pending.text)}</p>
          {failed ? (
            <p className="message-status message-status--failed">
              <span>Not sent</span>
              {pending.error && <span className="message-status-detail"> — {pending.error}</span>}
              <button type="button" className="link-button" onClick={() => retryMessage(pending.clientId)}>
                Retry
              </button>
              <button type="button" className="link-button link-button--muted" onClick={() => discardMessage(pending.clientId)}>
                Discard
              </button>
            </p>
          ) : (
            <p className="message-status">Sending…</p>
          )}
        </div>
      </article>
    </>
  );
});

function MessageGutter({ author, grouped, time, iso }: { author: string; grouped: boolean; time: string; iso: string }) {
  if (!grouped) return <Avatar name={author} />;
  return (
    <time className="message-gutter-time" dateTime={iso} title={formatFull(iso)} aria-hidden="true">
      {time}
    </time>
  );
}

function MessageHeader({ author, time, iso }: { author: string; time: string; iso: string }) {
  return (
    <header className="message-header">
      <span className="message-author">{author}</span>
      <time className="message-time" dateTime={iso} title={formatFull(iso)}>
        {time}
      </time>
    </header>
  );
}

interface EditMessageFormProps {
  message: Message;
  onDone(): void;
}

function EditMessageForm({ message, onDone }: EditMessageFormProps) {
  const [text, setText] = useState(message.text);
  const ref = useRef<HTMLTextAreaElement>(null);
  const save = useMutation({
    mutationFn: (t: string) => api.editMessage(message.channel_id, message.id, t),
    onSuccess: (m) => {
      useChat.getState().updateMessage(m);
      onDone();
    },
  });

  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, 240)}px`;
  }, [text]);

  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.focus();
    el.setSelectionRange(el.value.length, el.value.length);
  }, []);

  const submit = () => {
    const t = text.trim();
    if (save.isPending || t === '') return;
    if (t === message.text) onDone();
    else save.mutate(t);
  };

  return (
    <form
      className="edit-form"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <textarea
        ref={ref}
        aria-label="Edit message"
        value={text}
        rows={1}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
            e.preventDefault();
            submit();
          } else if (e.key === 'Escape') {
            e.preventDefault();
            e.stopPropagation();
            onDone();
          }
        }}
      />
      <FormError error={save.error} />
      <div className="edit-actions">
        <span className="edit-hint">Enter to save, Escape to cancel</span>
        <button type="button" className="button button--small" onClick={onDone}>
          Cancel
        </button>
        <button type="submit" className="button button--primary button--small" aria-busy={save.isPending || undefined} disabled={text.trim() === ''}>
          Save
        </button>
      </div>
    </form>
  );
}

function DeleteMessageDialog({ message, onClose }: { message: Message; onClose(): void }) {
  const remove = useMutation({
    mutationFn: () => api.deleteMessage(message.channel_id, message.id),
    onSuccess: (m) => {
      useChat.getState().updateMessage(m);
      onClose();
    },
  });
  return (
    <Dialog title="Delete message?" onClose={onClose} className="dialog--confirm">
      <p className="confirm-text">Everyone in the conversation will see “This message was deleted” instead.</p>
      <blockquote className="confirm-quote">{message.text}</blockquote>
      <FormError error={remove.error} />
      <div className="dialog-actions">
        <button type="button" className="button" onClick={onClose} data-autofocus>
          Cancel
        </button>
        <button
          type="button"
          className="button button--danger"
          aria-busy={remove.isPending || undefined}
          onClick={() => {
            if (!remove.isPending) remove.mutate();
          }}
        >
          Delete
        </button>
      </div>
    </Dialog>
  );
}

function PencilIcon() {
  return (
    <svg viewBox="0 0 20 20" width="16" height="16" aria-hidden="true">
      <path d="M13.5 3.5l3 3L7 16H4v-3z" fill="none" stroke="currentColor" strokeWidth="1.6" strokeLinejoin="round" />
    </svg>
  );
}

function TrashIcon() {
  return (
    <svg viewBox="0 0 20 20" width="16" height="16" aria-hidden="true">
      <path d="M4 6h12M8 6V4h4v2M6 6l1 10h6l1-10" fill="none" stroke="currentColor" strokeWidth="1.6" strokeLinejoin="round" strokeLinecap="round" />
    </svg>
  );
}
