-- The reference helpdesk table used by the tests and the demo. rowcast works
-- with any table that has a primary key; this one is only an example.
CREATE TABLE IF NOT EXISTS tickets (
    id              bigserial PRIMARY KEY,
    title           text NOT NULL,
    description     text,
    status          text NOT NULL DEFAULT 'open',
    priority        text NOT NULL DEFAULT 'medium',
    category        text,
    requester_email text,
    assignee_email  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
