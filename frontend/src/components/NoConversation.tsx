// The right pane on a wide screen before a conversation is picked.
export function NoConversation() {
  return (
    <div className="no-conversation">
      <svg viewBox="0 0 64 64" width="64" height="64" aria-hidden="true">
        <rect x="6" y="10" width="40" height="28" rx="8" fill="var(--accent-soft)" />
        <rect x="18" y="26" width="40" height="28" rx="8" fill="var(--accent)" opacity="0.8" />
      </svg>
      <h2>Pick a conversation</h2>
      <p>Choose a channel on the left, or start a new one.</p>
    </div>
  );
}
