package service

import (
	"context"
	"errors"
	"strings"
	"sync"
)

// fakeRunner records the commands it is given and fails those whose
// command line starts with a key of fail.
type fakeRunner struct {
	mu   sync.Mutex
	ran  []string
	fail map[string]error
}

func (f *fakeRunner) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	line := strings.Join(append([]string{name}, args...), " ")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ran = append(f.ran, line)
	for prefix, err := range f.fail {
		if strings.HasPrefix(line, prefix) {
			return []byte("boom\n"), err
		}
	}
	return nil, nil
}

func (f *fakeRunner) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ran...)
}

var errExit = errors.New("exit status 1")
