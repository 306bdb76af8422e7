import { useMutation } from '@tanstack/react-query';
import { Link, useLocation } from 'react-router';
import { api } from '../../lib/api';
import { useAuth } from '../../lib/auth';
import { FormError, FormField, fieldErrorText, isFieldError } from '../../components/FormField';
import { SubmitButton } from '../../components/SubmitButton';
import { AuthLayout } from './AuthLayout';

export function SignUpPage() {
  const location = useLocation();
  const signUp = useMutation({
    mutationFn: (v: { email: string; password: string; username: string }) =>
      api.signup(v.email, v.password, v.username),
    onSuccess: (r) => useAuth.getState().setSession(r),
  });

  return (
    <AuthLayout
      title="Create your account"
      intro={<p>Chat with your team and friends, in real time.</p>}
      footer={
        <p>
          Already have an account?{' '}
          <Link to="/signin" state={location.state}>
            Sign in
          </Link>
        </p>
      }
    >
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget);
          signUp.mutate({
            email: String(f.get('email') ?? ''),
            username: String(f.get('username') ?? ''),
            password: String(f.get('password') ?? ''),
          });
        }}
      >
        <FormError error={signUp.error} />
        <FormField
          label="Email"
          name="email"
          type="email"
          autoComplete="email"
          required
          autoFocus
          invalid={isFieldError(signUp.error, 'email')}
        />
        <FormField
          label="Username"
          name="username"
          autoComplete="username"
          required
          maxLength={32}
          hint="How others see you, up to 32 characters."
          invalid={isFieldError(signUp.error, 'username')}
          error={fieldErrorText(signUp.error, 'username')}
        />
        <FormField
          label="Password"
          name="password"
          type="password"
          autoComplete="new-password"
          required
          minLength={8}
          hint="At least 8 characters."
          invalid={isFieldError(signUp.error, 'password')}
        />
        <SubmitButton pending={signUp.isPending} wide>
          Create account
        </SubmitButton>
      </form>
    </AuthLayout>
  );
}
