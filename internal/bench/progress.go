package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ProgressMode says how a run shows that it is alive.
type ProgressMode int

const (
	// ProgressNone shows nothing.
	ProgressNone ProgressMode = iota
	// ProgressBar redraws one line in place (for a terminal).
	ProgressBar
	// ProgressLines prints a plain line now and then (for a log file).
	ProgressLines
)

const (
	barRefresh   = 200 * time.Millisecond
	lineInterval = 10 * time.Second
	barWidth     = 30
)

// progressState is what the progress display reads while a run goes on.
type progressState struct {
	done    func() int64 // requests finished so far, failed ones included
	total   int64        // 0: bounded by time only
	limit   time.Duration
	started time.Time
}

// fraction returns how far the run is, 0 to 1, by count or by time,
// whichever is further along.
func (s progressState) fraction(done int64, elapsed time.Duration) float64 {
	var f float64
	if s.total > 0 {
		f = float64(done) / float64(s.total)
	}
	if s.limit > 0 {
		f = max(f, float64(elapsed)/float64(s.limit))
	}
	return min(f, 1)
}

// progress draws the progress of a run on w until stop is called. Its
// goroutine is owned by the run that started it.
type progress struct {
	w     io.Writer
	mode  ProgressMode
	state progressState
	quit  chan struct{}
	wg    sync.WaitGroup
}

// startProgress starts drawing; it returns nil for ProgressNone or a nil w.
func startProgress(w io.Writer, mode ProgressMode, state progressState) *progress {
	if w == nil || mode == ProgressNone {
		return nil
	}
	p := &progress{w: w, mode: mode, state: state, quit: make(chan struct{})}
	p.wg.Add(1)
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer p.wg.Done()
	every := barRefresh
	if p.mode == ProgressLines {
		every = lineInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			if p.mode == ProgressBar {
				// Leave the terminal line empty for the report.
				fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", barWidth+60))
			}
			return
		case now := <-t.C:
			p.draw(now)
		}
	}
}

func (p *progress) draw(now time.Time) {
	done := p.state.done()
	elapsed := now.Sub(p.state.started)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed.Seconds()
	}
	count := fmt.Sprint(done)
	if p.state.total > 0 {
		count = fmt.Sprintf("%d/%d", done, p.state.total)
	}
	if p.mode == ProgressLines {
		fmt.Fprintf(p.w, "bench: %s requests, %.0f req/s, %s elapsed\n", count, rate, elapsed.Truncate(time.Second))
		return
	}
	f := p.state.fraction(done, elapsed)
	filled := int(f * barWidth)
	bar := strings.Repeat("=", filled)
	if filled < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-filled-1)
	}
	fmt.Fprintf(p.w, "\r[%s] %3.0f%%  %s  %.0f req/s  %s ", bar, f*100, count, rate, elapsed.Truncate(100*time.Millisecond))
}

// stop erases the bar and waits for the drawing goroutine. Safe on nil.
func (p *progress) stop() {
	if p == nil {
		return
	}
	close(p.quit)
	p.wg.Wait()
}
