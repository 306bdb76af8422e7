import type { ReactNode } from 'react';

interface SubmitButtonProps {
  pending: boolean;
  children: ReactNode;
  wide?: boolean;
  disabled?: boolean;
}

// A form's main button. It keeps its name while the request runs and shows
// a spinner instead; a second press is ignored.
export function SubmitButton({ pending, children, wide, disabled }: SubmitButtonProps) {
  return (
    <button
      type="submit"
      className={`button button--primary${wide ? ' button--wide' : ''}`}
      aria-busy={pending || undefined}
      aria-disabled={pending || disabled || undefined}
      onClick={(e) => {
        if (pending || disabled) e.preventDefault();
      }}
    >
      {children}
    </button>
  );
}
