interface PresenceDotProps {
  online: boolean;
  className?: string;
}

// A small green (online) or hollow grey (offline) dot, named for readers.
export function PresenceDot({ online, className }: PresenceDotProps) {
  const state = online ? 'online' : 'offline';
  return (
    <span
      role="img"
      aria-label={state}
      title={online ? 'Online' : 'Offline'}
      className={`presence-dot presence-dot--${state}${className ? ` ${className}` : ''}`}
    />
  );
}
