import { useEffect, useState } from 'react';
import { useQueryClient } from '@tanstack/react-query';
import { Outlet, useMatch, useNavigate } from 'react-router';
import { api } from '../lib/api';
import { useAuth } from '../lib/auth';
import { onNotificationClick, startLive } from '../lib/live';
import { signOutByUser } from '../features/auth/guards';
import { ChannelList } from '../features/channels/ChannelList';
import { NewChannelDialog } from '../features/channels/NewChannelDialog';
import { Avatar } from './Avatar';
import { ConnectionBanner } from './ConnectionBanner';
import { Logo } from './Logo';
import { NotificationsToggle } from './NotificationsToggle';

// The signed-in screen: channels on the left, the open conversation on
// the right; at phone width one of the two at a time.
export function AppShell() {
  const queryClient = useQueryClient();
  const user = useAuth((s) => s.user);
  const [creating, setCreating] = useState(false);
  const inConversation = useMatch('/c/:channelId') !== null;

  const navigate = useNavigate();

  useEffect(() => startLive(queryClient), [queryClient]);
  useEffect(() => {
    onNotificationClick((id) => navigate(`/c/${id}`));
    return () => onNotificationClick(null);
  }, [navigate]);
  useEffect(() => {
    // the stored token signed in at once; the server confirms who it is
    api.me().then(
      (u) => useAuth.getState().setUser(u),
      () => {
        // a refused token has signed out already; offline: keep going
      },
    );
  }, []);

  return (
    <div className={`shell${inConversation ? ' shell--conversation' : ' shell--list'}`}>
      <ConnectionBanner />
      <aside className="sidebar">
        <header className="sidebar-header">
          <Logo />
          <button
            type="button"
            className="button button--primary button--small"
            onClick={() => setCreating(true)}
          >
            <PlusIcon />
            New channel
          </button>
        </header>
        <ChannelList onCreate={() => setCreating(true)} />
        <footer className="sidebar-footer">
          <NotificationsToggle />
          <div className="me">
            {user && <Avatar name={user.username} size="small" />}
            <span className="me-name">{user?.username ?? ''}</span>
            <button
              type="button"
              className="button button--ghost button--small"
              onClick={signOutByUser}
            >
              Sign out
            </button>
          </div>
        </footer>
      </aside>
      <main className="main-pane">
        <Outlet />
      </main>
      {creating && <NewChannelDialog onClose={() => setCreating(false)} />}
    </div>
  );
}

function PlusIcon() {
  return (
    <svg viewBox="0 0 20 20" width="16" height="16" aria-hidden="true">
      <path d="M10 4v12M4 10h12" stroke="currentColor" strokeWidth="2" strokeLinecap="round" />
    </svg>
  );
}
