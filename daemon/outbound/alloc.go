package outbound

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
)

// allocator gives each Service key a loopback IP from a range. The IP is
// stable across daemon restarts twice over: it starts from a hash of the
// key (so the same Service gets the same IP even without the state file),
// and assignments are persisted (so a collision, resolved by probing the
// next free address, resolves the same way next time). Only the daemon's
// Run goroutine uses it.
type allocator struct {
	first uint32 // first usable address
	size  uint32 // number of usable addresses
	path  string // state file; "" = not persisted

	byKey map[string]netip.Addr
	used  map[netip.Addr]string
	// hints are persisted assignments, used when their Service shows up
	// again (also after a restart, while discovery is still listing).
	hints map[string]netip.Addr
	// foreign are addresses where another process holds a port a
	// Service needs: never handed out again by this allocator.
	foreign map[netip.Addr]bool
}

func newAllocator(prefix netip.Prefix, statePath string) (*allocator, error) {
	if !prefix.IsValid() || !prefix.Addr().Is4() {
		return nil, fmt.Errorf("hosts range %s: must be an IPv4 prefix inside 127.0.0.0/8", prefix)
	}
	p := prefix.Masked()
	base := binary.BigEndian.Uint32(p.Addr().AsSlice())
	total := uint64(1) << (32 - p.Bits())
	first, size := base, total
	if total > 2 {
		// Skip the network and broadcast-looking addresses: legal on lo,
		// but confusing to read.
		first, size = base+1, total-2
	}
	if size > 1<<24 {
		size = 1 << 24
	}
	a := &allocator{first: first, size: uint32(size), path: statePath,
		byKey: map[string]netip.Addr{}, used: map[netip.Addr]string{}, hints: map[string]netip.Addr{}, foreign: map[netip.Addr]bool{}}
	a.load()
	return a, nil
}

func (a *allocator) addr(i uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a.first+i)
	return netip.AddrFrom4(b)
}

func (a *allocator) usable(ip netip.Addr) bool {
	if !ip.Is4() || ip == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || a.foreign[ip] {
		return false
	}
	v := binary.BigEndian.Uint32(ip.AsSlice())
	return v >= a.first && v-a.first < a.size
}

// assign makes byKey hold exactly keys, keeping existing assignments, and
// returns an error only when the range is full.
func (a *allocator) assign(keys []string) error {
	want := make(map[string]bool, len(keys))
	for _, k := range keys {
		want[k] = true
	}
	for k, ip := range a.byKey {
		if !want[k] {
			delete(a.byKey, k)
			delete(a.used, ip)
		}
	}
	sorted := slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if _, ok := a.byKey[k]; !ok && !yield(k) {
				return
			}
		}
	})
	for _, k := range sorted {
		if ip, ok := a.hints[k]; ok && a.usable(ip) {
			if _, taken := a.used[ip]; !taken {
				a.byKey[k], a.used[ip] = ip, k
				continue
			}
		}
		h := fnv.New32a()
		_, _ = h.Write([]byte(k))
		start := h.Sum32() % a.size
		found := false
		for i := uint32(0); i < a.size; i++ {
			ip := a.addr((start + i) % a.size)
			if _, taken := a.used[ip]; taken || !a.usable(ip) {
				continue
			}
			a.byKey[k], a.used[ip] = ip, k
			found = true
			break
		}
		if !found {
			return fmt.Errorf("hosts range is full: %d Services for %d addresses; set a larger outbound.hostsRange in the sbx config", len(keys), a.size)
		}
	}
	return nil
}

// moveAway gives up key's address, where another process holds a port
// the Service needs, for good: the next assign gives key another one.
// It reports whether key had an address.
func (a *allocator) moveAway(key string) bool {
	ip, ok := a.byKey[key]
	if !ok {
		return false
	}
	delete(a.byKey, key)
	delete(a.used, ip)
	delete(a.hints, key)
	a.foreign[ip] = true
	return true
}

type allocState struct {
	Version int                   `json:"version"`
	IPs     map[string]netip.Addr `json:"ips"`
}

// load reads persisted assignments that still fit the range; a missing or
// unreadable file just means starting from the hashes.
func (a *allocator) load() {
	if a.path == "" {
		return
	}
	b, err := os.ReadFile(a.path)
	if err != nil {
		return
	}
	var st allocState
	if json.Unmarshal(b, &st) != nil || st.Version != 1 {
		return
	}
	for k, ip := range st.IPs {
		if a.usable(ip) {
			a.hints[k] = ip
		}
	}
}

// save writes the assignments atomically.
func (a *allocator) save() error {
	if a.path == "" {
		return nil
	}
	// Current assignments, plus remembered ones whose IP nobody took.
	for k, ip := range a.hints {
		if owner, taken := a.used[ip]; taken && owner != k {
			delete(a.hints, k)
		}
	}
	for k, ip := range a.byKey {
		a.hints[k] = ip
	}
	b, err := json.MarshalIndent(allocState{Version: 1, IPs: a.hints}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(a.path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(a.path), ".hosts-ips-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), a.path); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return nil
}
