package control

import "sync"

// subscriberBuffer is how many events a subscriber may fall behind before
// it is cut off: a stalled directorctl must not hold up the daemon.
const subscriberBuffer = 1024

// Broker fans events out to subscribers. Publish never blocks: a
// subscriber whose buffer is full is cut off (its channel closed), so a
// reader that stalls loses its stream, not the daemon its pace.
type Broker struct {
	mu   sync.Mutex
	subs map[chan Event]bool
}

// Publish sends e to every subscriber.
func (b *Broker) Publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.subs {
		select {
		case c <- e:
		default:
			delete(b.subs, c)
			close(c)
		}
	}
}

// Subscribe returns a channel of the events published from now on, and
// the function that ends the subscription.
func (b *Broker) Subscribe() (<-chan Event, func()) {
	c := make(chan Event, subscriberBuffer)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan Event]bool{}
	}
	b.subs[c] = true
	b.mu.Unlock()
	var once sync.Once
	return c, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.subs[c] {
				delete(b.subs, c)
				close(c)
			}
		})
	}
}
