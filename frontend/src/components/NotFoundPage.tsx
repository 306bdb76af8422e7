import { Link } from 'react-router';

export function NotFoundPage() {
  return (
    <main className="auth-page">
      <div className="auth-card">
        <h1>Nothing here</h1>
        <p className="auth-message">This address does not lead anywhere.</p>
        <Link to="/" className="button button--primary button--wide">
          Go to your channels
        </Link>
      </div>
    </main>
  );
}
