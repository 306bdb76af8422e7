import { useMutation } from '@tanstack/react-query';
import { Link } from 'react-router';
import { api } from '../../lib/api';
import { FormError, FormField, isFieldError } from '../../components/FormField';
import { SubmitButton } from '../../components/SubmitButton';
import { AuthLayout } from './AuthLayout';

export function ForgotPasswordPage() {
  const forgot = useMutation({
    mutationFn: (email: string) => api.forgotPassword(email).then(() => email),
  });

  if (forgot.isSuccess) {
    return (
      <AuthLayout
        title="Check your email"
        footer={
          <p>
            <Link to="/signin">Back to sign in</Link>
          </p>
        }
      >
        <p className="auth-message">
          If an account uses <strong>{forgot.data}</strong>, a link to set a
          new password is on its way. It works once, for a short while.
        </p>
      </AuthLayout>
    );
  }

  return (
    <AuthLayout
      title="Forgot your password?"
      intro={<p>Enter your email and we will send you a link to set a new one.</p>}
      footer={
        <p>
          Remembered it? <Link to="/signin">Sign in</Link>
        </p>
      }
    >
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget);
          forgot.mutate(String(f.get('email') ?? ''));
        }}
      >
        <FormError error={forgot.error} />
        <FormField
          label="Email"
          name="email"
          type="email"
          autoComplete="email"
          required
          autoFocus
          invalid={isFieldError(forgot.error, 'email')}
        />
        <SubmitButton pending={forgot.isPending} wide>
          Send reset link
        </SubmitButton>
      </form>
    </AuthLayout>
  );
}
