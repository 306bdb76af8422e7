import type { CSSProperties } from 'react';

interface AvatarProps {
  name: string;
  kind?: 'person' | 'channel';
  size?: 'small' | 'medium';
}

// Initials on a colour picked from the name, so a person keeps one colour.
// Decorative: the name is always written next to it.
export function Avatar({ name, kind = 'person', size = 'medium' }: AvatarProps) {
  const letters =
    kind === 'channel'
      ? '#'
      : Array.from(name.trim())
          .slice(0, 1)
          .join('')
          .toLocaleUpperCase() || '?';
  return (
    <span
      aria-hidden="true"
      className={`avatar avatar--${size} avatar--${kind}`}
      style={{ '--avatar-hue': hue(name) } as CSSProperties}
    >
      {letters}
    </span>
  );
}

function hue(name: string): number {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) % 360;
  return h;
}
