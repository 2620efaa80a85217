package peeruid

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Lines as a little-endian (x86-64, arm64) Linux kernel prints them.
const (
	tcp4Table = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 339 1 000000006ec67eaf 100 0 0 10 0
   1: 0100F67F:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1803427 1 00000000e0269bf7 100 0 0 10 0
   2: 0100F67F:1F92 0100007F:DCFC 01 00000000:00000000 00:00000000 00000000  1000        0 1803500 1 00000000e0269bf7 20 4 30 10 -1
   3: 0100007F:DCFC 0100F67F:1F92 01 00000000:00000000 00:00000000 00000000 65534        0 1803499 1 00000000396d9859 20 4 30 10 -1
   4: 0100007F:A7CB 0100007F:DCFD 05 00000000:00000000 03:000015FE 00000000     0        0 0 3 0000000013e82c7b
`
	tcp6Table = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 0 10 -1
   1: 0000000000000000FFFF00000100007F:E000 0000000000000000FFFF00000100F67F:1F92 01 00000000:00000000 00:00000000 00000000  1001        0 4343 1 0000000000000000 20 4 0 10 -1
`
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestFindRow(t *testing.T) {
	le := binary.LittleEndian
	for _, tc := range []struct {
		name          string
		table         string
		local, remote netip.AddrPort
		want          Row
		found         bool
	}{
		{"the client's socket, not the server's", tcp4Table, ap("127.0.0.1:56572"), ap("127.246.0.1:8082"),
			Row{Local: ap("127.0.0.1:56572"), Remote: ap("127.246.0.1:8082"), UID: 65534, Inode: 1803499}, true},
		{"the server's side of the same connection", tcp4Table, ap("127.246.0.1:8082"), ap("127.0.0.1:56572"),
			Row{Local: ap("127.246.0.1:8082"), Remote: ap("127.0.0.1:56572"), UID: 1000, Inode: 1803500}, true},
		{"time-wait entry: uid 0, no inode", tcp4Table, ap("127.0.0.1:42955"), ap("127.0.0.1:56573"),
			Row{Local: ap("127.0.0.1:42955"), Remote: ap("127.0.0.1:56573"), UID: 0, Inode: 0}, true},
		{"IPv4-mapped addresses given", tcp4Table, ap("[::ffff:127.0.0.1]:56572"), ap("[::ffff:127.246.0.1]:8082"),
			Row{Local: ap("127.0.0.1:56572"), Remote: ap("127.246.0.1:8082"), UID: 65534, Inode: 1803499}, true},
		{"no such socket", tcp4Table, ap("127.0.0.1:1"), ap("127.246.0.1:8082"), Row{}, false},
		{"IPv6 loopback", tcp6Table, ap("[::1]:8080"), ap("[::1]:50000"),
			Row{Local: ap("[::1]:8080"), Remote: ap("[::1]:50000"), UID: 1000, Inode: 4242}, true},
		{"a dual-stack client listed in tcp6 with IPv4-mapped addresses", tcp6Table, ap("127.0.0.1:57344"), ap("127.246.0.1:8082"),
			Row{Local: ap("127.0.0.1:57344"), Remote: ap("127.246.0.1:8082"), UID: 1001, Inode: 4343}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			row, found, err := findRow(strings.NewReader(tc.table), tc.local, tc.remote, le)
			require.NoError(t, err)
			require.Equal(t, tc.found, found)
			require.Equal(t, tc.want, row)
		})
	}
}

func TestParseAddrPort(t *testing.T) {
	for _, tc := range []struct {
		in    string
		order binary.ByteOrder
		want  string
	}{
		{"0100007F:1F90", binary.LittleEndian, "127.0.0.1:8080"},
		{"7F000001:1F90", binary.BigEndian, "127.0.0.1:8080"},
		{"00000000000000000000000001000000:0016", binary.LittleEndian, "[::1]:22"},
		{"00000000000000000000000000000001:0016", binary.BigEndian, "[::1]:22"},
		{"0000000000000000FFFF00000100007F:0050", binary.LittleEndian, "127.0.0.1:80"},
		{"B80D0120000000000000000001000000:FFFF", binary.LittleEndian, "[2001:db8::1]:65535"},
	} {
		got, err := parseAddrPort(tc.in, tc.order)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got.String(), tc.in)
	}
	for _, bad := range []string{"", "0100007F", "0100007F:1F9", "0100007F:1F900", "0100007:1F90", "0100007G:1F90",
		"0100007F:-1F9", "01000000000000000000000000000000000:0016", ":", "0100007F:1F90:1"} {
		_, err := parseAddrPort(bad, binary.LittleEndian)
		require.Error(t, err, bad)
	}
}

func TestFindRowSkipsMalformedLines(t *testing.T) {
	table := "garbage\n" +
		"   0: 0100007F:1F90 0100007F:C350 01 x x x notauid 0 1 1\n" +
		"   1: 0100007F:1F90 0100007F:C350 01 x x x 5 0 notaninode 1\n" +
		"   2: 0100007F:1F90 0100007F:C350 01\n" +
		"   3: 0100007F:1F90 0100007F:C350 01 x x x 7 0 99 1\n" +
		strings.Repeat("x", maxLine+10) + "\n"
	row, found, err := findRow(strings.NewReader(table), ap("127.0.0.1:8080"), ap("127.0.0.1:50000"), binary.LittleEndian)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, uint32(7), row.UID)
	require.Equal(t, uint64(99), row.Inode)

	// A line longer than any real one is an error, not a silent miss.
	_, found, err = findRow(strings.NewReader(strings.Repeat("x", maxLine+10)+"\n"), ap("127.0.0.1:1"), ap("127.0.0.1:2"), binary.LittleEndian)
	require.Error(t, err)
	require.False(t, found)
}
