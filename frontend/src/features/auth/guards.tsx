import type { ReactNode } from 'react';
import { Navigate, useLocation, type Location } from 'react-router';
import { useAuth } from '../../lib/auth';

// Set when the person signs out themselves: the next sign-in starts from
// the channel list rather than the page they were on.
let signedOutByUser = false;

export function signOutByUser(): void {
  signedOutByUser = true;
  useAuth.getState().signOut();
}

interface GuardProps {
  children: ReactNode;
}

// Signed-out visitors go to /signin, which brings them back afterwards.
export function RequireAuth({ children }: GuardProps) {
  const token = useAuth((s) => s.token);
  const location = useLocation();
  if (token) {
    signedOutByUser = false;
    return children;
  }
  return (
    <Navigate
      to="/signin"
      replace
      state={signedOutByUser ? undefined : { from: location }}
    />
  );
}

// The sign-in pages are for signed-out visitors only.
export function RedirectIfSignedIn({ children }: GuardProps) {
  const token = useAuth((s) => s.token);
  const location = useLocation();
  if (!token) return children;
  const from = (location.state as { from?: Location } | null)?.from;
  const to = from ? `${from.pathname}${from.search}${from.hash}` : '/';
  return <Navigate to={to} replace />;
}
