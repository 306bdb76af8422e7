import { useEffect, useRef, useState } from 'react';
import { Link, useNavigate, useParams } from 'react-router';
import { useAuth } from '../../lib/auth';
import { loadNewest, useChat } from '../../lib/chat-store';
import { ChannelSettingsDialog } from '../channels/ChannelSettingsDialog';
import { channelDisplayName, useChannel } from '../channels/useChannels';
import { ConversationHeader } from './ConversationHeader';
import { MessageComposer } from './MessageComposer';
import { MessageList } from './MessageList';
import { TypingIndicator } from './TypingIndicator';

// The route /c/:channelId. Each channel gets a fresh view (scroll
// position, editing state, settings dialog).
export function Conversation() {
  const { channelId = '' } = useParams();
  return <ConversationView key={channelId} channelId={channelId} />;
}

function ConversationView({ channelId }: { channelId: string }) {
  const me = useAuth((s) => s.user);
  const { channel, isPending, error } = useChannel(channelId);
  const [settingsOpen, setSettingsOpen] = useState(false);
  const navigate = useNavigate();

  useEffect(() => {
    useChat.getState().setOpenChannel(channelId);
    return () => {
      if (useChat.getState().openChannelId === channelId) useChat.getState().setOpenChannel(null);
    };
  }, [channelId]);

  useEffect(() => {
    if (channel) void loadNewest(channelId);
  }, [channel, channelId]);

  // the channel went away while open (left here or elsewhere): back to
  // the list
  const hadChannel = useRef(false);
  useEffect(() => {
    if (channel) hadChannel.current = true;
    else if (hadChannel.current && !isPending) navigate('/', { replace: true });
  }, [channel, isPending, navigate]);

  if (!channel) {
    if (isPending) {
      return (
        <section className="conversation conversation--loading" aria-busy="true">
          <span className="spinner" aria-hidden="true" />
        </section>
      );
    }
    return (
      <section className="conversation conversation--missing">
        <div className="no-conversation">
          <h1>This conversation isn’t available</h1>
          <p>{error?.message ?? 'It does not exist, or you are not a member.'}</p>
          <Link to="/" className="button">
            Back to your channels
          </Link>
        </div>
      </section>
    );
  }

  const name = channelDisplayName(channel, me);
  return (
    <section className="conversation" aria-label={name}>
      <ConversationHeader channel={channel} name={name} me={me} onSettings={() => setSettingsOpen(true)} />
      <MessageList channelId={channelId} channelName={name} me={me} />
      <TypingIndicator channelId={channelId} />
      <MessageComposer channelId={channelId} placeholder={channel.direct ? `Message ${name}` : `Message #${name}`} />
      {settingsOpen && (
        <ChannelSettingsDialog channel={channel} me={me} onClose={() => setSettingsOpen(false)} />
      )}
    </section>
  );
}
