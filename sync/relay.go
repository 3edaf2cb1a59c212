package sync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/directord/directord/ipvs"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
)

// RelayConfig says where the relay listens and sends.
type RelayConfig struct {
	// Listen is the local UDP address frames arrive at; Peer the other
	// director's.
	Listen, Peer netip.AddrPort
	// KeyFile holds the shared secret (at least 16 bytes; surrounding
	// white space ignored).
	KeyFile string
}

// minKeyLen is the shortest key_file content accepted.
const minKeyLen = 16

// resyncMaxLen bounds each resync message so that a frame (with its 64
// bytes of header and HMAC) fits an Ethernet MTU without fragments.
const resyncMaxLen = 1400

// Relay carries the local master daemon's sync datagrams to the peer over
// authenticated unicast UDP and re-emits the peer's locally, where the
// backup daemon receives them; it also answers and asks for full resyncs.
//
// The capture is a packet socket on the sync interface with a BPF filter
// for outgoing UDP to the group and port, so it sees exactly what the
// kernel's master daemon puts on the wire whatever happens to it later
// (a network that drops multicast). Re-emission sends to the group with
// TTL 0 and multicast loopback: the kernel delivers the datagram to the
// local backup daemon's socket and sends nothing on the wire.
type Relay struct {
	log     *slog.Logger
	cfg     RelayConfig
	syncID  uint8
	group   netip.AddrPort
	udp     *net.UDPConn
	capture *packet.Conn
	emit    *ipv4.PacketConn

	sealMu stdsync.Mutex
	sealer sealer
	opener opener // receive loop only

	master    atomic.Bool
	resync    bool
	readTable func() ([]ipvs.Connection, error)
	// requested counts resync requests; answered the last one a
	// resync-done frame answered.
	requested, answered atomic.Uint64
	requestAt           atomic.Int64 // unix ns of the first request of a round

	mu    stdsync.Mutex
	stats RelayStats

	wg   stdsync.WaitGroup
	done chan struct{} // closed by Close
}

// RelayStats are the relay's counters.
type RelayStats struct {
	// DatagramsSent and ConnsSent count sync datagrams (and the entries
	// in them) relayed to the peer, resync messages included;
	// DatagramsReceived and ConnsReceived those from the peer re-emitted
	// to the local backup daemon.
	DatagramsSent, DatagramsReceived uint64
	ConnsSent, ConnsReceived         uint64
	// Dropped counts what was not relayed or re-emitted, by reason.
	Dropped map[DropReason]uint64
	// Lag is the last relayed datagram's age when re-emitted (sender's
	// clock to ours).
	Lag time.Duration
	// Resyncs counts full tables sent (master) and received (backup);
	// the last one's entries and duration (backup: from the request to
	// the last message).
	ResyncsSent, ResyncsReceived uint64
	LastResyncConns              uint64
	LastResyncDuration           time.Duration
	LastResyncAt                 time.Time
}

// NewRelay opens the relay's sockets for the daemons described by d (its
// interface, group, port and sync id). resync makes it ask for the peer's
// table on RequestResync and answer the peer's requests while master.
func NewRelay(cfg RelayConfig, d ipvs.DaemonConfig, resync bool, log *slog.Logger) (*Relay, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("sync relay key: %w", err)
	}
	key = bytes.TrimSpace(key)
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("sync relay key %s: %d bytes, want at least %d", cfg.KeyFile, len(key), minKeyLen)
	}
	group := d.Group
	if !group.IsValid() {
		group = netip.MustParseAddr("224.0.0.81")
	}
	port := d.Port
	if port == 0 {
		port = 8848
	}
	if !group.Is4() {
		return nil, fmt.Errorf("sync relay: group %v: only IPv4 sync groups can be relayed", group)
	}
	r := &Relay{
		log: log, cfg: cfg, syncID: d.SyncID, group: netip.AddrPortFrom(group, port), resync: resync,
		sealer:    sealer{key: key, epoch: uint64(time.Now().UnixNano())},
		opener:    opener{key: key},
		readTable: func() ([]ipvs.Connection, error) { return ipvs.ReadConnections(ipvs.ConnectionsPath) },
		stats:     RelayStats{Dropped: map[DropReason]uint64{}},
	}
	ifi, err := net.InterfaceByName(d.Interface)
	if err != nil {
		return nil, fmt.Errorf("sync relay: %w", err)
	}
	if r.udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Listen)); err != nil {
		return nil, fmt.Errorf("sync relay: listen on %v: %w", cfg.Listen, err)
	}
	// A resync arrives as a burst.
	_ = r.udp.SetReadBuffer(4 << 20)
	filter, err := captureFilter(r.group)
	if err != nil {
		r.udp.Close()
		return nil, err
	}
	// ETH_P_ALL: only taps of every protocol see outgoing packets.
	if r.capture, err = packet.Listen(ifi, packet.Datagram, 0x0003, &packet.Config{Filter: filter}); err != nil {
		r.udp.Close()
		return nil, fmt.Errorf("sync relay: capture on %s: %w", d.Interface, err)
	}
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		r.udp.Close()
		r.capture.Close()
		return nil, fmt.Errorf("sync relay: re-emit socket: %w", err)
	}
	r.emit = ipv4.NewPacketConn(pc)
	for _, err := range []error{r.emit.SetMulticastInterface(ifi), r.emit.SetMulticastTTL(0), r.emit.SetMulticastLoopback(true)} {
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("sync relay: re-emit socket on %s: %w", d.Interface, err)
		}
	}
	return r, nil
}

// captureFilter accepts, on a SOCK_DGRAM packet socket (data from the IP
// header), IPv4 UDP datagrams this host sends (PACKET_OUTGOING) to group,
// unfragmented, and nothing else.
func captureFilter(group netip.AddrPort) ([]bpf.RawInstruction, error) {
	g := group.Addr().As4()
	const drop = 14 // the index of the final "drop"
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},                                                        // 0
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 4, SkipTrue: drop - 2},                             // 1: PACKET_OUTGOING
		bpf.LoadExtension{Num: bpf.ExtProto},                                                       // 2
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x0800, SkipTrue: drop - 4},                        // 3: ETH_P_IP
		bpf.LoadAbsolute{Off: 9, Size: 1},                                                          // 4: protocol
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 17, SkipTrue: drop - 6},                            // 5: UDP
		bpf.LoadAbsolute{Off: 16, Size: 4},                                                         // 6: destination
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(g[:]), SkipTrue: drop - 8}, // 7
		bpf.LoadAbsolute{Off: 6, Size: 2},                                                          // 8: flags, fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: drop - 10},                        // 9: MF or an offset
		bpf.LoadMemShift{Off: 0},                                                                   // 10: X = header length
		bpf.LoadIndirect{Off: 2, Size: 2},                                                          // 11: destination port
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(group.Port()), SkipFalse: 1},                   // 12
		bpf.RetConstant{Val: 0xffff},                                                               // 13: accept
		bpf.RetConstant{Val: 0},                                                                    // 14: drop
	})
}

// udpPayload returns the UDP payload of an IPv4 packet, or false.
func udpPayload(b []byte) ([]byte, bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return nil, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < 20 || total < ihl+8 || total > len(b) {
		return nil, false
	}
	udpLen := int(binary.BigEndian.Uint16(b[ihl+4 : ihl+6]))
	if udpLen < 8 || ihl+udpLen > total {
		return nil, false
	}
	return b[ihl+8 : ihl+udpLen], true
}

// Start runs the relay in the background until Close.
func (r *Relay) Start() {
	r.done = make(chan struct{})
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.captureLoop() }()
	go func() { defer r.wg.Done(); r.receiveLoop() }()
}

// Close stops the relay and waits for its goroutines.
func (r *Relay) Close() {
	if r.done != nil {
		select {
		case <-r.done:
		default:
			close(r.done)
		}
	}
	if r.udp != nil {
		r.udp.Close()
	}
	if r.capture != nil {
		r.capture.Close()
	}
	if r.emit != nil {
		r.emit.Close()
	}
	r.wg.Wait()
}

func (r *Relay) isClosed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// SetMaster tells the relay whether this director is master: only a master
// answers resync requests.
func (r *Relay) SetMaster(m bool) { r.master.Store(m) }

func (r *Relay) drop(reason DropReason, attrs ...any) {
	r.mu.Lock()
	r.stats.Dropped[reason]++
	n := r.stats.Dropped[reason]
	r.mu.Unlock()
	// A flood of forgeries must not flood the log: the first, then
	// every 1000th.
	if n == 1 || n%1000 == 0 {
		r.log.Warn("sync relay dropped a datagram", append([]any{"reason", string(reason), "count", n}, attrs...)...)
	}
}

// Stats returns a copy of the counters.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Dropped = make(map[DropReason]uint64, len(r.stats.Dropped))
	for k, v := range r.stats.Dropped {
		s.Dropped[k] = v
	}
	return s
}

func (r *Relay) send(t frameType, payload []byte) error {
	r.sealMu.Lock()
	b := r.sealer.seal(t, payload, time.Now())
	r.sealMu.Unlock()
	_, err := r.udp.WriteToUDPAddrPort(b, r.cfg.Peer)
	return err
}

func (r *Relay) captureLoop() {
	buf := make([]byte, 65536)
	for {
		n, _, err := r.capture.ReadFrom(buf)
		if err != nil {
			if r.isClosed() {
				return
			}
			r.log.Error("sync relay capture", "error", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		p, ok := udpPayload(buf[:n])
		if !ok {
			continue
		}
		m, err := Decode(p)
		if err != nil {
			r.drop(DropMalformed, "from", "local master daemon", "error", err)
			continue
		}
		if err := r.send(frameData, p); err != nil {
			r.drop(DropSend, "peer", r.cfg.Peer.String(), "error", err)
			continue
		}
		r.mu.Lock()
		r.stats.DatagramsSent++
		r.stats.ConnsSent += uint64(len(m.Conns))
		first := r.stats.DatagramsSent == 1
		r.mu.Unlock()
		if first {
			r.log.Info("sync relay: first datagram of the master daemon relayed to the peer", "peer", r.cfg.Peer.String(), "conns", len(m.Conns))
		}
	}
}

func (r *Relay) receiveLoop() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if r.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Error("sync relay receive", "error", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		now := time.Now()
		f, reason := r.opener.open(buf[:n], now)
		if reason != "" {
			r.drop(reason, "from", from.String())
			continue
		}
		switch f.typ {
		case frameData, frameResyncData:
			m, err := Decode(f.payload)
			if err != nil {
				r.drop(DropMalformed, "from", from.String(), "error", err)
				continue
			}
			if _, err := r.emit.WriteTo(f.payload, nil, net.UDPAddrFromAddrPort(r.group)); err != nil {
				r.drop(DropSend, "group", r.group.String(), "error", err)
				continue
			}
			r.mu.Lock()
			r.stats.DatagramsReceived++
			r.stats.ConnsReceived += uint64(len(m.Conns))
			r.stats.Lag = now.Sub(f.sent)
			first := r.stats.DatagramsReceived == 1
			r.mu.Unlock()
			if first {
				r.log.Info("sync relay: first datagram from the peer re-emitted to the backup daemon", "from", from.String(), "conns", len(m.Conns))
			}
		case frameResyncRequest:
			if r.resync && r.master.Load() {
				r.wg.Add(1)
				go func() { defer r.wg.Done(); r.sendTable() }()
			}
		case frameResyncDone:
			if len(f.payload) < 4 {
				r.drop(DropMalformed, "from", from.String())
				continue
			}
			conns := binary.BigEndian.Uint32(f.payload)
			r.answered.Store(r.requested.Load())
			var d time.Duration
			if at := r.requestAt.Swap(0); at != 0 {
				d = now.Sub(time.Unix(0, at))
			}
			r.mu.Lock()
			r.stats.ResyncsReceived++
			r.stats.LastResyncConns = uint64(conns)
			r.stats.LastResyncDuration = d
			r.stats.LastResyncAt = now
			r.mu.Unlock()
			r.log.Info("full resync received from the peer", "conns", conns, "duration", d.String())
		default:
			r.drop(DropUnknown, "from", from.String(), "type", int(f.typ))
		}
	}
}

// RequestResync asks the peer for its whole table, again every second
// until it answers (at most resyncAttempts times).
func (r *Relay) RequestResync() {
	if !r.resync {
		return
	}
	gen := r.requested.Add(1)
	r.requestAt.CompareAndSwap(0, time.Now().UnixNano())
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for range resyncAttempts {
			if r.requested.Load() != gen || r.answered.Load() >= gen {
				return
			}
			if err := r.send(frameResyncRequest, nil); err != nil {
				r.drop(DropSend, "peer", r.cfg.Peer.String(), "error", err)
			}
			select {
			case <-time.After(time.Second):
			case <-r.done:
				return
			}
		}
	}()
}

const resyncAttempts = 5

// sendTable sends the local connection table to the peer as v1 messages,
// then a done frame with the count.
func (r *Relay) sendTable() {
	start := time.Now()
	table, err := r.readTable()
	if err != nil {
		r.log.Error("full resync: cannot read the connection table", "error", err)
		return
	}
	conns := TableConns(table)
	msgs, err := Pack(r.syncID, conns, resyncMaxLen)
	if err != nil {
		r.log.Error("full resync: cannot pack the connection table", "error", err)
		return
	}
	for i, m := range msgs {
		if err := r.send(frameResyncData, m); err != nil {
			r.drop(DropSend, "peer", r.cfg.Peer.String(), "error", err)
			return
		}
		// Give the peer's kernel socket room in a large table.
		if i%32 == 31 {
			time.Sleep(time.Millisecond)
		}
	}
	if err := r.send(frameResyncDone, binary.BigEndian.AppendUint32(nil, uint32(len(conns)))); err != nil {
		r.drop(DropSend, "peer", r.cfg.Peer.String(), "error", err)
		return
	}
	d := time.Since(start)
	r.mu.Lock()
	r.stats.ResyncsSent++
	r.stats.DatagramsSent += uint64(len(msgs))
	r.stats.ConnsSent += uint64(len(conns))
	r.stats.LastResyncConns = uint64(len(conns))
	r.stats.LastResyncDuration = d
	r.stats.LastResyncAt = time.Now()
	r.mu.Unlock()
	r.log.Info("full resync sent to the peer", "conns", len(conns), "messages", len(msgs), "duration", d.String())
}
