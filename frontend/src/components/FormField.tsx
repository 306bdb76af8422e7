import { useId, type InputHTMLAttributes } from 'react';
import { ApiError } from '../lib/api';

interface FormFieldProps extends InputHTMLAttributes<HTMLInputElement> {
  label: string;
  hint?: string;
  // the field the server's error is about; marked invalid
  invalid?: boolean;
  // what is wrong with the value, shown under the field
  error?: string | null;
}

// A labelled input with an optional hint and error tied to it.
export function FormField({ label, hint, invalid, error, id, ...input }: FormFieldProps) {
  const autoId = useId();
  const inputId = id ?? autoId;
  const hintId = `${inputId}-hint`;
  const errorId = `${inputId}-error`;
  const described = [error ? errorId : null, hint ? hintId : null].filter(Boolean).join(' ');
  return (
    <div className="field">
      <label htmlFor={inputId}>{label}</label>
      <input
        id={inputId}
        aria-invalid={invalid || error ? true : undefined}
        aria-describedby={described || undefined}
        {...input}
      />
      {error && (
        <p id={errorId} className="field-error">
          {error}
        </p>
      )}
      {hint && (
        <p id={hintId} className="field-hint">
          {hint}
        </p>
      )}
    </div>
  );
}

// What a failed request says about one field, worded for under it: a
// taken username (409 username_taken) is the one the server reports.
export function fieldErrorText(error: unknown, field: string): string | null {
  if (!(error instanceof ApiError) || error.field !== field) return null;
  if (error.code === 'username_taken') return 'This username is taken.';
  return null;
}

// Whether a failed request's error names this field.
export function isFieldError(error: unknown, field: string): boolean {
  return error instanceof ApiError && error.field === field;
}

interface FormErrorProps {
  error: unknown;
}

// The message of a failed request, as the server words it.
export function FormError({ error }: FormErrorProps) {
  if (!error) return null;
  // shown under its field instead
  if (error instanceof ApiError && error.field && fieldErrorText(error, error.field)) return null;
  const message =
    error instanceof Error ? error.message : 'Something went wrong.';
  return (
    <p role="alert" className="form-error">
      {message}
    </p>
  );
}
