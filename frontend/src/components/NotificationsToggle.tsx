import { useState } from 'react';
import { useNotify } from '../lib/live';

// Opt-in desktop notifications for messages that arrive while the tab is
// in the background. Turning them on asks the browser's permission.
export function NotificationsToggle() {
  const { enabled, supported, denied, setEnabled } = useNotify();
  const [asked, setAsked] = useState(false);

  let note: string | null = null;
  if (asked && !enabled) {
    if (!supported) note = 'This browser cannot show notifications.';
    else if (denied) note = 'Notifications are blocked for this site in the browser settings.';
  }

  return (
    <div className="notify-toggle">
      <button
        type="button"
        className="switch"
        aria-pressed={enabled}
        onClick={() => {
          setAsked(true);
          void setEnabled(!enabled);
        }}
      >
        <span className="switch-track" aria-hidden="true">
          <span className="switch-thumb" />
        </span>
        <span className="switch-label">Enable notifications</span>
      </button>
      {note && (
        <p className="notify-note" aria-live="polite">
          {note}
        </p>
      )}
    </div>
  );
}
