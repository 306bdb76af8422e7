import { afterEach } from 'vitest';
import { cleanup } from '@testing-library/react';

// vitest runs without globals, so Testing Library cannot unmount by itself
afterEach(() => {
  cleanup();
});
