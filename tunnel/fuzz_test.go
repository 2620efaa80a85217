package tunnel

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// Fuzz targets for every decoder of bytes from the other side. Seeds are
// in testdata/fuzz/<target>/ (regenerate with TestWriteFuzzSeeds).

func FuzzReadHeader(f *testing.F) {
	for _, s := range headerSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readHeader(bytes.NewReader(data), maxHeaderLimit)
		if err != nil {
			var he *headerError
			if !errors.As(err, &he) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("decoded header does not validate: %v", err)
		}
		enc := appendHeader(nil, h)
		if len(enc) > maxHeaderLimit {
			t.Fatalf("re-encoded header is %d bytes", len(enc))
		}
		h2, err := readHeader(bytes.NewReader(enc), maxHeaderLimit)
		if err != nil || h2 != h {
			t.Fatalf("round trip: %v, %+v != %+v", err, h2, h)
		}
	})
}

func FuzzReadReply(f *testing.F) {
	for _, s := range replySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := readReply(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(r.message) > maxReplyMessage {
			t.Fatalf("message of %d bytes accepted", len(r.message))
		}
		if err := r.err(); (err == nil) != (r.code == 0) {
			t.Fatalf("code %d gives error %v", r.code, err)
		}
		r2, err := readReply(bytes.NewReader(appendReply(nil, r)))
		if err != nil || r2 != r {
			t.Fatalf("round trip: %v, %+v != %+v", err, r2, r)
		}
	})
}

// FuzzControlFrame reads one control frame and decodes its payload as the
// receiver would.
func FuzzControlFrame(f *testing.F) {
	for _, s := range controlSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, payload, err := readControl(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(payload) > maxControlPayload {
			t.Fatalf("payload of %d bytes accepted", len(payload))
		}
		checkControlPayload(t, typ, payload)
	})
}

func checkControlPayload(t *testing.T, typ uint8, payload []byte) {
	switch typ {
	case frameHello:
		checkHello(t, payload)
	case frameWelcome:
		checkWelcome(t, payload)
	case frameRefuse:
		he, err := decodeRefuse(payload)
		if err != nil {
			return
		}
		he2, err := decodeRefuse(encodeRefuse(he))
		if err != nil || *he2 != *he {
			t.Fatalf("refusal round trip: %v", err)
		}
	case framePing, framePong:
		n, err := decodeNonce(payload)
		if err == nil && !bytes.Equal(encodeNonce(n), payload) {
			t.Fatalf("nonce round trip")
		}
	case frameDraining:
		r, err := decodeDraining(payload)
		if err != nil {
			return
		}
		if r2, err := decodeDraining(encodeDraining(r)); err != nil || r2 != r {
			t.Fatalf("draining round trip: %q -> %q, %v", r, r2, err)
		}
	case frameGoodbye:
		r, err := decodeGoodbye(payload)
		if err != nil {
			return
		}
		r2, err := decodeGoodbye(encodeGoodbye(r))
		if err != nil || r2 != r {
			t.Fatalf("goodbye round trip: %v", err)
		}
	}
}

func FuzzDecodeHello(f *testing.F) {
	for _, s := range helloSeeds() {
		f.Add(s)
	}
	f.Fuzz(checkHello)
}

func checkHello(t *testing.T, payload []byte) {
	h, err := decodeHello(payload)
	if err != nil {
		if h.Token != "" {
			t.Fatalf("failed decode leaks a token")
		}
		return
	}
	if err := h.validate(); err != nil {
		t.Fatalf("decoded hello does not validate: %v", err)
	}
	h2, err := decodeHello(encodeHello(h))
	if err != nil || h2 != h {
		t.Fatalf("hello round trip: %v", err)
	}
}

func FuzzDecodeWelcome(f *testing.F) {
	for _, s := range welcomeSeeds() {
		f.Add(s)
	}
	f.Fuzz(checkWelcome)
}

func checkWelcome(t *testing.T, payload []byte) {
	w, err := decodeWelcome(payload)
	if err != nil {
		return
	}
	if err := w.validate(); err != nil {
		t.Fatalf("decoded welcome does not validate: %v", err)
	}
	w2, err := decodeWelcome(encodeWelcome(w))
	if err != nil || w2.RelayVersion != w.RelayVersion || len(w2.Capabilities) != len(w.Capabilities) {
		t.Fatalf("welcome round trip: %v", err)
	}
}

// Seeds: valid messages of every kind plus typical breakage.

func headerSeeds() [][]byte {
	wv := appendHeader(nil, outboundHeader)
	wv[0] = 2
	return [][]byte{
		appendHeader(nil, inboundHeader),
		appendHeader(nil, outboundHeader),
		appendHeader(nil, Header{Kind: KindOutbound, Target: "[::1]:443"}),
		wv,
		{headerVersion, 0xff, 0xff},
		{headerVersion, 0, 3, 1},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{},
	}
}

func replySeeds() [][]byte {
	return [][]byte{
		appendReply(nil, reply{}),
		appendReply(nil, reply{code: uint8(ReasonRefused), message: "connection refused"}),
		{headerVersion, 0, 0, 2, 'h', 'i'},
		{headerVersion, 3, 0xff, 0xff},
		{2, 0, 0, 0},
	}
}

func controlSeeds() [][]byte {
	h := testHello()
	h.Version = ProtocolVersion
	return [][]byte{
		appendControl(nil, frameHello, encodeHello(h)),
		appendControl(nil, frameWelcome, encodeWelcome(Welcome{RelayVersion: "v1", Capabilities: []string{"inbound"}})),
		appendControl(nil, frameRefuse, encodeRefuse(&HandshakeError{Code: CodeBadToken, Message: "no"})),
		appendControl(nil, framePing, encodeNonce(7)),
		appendControl(nil, framePong, encodeNonce(7)),
		appendControl(nil, frameGoodbye, encodeGoodbye(goodbye{code: CodeReplaced, reason: "replaced by a newer daemon"})),
		appendControl(nil, frameGoodbye, encodeGoodbye(goodbye{reason: "relay shutting down"})),
		appendControl(nil, frameDraining, encodeDraining("relay pod is shutting down")),
		appendControl(nil, frameDraining, nil),
		appendControl(nil, 99, []byte("future")),
		{frameHello, 0xff, 0xff},
	}
}

func helloSeeds() [][]byte {
	h := testHello()
	h.Version = ProtocolVersion
	old := h
	old.Version = 2
	return [][]byte{encodeHello(h), encodeHello(old), encodeHello(Hello{Version: 1}), {0, 0, 0, 1, 0xff, 0xff}}
}

func welcomeSeeds() [][]byte {
	return [][]byte{
		encodeWelcome(Welcome{}),
		encodeWelcome(Welcome{RelayVersion: "v1.0.0", Capabilities: []string{"inbound", "outbound"}}),
		{0, 0, 0xff, 0xff},
	}
}
