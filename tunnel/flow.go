package tunnel

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Receive windows that grow to the link.
//
// yamux v0.1.2 gives every stream one fixed receive window,
// MaxStreamWindowSize, and grants it again each time the reader has
// consumed half of it. One stream then moves at most window ÷ round trip:
// 1 MiB is ~50 MB/s at 20 ms and ~10 MB/s at 100 ms, whatever the link.
// A window big enough for the longest link is the wrong answer too: a
// session is one FIFO connection, so every byte a bulk stream may send
// beyond the bandwidth-delay product waits in a queue in front of every
// other stream's small request, and a receiver whose reader stalls
// buffers the whole window.
//
// So the session grants its peer the window itself (flowControl), as TCP
// auto-tuning and QUIC do, and yamux's grants never reach the wire:
//
//   - yamux runs with MaxStreamWindowSize = 2 × Config.MaxStreamWindow. It
//     still accounts for its window, but its window-update frames are
//     filtered on the way out (wireConn): plain updates are dropped, the
//     delta of SYN/ACK/FIN/RST updates is set to 0. Either peer may be
//     older: what goes on the wire is ordinary yamux.
//   - Every stream starts at yamux's fixed initial window (256 KiB, which
//     the peer assumes at open). Each time the application has read a
//     quarter of the stream's window, the session grants the peer credit
//     up to consumed + window.
//   - Each time a whole window has arrived since the last estimate
//     (about a round trip's worth while the window limits), it estimates
//     the bandwidth-delay product: those bytes over the time they took to
//     arrive, times the session's round trip. Arrival, not reading: a
//     reader that catches up on buffered data reads at memory speed. The
//     round trip is the smallest a ping measured while no data frame had
//     moved for 5 ms (four pings at the session's start, then the
//     heartbeat's), else the smallest at all: a ping queued behind bulk
//     data measures the queue (on loopback, 0.06-0.5 ms against ~0.02,
//     which grew windows to 5 MiB for nothing). While twice the estimate
//     plus one of the peer's frames exceeds the window, the window grows,
//     at most doubling per estimate, up to Config.MaxStreamWindow and as
//     far as the memory budgets allow (Config.WindowBudget per session,
//     Config.SharedWindowBudget across sessions); on a session whose round
//     trip is under 1 ms (loopback, a LAN) windows stay at 256 KiB
//     (minGrowthRTT). Growth ends near twice the link's bandwidth-delay
//     product: the quarter-window grant step needs 4/3 of it never to
//     stall, and yamux hands the reader whole frames only, so credit
//     returns a frame at a time. With a factor of 1.5 instead of 2, one
//     stream over 20 ms and 400 Mbit/s moved 27 MB/s instead of 37. A reader that stalls takes no growth (nothing more
//     arrives), so the budget goes to streams that move data.
//   - A new stream starts at the largest window a stream of the session
//     has reached (the session is one link), as far as the budgets allow:
//     the extra credit goes out right behind this end's SYN or ACK (not
//     sooner: until yamux sends those, it holds the stream to 256 KiB). So
//     a session that has once moved bulk data does not open every later
//     stream's window from 256 KiB again.
//   - A stream's credit is released to the budgets when the stream ends
//     (reset, or closed in both directions).
//   - Incoming data frames are counted per stream; a peer that sends more
//     than it was granted ends the session (yamux alone would only catch
//     it at 2 × MaxStreamWindow). So a stream never buffers more than its
//     window, and a session never more than streams × 256 KiB + its
//     budget.
//
// Windows shrink only when streams end: a stream that was fast keeps its
// window while it lives, bounded by the budgets. yamux's write loop sends
// each frame's header and body as separate Writes (see wireConn); grants
// are written only between frames.

// yamux frame types and flags (yamux's spec.md; the constants are not
// exported).
const (
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 1
	yamuxFlagACK          = 2
	yamuxFlagFIN          = 4
	yamuxFlagRST          = 8
)

// grantFraction: credit is granted each time the reader has consumed
// window/grantFraction bytes since the last grant.
const grantFraction = 4

// minGrowthRTT: windows grow only on sessions whose round trip is at least
// this. Below it, 256 KiB already carries 2 Gbit/s, and what a ping
// measures is mostly the time goroutines wait to run: on loopback 0.03 to
// 0.5 ms for a ~0.02 ms path, and data arrives in bursts as fast as memory
// copies, so estimates there grew windows to 1-5 MiB, each a queue in
// front of every other request on the session.
const minGrowthRTT = time.Millisecond

// WindowBudget bounds the receive-window growth that sessions sharing it
// may hold at once, in bytes beyond each stream's initial 256 KiB. A relay
// gives all its sessions one, so its memory stays bounded however many
// sessions a laptop opens. Safe for concurrent use.
type WindowBudget struct {
	mu    sync.Mutex
	total int64
	left  int64
}

// NewWindowBudget returns a budget of n bytes (n ≥ 0).
func NewWindowBudget(n int64) *WindowBudget {
	n = max(n, 0)
	return &WindowBudget{total: n, left: n}
}

// Total is the budget's size in bytes.
func (b *WindowBudget) Total() int64 { return b.total }

// InUse is how many bytes of the budget streams hold now.
func (b *WindowBudget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total - b.left
}

func (b *WindowBudget) take(n int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	n = min(n, b.left)
	b.left -= n
	return n
}

func (b *WindowBudget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left = min(b.left+n, b.total)
}

// streamFlow is one stream's receive side.
type streamFlow struct {
	window   int64 // the credit the peer may hold beyond what was read
	granted  int64 // credit given to the peer since open, initial included
	consumed int64 // payload the application has read
	received int64 // payload the peer has sent
	maxFrame int64 // the largest data frame the peer has sent
	// The growth epoch: received at its start, and when it started.
	epochReceived int64
	epochStart    time.Time
	localFIN      bool
	remoteFIN     bool
}

// flowControl grants a session's peer its receive windows (see above).
// Its methods are safe for concurrent use; wireConn calls sawOutgoing
// and writes grants under its own lock, never the other way round.
type flowControl struct {
	initial, max int64
	session      *WindowBudget
	shared       *WindowBudget // may be nil

	// lastData is when a data frame last went out or came in (UnixNano).
	lastData atomic.Int64

	mu      sync.Mutex
	streams map[uint32]*streamFlow
	pending map[uint32]uint32 // grants not yet written
	// The smallest round trips seen: measured while no data moved, and
	// at any time (the fallback: a ping queued behind data reads long).
	minQuiet, minBusy time.Duration
	grown             int64 // window growth held by this session's streams
	peak              int64 // the largest window any stream reached, at least MinStreamWindow
	err               error // the peer broke flow control
	// wake is signalled when grants are pending.
	wake chan struct{}
}

func newFlowControl(cfg Config) *flowControl {
	return &flowControl{
		initial: yamuxInitialWindow,
		max:     int64(cfg.MaxStreamWindow),
		session: NewWindowBudget(cfg.WindowBudget),
		shared:  cfg.SharedWindowBudget,
		streams: make(map[uint32]*streamFlow),
		pending: make(map[uint32]uint32),
		peak:    int64(max(cfg.MinStreamWindow, yamuxInitialWindow)),
		wake:    make(chan struct{}, 1),
	}
}

// quietWindow: a ping sent when no data frame moved for this long
// measures the path, not the queue in front of it.
const quietWindow = 5 * time.Millisecond

// quiet reports whether no data frame moved in the last quietWindow.
func (f *flowControl) quiet() bool {
	return time.Since(time.Unix(0, f.lastData.Load())) > quietWindow
}

// sampleRTT records a measured round trip; quiet says whether the ping
// went out with no data moving (quiet before it was sent).
func (f *flowControl) sampleRTT(d time.Duration, quiet bool) {
	if d <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.minBusy == 0 || d < f.minBusy {
		f.minBusy = d
	}
	if quiet && (f.minQuiet == 0 || d < f.minQuiet) {
		f.minQuiet = d
	}
}

// rttLocked is the round trip flow control sizes windows by: the smallest
// quiet one, else the smallest at all, 0 before any.
func (f *flowControl) rttLocked() time.Duration {
	if f.minQuiet > 0 {
		return f.minQuiet
	}
	return f.minBusy
}

// open starts tracking a stream (its SYN went either way). Caller holds mu.
func (f *flowControl) openLocked(id uint32) *streamFlow {
	if e, ok := f.streams[id]; ok {
		return e
	}
	e := &streamFlow{window: f.initial, granted: f.initial, epochStart: time.Now()}
	f.streams[id] = e
	return e
}

// startLearnedLocked gives a new stream the largest window a stream of
// this session has needed (the link is the same), at least
// Config.MinStreamWindow, as far as the budgets allow. It runs as this
// end's SYN or ACK goes out, never before: yamux raises its own receive
// window for the stream when it sends those, and until then it would
// refuse data beyond the initial 256 KiB.
func (f *flowControl) startLearnedLocked(id uint32, e *streamFlow) {
	if e.granted != f.initial {
		return // already granted more
	}
	if extra := f.reserve(f.peak - f.initial); extra > 0 {
		e.window += extra
		e.granted += extra
		f.pending[id] += uint32(extra)
		f.signal()
	}
}

// signal wakes the grant writer.
func (f *flowControl) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// endLocked forgets a stream and returns its growth to the budgets.
func (f *flowControl) endLocked(id uint32) {
	e, ok := f.streams[id]
	if !ok {
		return
	}
	delete(f.streams, id)
	delete(f.pending, id)
	if g := e.window - f.initial; g > 0 {
		f.release(g)
	}
}

func (f *flowControl) release(g int64) {
	f.grown -= g
	f.session.give(g)
	if f.shared != nil {
		f.shared.give(g)
	}
}

// reserve takes up to n bytes of growth from the budgets.
func (f *flowControl) reserve(n int64) int64 {
	if n <= 0 {
		return 0
	}
	n = f.session.take(n)
	if f.shared != nil && n > 0 {
		got := f.shared.take(n)
		f.session.give(n - got)
		n = got
	}
	f.grown += n
	return n
}

// frameFlags notes a frame's flags for stream id, in either direction.
func (f *flowControl) frameFlagsLocked(id uint32, flags uint16, outgoing bool) {
	if flags&yamuxFlagSYN != 0 {
		f.openLocked(id)
	}
	e, ok := f.streams[id]
	if !ok {
		return
	}
	if outgoing && flags&(yamuxFlagSYN|yamuxFlagACK) != 0 {
		f.startLearnedLocked(id, e)
	}
	if flags&yamuxFlagRST != 0 {
		f.endLocked(id)
		return
	}
	if flags&yamuxFlagFIN != 0 {
		if outgoing {
			e.localFIN = true
		} else {
			e.remoteFIN = true
		}
		if e.localFIN && e.remoteFIN {
			f.endLocked(id)
		}
	}
}

// sawOutgoing notes a frame this end sends (wireConn's writer).
func (f *flowControl) sawOutgoing(id uint32, flags uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frameFlagsLocked(id, flags, true)
}

// sawIncoming notes a frame header from the peer; length is the payload
// of a data frame (0 for others). It returns an error when the peer sent
// more than it was granted.
func (f *flowControl) sawIncoming(typ uint8, id uint32, flags uint16, length uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	// Count the data before the flags: a frame may carry its last
	// payload and FIN together.
	if typ == yamuxTypeData && length > 0 {
		f.lastData.Store(time.Now().UnixNano())
		if flags&yamuxFlagSYN != 0 {
			f.openLocked(id)
		}
		if e, ok := f.streams[id]; ok {
			e.received += int64(length)
			e.maxFrame = max(e.maxFrame, int64(length))
			if e.received > e.granted {
				f.err = fmt.Errorf("%w: the peer sent %d bytes on stream %d, %d more than its window allows", ErrProtocol, e.received, id, e.received-e.granted)
				return f.err
			}
		}
	}
	if typ == yamuxTypeData || typ == yamuxTypeWindowUpdate {
		f.frameFlagsLocked(id, flags, false)
	}
	return nil
}

// consumed notes n payload bytes read by the application on stream id and
// queues a grant when one is due, reporting whether it did.
func (f *flowControl) consumed(id uint32, n int) bool {
	if n <= 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.streams[id]
	if !ok {
		return false
	}
	e.consumed += int64(n)
	if e.consumed+e.window-e.granted < e.window/grantFraction {
		return false
	}
	// An epoch spans a whole window of reads, about a round trip's worth
	// when the window is what limits: shorter ones would time the bursts
	// in which data arrives rather than the rate the link sustains.
	if e.received-e.epochReceived >= e.window {
		now := time.Now()
		f.growLocked(e, now)
		e.epochReceived, e.epochStart = e.received, now
	}
	delta := e.consumed + e.window - e.granted
	e.granted += delta
	f.pending[id] += uint32(delta)
	return true
}

// growLocked widens e's window toward twice the bandwidth-delay product
// that the epoch now ending shows (the bytes that arrived in it, over the
// time they took, times the round trip), plus one of the peer's frames: yamux
// hands a frame to the reader only once all of it is in, so a frame's
// worth of window is always on this side and credit returns a frame at a
// time (256 KiB over a port-forward).
func (f *flowControl) growLocked(e *streamFlow, now time.Time) {
	rtt := f.rttLocked()
	if rtt < minGrowthRTT || e.window >= f.max {
		return
	}
	elapsed := now.Sub(e.epochStart)
	if elapsed <= 0 {
		elapsed = time.Nanosecond
	}
	bytes := float64(e.received - e.epochReceived)
	bdp := bytes * float64(rtt) / float64(elapsed)
	want := min(int64(2*bdp)+e.maxFrame, 2*e.window, f.max)
	if want <= e.window {
		return
	}
	e.window += f.reserve(want - e.window)
	f.peak = max(f.peak, e.window)
}

// takeGrants appends the pending grants as yamux window-update frames.
func (f *flowControl) takeGrants(b []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, delta := range f.pending {
		var h [yamuxHeaderSize]byte
		h[1] = yamuxTypeWindowUpdate
		binary.BigEndian.PutUint32(h[4:8], id)
		binary.BigEndian.PutUint32(h[8:12], delta)
		b = append(b, h[:]...)
		delete(f.pending, id)
	}
	return b
}

// FlowStats describe a session's receive windows.
type FlowStats struct {
	// RTT is the smallest round trip the session measured (0: none yet).
	RTT time.Duration `json:"rtt"`
	// Streams counts streams whose windows are tracked.
	Streams int `json:"streams"`
	// Grown is the window growth its streams hold, in bytes beyond their
	// initial windows; PeakWindow the largest window a stream reached.
	Grown      int64 `json:"grown"`
	PeakWindow int64 `json:"peakWindow"`
}

func (f *flowControl) stats() FlowStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return FlowStats{RTT: f.rttLocked(), Streams: len(f.streams), Grown: f.grown, PeakWindow: f.peak}
}

// windowOf is stream id's current window (tests).
func (f *flowControl) windowOf(id uint32) (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.streams[id]
	if !ok {
		return 0, false
	}
	return e.window, true
}

// releaseAll returns every stream's growth to the budgets when the
// session ends.
func (f *flowControl) releaseAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.streams {
		f.endLocked(id)
	}
}

// frameParser follows yamux frames in a byte stream read in arbitrary
// pieces and reports each header.
type frameParser struct {
	hdr      [yamuxHeaderSize]byte
	hdrN     int
	bodyLeft uint32
}

// feed walks p and calls onHeader for each complete frame header.
func (p *frameParser) feed(b []byte, onHeader func(typ uint8, id uint32, flags uint16, length uint32) error) error {
	for len(b) > 0 {
		if p.bodyLeft > 0 {
			n := min(uint32(len(b)), p.bodyLeft)
			p.bodyLeft -= n
			b = b[n:]
			continue
		}
		n := copy(p.hdr[p.hdrN:], b)
		p.hdrN += n
		b = b[n:]
		if p.hdrN < yamuxHeaderSize {
			return nil
		}
		p.hdrN = 0
		typ := p.hdr[1]
		flags := binary.BigEndian.Uint16(p.hdr[2:4])
		id := binary.BigEndian.Uint32(p.hdr[4:8])
		length := binary.BigEndian.Uint32(p.hdr[8:12])
		if typ == yamuxTypeData {
			p.bodyLeft = length
		}
		if err := onHeader(typ, id, flags, length); err != nil {
			return err
		}
	}
	return nil
}
