import { useId, useState } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useNavigate } from 'react-router';
import { api } from '../../lib/api';
import type { Channel, UserRef } from '../../lib/types';
import { Avatar } from '../../components/Avatar';
import { Dialog } from '../../components/Dialog';
import { FormError, FormField, isFieldError } from '../../components/FormField';
import { SubmitButton } from '../../components/SubmitButton';
import { useDebounced } from './useDebounced';

interface NewChannelDialogProps {
  onClose(): void;
}

type Kind = 'channel' | 'direct';

// Adds a channel to the cached list (if the server did not already) and
// returns the list.
export function withChannel(list: Channel[] | undefined, c: Channel): Channel[] {
  if (!list) return [c];
  return list.some((x) => x.id === c.id) ? list : [c, ...list];
}

export function NewChannelDialog({ onClose }: NewChannelDialogProps) {
  const [kind, setKind] = useState<Kind>('channel');
  const [name, setName] = useState('');
  const [person, setPerson] = useState<UserRef | null>(null);
  const queryClient = useQueryClient();
  const navigate = useNavigate();

  const create = useMutation({
    mutationFn: () =>
      kind === 'channel'
        ? api.createChannel({ name: name.trim(), members: [] })
        : api.createChannel({ members: person ? [person.id] : [] }),
    onSuccess: (c) => {
      queryClient.setQueryData<Channel[]>(['channels'], (old) => withChannel(old, c));
      onClose();
      navigate(`/c/${c.id}`);
    },
  });

  const ready = kind === 'channel' ? name.trim() !== '' : person !== null;

  return (
    <Dialog title="New channel" onClose={onClose}>
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          if (ready && !create.isPending) create.mutate();
        }}
      >
        <fieldset className="segmented">
          <legend className="visually-hidden">Kind of conversation</legend>
          <label className="segmented-option">
            <input
              type="radio"
              name="kind"
              value="channel"
              checked={kind === 'channel'}
              onChange={() => setKind('channel')}
            />
            <span>Channel</span>
          </label>
          <label className="segmented-option">
            <input
              type="radio"
              name="kind"
              value="direct"
              checked={kind === 'direct'}
              onChange={() => setKind('direct')}
            />
            <span>Direct message</span>
          </label>
        </fieldset>

        {kind === 'channel' ? (
          <FormField
            label="Channel name"
            name="name"
            value={name}
            onChange={(e) => setName(e.target.value)}
            autoComplete="off"
            data-autofocus
            required
            hint="You can invite people by email once it exists."
            invalid={isFieldError(create.error, 'name')}
          />
        ) : (
          <PersonPicker selected={person} onSelect={setPerson} />
        )}

        <FormError error={create.error} />
        <div className="dialog-actions">
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          <SubmitButton pending={create.isPending} disabled={!ready}>
            Create
          </SubmitButton>
        </div>
      </form>
    </Dialog>
  );
}

interface PersonPickerProps {
  selected: UserRef | null;
  onSelect(u: UserRef): void;
}

// A search box over the people of the server, with the matches in a
// listbox: arrows move, Enter picks, a click picks.
function PersonPicker({ selected, onSelect }: PersonPickerProps) {
  const [q, setQ] = useState('');
  const [active, setActive] = useState(0);
  const query = useDebounced(q.trim(), 250);
  const listId = useId();
  const inputId = useId();
  const users = useQuery({
    queryKey: ['users', query],
    queryFn: () => api.searchUsers(query),
    placeholderData: (prev) => prev,
  });
  const results = users.data ?? [];
  const activeUser = results[Math.min(active, results.length - 1)];

  return (
    <div className="field">
      <label htmlFor={inputId}>Find a person</label>
      <input
        id={inputId}
        type="search"
        value={q}
        autoFocus
        data-autofocus
        autoComplete="off"
        placeholder="Start typing a username"
        aria-controls={listId}
        aria-activedescendant={activeUser ? `${listId}-${activeUser.id}` : undefined}
        onChange={(e) => {
          setQ(e.target.value);
          setActive(0);
        }}
        onKeyDown={(e) => {
          if (e.key === 'ArrowDown') {
            e.preventDefault();
            setActive((i) => Math.min(i + 1, results.length - 1));
          } else if (e.key === 'ArrowUp') {
            e.preventDefault();
            setActive((i) => Math.max(i - 1, 0));
          } else if (e.key === 'Enter' && activeUser && selected?.id !== activeUser.id) {
            e.preventDefault();
            onSelect(activeUser);
          }
        }}
      />
      {users.isError && (
        <p role="alert" className="form-error">
          {users.error.message}
        </p>
      )}
      <ul id={listId} role="listbox" aria-label="People" className="person-list">
        {results.map((u, i) => (
          <li
            key={u.id}
            id={`${listId}-${u.id}`}
            role="option"
            aria-selected={selected?.id === u.id}
            className={`person-option${i === active ? ' person-option--active' : ''}`}
            onClick={() => {
              setActive(i);
              onSelect(u);
            }}
          >
            <Avatar name={u.username} size="small" />
            {u.username}
          </li>
        ))}
      </ul>
      {users.isSuccess && results.length === 0 && (
        <p className="field-hint">Nobody goes by a name starting with “{query}”.</p>
      )}
    </div>
  );
}
