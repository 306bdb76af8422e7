import { useAuth } from '../../lib/auth';
import { useNow } from '../../components/useNow';
import { ChannelListItem } from './ChannelListItem';
import { useChannels } from './useChannels';

interface ChannelListProps {
  onCreate(): void;
}

export function ChannelList({ onCreate }: ChannelListProps) {
  const me = useAuth((s) => s.user);
  const channels = useChannels();
  const now = useNow(30_000);

  let body;
  if (channels.isPending) {
    body = (
      <ul className="channel-list" aria-busy="true">
        {[0, 1, 2].map((i) => (
          <li key={i} className="channel-item channel-item--skeleton" aria-hidden="true" />
        ))}
      </ul>
    );
  } else if (channels.isError) {
    body = (
      <div className="list-message">
        <p role="alert">{channels.error.message}</p>
        <button type="button" className="button" onClick={() => void channels.refetch()}>
          Try again
        </button>
      </div>
    );
  } else if (channels.data.length === 0) {
    body = (
      <div className="list-message list-message--empty">
        <p>No channels yet — create one</p>
        <button type="button" className="button button--primary" onClick={onCreate}>
          Create a channel
        </button>
      </div>
    );
  } else {
    body = (
      <ul className="channel-list">
        {channels.data.map((c) => (
          <ChannelListItem key={c.id} channel={c} me={me} now={now} />
        ))}
      </ul>
    );
  }

  return (
    <nav className="channel-nav" aria-label="Channels">
      {body}
    </nav>
  );
}
