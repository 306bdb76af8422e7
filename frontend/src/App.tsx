import { createBrowserRouter, RouterProvider } from 'react-router';
import { AppShell } from './components/AppShell';
import { NoConversation } from './components/NoConversation';
import { NotFoundPage } from './components/NotFoundPage';
import { ForgotPasswordPage } from './features/auth/ForgotPasswordPage';
import { InvitePage } from './features/auth/InvitePage';
import { RedirectIfSignedIn, RequireAuth } from './features/auth/guards';
import { ResetPasswordPage } from './features/auth/ResetPasswordPage';
import { SignInPage } from './features/auth/SignInPage';
import { SignUpPage } from './features/auth/SignUpPage';
import { Conversation } from './features/conversation/Conversation';

const router = createBrowserRouter([
  {
    path: '/signin',
    element: (
      <RedirectIfSignedIn>
        <SignInPage />
      </RedirectIfSignedIn>
    ),
  },
  {
    path: '/signup',
    element: (
      <RedirectIfSignedIn>
        <SignUpPage />
      </RedirectIfSignedIn>
    ),
  },
  {
    path: '/forgot-password',
    element: (
      <RedirectIfSignedIn>
        <ForgotPasswordPage />
      </RedirectIfSignedIn>
    ),
  },
  { path: '/reset-password', element: <ResetPasswordPage /> },
  { path: '/invite', element: <InvitePage /> },
  {
    path: '/',
    element: (
      <RequireAuth>
        <AppShell />
      </RequireAuth>
    ),
    children: [
      { index: true, element: <NoConversation /> },
      { path: 'c/:channelId', element: <Conversation /> },
    ],
  },
  { path: '*', element: <NotFoundPage /> },
]);

export function App() {
  return <RouterProvider router={router} />;
}
