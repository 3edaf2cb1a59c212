package daemon

import (
	"slices"
	"testing"
)

func TestDrain(t *testing.T) {
	c := make(chan int, 10)
	for i := range 5 {
		c <- i
	}
	if got := drain(c, 3); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("drain(max 3) = %v", got)
	}
	if got := drain(c, 10); !slices.Equal(got, []int{3, 4}) {
		t.Errorf("drain of the rest = %v", got)
	}
	if got := drain(c, 10); got != nil {
		t.Errorf("drain of an empty channel = %v", got)
	}
	c <- 7
	close(c)
	if got := drain(c, 10); !slices.Equal(got, []int{7}) {
		t.Errorf("drain of a closed channel = %v", got)
	}
}
