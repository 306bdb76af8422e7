import { useTyping } from '../../lib/chat-store';

interface TypingIndicatorProps {
  channelId: string;
}

// "Ada is typing…" under the messages; the line keeps its height so the
// list does not jump when it comes and goes.
export function TypingIndicator({ channelId }: TypingIndicatorProps) {
  const names = useTyping(channelId);
  return (
    <div className="typing-indicator" aria-live="polite">
      {names.length > 0 && (
        <>
          <span className="typing-dots" aria-hidden="true">
            <span />
            <span />
            <span />
          </span>
          <span>{typingText(names)}</span>
        </>
      )}
    </div>
  );
}

export function typingText(names: string[]): string {
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  return 'Several people are typing…';
}
