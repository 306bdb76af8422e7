import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen } from '@testing-library/react';
import { ApiError } from '../lib/api';
import { FormError, FormField, fieldErrorText } from './FormField';

const taken = new ApiError(409, 'username_taken', 'this username is taken', 'username');

describe('FormField', () => {
  afterEach(cleanup);

  it('words a taken username for its field only', () => {
    expect(fieldErrorText(taken, 'username')).toBe('This username is taken.');
    expect(fieldErrorText(taken, 'email')).toBeNull();
    expect(fieldErrorText(new ApiError(409, 'email_taken', 'taken'), 'username')).toBeNull();
    expect(fieldErrorText(new Error('boom'), 'username')).toBeNull();
  });

  it('shows the error on the username field, not above the form', () => {
    render(
      <form>
        <FormError error={taken} />
        <FormField label="Username" name="username" hint="Up to 32 characters."
          error={fieldErrorText(taken, 'username')} />
      </form>,
    );
    const input = screen.getByLabelText('Username');
    expect(input.getAttribute('aria-invalid')).toBe('true');
    const described = (input.getAttribute('aria-describedby') ?? '').split(' ');
    const texts = described.map((id) => document.getElementById(id)?.textContent);
    expect(texts).toEqual(['This username is taken.', 'Up to 32 characters.']);
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('leaves other errors above the form', () => {
    render(<FormError error={new ApiError(409, 'email_taken', 'an account with this email exists already', undefined)} />);
    expect(screen.getByRole('alert').textContent).toBe('an account with this email exists already');
  });
});
