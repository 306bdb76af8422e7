import { useMutation } from '@tanstack/react-query';
import { Link, Navigate, useSearchParams } from 'react-router';
import { api } from '../../lib/api';
import { useAuth } from '../../lib/auth';
import { FormError, FormField, fieldErrorText, isFieldError } from '../../components/FormField';
import { SubmitButton } from '../../components/SubmitButton';
import { AuthLayout } from './AuthLayout';

// Opened from an invitation mail: the invited account picks its name and
// password, then lands in the channel it was invited to.
export function InvitePage() {
  const [params] = useSearchParams();
  const channel = params.get('channel') ?? '';
  const token = params.get('token') ?? '';
  const signedIn = useAuth((s) => s.token !== null);
  const accept = useMutation({
    mutationFn: (v: { username: string; password: string }) =>
      api.acceptInvite(token, v.username, v.password),
    onSuccess: (r) => useAuth.getState().setSession(r),
  });

  if (signedIn) {
    return (
      <Navigate to={channel ? `/c/${encodeURIComponent(channel)}` : '/'} replace />
    );
  }

  if (!token) {
    return (
      <AuthLayout title="This invitation link is incomplete">
        <p className="auth-message">
          Open the link from the email again, or{' '}
          <Link to="/signin">sign in</Link> if you have an account.
        </p>
      </AuthLayout>
    );
  }

  return (
    <AuthLayout
      title="Join the conversation"
      intro={<p>You were invited to a channel. Choose how others see you and a password.</p>}
      footer={
        <p>
          Have an account already? <Link to="/signin">Sign in</Link>
        </p>
      }
    >
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget);
          accept.mutate({
            username: String(f.get('username') ?? ''),
            password: String(f.get('password') ?? ''),
          });
        }}
      >
        <FormError error={accept.error} />
        <FormField
          label="Username"
          name="username"
          autoComplete="username"
          required
          maxLength={32}
          autoFocus
          invalid={isFieldError(accept.error, 'username')}
          error={fieldErrorText(accept.error, 'username')}
        />
        <FormField
          label="Password"
          name="password"
          type="password"
          autoComplete="new-password"
          required
          minLength={8}
          hint="At least 8 characters."
          invalid={isFieldError(accept.error, 'password')}
        />
        <SubmitButton pending={accept.isPending} wide>
          Join
        </SubmitButton>
      </form>
    </AuthLayout>
  );
}
