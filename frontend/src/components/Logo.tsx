// The product's mark and name.
export function Logo() {
  return (
    <div className="logo">
      <svg viewBox="0 0 32 32" width="28" height="28" aria-hidden="true">
        <rect width="32" height="32" rx="9" fill="var(--accent)" />
        <path
          d="M9 11.5c0-1.4 1.1-2.5 2.5-2.5h9c1.4 0 2.5 1.1 2.5 2.5v6c0 1.4-1.1 2.5-2.5 2.5H15l-4 3.5V20h0.5C10.1 20 9 18.9 9 17.5z"
          fill="var(--accent-contrast)"
        />
      </svg>
      <span className="logo-name">Foko</span>
    </div>
  );
}
