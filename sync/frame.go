package sync

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// The relay's frame: every UDP datagram between the two directors is
//
//	magic "DRS1" | type u8 | 3 reserved | epoch be64 | seq be64 | sent be64 | payload | HMAC-SHA256
//
// The HMAC, keyed with the shared key_file, covers everything before it.
// epoch is the sender's start time (unix ns): a restarted sender starts a
// new sequence, a frame of an older epoch is a replay. seq counts the
// sender's frames from 1 within an epoch; the receiver keeps a window of
// the last 64 like IPsec's anti-replay window. sent is the sender's clock
// (unix ns), for the lag counter and to refuse frames older than
// maxFrameAge, which also catches a replay to a receiver that restarted.
const (
	frameMagic     = "DRS1"
	frameHeaderLen = 32
	frameMACLen    = sha256.Size
	replayWindow   = 64
	// maxFrameAge bounds how far the two clocks and the network may
	// disagree.
	maxFrameAge = time.Minute
)

type frameType uint8

const (
	frameData          frameType = 1 // a sync datagram the master daemon sent
	frameResyncRequest frameType = 2 // the backup asks for the whole table
	frameResyncData    frameType = 3 // one v1 message of the table
	frameResyncDone    frameType = 4 // the table has been sent; payload: be32 entries
)

// DropReason says why the relay dropped a datagram.
type DropReason string

// The drop reasons, the keys of RelayStats.Dropped.
const (
	DropShort     DropReason = "short"     // not a frame at all
	DropForged    DropReason = "forged"    // wrong HMAC: not our peer's key
	DropReplayed  DropReason = "replayed"  // sequence number seen before or too old
	DropStale     DropReason = "stale"     // sent more than maxFrameAge ago (or ahead)
	DropMalformed DropReason = "malformed" // authenticated, but not a valid sync message
	DropUnknown   DropReason = "unknown"   // authenticated, unknown frame type
	DropSend      DropReason = "send"      // could not be sent or re-emitted
)

type frame struct {
	typ     frameType
	epoch   uint64
	seq     uint64
	sent    time.Time
	payload []byte
}

// sealer numbers and authenticates outgoing frames. Not safe for
// concurrent use.
type sealer struct {
	key   []byte
	epoch uint64
	seq   uint64
}

func (s *sealer) seal(t frameType, payload []byte, now time.Time) []byte {
	s.seq++
	b := make([]byte, frameHeaderLen, frameHeaderLen+len(payload)+frameMACLen)
	copy(b, frameMagic)
	b[4] = byte(t)
	binary.BigEndian.PutUint64(b[8:], s.epoch)
	binary.BigEndian.PutUint64(b[16:], s.seq)
	binary.BigEndian.PutUint64(b[24:], uint64(now.UnixNano()))
	b = append(b, payload...)
	m := hmac.New(sha256.New, s.key)
	m.Write(b)
	return m.Sum(b)
}

// opener authenticates incoming frames and refuses replays. Not safe for
// concurrent use.
type opener struct {
	key    []byte
	epoch  uint64
	max    uint64 // highest sequence number accepted in epoch
	window uint64 // bit i: max-i accepted
}

// open checks b and returns its frame, or why it is dropped. Only an
// authentic frame moves the replay window.
func (o *opener) open(b []byte, now time.Time) (frame, DropReason) {
	if len(b) < frameHeaderLen+frameMACLen || string(b[:4]) != frameMagic {
		return frame{}, DropShort
	}
	body, mac := b[:len(b)-frameMACLen], b[len(b)-frameMACLen:]
	m := hmac.New(sha256.New, o.key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), mac) {
		return frame{}, DropForged
	}
	f := frame{
		typ:     frameType(b[4]),
		epoch:   binary.BigEndian.Uint64(b[8:]),
		seq:     binary.BigEndian.Uint64(b[16:]),
		sent:    time.Unix(0, int64(binary.BigEndian.Uint64(b[24:]))),
		payload: body[frameHeaderLen:],
	}
	if age := now.Sub(f.sent); age > maxFrameAge || age < -maxFrameAge {
		return frame{}, DropStale
	}
	switch {
	case f.epoch < o.epoch || f.seq == 0:
		return frame{}, DropReplayed
	case f.epoch > o.epoch:
		o.epoch, o.max, o.window = f.epoch, f.seq, 1
		return f, ""
	case f.seq > o.max:
		shift := f.seq - o.max
		if shift >= replayWindow {
			o.window = 1
		} else {
			o.window = o.window<<shift | 1
		}
		o.max = f.seq
		return f, ""
	}
	d := o.max - f.seq
	if d >= replayWindow || o.window&(1<<d) != 0 {
		return frame{}, DropReplayed
	}
	o.window |= 1 << d
	return f, ""
}
