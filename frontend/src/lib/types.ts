// The server's shapes, as README.md ("API", "WebSocket") describes them.

export interface UserRef {
  id: string;
  username: string;
}

// The signed-in user; only the owner ever sees `email`.
export interface User extends UserRef {
  email?: string;
}

export interface Member extends UserRef {
  online: boolean;
}

export interface Message {
  id: string;
  channel_id: string;
  seq: number;
  author: UserRef;
  text: string;
  created_at: string;
  edited_at?: string;
  deleted?: boolean;
  client_id?: string;
}

export interface Channel {
  id: string;
  name: string | null;
  direct: boolean;
  members: Member[];
  last_message: Message | null;
  last_seq: number;
  unread: number;
}

export interface AuthResult {
  user: User;
  token: string;
}

export interface HistoryPage {
  messages: Message[];
  has_more: boolean;
}

export type ChannelEvent = 'created' | 'joined' | 'left' | 'renamed';

// server -> client frames
export type ServerFrame =
  | { type: 'ready'; user: User; channels: { id: string; last_seq: number }[] }
  | { type: 'message'; message: Message }
  | { type: 'message_updated'; message: Message }
  | { type: 'message_deleted'; channel_id: string; id: string; seq: number }
  | { type: 'channel'; event: ChannelEvent; channel: Channel; user: UserRef }
  | { type: 'typing'; channel_id: string; user: UserRef }
  | { type: 'presence'; user_id: string; online: boolean }
  | { type: 'read'; channel_id: string; user_id: string; seq: number }
  | { type: 'ack'; ref: string; message: Message }
  | {
      type: 'error';
      ref?: string;
      code: string;
      message: string;
      field?: string;
    }
  | { type: 'resumed'; channel_id: string; from: number; to: number };
