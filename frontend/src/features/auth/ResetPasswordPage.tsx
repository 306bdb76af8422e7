import { useMutation } from '@tanstack/react-query';
import { Link, useNavigate, useSearchParams } from 'react-router';
import { api } from '../../lib/api';
import { useAuth } from '../../lib/auth';
import { FormError, FormField, isFieldError } from '../../components/FormField';
import { SubmitButton } from '../../components/SubmitButton';
import { AuthLayout } from './AuthLayout';

// Opened from the mailed link: sets the new password and signs in.
export function ResetPasswordPage() {
  const [params] = useSearchParams();
  const token = params.get('token') ?? '';
  const navigate = useNavigate();
  const reset = useMutation({
    mutationFn: (password: string) => api.resetPassword(token, password),
    onSuccess: (r) => {
      useAuth.getState().setSession(r);
      navigate('/', { replace: true });
    },
  });

  if (!token) {
    return (
      <AuthLayout title="This link is incomplete">
        <p className="auth-message">
          Open the link from the email again, or{' '}
          <Link to="/forgot-password">ask for a new one</Link>.
        </p>
      </AuthLayout>
    );
  }

  return (
    <AuthLayout
      title="Set a new password"
      footer={
        <p>
          Link expired? <Link to="/forgot-password">Send a new one</Link>
        </p>
      }
    >
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget);
          reset.mutate(String(f.get('password') ?? ''));
        }}
      >
        <FormError error={reset.error} />
        <FormField
          label="New password"
          name="password"
          type="password"
          autoComplete="new-password"
          required
          minLength={8}
          autoFocus
          hint="At least 8 characters."
          invalid={isFieldError(reset.error, 'password')}
        />
        <SubmitButton pending={reset.isPending} wide>
          Set password
        </SubmitButton>
      </form>
    </AuthLayout>
  );
}
