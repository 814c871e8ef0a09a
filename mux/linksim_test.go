package mux

import (
	"container/heap"
	"time"
)

// simLink plays streams that share one link in virtual time: a bottleneck
// of rate bytes per second with a queue in front of it that never drops
// (as the WAN bed's shaper, and a session's one TCP connection, behave),
// then half the round trip to the receiver and half back. Each stream
// sends maxChunk at a time while its window has room, and its receiver
// acknowledges as Stream does: once ackEvery is in, else ackDelay after
// the first byte it has not acknowledged.
type simLink struct {
	rate     float64 // bytes per second
	rtt      time.Duration
	now      time.Time
	busy     time.Time // when the bottleneck has sent everything queued
	events   simEvents
	seq      int
	ackEvery uint64
	streams  []*simStream
	path     Path // the streams' shared view of the link
}

type simStream struct {
	w      window
	next   uint64 // the next offset to send
	acked  uint64 // the sender has this acknowledged
	left   int64  // bytes still to send; negative: no end
	from   time.Time
	idles  int    // times the stream had nothing in flight
	recv   uint64 // the receiver has everything below
	ackOff uint64 // the receiver acknowledged everything below
	timer  bool   // a delayed ack is scheduled
}

type simEvent struct {
	at   time.Time
	seq  int // ties keep their order
	s    *simStream
	kind int // simArrive, simAck, simDelayedAck, simStart
	off  uint64
}

const (
	simArrive = iota
	simAck
	simDelayedAck
	simStart
)

type simEvents []simEvent

func (h simEvents) Len() int { return len(h) }
func (h simEvents) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h simEvents) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *simEvents) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *simEvents) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func newSimLink(rate float64, rtt time.Duration) *simLink {
	return &simLink{rate: rate, rtt: rtt, now: time.Unix(0, 0), ackEvery: StartWindow / 4}
}

func (l *simLink) at(at time.Time, s *simStream, kind int, off uint64) {
	l.seq++
	heap.Push(&l.events, simEvent{at: at, seq: l.seq, s: s, kind: kind, off: off})
}

// add starts a stream with budget b at from, with n bytes to send (negative:
// no end).
func (l *simLink) add(b *Budget, from time.Time, n int64) *simStream {
	s := &simStream{w: newWindow(b, DefaultBuffer), left: n, from: from}
	s.w.on(&l.path)
	l.streams = append(l.streams, s)
	l.at(from, s, simStart, 0)
	return s
}

// inflight is what the stream has sent and not had acknowledged: what its
// replay buffer holds.
func (s *simStream) inflight() int { return int(s.next - s.acked) }

func (l *simLink) send(s *simStream) {
	for s.left != 0 && s.inflight()+maxChunk <= s.w.size {
		n := int64(maxChunk)
		if s.left > 0 {
			n = min(n, s.left)
			s.left -= n
		}
		s.next += uint64(n)
		s.w.sent(s.next, s.acked, l.now)
		l.busy = later(l.now, l.busy).Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
		l.at(l.busy.Add(l.rtt/2), s, simArrive, s.next)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// run plays events until until.
func (l *simLink) run(until time.Time) {
	for len(l.events) > 0 && !l.events[0].at.After(until) {
		e := heap.Pop(&l.events).(simEvent)
		l.now = e.at
		s := e.s
		switch e.kind {
		case simStart:
			l.send(s)
		case simArrive:
			s.recv = e.off
			if s.recv-s.ackOff >= l.ackEvery {
				s.ackOff = s.recv
				l.at(l.now.Add(l.rtt/2), s, simAck, s.recv)
			} else if !s.timer {
				s.timer = true
				l.at(l.now.Add(ackDelay), s, simDelayedAck, 0)
			}
		case simDelayedAck:
			s.timer = false
			if s.recv > s.ackOff {
				s.ackOff = s.recv
				l.at(l.now.Add(l.rtt/2), s, simAck, s.recv)
			}
		case simAck:
			if e.off <= s.acked {
				continue
			}
			s.acked = e.off
			s.w.acked(e.off, s.inflight(), l.now)
			if s.inflight() == 0 {
				s.idles++
				s.w.idle()
			}
			if s.left == 0 && s.inflight() == 0 {
				s.w.end()
				continue
			}
			l.send(s)
		}
	}
	l.now = until
}

// sizes is what the streams' windows are and hold now.
func (l *simLink) sizes() (total, held int) {
	for _, s := range l.streams {
		total += s.w.size
		held += s.w.start + s.w.reserved
	}
	return total, held
}
