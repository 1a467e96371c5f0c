package cdc

import "time"

// A connection that the network silently drops (a lost NAT or firewall
// entry, a dead link, a partition) fails no read and no write for many
// minutes: TCP retransmits, and an idle socket waits. Capture would say
// it listens or streams while nothing can arrive. So it bounds every
// wait on the server:
//
//   - connecting: connectTimeout, unless the connection string sets
//     connect_timeout;
//   - the NOTIFY listener asks the server whether it is there (a ping)
//     after listenerIdle without a notification, and gives up after
//     pingTimeout;
//   - logical capture asks for a reply in every periodic status update
//     and gives up after streamSilence (three status intervals) without
//     any message; its other queries during streaming take at most
//     pingTimeout.
//
// Giving up is a reconnect, as for any failed connection: notify mode
// resyncs clients, logical mode resumes from the slot.
const (
	connectTimeout = 10 * time.Second
	listenerIdle   = 15 * time.Second
	pingTimeout    = 10 * time.Second
)

// streamSilence is how long logical capture waits for any message.
func streamSilence(standbyTimeout time.Duration) time.Duration { return 3 * standbyTimeout }
