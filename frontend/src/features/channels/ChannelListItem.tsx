import { NavLink } from 'react-router';
import { usePresence } from '../../lib/chat-store';
import type { Channel, Member, UserRef } from '../../lib/types';
import { Avatar } from '../../components/Avatar';
import { PresenceDot } from '../../components/PresenceDot';
import { formatFull, formatRelative } from '../../components/format';
import { channelDisplayName, otherMember } from './useChannels';

interface ChannelListItemProps {
  channel: Channel;
  me: UserRef | null;
  now: number;
}

export function ChannelListItem({ channel, me, now }: ChannelListItemProps) {
  const name = channelDisplayName(channel, me);
  const other = otherMember(channel, me?.id);
  const last = channel.last_message;
  const unread = channel.unread;

  return (
    <li>
      <NavLink
        to={`/c/${channel.id}`}
        className={({ isActive }) =>
          `channel-item${isActive ? ' channel-item--active' : ''}${unread > 0 ? ' channel-item--unread' : ''}`
        }
      >
        <Avatar name={name} kind={channel.direct ? 'person' : 'channel'} />
        <span className="channel-item-main">
          <span className="channel-item-top">
            <span className="channel-item-name">{name}</span>
            {last && (
              <time
                className="channel-item-time"
                dateTime={last.created_at}
                title={formatFull(last.created_at)}
              >
                {formatRelative(last.created_at, new Date(now))}
              </time>
            )}
          </span>
          <span className="channel-item-bottom">
            <span className="channel-item-preview">{preview(channel, me)}</span>
            {unread > 0 && (
              <span className="unread-badge" role="img" aria-label={`${unread} unread`}>
                {unread > 99 ? '99+' : unread}
              </span>
            )}
          </span>
        </span>
        {other && <DirectPresence member={other} />}
      </NavLink>
    </li>
  );
}

function DirectPresence({ member }: { member: Member }) {
  const online = usePresence(member.id, member.online);
  return <PresenceDot online={online} className="channel-item-presence" />;
}

function preview(c: Channel, me: UserRef | null): string {
  const m = c.last_message;
  if (!m) return c.direct ? 'Say hello' : 'No messages yet';
  if (m.deleted) return 'This message was deleted';
  const text = m.text.replace(/\s+/g, ' ').trim();
  if (m.author.id === me?.id) return `You: ${text}`;
  if (!c.direct) return `${m.author.username}: ${text}`;
  return text;
}
