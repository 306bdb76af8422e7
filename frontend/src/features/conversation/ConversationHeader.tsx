import { Link } from 'react-router';
import { useShallow } from 'zustand/react/shallow';
import { useChat } from '../../lib/chat-store';
import type { Channel, UserRef } from '../../lib/types';
import { Avatar } from '../../components/Avatar';
import { otherMember } from '../channels/useChannels';

interface ConversationHeaderProps {
  channel: Channel;
  name: string;
  me: UserRef | null;
  onSettings(): void;
}

export function ConversationHeader({ channel, name, me, onSettings }: ConversationHeaderProps) {
  const online = useChat(
    useShallow((s) => channel.members.map((m) => m.id === me?.id || (s.presence[m.id] ?? m.online))),
  );
  const other = otherMember(channel, me?.id);
  let presence: string;
  let anyOnline: boolean;
  if (other) {
    const i = channel.members.indexOf(other);
    anyOnline = online[i] ?? false;
    presence = anyOnline ? 'Online' : 'Offline';
  } else {
    const n = online.filter(Boolean).length;
    anyOnline = n > 1;
    const count = channel.members.length;
    presence = `${count} ${count === 1 ? 'member' : 'members'} · ${n} online`;
  }

  return (
    <header className="conversation-header">
      <Link to="/" className="icon-button back-button" aria-label="Back to channels">
        <svg viewBox="0 0 20 20" width="20" height="20" aria-hidden="true">
          <path d="M12.5 4.5L7 10l5.5 5.5" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round" />
        </svg>
      </Link>
      <Avatar name={name} kind={channel.direct ? 'person' : 'channel'} />
      <div className="conversation-title">
        <h1>{name}</h1>
        <p className="conversation-presence">
          <span className={`presence-mark${anyOnline ? ' presence-mark--on' : ''}`} aria-hidden="true" />
          {presence}
        </p>
      </div>
      <button type="button" className="icon-button" aria-label="Channel settings" title="Channel settings" onClick={onSettings}>
        <svg viewBox="0 0 20 20" width="20" height="20" aria-hidden="true">
          <circle cx="4.5" cy="10" r="1.6" fill="currentColor" />
          <circle cx="10" cy="10" r="1.6" fill="currentColor" />
          <circle cx="15.5" cy="10" r="1.6" fill="currentColor" />
        </svg>
      </button>
    </header>
  );
}
