package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/directord/directord/internal/config"
	"golang.org/x/sys/unix"
)

// Handler answers requests; the daemon implements it. Its methods are
// called from the server's goroutines.
type Handler interface {
	Status() (Status, error)
	IPVS() (IPVSTable, error)
	Conns() ([]Conn, error)
	Health() (HealthReport, error)
	// Reload reloads the configuration; a rejected file's errors come
	// back as config.Errors.
	Reload() error
	// Drill hands instance over to the peer and reports the timeline;
	// with ret it takes mastership back afterwards.
	Drill(instance string, ret bool) (DrillReport, error)
	// Subscribe returns a channel of events and a function that ends the
	// subscription (and closes the channel).
	Subscribe() (<-chan Event, func())
}

// requestTimeout bounds reading a request.
const requestTimeout = 10 * time.Second

// Server serves one control socket.
type Server struct {
	path string
	ln   *net.UnixListener
	h    Handler
	log  *slog.Logger
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
	done  bool
}

// Listen creates the socket at path, mode 0600. A stale socket left by a
// process that died is replaced; one that a running process answers on is
// an error, so two daemons cannot share a socket (or, by that, a node).
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: the path exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another process (directord?) answers there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: remove the stale socket: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Server{path: path, ln: ln, h: h, log: log, conns: map[net.Conn]bool{}}, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close.
func (s *Server) Serve() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			done := s.done
			s.mu.Unlock()
			if !done {
				s.log.Error("control socket: accept", "error", err)
			}
			return
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Go(func() {
			defer s.untrack(c)
			s.serve(c)
		})
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	s.conns[c] = true
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops serving, ends every connection (event streams too) and
// removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	s.done = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// peerCred returns the credentials of the process at the other end.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

func (s *Server) serve(c *net.UnixConn) {
	enc := json.NewEncoder(c)
	// Root and the daemon's own user only.
	cred, err := peerCred(c)
	switch {
	case err != nil:
		s.log.Warn("control socket: refused a client whose credentials cannot be read", "error", err)
		_ = enc.Encode(Response{Error: "permission denied: the control socket is for root"})
		return
	case cred.Uid != 0 && int(cred.Uid) != os.Getuid():
		s.log.Warn("control socket: refused a client that is not root", "uid", cred.Uid, "pid", cred.Pid)
		_ = enc.Encode(Response{Error: "permission denied: the control socket is for root"})
		return
	}
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	c.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		_ = enc.Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	if req.Command == CmdEvents {
		s.stream(c, enc)
		return
	}
	_ = enc.Encode(s.answer(req))
}

func (s *Server) answer(req Request) Response {
	var data any
	var err error
	switch req.Command {
	case CmdStatus:
		data, err = s.h.Status()
	case CmdIPVS:
		data, err = s.h.IPVS()
	case CmdConns:
		data, err = s.h.Conns()
	case CmdHealth:
		data, err = s.h.Health()
	case CmdReload:
		err = s.h.Reload()
	case CmdDrill:
		data, err = s.h.Drill(req.Instance, req.Return)
	default:
		return Response{Error: fmt.Sprintf("unknown command %q", req.Command)}
	}
	if err != nil {
		r := Response{Error: err.Error()}
		var errs config.Errors
		if errors.As(err, &errs) {
			r.Error = fmt.Sprintf("%d error(s); the previous configuration keeps running", len(errs))
			for _, e := range errs {
				r.Errors = append(r.Errors, e.Error())
			}
		}
		return r
	}
	r := Response{OK: true}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return Response{Error: err.Error()}
		}
		r.Data = b
	}
	return r
}

// stream sends an OK line, then events until the client closes the
// connection or the server stops.
func (s *Server) stream(c *net.UnixConn, enc *json.Encoder) {
	events, cancel := s.h.Subscribe()
	defer cancel()
	if err := enc.Encode(Response{OK: true}); err != nil {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		// The client sends nothing more; a read returns when it goes.
		_, _ = c.Read(make([]byte, 1))
		stop()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			c.SetWriteDeadline(time.Now().Add(requestTimeout))
			if err := enc.Encode(e); err != nil {
				return
			}
		}
	}
}
