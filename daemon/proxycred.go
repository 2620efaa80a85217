package daemon

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// proxyCredentialFile is the outbound proxy's password in the state
// directory.
const proxyCredentialFile = "proxy-credential"

// proxyCredential is the password the outbound proxy asks of its clients
// (user name proxy.Username). It is made once, from 32 random bytes, and
// kept in the state directory with mode 0600, so that the proxy URLs `sbx
// env` wrote into a .env file keep working after the daemon restarts.
// Clients get it from the local API (GET /v1/proxy-credential, served on
// the socket only its user reaches); it is never part of the status and
// never logged.
//
// It is read on first use, which comes after the daemon took its lock:
// two daemons starting at once never each write their own.
type proxyCredential struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	value string
}

// get returns the password, reading or creating the file the first time.
func (c *proxyCredential) get() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.value != "" {
		return c.value, nil
	}
	v, why, err := readProxyCredential(c.path)
	if err != nil {
		return "", err
	}
	if v == "" {
		v, err = newProxyCredential()
		if err != nil {
			return "", err
		}
		if err := writeFileAtomic(c.path, []byte(v+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("saving the outbound proxy's credential: %w", err)
		}
		c.log.Info("created the outbound proxy's credential; `sbx run` and `sbx env` pass it to processes", "path", c.path, "reason", why)
	}
	c.value = v
	return v, nil
}

// readProxyCredential returns the stored password, or "" and why a new
// one is needed: no file yet, content that is not one of ours, or a file
// other users could read (the password may have leaked).
func readProxyCredential(path string) (value, why string, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "none yet", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("reading the outbound proxy's credential: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Sprintf("%s was readable by other users (mode %v)", filepath.Base(path), fi.Mode().Perm()), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("reading the outbound proxy's credential: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if !validProxyCredential(v) {
		return "", "the stored one was malformed", nil
	}
	return v, "", nil
}

func newProxyCredential() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("creating the outbound proxy's credential: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// validProxyCredential accepts what newProxyCredential makes: at least
// 128 bits in base64url, so that it needs no escaping in a URL, a dotenv
// file or a shell.
func validProxyCredential(s string) bool {
	if len(s) < 22 || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
