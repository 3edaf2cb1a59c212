package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// dial connects to the daemon with an error an operator can act on.
func dial(path string) (net.Conn, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("cannot reach directord at %s: %w (is it running? -s names the socket)", path, errors.Unwrap(errors.Unwrap(err)))
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("cannot reach directord at %s: permission denied (the control socket is for root)", path)
	}
	return nil, fmt.Errorf("cannot reach directord at %s: %w", path, err)
}

// Call sends req to the daemon at path and returns its response. A
// response that says the request failed is returned as it is, with a nil
// error; err is for not getting an answer.
func Call(path string, req Request, timeout time.Duration) (Response, error) {
	c, err := dial(path)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	// A refused client may find the daemon's answer waiting and the
	// connection closed before its request is written: read it anyway.
	sendErr := json.NewEncoder(c).Encode(req)
	var r Response
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		switch {
		case sendErr != nil:
			return Response{}, fmt.Errorf("send to directord: %w", sendErr)
		case errors.Is(err, io.EOF):
			return Response{}, errors.New("directord closed the connection without an answer")
		}
		return Response{}, fmt.Errorf("read directord's answer: %w", err)
	}
	return r, nil
}

// Events streams the daemon's events to fn until fn returns false, the
// daemon stops, or stop is closed.
func Events(path string, stop <-chan struct{}, fn func(Event) bool) error {
	c, err := dial(path)
	if err != nil {
		return err
	}
	defer c.Close()
	go func() {
		<-stop
		c.Close()
	}()
	sendErr := json.NewEncoder(c).Encode(Request{Command: CmdEvents})
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		if sendErr != nil {
			return fmt.Errorf("send to directord: %w", sendErr)
		}
		return errors.New("directord closed the connection without an answer")
	}
	var r Response
	if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
		return fmt.Errorf("read directord's answer: %w", err)
	}
	if !r.OK {
		return errors.New(r.Error)
	}
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("read an event: %w", err)
		}
		if !fn(e) {
			return nil
		}
	}
	select {
	case <-stop:
		return nil
	default:
	}
	return errors.New("directord closed the event stream (stopped?)")
}
