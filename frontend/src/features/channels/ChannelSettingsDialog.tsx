import { useId, useState } from 'react';
import { useMutation, useQueryClient, type QueryClient } from '@tanstack/react-query';
import { useNavigate } from 'react-router';
import { api } from '../../lib/api';
import { usePresence } from '../../lib/chat-store';
import type { Channel, Member, UserRef } from '../../lib/types';
import { Avatar } from '../../components/Avatar';
import { Dialog } from '../../components/Dialog';
import { FormError, FormField } from '../../components/FormField';
import { PresenceDot } from '../../components/PresenceDot';
import { SubmitButton } from '../../components/SubmitButton';

interface ChannelSettingsDialogProps {
  channel: Channel;
  me: UserRef | null;
  onClose(): void;
}

// Puts the server's new version of a channel into the caches.
function storeChannel(qc: QueryClient, c: Channel) {
  qc.setQueryData<Channel[]>(['channels'], (old) =>
    old?.map((x) => (x.id === c.id ? { ...x, ...c } : x)),
  );
  qc.setQueryData<Channel>(['channel', c.id], (old) => (old ? { ...old, ...c } : old));
}

export function ChannelSettingsDialog({ channel, me, onClose }: ChannelSettingsDialogProps) {
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const membersId = useId();

  const leave = useMutation({
    mutationFn: () => api.leaveChannel(channel.id),
    onSuccess: () => {
      queryClient.setQueryData<Channel[]>(['channels'], (old) =>
        old?.filter((x) => x.id !== channel.id),
      );
      queryClient.removeQueries({ queryKey: ['channel', channel.id] });
      onClose();
      navigate('/', { replace: true });
    },
  });

  return (
    <Dialog title="Channel settings" onClose={onClose} className="dialog--settings">
      {!channel.direct && (
        <>
          <RenameForm channel={channel} onRenamed={(c) => storeChannel(queryClient, c)} />
          <InviteForm channel={channel} onInvited={(c) => storeChannel(queryClient, c)} />
        </>
      )}

      <section className="settings-section" aria-labelledby={membersId}>
        <h3 id={membersId}>
          Members <span className="count">{channel.members.length}</span>
        </h3>
        <ul className="member-list">
          {channel.members.map((m) => (
            <MemberRow key={m.id} member={m} isMe={m.id === me?.id} />
          ))}
        </ul>
      </section>

      <section className="settings-section settings-section--danger">
        <FormError error={leave.error} />
        <button
          type="button"
          className="button button--danger"
          aria-busy={leave.isPending || undefined}
          onClick={() => {
            if (!leave.isPending) leave.mutate();
          }}
        >
          Leave channel
        </button>
        <p className="field-hint">
          {channel.direct
            ? 'The conversation disappears from your list.'
            : 'You stop receiving its messages; someone can invite you back.'}
        </p>
      </section>
    </Dialog>
  );
}

function RenameForm({ channel, onRenamed }: { channel: Channel; onRenamed(c: Channel): void }) {
  const [name, setName] = useState(channel.name ?? '');
  const rename = useMutation({
    mutationFn: () => api.renameChannel(channel.id, name.trim()),
    onSuccess: onRenamed,
  });
  const unchanged = name.trim() === (channel.name ?? '') || name.trim() === '';
  return (
    <form
      className="settings-section form"
      onSubmit={(e) => {
        e.preventDefault();
        if (!unchanged && !rename.isPending) rename.mutate();
      }}
    >
      <div className="inline-form">
        <FormField
          label="Channel name"
          value={name}
          onChange={(e) => {
            setName(e.target.value);
            rename.reset();
          }}
          autoComplete="off"
          required
        />
        <SubmitButton pending={rename.isPending} disabled={unchanged}>
          Rename
        </SubmitButton>
      </div>
      <FormError error={rename.error} />
      {rename.isSuccess && <p className="form-success">Renamed.</p>}
    </form>
  );
}

function InviteForm({ channel, onInvited }: { channel: Channel; onInvited(c: Channel): void }) {
  const [email, setEmail] = useState('');
  const invite = useMutation({
    mutationFn: (address: string) => api.invite(channel.id, address).then((c) => ({ c, address })),
    onSuccess: ({ c }) => {
      onInvited(c);
      setEmail('');
    },
  });
  return (
    <form
      className="settings-section form"
      onSubmit={(e) => {
        e.preventDefault();
        if (email.trim() && !invite.isPending) invite.mutate(email.trim());
      }}
    >
      <div className="inline-form">
        <FormField
          label="Invite by email"
          type="email"
          value={email}
          onChange={(e) => {
            setEmail(e.target.value);
            if (invite.isError) invite.reset();
          }}
          autoComplete="off"
          placeholder="name@example.com"
          required
        />
        <SubmitButton pending={invite.isPending}>Invite</SubmitButton>
      </div>
      <FormError error={invite.error} />
      {invite.isSuccess && (
        <p className="form-success" aria-live="polite">
          {invite.data.address} is in. New to Foko? They get an email to join.
        </p>
      )}
    </form>
  );
}

function MemberRow({ member, isMe }: { member: Member; isMe: boolean }) {
  const online = usePresence(member.id, member.online);
  return (
    <li className="member-row">
      <Avatar name={member.username} size="small" />
      <span className="member-name">
        {member.username}
        {isMe && <span className="member-you"> (you)</span>}
      </span>
      <PresenceDot online={isMe || online} />
    </li>
  );
}
