import { useConnection } from '../lib/chat-store';
import { useNow } from './useNow';

// Says why messages may be late. Always in the DOM so that screen readers
// hear each change; hidden (and empty) while online.
export function ConnectionBanner() {
  const { status, retryAt, attempt } = useConnection();
  const waiting = retryAt !== null && status !== 'online';
  const now = useNow(250, waiting);
  const text = bannerText(status, retryAt, attempt, now);
  return (
    <div
      role="status"
      className={`connection-banner connection-banner--${status}`}
      hidden={text === null}
    >
      {text}
    </div>
  );
}

export function bannerText(
  status: string,
  retryAt: number | null,
  attempt: number,
  now: number,
): string | null {
  if (status === 'online') return null;
  if (retryAt !== null && retryAt > now) {
    const s = Math.max(1, Math.ceil((retryAt - now) / 1000));
    return `Offline — reconnecting in ${s} s`;
  }
  if (status === 'connecting' && attempt === 0) return 'Connecting…';
  if (status === 'offline') return 'Offline';
  return 'Reconnecting…';
}
