package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one server of the control plane, in its own process group
// so that stop reaches anything it starts, and killed by the kernel if the
// test process dies first (Pdeathsig), so an aborted test run leaves no
// server behind.
type process struct {
	name    string
	logPath string
	logFrom int64 // where this run's part of the log starts
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // how it exited; read after done
}

// startProcess starts path with args, its stdout and stderr appended to
// logPath.
func startProcess(name, path string, args []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: create its log: %w", name, err)
	}
	defer logf.Close() // the child has its own copy
	st, err := logf.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(logf, "=== %s %s\n", path, strings.Join(args, " "))
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p := &process{name: name, logPath: logPath, logFrom: st.Size(), cmd: cmd, done: make(chan struct{})}
	go func() { // ends when the process exits; stop makes sure it does
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		if p.waitErr == nil {
			return true, errors.New("exited with status 0")
		}
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop ends the process group: SIGTERM, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Whatever the server started and left in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// log returns this run's part of the process's log (earlier attempts
// append to the same file).
func (p *process) log() ([]byte, error) {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil, err
	}
	return b[min(p.logFrom, int64(len(b))):], nil
}

// logTail returns the last lines of the process's log, for errors.
func (p *process) logTail(n int) string {
	b, err := p.log()
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// portInUse reports whether the log says a listen failed because another
// process took the port between freePorts and the server's bind.
func (p *process) portInUse() bool {
	b, err := p.log()
	return err == nil && bytes.Contains(b, []byte("address already in use"))
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// A server started on one may still lose it to another process (two test
// runs may share the machine): Start retries then with new ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
