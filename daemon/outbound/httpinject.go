package outbound

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/daemon/proxy"
)

// isHTTPPort reports whether a Service port carries plain HTTP/1.x, the
// way Istio decides it: appProtocol "http", or a port name "http" or
// "http-…" (not http2/grpc, which are HTTP/2 and pass through untouched).
func isHTTPPort(p discovery.Port) bool {
	if p.AppProtocol != "" {
		return strings.EqualFold(p.AppProtocol, "http")
	}
	n := strings.ToLower(p.Name)
	return n == "http" || strings.HasPrefix(n, "http-")
}

// forwardRequests copies local's requests to remote until local's EOF,
// for an HTTP/1.x port with baggage injection: requests are parsed one by
// one (keep-alive and pipelining work), get the routing key added to
// baggage when they carry none, and are re-sent; responses flow back
// unparsed (Hosts.forward runs it as the local→remote direction of
// tunnel.PipeWith). A connection that does not start with an HTTP/1.x
// request line, a protocol upgrade (WebSocket) and CONNECT switch to plain
// byte copying.
func forwardRequests(local, remote net.Conn, baggage func() (string, string)) error {
	br := bufio.NewReaderSize(local, 16<<10)
	bw := bufio.NewWriterSize(remote, 32<<10)
	for {
		if !looksLikeHTTP1(br) {
			return copyRest(br, local, remote)
		}
		req, err := http.ReadRequest(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if k, v := baggage(); k != "" && v != "" {
			proxy.InjectBaggage(req.Header, k, v)
		}
		if _, ok := req.Header["User-Agent"]; !ok {
			// Request.Write would add Go's default User-Agent.
			req.Header["User-Agent"] = []string{""}
		}
		upgrade := req.Method == http.MethodConnect || req.Header.Get("Upgrade") != ""
		// Headers go out when the body is first read, so a client that
		// sends "Expect: 100-continue" and waits gets its answer.
		if req.Body != nil && req.Body != http.NoBody {
			req.Body = &flushOnRead{ReadCloser: req.Body, w: bw}
		}
		if err := req.Write(bw); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if upgrade {
			return copyRest(br, local, remote)
		}
	}
}

// looksLikeHTTP1 reports whether the next bytes are an HTTP/1.x request
// line: an upper-case method, a space, and a line ending in HTTP/1.x. It
// reads only as far as a real request line goes (an HTTP client sends the
// whole line at once), so another protocol's short greeting is never
// waited on: its first byte that cannot be part of a method decides. At
// end of stream it says true so that ReadRequest reports the EOF.
func looksLikeHTTP1(br *bufio.Reader) bool {
	i := 0
	for ; ; i++ {
		b, err := br.Peek(i + 1)
		if err != nil {
			return i == 0
		}
		c := b[i]
		if c == ' ' && i > 0 {
			break
		}
		if c < 'A' || c > 'Z' || i >= 20 {
			return false
		}
	}
	for j := i + 1; j < br.Size(); j++ {
		b, err := br.Peek(j + 1)
		if err != nil {
			return false
		}
		if b[j] == '\n' {
			return bytes.Contains(b[:j], []byte(" HTTP/1."))
		}
	}
	return false
}

// copyRest sends what is buffered, then copies the rest of the stream
// unbuffered (an upgraded connection is interactive).
func copyRest(br *bufio.Reader, local net.Conn, remote io.Writer) error {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := remote.Write(b); err != nil {
			return err
		}
	}
	_, err := io.Copy(remote, local)
	return err
}

type flushOnRead struct {
	io.ReadCloser
	w       *bufio.Writer
	flushed bool
}

func (f *flushOnRead) Read(p []byte) (int, error) {
	if !f.flushed {
		f.flushed = true
		if err := f.w.Flush(); err != nil {
			return 0, err
		}
	}
	return f.ReadCloser.Read(p)
}
