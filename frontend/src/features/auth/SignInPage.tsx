import { useMutation } from '@tanstack/react-query';
import { Link, useLocation } from 'react-router';
import { api } from '../../lib/api';
import { useAuth } from '../../lib/auth';
import { FormError, FormField, isFieldError } from '../../components/FormField';
import { SubmitButton } from '../../components/SubmitButton';
import { AuthLayout } from './AuthLayout';

export function SignInPage() {
  const location = useLocation();
  const signIn = useMutation({
    mutationFn: (v: { email: string; password: string }) =>
      api.login(v.email, v.password),
    onSuccess: (r) => useAuth.getState().setSession(r),
  });

  return (
    <AuthLayout
      title="Sign in"
      footer={
        <p>
          New here?{' '}
          <Link to="/signup" state={location.state}>
            Create an account
          </Link>
        </p>
      }
    >
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget);
          signIn.mutate({
            email: String(f.get('email') ?? ''),
            password: String(f.get('password') ?? ''),
          });
        }}
      >
        <FormError error={signIn.error} />
        <FormField
          label="Email"
          name="email"
          type="email"
          autoComplete="email"
          required
          autoFocus
          invalid={isFieldError(signIn.error, 'email')}
        />
        <FormField
          label="Password"
          name="password"
          type="password"
          autoComplete="current-password"
          required
          invalid={isFieldError(signIn.error, 'password')}
        />
        <div className="form-row-end">
          <Link to="/forgot-password">Forgot password?</Link>
        </div>
        <SubmitButton pending={signIn.isPending} wide>
          Sign in
        </SubmitButton>
      </form>
    </AuthLayout>
  );
}
